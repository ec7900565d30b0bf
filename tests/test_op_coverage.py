"""Linear algebra beyond mm/bmm, and the scatters that add: each op's figure derived by hand,
identical on cpu and meta, nothing left uncounted.

FlopCounterMode counts none of these ops (its registry has mm, addmm, bmm, baddbmm and the
convolutions), so the figures here are checked against the hand derivation alone.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import Call, Case, profile_both, r, rs
from torch import nn

from pytest_netbudget import profile
from pytest_netbudget.formulas import REDUCTION_COST, Cost

pytestmark = pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter", "ignore:index_reduce")


def offsets(*ends: int) -> Any:
    """Group end offsets for ``_grouped_mm``, made on the input's device inside the forward."""
    return lambda like: torch.tensor(ends, dtype=torch.int32, device=like.device)


LINEAR_ALGEBRA = [
    # nn.Bilinear(4, 5, 6) on 3 rows: y_k = x1^T W_k x2 + b_k, one MAC per (row, k, i, j)
    Case(
        "nn.Bilinear",
        lambda: nn.Bilinear(4, 5, 6),
        rs((3, 4), (3, 5)),
        macs=3 * 6 * 4 * 5,
        flops=2 * (3 * 6 * 4 * 5) + 3 * 6,  # + the bias, one per output element
        params=6 * 4 * 5 + 6,
    ),
    Case(
        "F.bilinear-no-bias",
        lambda: Call(lambda m, a, b: F.bilinear(a, b, m.w), w=torch.randn(2, 3, 4)),
        rs((5, 3), (5, 4)),
        macs=5 * 2 * 3 * 4,
        flops=2 * 120,
        params=2 * 3 * 4,
    ),
    # matrix-vector and vector products: one MAC per matrix (or vector) element
    Case("mv", lambda: Call(lambda m, a, v: torch.mv(a, v)), rs((3, 4), (4,)), macs=3 * 4, flops=2 * 12),
    Case("matmul-matrix-vector", lambda: Call(lambda m, a, v: a @ v), rs((3, 4), (4,)), macs=12, flops=24),
    Case("dot", lambda: Call(lambda m, a, b: torch.dot(a, b)), rs((7,), (7,)), macs=7, flops=2 * 7),
    Case("vdot", lambda: Call(lambda m, a, b: torch.vdot(a, b)), rs((7,), (7,)), macs=7, flops=14),
    Case("matmul-vector-vector", lambda: Call(lambda m, a, b: a @ b), rs((7,), (7,)), macs=7, flops=14),
    Case(
        "addmv",
        lambda: Call(lambda m, c, a, v: torch.addmv(c, a, v)),
        rs((3,), (3, 4), (4,)),
        macs=3 * 4,
        flops=2 * 12 + 3,  # + the added vector
    ),
    Case(
        "addmv-scaled",
        lambda: Call(lambda m, c, a, v: torch.addmv(c, a, v, beta=0.5, alpha=2.0)),
        rs((3,), (3, 4), (4,)),
        macs=12,
        flops=2 * 12 + 3 + 3 + 3,  # + the added vector, scaled by beta, the product scaled by alpha
    ),
    # addbmm: the sum over the batch is the accumulation
    Case(
        "addbmm",
        lambda: Call(lambda m, c, a, b: torch.addbmm(c, a, b)),
        rs((3, 5), (2, 3, 4), (2, 4, 5)),
        macs=2 * 3 * 4 * 5,
        flops=2 * 120 + 3 * 5,
    ),
    Case(
        "addbmm-scaled",
        lambda: Call(lambda m, c, a, b: torch.addbmm(c, a, b, beta=0.5, alpha=2)),
        rs((3, 5), (2, 3, 4), (2, 4, 5)),
        macs=120,
        flops=2 * 120 + 3 * 15,  # add, beta, alpha: one each per output element
    ),
    Case(
        "baddbmm-scaled",
        lambda: Call(lambda m, c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2)),
        rs((2, 3, 5), (2, 3, 4), (2, 4, 5)),
        macs=2 * 3 * 4 * 5,
        flops=2 * 120 + 3 * (2 * 3 * 5),
    ),
    Case(
        "baddbmm-beta-0",
        lambda: Call(lambda m, c, a, b: torch.baddbmm(c, a, b, beta=0, alpha=0.125)),
        rs((2, 3, 5), (2, 3, 4), (2, 4, 5)),
        macs=120,
        flops=2 * 120 + 2 * 3 * 5,  # beta = 0: nothing added; alpha scales each output element
    ),
    Case(
        "addmm-scaled",
        lambda: Call(lambda m, c, a, b: torch.addmm(c, a, b, alpha=2)),
        rs((3, 5), (3, 4), (4, 5)),
        macs=3 * 4 * 5,
        flops=2 * 60 + 15 + 15,  # the bias, alpha
    ),
    # addr: a rank-1 update, each product accumulated into self
    Case("addr", lambda: Call(lambda m, c, a, b: torch.addr(c, a, b)), rs((3, 4), (3,), (4,)), macs=12, flops=24),
    Case(
        "addr-scaled",
        lambda: Call(lambda m, c, a, b: torch.addr(c, a, b, beta=2, alpha=3)),
        rs((3, 4), (3,), (4,)),
        macs=12,
        flops=24 + 12 + 12,
    ),
    # conv_tbc: input [time 5, batch 2, in 3], weight [kernel 3, in 3, out 4], pad 1 -> time 5 + 2 - 3 + 1 = 5
    Case(
        "conv_tbc",
        lambda: Call(lambda m, x: torch.conv_tbc(x, m.w, m.b, 1), w=torch.randn(3, 3, 4), b=torch.randn(4)),
        r(5, 2, 3),
        macs=(5 * 2 * 4) * (3 * 3),
        flops=2 * 360 + 5 * 2 * 4,
        params=3 * 3 * 4 + 4,
    ),
    # _grouped_mm, the experts of a mixture-of-experts layer: rows 0-1 through expert 0, rows 2-5 through 1
    Case(
        "grouped_mm-2d-3d",
        lambda: Call(lambda m, a: torch._grouped_mm(a, m.w, offs=offsets(2, 6)(a)), w=torch.randn(2, 8, 4)),
        r(6, 8),
        macs=6 * 8 * 4,  # every row once, through its own expert
        flops=2 * 192,
        params=2 * 8 * 4,
    ),
    Case(
        "grouped_mm-3d-3d",
        lambda: Call(lambda m, a, b: torch._grouped_mm(a, b)),
        rs((2, 3, 8), (2, 8, 4)),
        macs=2 * 3 * 8 * 4,  # a batch of two [3, 8] @ [8, 4]
        flops=2 * 192,
    ),
    Case(
        "grouped_mm-2d-2d",
        lambda: Call(lambda m, a, b: torch._grouped_mm(a, b, offs=offsets(4, 8)(a))),
        rs((3, 8), (8, 4)),
        macs=3 * (4 + 4) * 4,  # the groups split the contraction: [3, 4] @ [4, 4] twice
        flops=2 * 96,
    ),
    Case(
        "grouped_mm-3d-2d",
        lambda: Call(lambda m, a, b: torch._grouped_mm(a, b, offs=offsets(4, 8)(a))),
        rs((2, 3, 8), (8, 8)),
        macs=3 * 8 * (4 + 4),  # the groups split the columns: [3, 8] @ [8, 4] twice
        flops=2 * 192,
    ),
]

