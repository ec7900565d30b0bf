"""The backward pass: gradients of convolutions, attention, recurrent layers, norms, pooling,
activations and embeddings.

Matrix products in the backward (``mm`` of a linear layer's gradients) are ordinary ops,
counted by ``linalg``. The fused backward kernels are counted as their unfused form
would be: a convolution's or attention's gradients by FlopCounterMode's own formulas (so
``2 * macs`` still equals it around forward + backward), a recurrent layer's as twice
its forward projections. Everything else is a documented per-element cost, charged only
for the gradients autograd asks for (``output_mask``).
"""

from __future__ import annotations

import math

from torch.utils import flop_counter

from .attention import sdpa_macs
from .elementwise import SOFTMAX_BACKWARD_COST, per_element_of, per_output_element
from .pooling import INTERPOLATION_COST, window_elements
from .registry import Cost, OpCall, aten, numel, register

#: FLOPs per gradient element of a pointwise op's backward: its local derivative, times the incoming gradient.
BACKWARD_ELEMENTWISE_COST = 2
#: FLOPs per element of a normalisation's backward, for each gradient asked for.
NORM_BACKWARD_COST = {"input": 8, "weight": 2, "bias": 1}


def _mask(call: OpCall, index: int) -> bool:
    mask = call.get("output_mask")
    return True if mask is None else bool(mask[index])


register(
    aten(
        """
        threshold_backward gelu_backward tanh_backward sigmoid_backward hardtanh_backward leaky_relu_backward
        elu_backward softplus_backward hardswish_backward hardsigmoid_backward log_sigmoid_backward mish_backward
        softshrink_backward hardshrink_backward native_dropout_backward _prelu_kernel_backward
        """
    ),
    per_output_element(BACKWARD_ELEMENTWISE_COST),
    family="backward",
    rule=f"{BACKWARD_ELEMENTWISE_COST} FLOPs per gradient element (local derivative, times the incoming gradient)",
)
register(
    aten("_softmax_backward_data"),
    per_output_element(SOFTMAX_BACKWARD_COST),
    family="backward",
    rule=f"{SOFTMAX_BACKWARD_COST} FLOPs per element (product, row sum, subtract, multiply)",
)


def _convolution_backward(call: OpCall) -> Cost:
    """Gradients of a convolution: FlopCounterMode's MACs for the input and weight gradients
    asked for; the bias gradient sums the output gradient (1 FLOP per element)."""
    packet = call.func.overloadpacket
    macs = flop_counter.flop_registry[packet](*call.args, **call.kwargs, out_val=call.out) // 2
    bias = numel(call["grad_output"]) if _mask(call, 2) and call["bias_sizes"] is not None else 0
    return Cost(macs, 2 * macs + bias)


register(
    "aten::convolution_backward",
    _convolution_backward,
    family="backward",
    rule="MACs = forward MACs for each of the input and weight gradients asked for; FLOPs = 2*MACs"
    " + 1 per output-gradient element for the bias gradient",
)


def _norm_backward(call: OpCall) -> Cost:
    """Per element of the gradient: 8 FLOPs for the input's, 2 for the scale's, 1 for the shift's."""
    elements = numel(call["grad_out"])
    flops = NORM_BACKWARD_COST["input"] * elements if _mask(call, 0) else 0
    if _mask(call, 1) and call.get("weight") is not None:
        flops += NORM_BACKWARD_COST["weight"] * elements
    if len(call.get("output_mask") or ()) > 2 and _mask(call, 2):
        flops += NORM_BACKWARD_COST["bias"] * elements
    return Cost(0, flops)


register(
    aten("native_batch_norm_backward native_layer_norm_backward native_group_norm_backward _fused_rms_norm_backward"),
    _norm_backward,
    family="backward",
    rule="per gradient element: 8 FLOPs for the input's gradient, 2 for the scale's, 1 for the shift's (as asked)",
)
register(
    aten(
        """
        cudnn_batch_norm_backward miopen_batch_norm_backward batch_norm_backward
        """
    ),
    per_output_element(sum(NORM_BACKWARD_COST.values())),
    family="backward",
    rule=f"{sum(NORM_BACKWARD_COST.values())} FLOPs per input element (input, scale and shift gradients)",
)


def _weight_norm_backward(call: OpCall) -> Cost:
    """The gradients of ``w = v * (g / ||v||)``: per element of ``v``, grad_w * v and its sum over
    the slice (for g's gradient), then v's gradient: v scaled by that sum, the difference from
    grad_w and its scaling by g / norm (5); per element of ``g``, three divisions by the norm."""
    return Cost(0, 5 * numel(call["saved_v"]) + 3 * numel(call["saved_g"]))


