"""Memory traffic and estimated latency (issue 23), every figure derived by hand.

Traffic is the bytes each op reads plus the bytes it writes, op by op (float32: 4 bytes an
element). Latency on a target is, per op, max(FLOPs / peak, bytes / bandwidth) + overhead.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import Call
from torch import nn

from pytest_netbudget import ServeSpec, budget, config, profile, targets
from pytest_netbudget.results import Bound

MIB = 2**20

# A made-up target: 1 TFLOP/s at fp32, 4 at bf16, 1 TB/s, no per-op overhead. Its ridge is
# 1 FLOP per byte: an op above it is compute-bound, below it memory-bound.
MADE_UP = targets.user_target("made-up", "", {"fp32": 1.0, "bf16": 4.0}, 1000.0, 0.0, "a test")


def both(model: nn.Module, inputs, **kwargs):
    """cpu and meta profiles, whose traffic and estimate must be identical."""
    cpu = profile(model, inputs, device="cpu", **kwargs)
    meta = profile(model, inputs, device="meta", **kwargs)
    for name in ("memory_access_mb", "latency_ms"):
        assert getattr(cpu, name) == getattr(meta, name), name
    assert [(row.read_bytes, row.write_bytes) for row in cpu.layers] == [
        (row.read_bytes, row.write_bytes) for row in meta.layers
    ]
    return cpu


def traffic(p) -> int:
    return sum(row.read_bytes + row.write_bytes for row in p.layers)


# --- memory traffic ----------------------------------------------------------------------------


def test_linear_reads_input_weight_and_bias_and_writes_its_output():
    # Linear(4, 3) on [2, 4]: reads input 2*4*4 = 32, weight 3*4*4 = 48, bias 3*4 = 12; writes 2*3*4 = 24
    p = both(nn.Linear(4, 3), torch.randn(2, 4))
    assert (p.layers[0].read_bytes, p.layers[0].write_bytes) == (32 + 48 + 12, 24)
    assert p.memory_access_mb == (32 + 48 + 12 + 24) / MIB


def test_convolution():
    # Conv2d(2, 3, 3) on [1, 2, 5, 5]: reads input 50*4 = 200, weight 3*2*3*3*4 = 216, bias 12;
    # writes 3 * 3*3 outputs * 4 = 108
    p = both(nn.Conv2d(2, 3, 3), torch.randn(1, 2, 5, 5))
    assert (p.layers[0].read_bytes, p.layers[0].write_bytes) == (200 + 216 + 12, 108)


def test_an_elementwise_chain_moves_every_intermediate():
    # x * y, + 1, relu over 10 elements: mul reads 40 + 40 and writes 40; add (a scalar) reads 40
    # and writes 40; relu reads 40 and writes 40. Unfused: 120 + 80 + 80 = 280 bytes.
    p = both(Call(lambda m, x, y: torch.relu(x * y + 1)), (torch.randn(10), torch.randn(10)))
    assert traffic(p) == 280


def test_an_in_place_op_writes_no_fresh_output():
    """relu_ reads its tensor and writes it back: the same bytes as relu, but no new tensor, so
    the activation peak stays at one tensor where relu's holds two."""
    inputs = (torch.randn(10),)
    in_place = both(Call(lambda m, x: torch.relu_(x.clone())), inputs)
    out_of_place = both(Call(lambda m, x: torch.relu(x.clone())), inputs)
    # clone reads 40 and writes 40; relu_ (or relu) reads 40 and writes 40
    assert traffic(in_place) == traffic(out_of_place) == 160
    assert in_place.activations_mb == 40 / MIB
    assert out_of_place.activations_mb == 80 / MIB


def test_a_view_moves_no_bytes():
    p = both(Call(lambda m, x: x.view(2, 5).t().unsqueeze(0)), (torch.randn(10),))
    assert traffic(p) == 0