# ops found by walking torch.ops.aten for contractions that had no formula
INT8 = torch.int8
LINEAR_ALGEBRA += [
    Case(
        "_int_mm",
        lambda: Call(lambda m, a, b: torch.ops.aten._int_mm(a, b)),
        lambda: (torch.randint(-5, 5, (32, 16), dtype=INT8), torch.randint(-5, 5, (16, 8), dtype=INT8)),
        macs=32 * 16 * 8,
        flops=2 * 4096,
    ),
    Case(
        "_weight_int8pack_mm",  # [4, 16] by int8 [8, 16]^T, then a scale per output column
        lambda: Call(lambda m, a, w, s: torch.ops.aten._weight_int8pack_mm(a, w, s)),
        lambda: (torch.randn(4, 16), torch.randint(-5, 5, (8, 16), dtype=INT8), torch.randn(8)),
        macs=4 * 16 * 8,
        flops=2 * 512 + 4 * 8,
    ),
    Case(
        "_addmm_activation",
        lambda: Call(lambda m, c, a, b: torch.ops.aten._addmm_activation(c, a, b, use_gelu=True)),
        rs((5,), (3, 4), (4, 5)),
        macs=3 * 4 * 5,
        flops=2 * 60 + 15 + 15,  # the bias, the GELU
    ),
    Case(
        "_euclidean_dist",  # [3, 4] against [5, 4]: one [3, 6] @ [6, 5] with the norms as 2 extra columns
        lambda: Call(lambda m, a, b: torch.ops.aten._euclidean_dist(a, b)),
        rs((3, 4), (5, 4)),
        macs=3 * 5 * (4 + 2),
        flops=2 * 90 + (3 * 3 * 4 + 2 * 5 * 4) + 2 * 15,  # norms and -2 * x1; clamp and square root
    ),
]