register(
    "aten::_weight_norm_interface_backward",
    _weight_norm_backward,
    family="backward",
    rule="5 FLOPs per element of v + 3 per element of g (both gradients of weight_norm)",
)


def _scatter_gradient(call: OpCall) -> Cost:
    """Each output-gradient element is added into the input gradient once."""
    return Cost(0, numel(call["grad_output"]))


register(
    aten(
        """
        max_pool2d_with_indices_backward max_pool3d_with_indices_backward adaptive_max_pool2d_backward
        adaptive_max_pool3d_backward embedding_dense_backward upsample_nearest1d_backward upsample_nearest2d_backward
        upsample_nearest3d_backward _upsample_nearest_exact1d_backward _upsample_nearest_exact2d_backward
        _upsample_nearest_exact3d_backward
        """
    ),
    _scatter_gradient,
    family="backward",
    rule="1 FLOP per output-gradient element (added into the input gradient)",
)


def _avg_pool_backward(call: OpCall) -> Cost:
    """Each output-gradient element is spread over its window: one FLOP per window element."""
    return Cost(0, numel(call["grad_output"]) * window_elements(call))


register(
    aten("avg_pool2d_backward avg_pool3d_backward"),
    _avg_pool_backward,
    family="backward",
    rule="1 FLOP per window element per output-gradient element",
)
register(
    aten("_adaptive_avg_pool2d_backward _adaptive_avg_pool3d_backward"),
    per_output_element(1),
    family="backward",
    rule="1 FLOP per input-gradient element",
)


for _name, _cost in INTERPOLATION_COST.items():
    if not _name.startswith("grid_sampler"):
        register(
            f"aten::{_name}_backward",
            per_element_of("grad_output", _cost),
            family="backward",
            rule=f"{_cost} FLOPs per output-gradient element (as the forward's per output element)",
        )


def _attention_backward(call: OpCall) -> Cost:
    """Gradients of q, k and v: twice the forward's QK^T and AV MACs (four batched products,
    as FlopCounterMode counts them); the softmax's backward over the scores."""
    query, key, value = call["query"], call["key"], call["value"]
    macs = 2 * sdpa_macs(query, key, value)
    batch_heads = math.prod(query.shape[:-2])
    scores = batch_heads * query.shape[-2] * key.shape[-2]
    scaling = batch_heads * (query.shape[-2] + key.shape[-2]) * query.shape[-1]
    return Cost(macs, 2 * macs + SOFTMAX_BACKWARD_COST * scores + scaling)


register(
    aten(
        """
        _scaled_dot_product_flash_attention_for_cpu_backward _scaled_dot_product_flash_attention_backward
        _scaled_dot_product_efficient_attention_backward _scaled_dot_product_cudnn_attention_backward
        _scaled_dot_product_fused_attention_overrideable_backward
        """
    ),
    _attention_backward,
    family="backward",
    rule="MACs = 2 * (QK^T + AV) of the forward; FLOPs = 2*MACs + 4 per score (softmax backward)"
    " + 1 per q and k element (scaling)",
)


def _mkldnn_rnn_layer_backward(call: OpCall) -> Cost:
    """One LSTM layer and direction over the sequence, counted as the unfused cell's backward
    counts it (the path PyTorch takes on meta): per step the gradients of both projections'
    weights and of their inputs, skipping the gradients autograd does not want (the layer's
    input, the initial states), the cell's pointwise backward, and the sums over steps."""
    w_ih, w_hh = call["weight1"], call["weight2"]
    gates, inputs = w_ih.shape
    hidden = w_hh.shape[1]
    batch = call["hx_"].shape[0]  # the input arrives sequence-first whatever batch_first says
    steps = numel(call["input"]) // (batch * inputs)
    # The forward op's inputs: input, four weights, hx, cx.
    needed = call.grad_needed or (True,) * 7
    rows = steps * batch
    macs = rows * gates * inputs + rows * gates * hidden  # the weights' gradients
    macs += rows * gates * inputs if needed[0] else 0  # the input's gradient
    macs += (rows - batch + (batch if needed[5] else 0)) * gates * hidden  # each step's previous state
    pointwise = batch * hidden * (18 * steps - (0 if needed[6] else 1) - 2)
    summed = (steps - 1) * gates * (inputs + hidden)  # per-step weight gradients added up
    if call["has_biases"]:
        summed += 2 * rows * gates + 2 * (steps - 1) * gates
    return Cost(macs, 2 * macs + pointwise + summed)


register(
    "aten::mkldnn_rnn_layer_backward",
    _mkldnn_rnn_layer_backward,
    family="backward",
    rule="as the unfused LSTM cell's backward: MACs = the weights' gradients + the gradients autograd wants"
    " of the input and the previous states; FLOPs = 2*MACs + 18 per hidden unit per step (gates) + sums over steps",
)
