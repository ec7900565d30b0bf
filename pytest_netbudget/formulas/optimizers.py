"""The optimizer's step: ``_foreach_*`` ops over lists of tensors and the fused kernels.

On CPU and meta PyTorch's optimizers update one tensor at a time with ordinary
elementwise ops (counted by ``elementwise``); on CUDA they take these list ops by
default, or a fused kernel when asked. Each costs what its one-tensor form costs,
per element of every tensor in its first list, so a step counts alike on every device.
"""

from __future__ import annotations

from .elementwise import per_element_of
from .registry import Cost, OpCall, aten, numel, register

_ONE = """
    add sub mul div neg abs sqrt rsqrt exp log sign reciprocal pow maximum minimum clamp_min clamp_max
    sigmoid tanh sin cos erf round floor ceil trunc frac expm1 log1p log10 log2
    """
for _names, _cost, _rule in (
    ([name.replace("aten::", "aten::_foreach_") for name in aten(_ONE)], 1, "1 FLOP per element"),
    (aten("_foreach_addcmul _foreach_addcdiv _foreach_lerp"), 2, "2 FLOPs per element"),
    (aten("_foreach_norm"), 2, "2 FLOPs per element (square, sum)"),
    (aten("_foreach_copy _foreach_zero"), 0, "free (data movement)"),
):
    register(_names, per_element_of("self", _cost), family="optimizers", rule=f"{_rule} of every tensor in the list")

#: FLOPs per parameter element of one Adam / AdamW step, as the one-tensor path runs it:
#: lerp of the first moment (2), decay (1) and addcmul (2) of the second, sqrt (1),
#: divide by the bias correction (1), add eps (1), addcdiv into the parameter (2).
ADAM_STEP_COST = 10


def _fused_adam(call: OpCall) -> Cost:
    """A fused Adam/AdamW step: ADAM_STEP_COST per element, +1 with weight decay, +1 with amsgrad."""
    cost = ADAM_STEP_COST + (call["weight_decay"] != 0) + bool(call["amsgrad"])
    return Cost(0, cost * numel(call["self"]))


def _fused_sgd(call: OpCall) -> Cost:
    """A fused SGD step: the update (1), weight decay (1), momentum (2: decay and add)."""
    cost = 1 + (call["weight_decay"] != 0) + 2 * (call["momentum"] != 0)
    return Cost(0, cost * numel(call["self"]))


register(
    aten("_fused_adam _fused_adamw"),
    _fused_adam,
    family="optimizers",
    rule=f"{ADAM_STEP_COST} FLOPs per parameter element, +1 with weight decay, +1 with amsgrad",
)
register(
    "aten::_fused_sgd",
    _fused_sgd,
    family="optimizers",
    rule="1 FLOP per parameter element, +1 with weight decay, +2 with momentum",
)