# Low-precision and quantized products.
FP8 = torch.float8_e4m3fn


def fp8(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).to(FP8)


def one() -> torch.Tensor:
    return torch.tensor(1.0)


LINEAR_ALGEBRA += [
    Case(  # fp8 [48, 80] @ [80, 112] (column-major, as the kernel wants it), per-tensor scales
        "_scaled_mm",
        lambda: Call(lambda m, a, b, sa, sb: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)),
        lambda: (fp8(48, 80), fp8(112, 80).t(), one(), one()),
        macs=48 * 80 * 112,  # 430,080
        flops=2 * 430_080 + 48 * 112,  # + the scales, once per output element
    ),
    Case(
        "_scaled_mm-bias",
        lambda: Call(lambda m, a, b, sa, sb, c: torch._scaled_mm(a, b, sa, sb, bias=c, out_dtype=torch.bfloat16)),
        lambda: (fp8(48, 80), fp8(112, 80).t(), one(), one(), torch.randn(112, dtype=torch.bfloat16)),
        macs=430_080,
        flops=2 * 430_080 + 2 * 48 * 112,  # the scales and the bias
    ),
    Case(  # [4, 128] by a 4-bit [64, 128] weight packed for the CPU kernel, groups of 32 along K
        "_weight_int4pack_mm_for_cpu",
        lambda: Call(lambda m, x, w, sz: torch.ops.aten._weight_int4pack_mm_for_cpu(x, w, 32, sz)),
        lambda: (
            torch.randn(4, 128, dtype=torch.bfloat16),
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (64, 128), dtype=torch.int32), 2),
            torch.randn(128 // 32, 64, 2, dtype=torch.bfloat16),
        ),
        macs=4 * 128 * 64,
        flops=2 * 32_768 + 2 * 128 * 64,  # each weight scaled and shifted by its group's scale and zero point
    ),
]


