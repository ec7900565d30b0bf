"""Quantized linear layers and convolutions (``torch.ao``): MACs as their float forms count them.

Their weights are packed objects, not tensors; the MACs follow from the input and output
shapes (a linear layer: input elements x output features) or, for a convolution, from the
unpacked weight's shape. A bias adds one FLOP per output element, a fused ReLU one more.
"""

from __future__ import annotations

import torch

from .registry import FREE, Cost, OpCall, numel, register


def _has_bias(unpacked: tuple) -> bool:
    return len(unpacked) > 1 and unpacked[1] is not None


def _linear(relu: bool):
    def formula(call: OpCall) -> Cost:
        x, out = call.args[0], call.first_out
        macs = numel(x) * out.shape[-1]
        bias = numel(out) if _has_bias(torch.ops.quantized.linear_unpack(call.args[1])) else 0
        return Cost(macs, 2 * macs + bias + (numel(out) if relu else 0))

    return formula


def _conv(relu: bool):
    def formula(call: OpCall) -> Cost:
        unpacked = call.args[1].unpack()
        out = call.first_out
        macs = numel(out) * unpacked[0][0].numel()  # per output element: in_channels / groups x kernel
        bias = numel(out) if _has_bias(unpacked) else 0
        return Cost(macs, 2 * macs + bias + (numel(out) if relu else 0))

    return formula


_LINEAR_RULE = "MACs = input elements * output features; FLOPs = 2*MACs + 1 per output element (bias)"
_CONV_RULE = "MACs = output elements * in channels / groups * kernel; FLOPs = 2*MACs + 1 per output element (bias)"
for _name, _formula, _rule in (
    ("quantized::linear_dynamic", _linear(relu=False), _LINEAR_RULE),
    ("quantized::linear", _linear(relu=False), _LINEAR_RULE),
    ("quantized::linear_relu_dynamic", _linear(relu=True), _LINEAR_RULE + " + 1 (ReLU)"),
    ("quantized::linear_relu", _linear(relu=True), _LINEAR_RULE + " + 1 (ReLU)"),
    ("quantized::conv2d", _conv(relu=False), _CONV_RULE),
    ("quantized::conv2d_relu", _conv(relu=True), _CONV_RULE + " + 1 (ReLU)"),
):
    register(_name, _formula, family="quantized", rule=_rule)
register(
    ["aten::quantize_per_tensor", "aten::quantize_per_channel", "aten::dequantize"],
    FREE,
    family="quantized",
    rule="free (float values to quantized ones and back)",
)
register(
    [
        "aten::_convert_weight_to_int4pack",
        "aten::_convert_weight_to_int4pack_for_cpu",
        "aten::_dyn_quant_pack_4bit_weight",
    ],
    FREE,
    family="quantized",
    rule="free (a weight packed into the layout of a 4-bit kernel)",
)