@pytest.mark.parametrize(
    "fn, inputs, moved, weights",
    [
        # empty_like allocates and writes nothing; copy_ reads its source 40, writes 40 (not reading the destination)
        (lambda m, x: torch.empty_like(x).copy_(x), (torch.randn(10),), 80, {}),
        # zeros_like reads nothing of its template, writes 40
        (lambda m, x: torch.zeros_like(x), (torch.randn(10),), 40, {}),
        # out=: reads x and y (80), writes the out tensor (40), never reads it
        (lambda m, x, y: torch.add(x, y, out=torch.empty_like(x)), (torch.randn(10), torch.randn(10)), 120, {}),
        # an embedding reads its 2 int64 indices (16) and the 2 rows it picks (2*4*4 = 32), not the
        # whole 100-row table, and writes the 32 bytes of rows
        (lambda m, i: F.embedding(i, m.w), (torch.tensor([1, 2]),), 16 + 32 + 32, {"w": torch.randn(100, 4)}),
        # x.t().reshape(10) copies (reads 40, writes 40); the reshape's alias of the copy moves nothing
        (lambda m, x: x.t().reshape(10), (torch.randn(2, 5),), 80, {}),
    ],
    ids=["copy_", "zeros_like", "out", "embedding", "reshape-copy"],
)
def test_what_an_op_moves(fn, inputs, moved, weights):
    assert traffic(both(Call(fn, **weights), inputs)) == moved


def test_a_models_traffic_is_the_sum_of_its_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 8, 8))
    p = both(model, torch.randn(1, 3, 8, 8), target=MADE_UP)
    assert p.memory_access_mb == sum(row.memory_access_mb for row in p.layers)
    assert p.memory_access_mb == traffic(p) / MIB
    assert p.latency_ms == sum(row.latency_ms for row in p.layers)
    for row in p.layers:
        parts = row.roofline
        assert row.latency_ms == parts.compute_ms + parts.memory_ms + parts.overhead_ms


def test_a_training_step_has_its_own_traffic():
    # A training step of Linear(4, 3) on [2, 4] moves more than its forward's 116 bytes
    # (the backward's matmuls and the optimizer's updates read and write the weights again).
    p = profile(nn.Linear(4, 3), torch.randn(2, 4), device="cpu", train=True, optimizer="sgd")
    assert p.train_memory_access_mb > p.memory_access_mb == 116 / MIB
    assert p.train_memory_access_mb == sum(row.train_memory_access_mb for row in p.layers)


# --- estimated latency ---------------------------------------------------------------------------


def test_a_gemm_lands_on_its_compute_roof():
    # [64, 64] @ [64, 64]: 2 * 64**3 = 524,288 FLOPs over 3 * 64*64*4 = 49,152 bytes (10.7 FLOP/B, above
    # the ridge of 1): 524,288 / 1e12 s = 5.24288e-4 ms
    p = both(Call(lambda m, a, b: a @ b), (torch.randn(64, 64), torch.randn(64, 64)), target=MADE_UP)
    assert p.latency_ms == pytest.approx(2 * 64**3 / 1e12 * 1e3, rel=1e-12)
    assert p.layers[0].bound is Bound.COMPUTE
    assert p.layers[0].intensity == pytest.approx(2 * 64**3 / 49_152)


def test_a_large_elementwise_add_lands_on_its_bandwidth_roof():
    # 2**20 + 2**20 -> 2**20 float32: 3 * 4 MiB = 12,582,912 bytes over 1e12 B/s = 1.2582912e-2 ms;
    # its 2**20 FLOPs would take 1.05e-3 ms at the peak
    n = 2**20
    p = both(Call(lambda m, x, y: x + y), (torch.randn(n), torch.randn(n)), target=MADE_UP)
    assert p.latency_ms == pytest.approx(3 * 4 * n / 1e12 * 1e3, rel=1e-12)
    assert p.layers[0].bound is Bound.MEMORY


def test_each_op_pays_the_targets_overhead():
    # the same add on a target with 2 us per op: one op, so + 0.002 ms
    slow = targets.user_target("slow", "", {"fp32": 1.0}, 1000.0, 2.0, "a test")
    n = 2**20
    p = both(Call(lambda m, x, y: x + y), (torch.randn(n), torch.randn(n)), target=slow)
    assert p.latency_ms == pytest.approx(3 * 4 * n / 1e12 * 1e3 + 0.002, rel=1e-12)
    assert p.roofline.overhead_ms == pytest.approx(0.002)


def test_an_op_family_takes_its_roofline_time_over_its_efficiency():
    # the GEMM on the made-up target whose linalg kernels attain half the roof: 2 * 5.24288e-4 ms;
    # the add (elementwise, no share given) keeps its bandwidth time
    half = targets.user_target("half", "", {"fp32": 1.0}, 1000.0, 0.0, "a test", {"linalg": 0.5, "conv": 0.1})
    gemm = both(Call(lambda m, a, b: a @ b), (torch.randn(64, 64), torch.randn(64, 64)), target=half)
    assert gemm.latency_ms == pytest.approx(2 * 64**3 / 1e12 * 1e3 / 0.5, rel=1e-12)
    add = both(Call(lambda m, x, y: x + y), (torch.randn(1024), torch.randn(1024)), target=half)
    assert add.latency_ms == pytest.approx(3 * 4 * 1024 / 1e12 * 1e3, rel=1e-12)


