"""Per-element costs: arithmetic and activations, softmax, normalisation, reductions, and the
two gathers that add (``cdist``, ``embedding_bag``). No MACs: only FLOPs, one documented
figure per family, so that users can see and budget them."""

from __future__ import annotations

from typing import Any

import torch

from .registry import Cost, OpCall, OpFormula, aten, numel, register

#: FLOPs per output element of elementwise arithmetic and activations.
ELEMENTWISE_COST = 1
#: FLOPs per element of softmax / log_softmax (exponent, sum, divide).
SOFTMAX_COST = 3
#: FLOPs per element of softmax's backward (product, row sum, subtract, multiply).
SOFTMAX_BACKWARD_COST = 4
#: FLOPs per element of a normalisation (mean, variance, normalise, scale, shift).
NORM_COST = 5
#: FLOPs per input element of a reduction (sum, mean, max, ...).
REDUCTION_COST = 1


class PerElement:
    """``cost`` FLOPs per element of an op's first output, or of its first argument: the formula
    of most ops, and of nearly every op a small model runs. The tracer asks :meth:`flops` for the
    figure itself, skipping the ``OpCall`` and the ``Cost`` that calling a formula makes (about
    half of what counting a tiny op cost); called, it gives the same figure."""

    __slots__ = ("cost", "of_output")

    def __init__(self, cost: int, of_output: bool) -> None:
        self.cost = cost
        self.of_output = of_output

    def flops(self, args: tuple, out: Any) -> int:
        """The figure, from an op's positional arguments and its output."""
        if not self.of_output:
            return self.cost * numel(args[0])
        counted = out[0] if isinstance(out, (tuple, list)) else out
        return self.cost * (counted.numel() if type(counted) is torch.Tensor else numel(counted))

    def __call__(self, call: OpCall) -> Cost:
        return Cost(0, self.flops(call.args, call.out))


def per_output_element(cost: int) -> OpFormula:
    return PerElement(cost, of_output=True)


def per_input_element(cost: int) -> OpFormula:
    return PerElement(cost, of_output=False)


def per_element_of(argument: str, cost: int) -> OpFormula:
    """``cost`` FLOPs per element of the named argument (a tensor, or every tensor of a list)."""
    return lambda call: Cost(0, cost * numel(call[argument]))


_ELEMENTWISE = aten(
    """
    add sub rsub mul div neg reciprocal abs pow sqrt rsqrt exp exp2 log log2 log10 log1p expm1
    sin cos tan tanh sigmoid atan atan2 asin acos sinh cosh asinh acosh atanh erf erfc erfinv
    relu relu6 gelu silu elu selu celu leaky_relu hardtanh hardsigmoid hardswish softplus softshrink hardshrink
    mish prelu _prelu_kernel threshold glu logit silu_backward _log_softmax_backward_data
    clamp clamp_min clamp_max minimum maximum fmin fmax eq ne lt gt le ge isnan isinf nan_to_num
    floor ceil round trunc frac sign sgn remainder fmod floor_divide square xlogy
    logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_not bitwise_xor
    native_dropout bernoulli
    """
)
_REDUCTIONS = aten(
    """
    sum mean amax amin max min argmax argmin aminmax prod var std var_mean std_mean norm linalg_vector_norm
    logsumexp cumsum cumprod cummax cummin all any _is_all_true _is_any_true median nanmedian mode kthvalue topk sort
    histc
    """
)
_SOFTMAX = aten("_softmax _log_softmax _safe_softmax softmax log_softmax")
_NORMS = aten(
    """
    native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training _batch_norm_with_update
    _batch_norm_no_update cudnn_batch_norm miopen_batch_norm native_layer_norm native_group_norm instance_norm
    _fused_rms_norm
    """
)

register(
    _ELEMENTWISE,
    per_output_element(ELEMENTWISE_COST),
    family="elementwise",
    rule=f"{ELEMENTWISE_COST} FLOP per output element",
)
register(aten("addcmul addcdiv lerp"), per_output_element(2), family="elementwise", rule="2 FLOPs per output element")
register("aten::hypot", per_output_element(3), family="elementwise", rule="3 FLOPs per output element")
register(
    _REDUCTIONS,
    per_input_element(REDUCTION_COST),
    family="elementwise",
    rule=f"{REDUCTION_COST} FLOP per input element (reduction)",
)
register(
    _SOFTMAX,
    per_output_element(SOFTMAX_COST),
    family="elementwise",
    rule=f"{SOFTMAX_COST} FLOPs per output element (exponent, sum, divide)",
)
register(
    _NORMS,
    per_output_element(NORM_COST),
    family="elementwise",
    rule=f"{NORM_COST} FLOPs per output element (mean, variance, normalise, scale, shift)",
)


def _cdist_formula(call: OpCall) -> Cost:
    """Pairwise distances: a difference, a square and an add per feature of each pair."""
    features = call["x1"].shape[-1]
    return Cost(0, 3 * features * numel(call.first_out))


def _pdist_formula(call: OpCall) -> Cost:
    """Distances between every pair of rows: as ``cdist``, per feature of each pair."""
    return Cost(0, 3 * call["self"].shape[-1] * numel(call.first_out))


def _embedding_bag_formula(call: OpCall) -> Cost:
    """Bags of embeddings: one add per gathered element."""
    gathered = numel(call["indices"]) * call["weight"].shape[-1]
    return Cost(0, gathered)


register(
    "aten::_cdist_forward",
    _cdist_formula,
    family="elementwise",
    rule="3 FLOPs per feature per output pair (difference, square, add)",
)
register(
    "aten::_pdist_forward",
    _pdist_formula,
    family="elementwise",
    rule="3 FLOPs per feature per row pair (difference, square, add)",
)
register(
    ["aten::embedding_bag", "aten::_embedding_bag"],
    _embedding_bag_formula,
    family="elementwise",
    rule="1 FLOP per gathered element (indices * embedding dim)",
)


def _weight_norm(call: OpCall) -> Cost:
    """``w = v * (g / ||v||)``, as PyTorch's decomposition runs it: the norm of each slice of ``v``
    (1 per element), ``g / norm`` (1 per element of ``g``) and the product (1 per element of ``v``)."""
    return Cost(0, 2 * numel(call["v"]) + numel(call["g"]))


register(
    "aten::_weight_norm_interface",
    _weight_norm,
    family="elementwise",
    rule="2 FLOPs per element of v (its norm, the scaling) + 1 per element of g (g / norm): weight_norm",
)
