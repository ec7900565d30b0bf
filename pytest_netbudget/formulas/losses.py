"""Loss functions and their gradients: a documented cost per element of the prediction."""

from __future__ import annotations

from .elementwise import per_element_of
from .registry import Cost, OpCall, aten, numel, register


def _per_target(call: OpCall) -> Cost:
    """Negative log-likelihood picks one log-probability per target and sums them."""
    return Cost(0, numel(call["target"]))


register(
    aten("nll_loss_forward nll_loss2d_forward nll_loss_backward nll_loss2d_backward"),
    _per_target,
    family="losses",
    rule="1 FLOP per target element (pick and sum, or scatter the gradient)",
)


for _names, _cost, _what in (
    ("mse_loss mse_loss_backward", 3, "difference, square or scale, sum"),
    ("l1_loss smooth_l1_loss smooth_l1_loss_backward huber_loss huber_loss_backward", 3, "difference, clamp, sum"),
    ("binary_cross_entropy binary_cross_entropy_backward", 4, "two logs, product, sum"),
    ("binary_cross_entropy_with_logits", 5, "sigmoid in log space, product, sum"),
    ("soft_margin_loss soft_margin_loss_backward", 4, "product, exp, log, sum"),
):
    register(
        aten(_names),
        per_element_of("self", _cost),
        family="losses",
        rule=f"{_cost} FLOPs per prediction element ({_what})",
    )