def test_grouped_mm_counts_what_its_groups_cover_on_cpu_and_every_row_on_meta():
    """512 rows, groups ending at 384: 384 x 8 x 4 MACs on cpu (512 were counted before). On meta
    the offsets have no values, so every row counts: 512 x 8 x 4. 2-D by 2-D with groups ending at
    K = 6 of 8: 3 x 6 x 4; 3-D by 2-D with groups ending at column 6 of 8: 3 x 8 x 6."""
    cases = [
        (
            Call(lambda m, a: torch._grouped_mm(a, m.w, offs=offsets(128, 384)(a)), w=torch.randn(2, 8, 4)),
            torch.randn(512, 8),
            384 * 8 * 4,
            512 * 8 * 4,
        ),
        (
            Call(lambda m, a, b: torch._grouped_mm(a, b, offs=offsets(2, 6)(a))),
            (torch.randn(3, 8), torch.randn(8, 4)),
            3 * 6 * 4,
            3 * 8 * 4,
        ),
        (
            Call(lambda m, a, b: torch._grouped_mm(a, b, offs=offsets(4, 6)(a))),
            (torch.randn(2, 3, 8), torch.randn(8, 8)),
            3 * 8 * 6,
            3 * 8 * 8,
        ),
    ]
    for model, inputs, on_cpu, on_meta in cases:
        cpu, meta = profile(model, inputs, device="cpu"), profile(model, inputs, device="meta")
        assert (cpu.macs, cpu.upper_bounds) == (on_cpu, ())
        assert meta.macs == on_meta
        assert meta.upper_bound_of("macs") and meta.upper_bound_of("flops")  # said so: an upper bound


def test_scaled_grouped_mm_on_meta():
    """fp8 experts: [64, 32] rows by two [32, 48] experts, groups at 16 and 48 (PyTorch has no CPU
    kernel; meta runs). The offsets have no values on meta: 64 x 32 x 48 = 98,304 MACs, FLOPs 2 *
    MACs + 64 x 48 (the scales)."""
    model = Call(
        lambda m, a, b, sa, sb: torch._scaled_grouped_mm(
            a, b, sa, sb, offs=offsets(16, 48)(a), out_dtype=torch.bfloat16
        )
    )
    inputs = (fp8(64, 32), fp8(2, 48, 32).transpose(-2, -1), torch.ones(64), torch.ones(2, 48))
    p = profile(model, inputs, device="meta")
    assert (p.macs, p.flops, p.uncounted_ops) == (98_304, 2 * 98_304 + 64 * 48, {})
    assert [bound.metrics for bound in p.upper_bounds] == [("macs", "flops")]  # offsets unknown: at most this


def test_cuda_int4_and_dynamic_4bit_products_by_their_formulas():
    """Kernels that run on CUDA (or Arm) only, and whose meta kernels fail here, counted through the
    registry from a call's operands: [4, 128] by a 4-bit [64, 128] weight in groups of 32 is
    4 x 128 x 64 = 32,768 MACs and 2 * MACs + 2 x 128 x 64 FLOPs (each weight's scale and zero)."""
    from pytest_netbudget.formulas import FormulaSet, OpCall, apply

    formulas = FormulaSet()
    x, out = torch.empty(4, 128, device="meta"), torch.empty(4, 64, device="meta")
    calls = [
        (torch.ops.aten._weight_int4pack_mm.default, (x, torch.empty(8, 4, 32, 1, dtype=torch.int32), 32, None)),
        (torch.ops.aten._dyn_quant_matmul_4bit.default, (x, torch.empty(4096, dtype=torch.uint8), 32, 128, 64)),
    ]
    for func, args in calls:
        cost = apply(formulas.for_op(func), str(func), OpCall(func, args, {}, out))
        assert (cost.macs, cost.total_flops) == (32_768, 2 * 32_768 + 2 * 128 * 64), func


WEIGHT_NORMED = [
    # weight_norm of Linear(4, 3) on [2, 4]: w = v * (g / ||v||) with v [3, 4] and g [3, 1]: the norm
    # of each row of v (12), g / norm (3), the product (12); then the layer 2 x 2*4*3 + 6 (bias)
    Case(
        "weight_norm-linear",
        lambda: nn.utils.parametrizations.weight_norm(nn.Linear(4, 3)),
        r(2, 4),
        macs=2 * 4 * 3,
        flops=(12 + 3 + 12) + 2 * 24 + 6,
        params=3 * 4 + 3 + 3,
    ),
    # torch._is_all_true (Llava, PaliGemma, Qwen2-VL check their inputs with it): a reduction like
    # all(), 1 FLOP per input element, after the comparison's 12
    Case(
        "_is_all_true",
        lambda: Call(lambda m, x: torch._is_all_true(x > 0)),
        r(3, 4),
        macs=0,
        flops=12 + REDUCTION_COST * 12,
    ),
]


