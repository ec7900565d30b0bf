"""Matrix products: MACs from ``torch.utils.flop_counter``'s own formulas, bias as extra FLOPs.

Reusing FlopCounterMode's formulas (2 FLOPs per MAC) keeps ``2 * macs`` equal to its
total wherever it counts; a bias addition is one FLOP per output element and no MAC.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from .registry import Cost, OpCall, OpFormula, aten, numel, register


def _shapes(values: tuple) -> list[Any]:
    return [value.shape if isinstance(value, torch.Tensor) else value for value in values]


def added_term(call: OpCall) -> int:
    """FLOPs of ``beta * self + alpha * product`` beyond the product: adding ``self`` is one
    per output element (none when ``beta`` is 0), scaling by ``beta`` or ``alpha`` one more
    each when it is not 1."""
    out = numel(call.first_out)
    if not call.kwargs:
        return out
    beta = call.get("beta", 1)
    return (out if beta != 0 else 0) + _scalings(call)


def _scalings(call: OpCall) -> int:
    """One FLOP per output element for each of ``beta`` (when neither 0 nor 1) and ``alpha``
    (when not 1)."""
    if not call.kwargs:
        return 0
    out = numel(call.first_out)
    beta, alpha = call.get("beta", 1), call.get("alpha", 1)
    return (out if beta not in (0, 1) else 0) + (out if alpha != 1 else 0)


def _matmul_formula(torch_formula: Any, has_bias: bool) -> OpFormula:
    """MACs from FlopCounterMode's mm / bmm formula called on the operand shapes directly; the
    added tensor (``self`` of addmm/baddbmm, before the operands) and its scalings as
    :func:`added_term` counts them."""
    # The public formula (flop_registry's) maps a pytree pass over every argument first:
    # ~10 us a call against 0.3 us for the function it wraps, measured on every matmul.
    # addmm's and baddbmm's own formulas only call that public mm / bmm one on the operands.
    raw = torch_formula.__wrapped__
    first = 1 if has_bias else 0

    def formula(call: OpCall) -> Cost:
        macs = raw(*_shapes(call.args[first : first + 2])) // 2
        return Cost(macs, 2 * macs + (added_term(call) if has_bias else 0))

    return formula


def via_flop_counter(call: OpCall) -> Cost:
    """Any op in FlopCounterMode's registry, through its registered (pytree-wrapped) formula;
    a ``bias`` argument, or else a ``self`` one, adds one FLOP per output element."""
    macs = flop_counter.flop_registry[call.func.overloadpacket](*call.args, **call.kwargs, out_val=call.out) // 2
    bias = next((call[name] for name in ("bias", "self") if name in call), None)
    return Cost(macs, 2 * macs + (numel(call.first_out) if bias is not None else 0))


#: How every ``beta * self + alpha * product`` op counts its scalars.
_SCALED = ", +1 per output element each for beta and alpha when not 1, none for the bias when beta is 0"

register(
    "aten::mm",
    _matmul_formula(flop_counter.mm_flop, has_bias=False),
    family="linalg",
    rule="MACs = M*K*N for [M, K] @ [K, N]; FLOPs = 2*MACs",
)
register(
    "aten::bmm",
    _matmul_formula(flop_counter.bmm_flop, has_bias=False),
    family="linalg",
    rule="MACs = B*M*K*N for [B, M, K] @ [B, K, N]; FLOPs = 2*MACs",
)
register(
    "aten::addmm",
    _matmul_formula(flop_counter.mm_flop, has_bias=True),
    family="linalg",
    rule="MACs = M*K*N for bias + [M, K] @ [K, N]; FLOPs = 2*MACs + M*N (the bias)" + _SCALED,
)
register(
    "aten::baddbmm",
    _matmul_formula(flop_counter.bmm_flop, has_bias=True),
    family="linalg",
    rule="MACs = B*M*K*N for bias + [B, M, K] @ [B, K, N]; FLOPs = 2*MACs + B*M*N (the bias)" + _SCALED,
)


def _product_formula(macs_of: Callable[[OpCall], int], extra: Callable[[OpCall], int]) -> OpFormula:
    def formula(call: OpCall) -> Cost:
        macs = macs_of(call)
        return Cost(macs, 2 * macs + extra(call))

    return formula


def _no_extra(call: OpCall) -> int:
    return 0


def _bias(call: OpCall) -> int:
    """A ``bias`` argument: one FLOP per output element when given."""
    return numel(call.first_out) if call["bias"] is not None else 0


def _trilinear_macs(call: OpCall) -> int:
    """``_trilinear`` (``nn.Bilinear``, ``F.bilinear``): each operand is unsqueezed at its
    ``expand`` dimensions, the three are multiplied and summed over ``sumdim``. One MAC per
    point of the space the three span: N*O*I*J for a bilinear layer."""
    span: list[int] = []
    for operand, expand in (
        (call["i1"], call["expand1"]),
        (call["i2"], call["expand2"]),
        (call["i3"], call["expand3"]),
    ):
        shape = list(operand.shape)
        for dim in sorted(expand):
            shape.insert(dim, 1)
        span = [max(a, b) for a, b in zip(span, shape)] if span else shape
    return math.prod(span)


def _offsets_unknown(call: OpCall) -> bool:
    """Whether the op has group offsets that hold no values here (on meta)."""
    offsets = call.get("offs")
    return offsets is not None and offsets.device.type == "meta" and offsets.numel() > 0


def _last_offset(call: OpCall) -> int | None:
    """Where the last group ends (``offs[-1]``), when the offsets have values (not on meta)."""
    offsets = call.get("offs")
    if offsets is None or offsets.device.type == "meta" or offsets.numel() == 0:
        return None
    return int(offsets[-1])


def _grouped_mm_macs(call: OpCall) -> int:
    """Groups of matrix products in one op (the experts of a mixture-of-experts layer).

    2-D by 2-D: the groups split the contraction K; 2-D by 3-D: the rows of ``self``; 3-D by
    2-D: the columns of ``mat2``; 3-D by 3-D: a batch. What lies past the last offset belongs
    to no group and is not computed: where the offsets have values (cpu, cuda), only what the
    groups cover counts; on meta they have none, and the whole extent counts: an upper bound,
    exact wherever the groups end at the last row, as mixture-of-experts layers that route
    every token have them (see :func:`_grouped_formula`)."""
    mat_a, mat_b = call["self"], call["mat2"]
    end = _last_offset(call)
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        k = mat_a.shape[-1] if end is None else min(end, mat_a.shape[-1])
        return mat_a.shape[0] * k * mat_b.shape[-1]
    if mat_a.dim() == 2:
        rows = mat_a.shape[0] if end is None else min(end, mat_a.shape[0])
        return rows * mat_a.shape[-1] * mat_b.shape[-1]
    if mat_b.dim() == 2:
        columns = mat_b.shape[-1] if end is None else min(end, mat_b.shape[-1])
        return mat_a.shape[-2] * mat_a.shape[-1] * columns
    return numel(call.out) * mat_a.shape[-1]


def _grouped_formula(extra: Callable[[OpCall], int]) -> OpFormula:
    """A grouped product's cost (:func:`_grouped_mm_macs`, 2 FLOPs a MAC, and ``extra``), marked an
    upper bound where its offsets hold no values (on meta), with what was counted instead."""

    def formula(call: OpCall) -> Cost:
        macs = _grouped_mm_macs(call)
        bound = None
        batched = call["self"].dim() == 3 and call["mat2"].dim() == 3  # no extent to cut: exact
        if not batched and _offsets_unknown(call):
            bound = (
                f"{call.func.overloadpacket} on {call['self'].device.type}: its group offsets have no values there, "
                "so what lies past the last group's end is counted too (cpu and cuda stop at the last offset)"
            )
        return Cost(macs, 2 * macs + extra(call), bound)

    return formula


def _scaled(call: OpCall) -> int:
    """A low-precision product's output scaled (``scale_a * scale_b``, 1 per output element) and
    its bias added when there is one (1 more)."""
    out = numel(call.first_out)
    return out + (out if call.get("bias") is not None else 0)


def _int4_macs(call: OpCall) -> int:
    """[M, K] by a packed 4-bit [N, K] weight: output elements * K."""
    return numel(call.first_out) * call["self"].shape[-1]


def _int4_dequantized(call: OpCall) -> int:
    """Each 4-bit weight scaled and shifted by its group's scale and zero point: 2 per weight element."""
    return 2 * call["self"].shape[-1] * call.first_out.shape[-1]