def test_a_gemm_runs_at_the_peak_of_its_dtype():
    # the same GEMM in bfloat16: 524,288 FLOPs at 4e12 FLOP/s (1.31e-4 ms); its 24,576 bytes take
    # 2.46e-5 ms at 1 TB/s, so it stays compute-bound
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    p = both(Call(lambda m, a, b: a @ b), (a, b), target=MADE_UP, dtype="bfloat16")
    assert p.latency_ms == pytest.approx(2 * 64**3 / 4e12 * 1e3, rel=1e-12)


def test_float32_matmuls_take_the_tf32_peak_where_pytorch_may_use_it():
    tf32 = targets.user_target("tf32-part", "", {"fp32": 1.0, "tf32": 8.0}, 1000.0, 0.0, "a test")
    model, inputs = Call(lambda m, a, b: a @ b), (torch.randn(64, 64), torch.randn(64, 64))
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        p = profile(model, inputs, device="meta", target=tf32)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert p.latency_ms == pytest.approx(2 * 64**3 / 8e12 * 1e3, rel=1e-12)
    assert profile(model, inputs, device="meta", target=tf32).latency_ms == pytest.approx(2 * 64**3 / 1e12 * 1e3)


def test_a_layer_sums_its_ops_times_not_its_totals():
    """Linear then ReLU in one module: the GEMM is compute-bound and the ReLU memory-bound, so the
    module's time is the sum of each op's roof, more than max(total FLOPs / peak, total bytes / bw)."""
    w = torch.randn(256, 256)
    model = Call(lambda m, x: torch.relu(x @ m.w), w=w)
    p = both(model, (torch.randn(256, 256),), target=MADE_UP)
    gemm_flops, gemm_bytes = 2 * 256**3, 3 * 256 * 256 * 4  # 1.34e-5 s vs 7.9e-7 s: compute-bound
    relu_flops, relu_bytes = 256 * 256, 2 * 256 * 256 * 4  # 6.6e-8 s vs 5.2e-7 s: memory-bound
    assert p.latency_ms == pytest.approx((gemm_flops / 1e12 + relu_bytes / 1e12) * 1e3, rel=1e-12)
    assert p.roofline.compute_ms == pytest.approx(gemm_flops / 1e12 * 1e3)
    assert p.roofline.memory_ms == pytest.approx(relu_bytes / 1e12 * 1e3)
    whole = max((gemm_flops + relu_flops) / 1e12, (gemm_bytes + relu_bytes) / 1e12) * 1e3
    assert p.latency_ms > whole
    assert p.layers[0].bound is Bound.COMPUTE


def test_no_target_no_estimate():
    p = profile(nn.Linear(4, 3), torch.randn(2, 4), device="meta")
    assert (p.latency_ms, p.target, p.layers[0].bound) == (None, None, None)
    assert "Estimated latency" not in p.table()


def test_a_built_in_target_by_name_and_in_the_table():
    p = profile(nn.Linear(4, 3), torch.randn(2, 4), device="meta", target="a100")
    assert (p.target.name, p.target.version) == ("a100", targets.TABLE_VERSION)
    # one addmm: 116 bytes at 2,039 GB/s and 2 us of overhead
    assert p.latency_ms == pytest.approx((116 / 2039e9 + 2e-6) * 1e3)
    table = p.table()
    assert "Latency ms" in table and "Bound" in table
    assert "Estimated latency on NVIDIA A100 SXM4 80GB (target a100, table 1)" in table
    with pytest.raises(targets.TargetError, match="did you mean 'a100'"):
        profile(nn.Linear(4, 3), torch.randn(2, 4), device="meta", target="a10O")


# --- a pull request that swaps a convolution for a depthwise-separable pair ------------------------

SWAP_MODELS = """
from torch import nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        if {separable}:
            self.conv = nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.Conv2d(32, 32, 1, bias=False)
            )
        else:
            self.conv = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False))

    def forward(self, x):
        return self.conv(x)
# {separable}
"""

