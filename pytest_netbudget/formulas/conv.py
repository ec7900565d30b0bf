"""Convolutions of every kind (grouped, depthwise, transposed, 1d/2d/3d): FlopCounterMode's MACs.

``aten.convolution`` is what every ``nn.Conv*`` and ``F.conv*`` reaches on every device;
the cuDNN entry points are only seen when code calls them directly.
"""

from __future__ import annotations

import math

from .linalg import via_flop_counter
from .registry import Cost, OpCall, numel, register


def _convolution_formula(call: OpCall) -> Cost:
    """aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)."""
    if call.kwargs:
        return via_flop_counter(call)
    x, weight, bias, transposed = call.args[0], call.args[1], call.args[2], call.args[6]
    # FlopCounterMode's conv_flop_count / 2, in a few multiplications (its Python is a third of
    # the cost of counting a convolution): one MAC per weight element (C_out * C_in/groups *
    # kernel) at each position of the batch's output, or of its input when transposed.
    positions = x.shape if transposed else call.out.shape
    macs = positions[0] * math.prod(positions[2:]) * math.prod(weight.shape)
    return Cost(macs, 2 * macs + (numel(call.out) if bias is not None else 0))


register(
    ["aten::convolution", "aten::_convolution"],
    _convolution_formula,
    family="conv",
    rule=(
        "MACs = batch * output positions (input positions when transposed) * weight elements;"
        " FLOPs = 2*MACs + 1 per output element when there is a bias"
    ),
)
register(
    ["aten::cudnn_convolution", "aten::cudnn_convolution_transpose", "aten::_slow_conv2d_forward"],
    via_flop_counter,
    family="conv",
    rule="MACs as aten::convolution, by FlopCounterMode's formula; FLOPs = 2*MACs + 1 per output element",
)


def _conv_tbc_formula(call: OpCall) -> Cost:
    """Time-batch-channel convolution, weight [kernel, in, out]: output elements * in * kernel."""
    kernel, channels_in = call["weight"].shape[:2]
    macs = numel(call.out) * channels_in * kernel
    return Cost(macs, 2 * macs + numel(call.out))


register(
    "aten::conv_tbc",
    _conv_tbc_formula,
    family="conv",
    rule="MACs = output elements * in channels * kernel; FLOPs = 2*MACs + 1 per output element (the bias)",
)