def _per_output_element(call: OpCall) -> int:
    """One FLOP per output element (the scales of an int8 weight, an activation)."""
    return numel(call.first_out)


def _added_and_activated(call: OpCall) -> int:
    """``_addmm_activation``: the added tensor as :func:`added_term` counts it, then the
    ReLU or GELU, one FLOP per output element."""
    return added_term(call) + numel(call.first_out)


def _euclidean_dist(call: OpCall) -> Cost:
    """Pairwise distances as PyTorch's ``_euclidean_dist`` runs them: squared norms of both
    sides' rows, one product of [P, M + 2] by [M + 2, R] (the norms ride along as two extra
    columns), a clamp and a square root per distance."""
    x1, x2 = call["x1"], call["x2"]
    rows, features, others = x1.shape[-2], x1.shape[-1], x2.shape[-2]
    batch = numel(call.first_out) // (rows * others)
    macs = numel(call.first_out) * (features + 2)
    norms = batch * (2 * rows * features + rows * features + 2 * others * features)  # square and sum; -2 * x1
    return Cost(macs, 2 * macs + norms + 2 * numel(call.first_out))


register(
    "aten::_euclidean_dist",
    _euclidean_dist,
    family="linalg",
    rule="MACs = P*R*(M+2) for rows [P, M] against [R, M]; FLOPs = 2*MACs + 3*P*M + 2*R*M (norms, scaling)"
    " + 2 per distance (clamp, square root)",
)