@pytest.mark.parametrize("case", WEIGHT_NORMED, ids=lambda case: case.id)
def test_weight_norm_and_is_all_true(case: Case):
    torch.manual_seed(0)
    p = profile_both(case.build(), case.inputs())
    assert (p.macs, p.flops, p.params) == (case.macs, case.flops, case.params)


def test_weight_norm_training_step_is_counted():
    """The step's backward of weight_norm: 5 FLOPs per element of v and 3 per element of g, as
    the rule says (the step with that formula left at zero is 5 x 12 + 3 x 3 FLOPs short);
    nothing uncounted, the same on cpu and meta."""
    model = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))
    x = torch.randn(2, 4)
    steps = {device: profile(model, x, device=device, train=True, optimizer="sgd") for device in ("cpu", "meta")}
    assert steps["cpu"].uncounted_ops == {} and steps["cpu"].train_flops == steps["meta"].train_flops
    free = {"aten::_weight_norm_interface_backward": lambda call: Cost(0, 0)}
    without = profile(model, x, device="cpu", train=True, optimizer="sgd", formulas=free)
    assert steps["cpu"].train_flops - without.train_flops == 5 * 12 + 3 * 3


@pytest.mark.parametrize(
    ("name", "fn", "shapes", "macs", "flops"),
    [
        ("inner", torch.inner, ((3, 4), (5, 4)), 3 * 4 * 5, 2 * 60),
        ("tensordot", lambda a, b: torch.tensordot(a, b, dims=2), ((3, 4, 5), (4, 5, 6)), 3 * 20 * 6, 2 * 360),
        (
            "multi_dot",
            lambda a, b, c: torch.linalg.multi_dot([a, b, c]),
            ((2, 3), (3, 4), (4, 5)),
            2 * 3 * 4 + 2 * 4 * 5,  # (AB)C: the cheaper order for these shapes
            2 * 64,
        ),
        ("einsum-contract-two", lambda a, b: torch.einsum("ij,jk->ik", a, b), ((3, 4), (4, 5)), 60, 120),
        ("outer", torch.outer, ((3,), (4,)), 0, 12),  # products, nothing accumulated: elementwise
        ("kron", torch.kron, ((2, 3), (3, 2)), 0, 36),
        # two row norms (12 each), two clamps of the 3 norms, two divisions (12 each), product and sum (12 each)
        ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b), ((3, 4), (3, 4)), 0, 24 + 6 + 24 + 12 + 12),
    ],
)
def test_contractions_that_decompose_into_counted_ops(name, fn, shapes, macs, flops):
    """The walk of torch.ops.aten also found contractions that are CompositeImplicit: they reach
    the tracer as mm / mul / sum and are counted as those."""
    inputs = tuple(torch.randn(*shape) for shape in shapes)
    p = profile_both(Call(lambda m, *xs: fn(*xs)), inputs)
    assert (p.macs, p.flops) == (macs, flops)


# Scatters that combine: one FLOP per element combined; plain writes are free.
INDEX = torch.tensor([0, 1, 1, 3])


def scatter_case(name: str, fn: Any, flops: int, shapes: tuple = ((5,), (4,))) -> Case:
    return Case(name, lambda: Call(lambda m, s, x: fn(s, INDEX.to(x.device), x)), rs(*shapes), macs=0, flops=flops)


