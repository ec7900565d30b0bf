"""Figures that a device cannot give exactly are marked, never silently different (issue 21).

A grouped matrix product (the experts of a mixture-of-experts layer) computes up to its last group
offset; on meta the offsets have no values, so the engine counts every row, the most the op could
do, and marks the figures it went into as upper bounds: in the profile (typed, through ``to_dict``
and pytest-xdist), the per-layer table, ``netbudget show``, the terminal summary, and the Markdown,
JSON and HTML reports. A marked figure is judged as it stands: a budget it keeps is surely kept.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from reference_models import SpecCNN
from torch import nn

from pytest_netbudget import Cost, cli, profile
from pytest_netbudget.budgets import Result, Verdict, judge
from pytest_netbudget.html_report import html_report
from pytest_netbudget.reports import Report, failure_text, markdown, next_steps, summary_lines, to_json
from pytest_netbudget.results import Profile, RecordError, UpperBound

ROWS, FEATURES, OUT = 512, 8, 4  # 512 tokens of 8 features, two experts of [8, 4]
ENDS = (128, 384)  # the groups: rows 0-127 to expert 0, 128-383 to expert 1; 384-511 to none

MODULES = """
import torch
from torch import nn


class Experts(nn.Module):
    '''Two experts of [8, 4] over 512 rows whose groups end at 128 and 384.'''

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 8, 4))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        offsets = torch.tensor([128, 384], dtype=torch.int32, device=a.device)
        return torch._grouped_mm(a, self.w, offs=offsets)


class MoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.experts = Experts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(self.proj(x))


def moe() -> MoE:
    torch.manual_seed(0)
    return MoE()