SWAP_TOML = """
[tool.netbudget.models.block]
factory = "mymodels:Block"
input_shape = [1, 32, 56, 56]
target = "a100"
max_macs = "40M"
max_memory_access_mb = 4
max_latency_ms = 1
max_increase = { memory_access_mb = "2%" }
"""


def test_a_depthwise_separable_swap_shows_macs_falling_traffic_rising_and_the_latency(pytester, project):
    """By hand, on [1, 32, 56, 56] float32 (3,136 positions; a tensor of it is 401,408 bytes), on
    the A100 (19.5 TFLOP/s fp32, 2,039 GB/s, 2 us an op; its ridge is 9.6 FLOP/B):
    - 3x3 conv 32 -> 32: 32*3136*32*9 = 28,901,376 MACs; moves 401,408 + 36,864 (weight) + 401,408
      = 839,680 B (0.801 MiB); 57.8 MFLOP / 19.5e12 = 2.964 us > 0.412 us of memory: compute-bound,
      4.96 us with the overhead;
    - depthwise 3x3: 32*3136*9 = 903,168 MACs; 401,408 + 1,152 + 401,408 = 803,968 B (0.767 MiB),
      0.394 us of memory > 0.093 us of compute: memory-bound, 2.39 us;
    - pointwise 1x1: 32*3136*32 = 3,211,264 MACs; 401,408 + 4,096 + 401,408 = 806,912 B (0.770 MiB),
      0.396 us of memory > 0.329 us of compute: memory-bound, 2.40 us.
    MACs fall 28.9M -> 4.11M, traffic rises 0.801 -> 1.536 MiB (the intermediate is written and read
    again), the estimate falls 4.96 -> 4.79 us: two launches, each mostly overhead."""
    pytester.syspathinsert()
    project(SWAP_TOML, models=SWAP_MODELS.format(separable=False))
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    project(SWAP_TOML, models=SWAP_MODELS.format(separable=True))
    result = pytester.runpytest("--netbudget", "--netbudget-report=pr.md")
    assert result.ret == 1  # traffic grew more than the 2% allowed
    result.stdout.re_match_lines(
        [
            r"^block grew more than max_increase allows over its baseline$",
            r"^\s+macs\s+40\.0M\s+4\.11M\s+28\.9M\s+-25M \(-85\.8%\)",
            r"^\s+memory_access_mb\s+4\.000\s+1\.536\s+0\.801\s+\+0\.735 \(\+91\.8%\)\s+grew",
            r"^\s+latency_ms\s+1\.00\s+0\.00479\s+0\.00496\s+-0\.00017 \(-3\.5%\)\s+ok$",
            r"^\s+layer\s+change\s+params\s+macs\s+flops\s+memory_access_mb\s+latency_ms\s+bound$",
            r"^\s+conv\.0 \(Conv2d\)\s+resized\s+9\.22k -> 288\s+28\.9M -> 903k\s+57\.8M -> 1\.81M\s+"
            r"0\.801 -> 0\.767\s+0\.00496 -> 0\.00239\s+compute -> memory$",
            r"^\s+conv\.1 \(Conv2d\)\s+added\s+- -> 1\.02k\s+- -> 3\.21M\s+- -> 6\.42M\s+- -> 0\.770\s+"
            r"- -> 0\.00240\s+- -> memory$",
        ]
    )
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    assert "| layer | change | params | macs | flops | memory_access_mb | latency_ms | bound |" in markdown
    assert "| 0.801 -> 0.767 | 0.00496 -> 0.00239 | compute -> memory |" in markdown


# --- a check from a test: its target ---------------------------------------------------------------

MADE_UP_TOML = """
[tool.netbudget.targets.made-up]
peak_tflops = { fp32 = 1 }
bandwidth_gbs = 1000
"""

TARGET_CHECKS = """
import pytest
import torch
from torch import nn

from pytest_netbudget import targets

GEMM = (64, 64)  # Linear(64, 64, bias=False) on [64, 64]: one 64x64x64 matmul

def gemm():
    return nn.Linear(64, 64, bias=False)

def test_named(netbudget):
    netbudget.check(gemm(), input_shape=GEMM, target="made-up", max_latency_ms=0.0005)

@pytest.mark.netbudget(target="made-up", max_latency_ms=0.0006)
def test_marker(netbudget):
    netbudget.check(gemm(), input_shape=GEMM)

def test_object(netbudget):
    half = targets.user_target("half", "", {"fp32": 0.5}, 1000.0, 0.0, "a test")
    netbudget.check(gemm(), input_shape=GEMM, target=half, max_latency_ms=0.001)

def test_default(netbudget):
    netbudget.check(gemm(), input_shape=GEMM, max_latency_ms=0.0005)

def test_profile(netbudget):
    assert netbudget.profile(gemm(), input_shape=GEMM, target="made-up").latency_ms == pytest.approx(2 * 64**3 / 1e9)
"""