INDEXING = [
    scatter_case("scatter-plain", lambda s, i, x: s.scatter(0, i, x), flops=0),
    scatter_case("scatter-reduce-add", lambda s, i, x: s.scatter(0, i, x, reduce="add"), flops=4),
    scatter_case("scatter-value-multiply", lambda s, i, x: s.scatter(0, i, 2.0, reduce="multiply"), flops=4),
    scatter_case("scatter_add", lambda s, i, x: s.scatter_add(0, i, x), flops=4),
    scatter_case("scatter_add_-in-place", lambda s, i, x: s.clone().scatter_add_(0, i, x), flops=4),
    scatter_case("scatter_reduce-amax", lambda s, i, x: s.scatter_reduce(0, i, x, "amax"), flops=4),
    # a mean divides each of the 5 output elements once more
    scatter_case("scatter_reduce-mean", lambda s, i, x: s.scatter_reduce(0, i, x, "mean"), flops=4 + 5),
    scatter_case("index_add", lambda s, i, x: s.index_add(0, i, x), flops=4 * 3, shapes=((5, 3), (4, 3))),
    scatter_case(
        "index_add-alpha", lambda s, i, x: s.index_add(0, i, x, alpha=2), flops=2 * 12, shapes=((5, 3), (4, 3))
    ),
    # index_put: plain writes are free, accumulate adds each of the 4 x 3 rows' elements
    scatter_case("index_put-plain", lambda s, i, x: s.index_put((i,), x), flops=0, shapes=((5, 3), (4, 3))),
    scatter_case(
        "index_put-accumulate", lambda s, i, x: s.index_put((i,), x, accumulate=True), flops=12, shapes=((5, 3), (4, 3))
    ),
    scatter_case(
        "index_put-accumulate-broadcast",  # one value broadcast over the 4 x 3 elements selected
        lambda s, i, x: s.index_put((i,), x, accumulate=True),
        flops=12,
        shapes=((5, 3), (1,)),
    ),
    scatter_case(
        "setitem-accumulate",
        lambda s, i, x: s.clone().index_put_((i,), x, accumulate=True),
        flops=4,
        shapes=((5,), (4,)),
    ),
]


@pytest.mark.parametrize("case", LINEAR_ALGEBRA + INDEXING, ids=lambda case: case.id)
def test_op(case: Case):
    torch.manual_seed(0)
    p = profile_both(case.build(), case.inputs())
    assert (p.macs, p.flops, p.params) == (case.macs, case.flops, case.params)


def test_histc_and_pdist_are_counted():
    """histc bins each input element once; pdist works as cdist does, 3 FLOPs per feature per pair."""
    model = Call(lambda m, x: (torch.histc(x, bins=4), F.pdist(x)))
    p = profile_both(model, torch.randn(5, 3))
    pairs = 5 * 4 // 2
    assert p.flops == REDUCTION_COST * 15 + 3 * 3 * pairs


@pytest.mark.parametrize(
    ("a", "b", "dim", "products"),
    [
        ((3, 4), (3, 4), -1, 3 * 4),  # three dot products of length 4
        ((4, 3), (4, 1), 0, 3 * 4),  # over dim 0, b broadcast over the 3 columns
        ((5,), (5,), -1, 5),  # one dot product
    ],
)
def test_linalg_vecdot_counts_its_dot_products(a, b, dim, products):
    """``linalg.vecdot`` decomposes into a product and a sum before a dispatch mode sees it; while
    a profile runs it is routed through a batched matmul, so each product is one MAC (and 2 FLOPs,
    as its mul + sum were), on cpu and meta alike, and under torch.inference_mode too (which skips
    the autograd key the routing sits at: the tracer routes it then)."""
    x, y = torch.randn(a), torch.randn(b)
    model = Call(lambda m, x, y: torch.linalg.vecdot(x, y, dim=dim))
    p = profile_both(model, (x, y))
    assert (p.macs, p.flops) == (products, 2 * products)
    with torch.inference_mode():
        inferred = profile_both(model, (x, y))
    assert (inferred.macs, inferred.flops) == (products, 2 * products)
    assert torch.allclose(profile_output(model, x, y), torch.linalg.vecdot(x, y, dim=dim))