"""
namespace: dict = {}
exec(compile(MODULES, "moe_models", "exec"), namespace)  # the same source the pytester projects import
MoE = namespace["MoE"]

# By hand. proj: Linear(8, 8) over 512 rows, 512 x 8 x 8 MACs, its bias 512 x 8 FLOPs. The experts:
# 384 rows x 8 x 4 where the offsets have values (cpu), all 512 rows on meta.
PROJ_MACS = ROWS * FEATURES * FEATURES  # 32,768
EXPERT_MACS = {"cpu": ENDS[-1] * FEATURES * OUT, "meta": ROWS * FEATURES * OUT}  # 12,288 and 16,384
REASON = (
    "aten._grouped_mm on meta: its group offsets have no values there, so what lies past the last group's end is "
    "counted too (cpu and cuda stop at the last offset)"
)


def test_grouped_mm_on_meta_marks_its_macs_and_flops_as_upper_bounds():
    cpu = profile(MoE(), input_shape=(ROWS, FEATURES), device="cpu")
    meta = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta")
    for device, p in (("cpu", cpu), ("meta", meta)):
        assert p.macs == PROJ_MACS + EXPERT_MACS[device]
        assert p.flops == 2 * p.macs + ROWS * FEATURES  # 2 a MAC, and proj's bias
    assert (cpu.macs, meta.macs) == (45_056, 49_152)
    assert cpu.upper_bounds == ()
    assert meta.upper_bounds == (UpperBound(REASON, ("macs", "flops"), ("experts",)),)
    assert meta.upper_bound_of("macs") == meta.upper_bound_of("flops") == [REASON]
    assert meta.upper_bound_of("params") == meta.upper_bound_of("activations_mb") == []
    assert meta.upper_bound_of("macs", "experts") == [REASON]
    assert meta.upper_bound_of("macs", "proj") == []
    assert meta.upper_bound_of("macs", "") == []  # the model's own row holds no work of its own
    assert meta.upper_bound_of("macs", "", folded=True) == [REASON]  # folded, it holds the experts'
    # Every other figure is cpu's: the marked ones are the only ones that differ. The offsets, a
    # tensor made from Python data (torch.tensor), are a constant on both devices: meta makes them
    # without any op, cpu through lift_fresh, which counted their 8 bytes as an activation before.
    # Live at the peak: proj's output [512, 8] and the experts' [512, 4] in float32.
    assert meta.activations_mb == cpu.activations_mb == ROWS * (FEATURES + OUT) * 4 / 2**20
    assert meta.memory_access_mb == cpu.memory_access_mb
    assert {name: stats.calls for name, stats in meta.ops.items()} == {
        name: stats.calls for name, stats in cpu.ops.items()
    }


def test_the_per_layer_table_marks_the_rows_and_totals_that_are_upper_bounds():
    table = str(profile(MoE(), input_shape=(ROWS, FEATURES), device="meta"))
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith(("  proj", "  experts"))}
    assert "≤16.4k" in rows["experts"] and "≤32.8k" in rows["experts"]  # 16,384 MACs, 2 x 16,384 FLOPs
    assert "≤" not in rows["proj"]
    assert "MACs: ≤49,152 (49.2k)" in table and "FLOPs: ≤102,400 (102k)" in table
    assert f"≤ upper bound (macs, flops; the exact figure is at most this) in experts: {REASON}" in table
    folded = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta").table(depth=0)
    assert "≤49.2k" in folded.splitlines()[2]  # the model's row, folded: proj's and the experts' work
    assert "≤" not in str(profile(MoE(), input_shape=(ROWS, FEATURES), device="cpu"))


def test_a_training_step_and_an_estimate_on_meta_are_marked_too():
    """The step on meta, by hand: proj's forward 32,768 MACs and its weight's gradient 8 x 512 x 8 =
    32,768 (its input needs none); the experts' forward, their input's gradient ([512, 4] by [4, 8])
    and their weights' gradient ([8, 512] by [512, 4], the groups splitting the 512) are each
    512 x 8 x 4 = 16,384 MACs over every row on meta (the estimate's time follows its FLOPs). On cpu
    PyTorch 2.13's kernel has no backward for this layout (a bare step fails: "Invalid
    strides/sizes"), so the exact step is there to be had on cuda alone."""
    meta = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta", train=True, target="a100")
    assert meta.train_macs == 2 * PROJ_MACS + 3 * EXPERT_MACS["meta"] == 114_688
    assert meta.upper_bounds == (
        UpperBound(REASON, ("macs", "flops", "latency_ms", "train_macs", "train_flops"), ("experts",)),
    )
    assert profile(MoE(), input_shape=(ROWS, FEATURES), device="cpu", target="a100").upper_bounds == ()


def test_a_model_without_such_ops_has_no_upper_bounds():
    p = profile(SpecCNN(), input_shape=(1, 1, 28, 28), device="meta", train=True)
    assert p.upper_bounds == ()
    assert "upper_bounds" not in p.to_dict()
    assert "≤" not in str(p)
    verdict = judge(Result("cnn", profile=p))
    assert verdict.upper_bounds == ()
    assert "≤" not in "\n".join(summary_lines([verdict])) and "upper bound" not in markdown(Report([verdict]))


def test_a_formula_of_ones_own_can_mark_its_cost_an_upper_bound():
    """The mechanism is the formulas' own: ``Cost(upper_bound=...)`` says why, in words."""

    class Scan(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    def early_exit(module, inputs, output):
        """A scan that stops early: at most 10 MACs."""
        return Cost(macs=10, upper_bound="Scan stops at the first match, which meta cannot know")

    p = profile(nn.Sequential(Scan()), input_shape=(1, 4), device="meta", formulas={Scan: early_exit})
    assert (p.macs, p.flops) == (10, 20)
    assert p.upper_bounds == (
        UpperBound("Scan stops at the first match, which meta cannot know", ("macs", "flops"), ("0",)),
    )
    with pytest.raises(Exception, match=r"upper_bound says in words why the cost is one"):
        profile(nn.Sequential(Scan()), input_shape=(1, 4), formulas={Scan: lambda m, i, o: Cost(1, upper_bound=5)})


def test_upper_bounds_travel_through_to_dict_and_a_json_report():
    p = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta")
    data = json.loads(json.dumps(p.to_dict()))
    assert data["upper_bounds"] == [{"reason": REASON, "metrics": ["macs", "flops"], "layers": ["experts"]}]
    assert Profile.from_dict(data) == p
    verdict = judge(Result("moe", limits={"macs": 60_000.0}, profile=p))
    record = json.loads(to_json(Report([verdict])))["models"]["moe"]
    assert record["upper_bounds"] == data["upper_bounds"]
    again = Verdict.from_dict("moe", record)
    assert again.upper_bounds == p.upper_bounds
    assert summary_lines([again]) == summary_lines([verdict])


@pytest.mark.parametrize(
    ("bounds", "problem"),
    [
        ("all", "models.moe.upper_bounds: expected a list"),
        ([{"reason": 3, "metrics": [], "layers": []}], "models.moe.upper_bounds[0].reason: expected a string, got 3"),
        ([{"reason": "r", "metrics": ["mac"], "layers": []}], 'models.moe.upper_bounds[0].metrics: "mac" is not a'),
        ([{"reason": "r", "metrics": ["macs"], "layers": [1]}], "models.moe.upper_bounds[0].layers[0]: expected a"),
    ],
)
def test_a_report_with_broken_upper_bounds_is_refused_by_path(bounds, problem):
    p = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta")
    record = json.loads(to_json(Report([judge(Result("moe", profile=p))])))["models"]["moe"]
    record["upper_bounds"] = bounds
    with pytest.raises(RecordError, match="^" + problem.replace("[", r"\[").replace("]", r"\]")):
        Verdict.from_dict("moe", record)


def test_a_marked_figure_is_judged_as_it_stands_and_the_failure_says_so():
    """49,152 MACs on meta, at most that: within max_macs = 50k it surely passes; over 45k (cpu's
    exact 45,056 would pass) it fails, and says that the figure is an upper bound and what to do."""
    p = profile(MoE(), input_shape=(ROWS, FEATURES), device="meta")
    assert judge(Result("moe", limits={"macs": 50_000.0}, profile=p)).passed
    over = judge(Result("moe", limits={"macs": 45_100.0}, profile=p))
    assert not over.passed
    text = failure_text(over)
    assert "  macs    45.1k   ≤49.2k  +4.1k (+9.0%)" in text
    assert (
        f"next: macs is an upper bound here, judged as it stands ({REASON}): profile the model on cpu or cuda for "
        "its exact figure, which is at most this"
    ) in text
    assert judge(Result("moe", limits={"macs": 45_100.0}, profile=profile(MoE(), input_shape=(ROWS, 8)))).passed


def test_reports_show_the_mark_beside_the_figure_with_model_text_escaped():
    """The summary's figure cell reads ``≤49.2k / 60.0k (82%)`` in every report; the layer's name,
    model text, is escaped in Markdown and HTML as every other name is."""
    hostile = "<img src=x onerror=alert(1)>|"
    model = MoE()
    model.add_module(hostile, model._modules.pop("experts"))
    model.forward = lambda x: model._modules[hostile](model.proj(x))
    p = profile(model, input_shape=(ROWS, FEATURES), device="meta")
    assert p.upper_bounds == (UpperBound(REASON, ("macs", "flops"), (hostile,)),)
    verdict = judge(Result("moe", limits={"macs": 60_000.0}, profile=p))
    summary = "\n".join(summary_lines([verdict]))
    assert re.search(r"^\s+macs\s+≤49\.2k\s+60\.0k\s+81\.9%", summary, re.MULTILINE)
    assert re.search(r"^\s+flops\s+≤102k\s+-", summary, re.MULTILINE)  # 102,400: marked, not budgeted
    assert f"moe: ≤ upper bound (macs, flops; the exact figure is at most this) in {hostile}: {REASON}" in summary
    comment = markdown(Report([verdict]))
    assert "| <code>moe</code> | 136 | ≤49.2k / 60.0k (82%) | ≤102k |" in comment
    assert (
        "- **≤ upper bound** (<code>macs</code>, <code>flops</code>; the exact figure is at most this) in <code>"
        in comment
    )
    assert "<img" not in comment and "&#60;img src=x onerror=alert(1)&#62;" in comment
    page = html_report(Report([verdict]))
    assert "≤49.2k / 60.0k (82%)" in page and "<h3>Upper bounds</h3>" in page
    assert "<img" not in page


def test_netbudget_show_prints_the_marks(tmp_path, monkeypatch, capsys):
    (tmp_path / "moe_models.py").write_text(MODULES, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["show", "moe_models:moe", "--input-shape", "512,8", "--device", "meta"]) == 0
    out = capsys.readouterr().out
    assert "MACs: ≤49,152" in out and f"in experts: {REASON}" in out
    assert cli.main(["show", "moe_models:moe", "--input-shape", "512,8", "--device", "meta", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upper_bounds"][0]["layers"] == ["experts"]


def test_pytest_netbudget_under_xdist_shows_the_marks_in_the_summary_and_every_report(pytester, project):
    project(
        """
[tool.netbudget.models.moe]
factory = "mymodels:moe"
input_shape = [512, 8]
device = "meta"
max_macs = "50k"
""",
        models=MODULES,
    )
    quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:anyio")
    result = pytester.runpytest_subprocess(
        "--netbudget", "-v", "-n", "2", "--netbudget-report=r.json", "--netbudget-report=r.md", *quiet
    )
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"^moe\s+params\s+136\s", r"^\s+macs\s+≤49\.2k\s+50\.0k\s+98\.3%"])
    result.stdout.fnmatch_lines(["moe: ≤ upper bound (macs, flops; the exact figure is at most this) in experts: *"])
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["moe"]["upper_bounds"][0]["metrics"] == ["macs", "flops"]
    assert "≤49.2k / 50.0k (98%)" in (pytester.path / "r.md").read_text(encoding="utf-8")
    merged = Verdict.from_dict("moe", report["models"]["moe"])  # what netbudget merge reads back
    assert merged.upper_bounds[0].layers == ("experts",)


def test_next_steps_name_no_upper_bound_for_an_exact_figure():
    p = profile(MoE(), input_shape=(ROWS, FEATURES), device="cpu")
    over = judge(Result("moe", limits={"macs": 40_000.0}, profile=p))
    assert not any("upper bound" in step for step in next_steps(over))


def test_a_constant_made_in_the_forward_counts_alike_on_cpu_and_meta():
    """``torch.tensor([...])`` in a forward is lift_fresh on cpu and no op at all on meta: it is a
    constant everywhere. x [2, 4] + a literal of 4 floats: the one activation is the sum, 32 bytes
    (cpu counted the literal's 16 too before: 48), one add of 8 FLOPs, and no lift_fresh in ops."""

    class AddsALiteral(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tensor([1.0, 2.0, 3.0, 4.0], device=x.device)

    for device in ("cpu", "meta"):
        p = profile(AddsALiteral(), input_shape=(2, 4), device=device)
        assert p.activations_mb * 2**20 == 2 * 4 * 4, device
        assert p.flops == 8
        assert list(p.ops) == ["aten.add"]