for _names, _macs_of, _extra, _rule in (
    ("mv", lambda call: numel(call["self"]), _no_extra, "MACs = M*K for [M, K] @ [K]; FLOPs = 2*MACs"),
    ("dot vdot", lambda call: numel(call["self"]), _no_extra, "MACs = K for [K] . [K]; FLOPs = 2*MACs"),
    (
        "addmv",
        lambda call: numel(call["mat"]),
        added_term,
        "MACs = M*K for bias + [M, K] @ [K]; FLOPs = 2*MACs + M (the bias)" + _SCALED,
    ),
    (
        "addbmm",
        lambda call: numel(call["batch1"]) * call["batch2"].shape[-1],
        added_term,
        "MACs = B*M*K*N for bias + the sum over B of [B, M, K] @ [B, K, N]; FLOPs = 2*MACs + M*N (the bias)" + _SCALED,
    ),
    (
        "addr",
        lambda call: numel(call["vec1"]) * numel(call["vec2"]),
        _scalings,
        "MACs = M*N for self + [M] outer [N] (a rank-1 update: each product accumulated into self);"
        " FLOPs = 2*MACs, +1 per output element each for beta and alpha when not 1",
    ),
    (
        "_trilinear",
        _trilinear_macs,
        _no_extra,
        "MACs = the product of every dimension the three operands span (N*O*I*J for nn.Bilinear); FLOPs = 2*MACs",
    ),
    (
        "_int_mm",
        lambda call: numel(call["self"]) * call["mat2"].shape[-1],
        _no_extra,
        "MACs = M*K*N (int8); FLOPs = 2*MACs",
    ),
    (
        "_weight_int8pack_mm",
        lambda call: numel(call["self"]) * call["mat2"].shape[0],
        _per_output_element,
        "MACs = M*K*N for [M, K] by an int8 [N, K]; FLOPs = 2*MACs + 1 per output element (the scales)",
    ),
    (
        "_addmm_activation",
        lambda call: numel(call["mat1"]) * call["mat2"].shape[-1],
        _added_and_activated,
        "MACs = M*K*N; FLOPs = 2*MACs + M*N (the bias) + M*N (ReLU or GELU)" + _SCALED,
    ),
    (
        "_scaled_mm _scaled_mm_v2",
        lambda call: numel(call["self"]) * call["mat2"].shape[-1],
        _scaled,
        "MACs = M*K*N (fp8 and other scaled low-precision operands); FLOPs = 2*MACs + 1 per output element"
        " (the scales) + 1 per output element when there is a bias",
    ),
    (
        "_weight_int4pack_mm _weight_int4pack_mm_for_cpu _weight_int4pack_mm_with_scales_and_zeros",
        _int4_macs,
        _int4_dequantized,
        "MACs = M*K*N for [M, K] by a packed int4 [N, K]; FLOPs = 2*MACs + 2 per weight element (K*N:"
        " its group's scale and zero point)",
    ),
    (
        "_dyn_quant_matmul_4bit",
        lambda call: numel(call.first_out) * call["in_features"],
        lambda call: 2 * call["in_features"] * call["out_features"],
        "MACs = M*K*N for [M, K] by a packed int4 [N, K]; FLOPs = 2*MACs + 2 per weight element (K*N:"
        " its block's scale and zero point)",
    ),
):
    register(aten(_names), _product_formula(_macs_of, _extra), family="linalg", rule=_rule)
register(
    aten("_grouped_mm"),
    _grouped_formula(_bias),
    family="linalg",
    rule="MACs = M*K*N over what the groups cover (up to the last offset; on meta the whole operand, marked an"
    " upper bound); FLOPs = 2*MACs + 1 per output element when there is a bias",
)
register(
    aten("_scaled_grouped_mm _scaled_grouped_mm_v2"),
    _grouped_formula(_scaled),
    family="linalg",
    rule="MACs as _grouped_mm (up to the last offset; on meta an upper bound); FLOPs = 2*MACs + 1 per output"
    " element (the scales) + 1 per output element when there is a bias",
)