def profile_output(model: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """What the model returns while a profile runs (the routed vecdot), caught by a forward hook."""
    seen = []
    handle = model.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        profile(model, inputs)
    finally:
        handle.remove()
    return seen[0]


def test_linalg_vecdot_routing_keeps_gradients_and_ends_with_the_profile():
    """In a training step the gradient of w is again 3x4 products: forward 12 MACs + backward 12
    (the input needs no gradient); after the profile, vecdot takes its own path (a product and a
    sum) again, gradients included."""
    model = Call(lambda m, x: torch.linalg.vecdot(x, m.w), w=torch.randn(3, 4))
    p = profile(model, input_shape=(3, 4), train=True, optimizer="none")
    assert p.train_macs == 12 + 12

    class Ops(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    seen: list[str] = []
    with Ops():
        torch.linalg.vecdot(torch.randn(3, 4), torch.randn(3, 4))
    assert "bmm" not in " ".join(seen)
    # The registration stays for the process, answering as aten's composite: a product and a sum,
    # with their gradient (d/dx of sum(x * y) is y).
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.randn(3, 4)
    out = torch.linalg.vecdot(x, y)
    assert type(out.grad_fn).__name__ == "SumBackward1"
    assert torch.equal(out, (x * y).sum(-1))
    out.sum().backward()
    assert torch.equal(x.grad, y)


def test_grouped_mm_on_meta_in_float32():
    """PyTorch's meta kernel of _grouped_mm refuses float32 (a CUDA-only check); the engine
    gives the output's shape itself, so a float32 mixture of experts profiles on meta."""
    model = Call(lambda m, a: torch._grouped_mm(a, m.w, offs=offsets(2, 6)(a)), w=torch.randn(2, 8, 4))
    a = torch.randn(6, 8)
    with pytest.raises(RuntimeError, match="BF16"):
        torch._grouped_mm(a.to("meta"), model.w.to("meta"), offs=offsets(2, 6)(a.to("meta")))
    p = profile(model, a, device="meta")
    assert p.macs == 6 * 8 * 4
    assert p.layers[0].output_shapes == [[6, 4]]


@pytest.mark.parametrize(
    "fn, inputs, read",
    [
        # a list of tensors (cat): 2x3 + 4x3 float32
        (lambda m, x, y: torch.cat([x, y]), (torch.randn(2, 3), torch.randn(4, 3)), 24 + 48),
        # a list of optional tensors (index): the 2 int64 indices in the list, and as a gather the
        # 3x2 float32 elements it picks from the 3x4 source (not the whole source)
        (
            lambda m, x, i: torch.ops.aten.index.Tensor(x, [None, i]),
            (torch.randn(3, 4), torch.tensor([0, 2])),
            16 + 24,
        ),
        # an absent optional tensor and int lists (convolution): 1x2x4x4 and 3x2x3x3 float32
        (lambda m, x, w: F.conv2d(x, w), (torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3)), 128 + 216),
        # a bool condition beside two float32 operands (where)
        (
            lambda m, c, x, y: torch.where(c, x, y),
            (torch.ones(6, dtype=torch.bool), torch.randn(6), torch.randn(6)),
            54,
        ),
        # a scalar operand reads nothing (add.Scalar's other is a number)
        (lambda m, x: x + 2.0, (torch.randn(5),), 20),
    ],
    ids=["cat", "index", "conv", "where", "scalar"],
)
def test_bytes_read_by_every_kind_of_argument(fn, inputs, read):
    """Read bytes are the sizes of the tensors an op is given, directly, in a list or as an
    optional; the schema's int lists, numbers and absent tensors add nothing."""
    p = profile_both(Call(fn), inputs)
    assert p.layers[0].read_bytes == read