def test_a_checks_latency_budget_is_estimated_on_its_target(pytester, project):
    """A check's ``max_latency_ms`` on the project's made-up target (1 TFLOP/s fp32, 1 TB/s, no
    overhead; ridge 1 FLOP/B). The GEMM: 2 * 64**3 = 524,288 FLOPs over 3 * 64*64*4 = 49,152 bytes
    (10.7 FLOP/B): compute-bound, 524,288 / 1e12 s = 0.000524288 ms (its bytes would take 0.0000492).
    - target="made-up" in check(), budget 0.0005 ms: over by 0.000024 (results keep ms to 6
      decimals, whole nanoseconds: 0.000524);
    - target="made-up" in the marker, budget 0.0006: within;
    - a targets.Target of half the peak (0.5 TFLOP/s): 0.00104858 ms (0.001049 kept), over its 0.001;
    - no target anywhere: the budget cannot be estimated, an error that says what to add.
    Before checks took a target, every one of these passed with the latency "no target"."""
    project(MADE_UP_TOML)
    pytester.makepyfile(test_checks=TARGET_CHECKS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.re_match_lines(
        [
            r"^test_checks\.py::test_named exceeds its budget$",
            r"^\s+latency_ms\s+0\.000500\s+0\.000524\s+\+0\.0000240 \(\+4\.8%\)$",
        ]
    )
    result.stdout.re_match_lines([r"^\s+latency_ms\s+0\.00100\s+0\.00105\s+\+0\.0000490 \(\+4\.9%\)$"])
    no_target = (
        "test_checks.py::test_default: netbudget limits max_latency_ms: budgets an estimated latency, but the "
        'model has no target: pass target="a100", or set target under [tool.netbudget]'
    )
    result.stdout.re_match_lines([rf"^\s+{re.escape(no_target)}"])
    result.stdout.re_match_lines([r"^test_checks\.py::test_marker\s+pass\s+latency_ms 0\.000524 / 0\.000600"])


def test_a_check_takes_the_projects_target_as_a_registered_model_does(pytester, project):
    """With ``target = "made-up"`` under [tool.netbudget], the check without a target of its own is
    estimated there: 0.000524 ms over its 0.0005 (see the test above); with --netbudget too."""
    project(MADE_UP_TOML, top='device = "cpu"\ntarget = "made-up"')
    pytester.makepyfile(test_checks=TARGET_CHECKS)
    for options in ((), ("--netbudget",)):
        result = pytester.runpytest("-p", "no:cacheprovider", "-k", "default or profile", *options)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.re_match_lines(
            [
                r"^test_checks\.py::test_default exceeds its budget$",
                r"^\s+latency_ms\s+0\.000500\s+0\.000524\s+\+0\.0000240 \(\+4\.8%\)$",
            ]
        )


def test_a_checks_target_must_exist():
    with pytest.raises(ValueError, match=r"budget\(\): target: must be a target's name"):
        budget(target=3, max_latency_ms=1)
    assert budget(target="mine-defined-in-pyproject", max_latency_ms=1).kwargs["target"] == "mine-defined-in-pyproject"


# --- a serving step's decode step on a target ----------------------------------------------------------


class TinyDecoder(nn.Module):
    """One Llama-style block without norms or rotary: d 16, 2 heads of 8, a gated MLP of 32, vocabulary 32,
    no biases; its cache a (keys, values) pair, each [heads, tokens, head_dim]. Batch 1."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(16, 32, bias=False), nn.Linear(16, 32, bias=False)
        self.down = nn.Linear(32, 16, bias=False)
        self.lm_head = nn.Linear(16, 32, bias=False)

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        x = self.embed(input_ids)  # [1, T, 16]
        tokens = x.shape[1]
        q, k, v = (proj(x).view(tokens, 2, 8).transpose(0, 1) for proj in (self.q, self.k, self.v))
        if past_key_values is not None:
            k = torch.cat([past_key_values[0], k], dim=1)
            v = torch.cat([past_key_values[1], v], dim=1)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        attended = torch.bmm(weights, v).transpose(0, 1).reshape(1, tokens, 16)
        h = x + self.o(attended)
        h = h + self.down(nn.functional.silu(self.gate(h)) * self.up(h))
        return self.lm_head(h), (k, v)


# A made-up part whose memory is slow: 1 TFLOP/s fp32, 1 GB/s, 1 us an op. An op is compute-bound only
# above 1,000 FLOPs per byte, so every op of a decode step is memory-bound.
SLOW_MEMORY = targets.user_target("slow-memory", "", {"fp32": 1.0}, 1.0, 1.0, "a test")


def test_the_decode_steps_estimate_is_its_weights_and_cache_bytes_over_the_bandwidth():
    """One decode step at context 8 (float32; the new token's x, q, k, v are 16 floats, 64 bytes), op by op,
    (read + written) bytes:
    - embedding: the id (8) and the row it picks (64), writes 64: 136;
    - q, k, v, o: each an mm reading x (64) and its 16x16 weight (1,024), writing 64: 4 x 1,152;
    - the cache: a cat per k and v reads the 8 cached tokens [2, 8, 8] (512) and the new one (64), writes
      [2, 9, 8] (576): 2 x 1,152;
    - scores bmm: q (64) and the keys (576), writes [2, 1, 9] (72): 712; softmax 72 + 72: 144;
      bmm with the values: 72 + 576, writes 64: 712;
    - two residual adds (64 + 64 -> 64): 2 x 192;
    - gate and up: 64 + 2,048 -> 128: 2 x 2,240; silu 128 -> 128: 256; their product 256 -> 128: 384;
      down 128 + 2,048 -> 64: 2,240; lm_head 64 + 2,048 -> 128: 2,240.
    18,600 bytes in 18 ops (views and the reshapes move nothing and launch nothing), of which the weights are
    4 x 1,024 + 4 x 2,048 = 12,288 and the cache's 2 x (512 + 576 + 576) = 3,328 (read by the cats and the
    bmms): 85%. At 1 GB/s and 1 us an op: 18.6 us + 18 us = 0.0366 ms, all memory-bound. The model's own
    row (the cats, bmms, softmax, adds, silu and product: 4,896 bytes in 9 ops) takes 0.013896 ms, lm_head's
    2,240 bytes 0.00324 ms."""
    inputs = torch.randint(0, 32, (1, 8))
    spec = ServeSpec(context=8)
    for device in ("cpu", "meta"):
        p = profile(TinyDecoder(), inputs, device=device, serve=spec, target=SLOW_MEMORY)
        assert p.decode_latency_ms == pytest.approx((18_600 / 1e9 + 18e-6) * 1e3, rel=1e-12)
        decode = p.serve.decode
        assert decode.latency_ms == p.decode_latency_ms
        assert (decode.roofline.compute_ms, decode.roofline.memory_ms) == (0, pytest.approx(18_600 / 1e9 * 1e3))
        assert all(row.bound in (Bound.MEMORY, None) for row in decode.layers)
        rows = {row.name: row.decode_latency_ms for row in p.layers}
        assert rows["(model)"] == pytest.approx((4_896 / 1e9 + 9e-6) * 1e3)
        assert rows["lm_head"] == pytest.approx((2_240 / 1e9 + 1e-6) * 1e3)
        assert sum(rows.values()) == pytest.approx(p.decode_latency_ms, rel=1e-12)
    table = p.table()
    assert "Decode ms" in table
    assert "decode (1 token x 1): MACs 3,360 (3.36k), FLOPs 6.87k, estimated 0.0366 ms a step (a roofline)" in table
    without = profile(TinyDecoder(), inputs, device="meta", serve=spec)
    assert without.decode_latency_ms is None and "Decode ms" not in without.table()


def test_the_decode_step_reads_the_weights_at_their_planned_precision():
    """The same step with weights = "int8" (per output row, no group size: one 16-bit scale a row): a 16x16
    projection holds 256 + 16 * 2 = 288 bytes instead of 1,024, gate and up (32x16) 512 + 64 = 576 instead
    of 2,048, down (16x32) 512 + 32 = 544, lm_head 576. The reads of them save 4 * 736 + 2 * 1,472 + 1,504
    + 1,472 = 8,864 bytes: 9,736 in 18 ops, 0.027736 ms; lm_head's row 768 bytes, 0.001768 ms. The embedding's
    gather reads the row it picks as the model holds it (64 bytes), and the cache is read as held."""
    inputs = torch.randint(0, 32, (1, 8))
    for device in ("cpu", "meta"):
        p = profile(
            TinyDecoder(), inputs, device=device, serve=ServeSpec(context=8, weights="int8"), target=SLOW_MEMORY
        )
        assert p.decode_latency_ms == pytest.approx((9_736 / 1e9 + 18e-6) * 1e3, rel=1e-12)
        assert p.serve.decode.memory_access_mb == pytest.approx(9_736 / MIB, rel=1e-12)
        assert {row.name: row.decode_latency_ms for row in p.layers}["lm_head"] == pytest.approx(0.001768)
        assert p.weights_mb == pytest.approx((576 + 4 * 288 + 2 * 576 + 544 + 576) / MIB)  # the same plan
    # the forward and its estimate are the model's own: the plan is the serving step's
    assert p.latency_ms == profile(TinyDecoder(), inputs, device="meta", target=SLOW_MEMORY).latency_ms


DECODER_MODULE = "from test_latency import TinyDecoder\n"

DECODER_TOML = """
[tool.netbudget.targets.slow-memory]
peak_tflops = {{ fp32 = 1 }}
bandwidth_gbs = 1
op_overhead_us = 1

[tool.netbudget.models.decoder]
factory = "mymodels:TinyDecoder"
inputs = [{{ shape = [1, 8], dtype = "int64", high = 32 }}]
target = "slow-memory"
serve = {{ context = {context} }}
max_decode_latency_ms = {budget}
max_increase = {{ decode_latency_ms = "0" }}
"""


def test_the_decode_steps_estimate_is_a_budget_a_baseline_entry_and_grows_with_the_context(pytester, project):
    """The decoder above on the slow-memory part: 0.0366 ms at context 8. At context 16 the cats read 16
    cached tokens (1,024 bytes) and write 17 (1,088): +1,024 bytes each; the scores bmm reads the 17 keys
    (+512) and writes 17 scores (+64); softmax +64 + 64; the values bmm reads 17 scores and values
    (+64 + 512): +3,328 bytes in all, all in the model's own row, so 21,928 bytes and 0.039928 ms (that row
    0.013896 -> 0.017224 ms). A budget of 0.035 ms is exceeded; max_increase = 0 catches the growth, and
    the layer diff names the row."""
    pytester.syspathinsert()
    project(DECODER_TOML.format(context=8, budget=0.05), models=DECODER_MODULE)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entry = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]["decoder"]
    assert entry["totals"]["decode_latency_ms"] == 0.0366
    assert entry["layers"]["(model)"]["decode_latency_ms"] == 0.013896

    project(DECODER_TOML.format(context=16, budget=0.05), models=DECODER_MODULE)
    grew = pytester.runpytest("--netbudget", "--netbudget-report=pr.md")
    assert grew.ret == 1
    grew.stdout.re_match_lines(
        [
            r"^\s+decode_latency_ms\s+0\.0500\s+0\.0399\s+0\.0366\s+\+0\.0033 \(\+9\.1%\)\s+grew",
            r"^\s+\(model\) \(TinyDecoder\)\s+resized\s.*0\.0139 -> 0\.0172",
        ]
    )
    assert "estimated 0.0399 ms a step (a roofline)" in (pytester.path / "pr.md").read_text(encoding="utf-8")

    project(DECODER_TOML.format(context=8, budget=0.035), models=DECODER_MODULE)
    over = pytester.runpytest("--netbudget")
    assert over.ret == 1
    over.stdout.re_match_lines([r"^\s+decode_latency_ms\s+0\.0350\s+0\.0366\s"])


def test_a_decode_latency_budget_needs_a_target_and_a_serving_step(tmp_path):
    path = tmp_path / "pyproject.toml"
    model = '[tool.netbudget.models.m]\nfactory = "pkg:M"\ninput_shape = [1, 4]\nmax_decode_latency_ms = 1\n'
    for extra, message in (
        ('target = "a100"\n', "max_decode_latency_ms: budgets a serving step, but the model has none"),
        (
            "serve = { context = 8 }\n",
            "max_decode_latency_ms: budgets an estimated latency, but the model has no target",
        ),
    ):
        path.write_text(model + extra, encoding="utf-8")
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            config.load_settings(path)
