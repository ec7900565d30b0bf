"""budgets.py, baseline.py and reports.py directly, on hand-made profiles (no torch, no pytest run)."""

from __future__ import annotations

import json

import pytest

from pytest_netbudget import baseline, budgets, reports
from pytest_netbudget.config import Increase
from pytest_netbudget.repeated import group_changes
from pytest_netbudget.results import BaselineEntry, ChangeKind, LayerEntry, Profile


def entry(data: dict) -> BaselineEntry:
    """A baseline entry as the file holds it (validated as when read)."""
    return BaselineEntry.from_dict(data, "test")


def entry_of(profile: Profile) -> BaselineEntry:
    return BaselineEntry.from_profile(profile, "pyproject.toml")


def row(path: str, type_: str, params: int = 0, macs: int = 0, flops: int = 0) -> dict:
    return {
        "path": path,
        "type": type_,
        "params": params,
        "trainable_params": params,
        "buffers": 0,
        "macs": macs,
        "flops": flops,
        "read_bytes": 0,
        "write_bytes": 0,
        "calls": 1,
        "input_shapes": [],
        "output_shapes": [],
    }


def make_profile(
    *rows: dict, size_mb: float = 0.5, activations_mb: float = 0.25, uncounted=None, own: dict | None = None
) -> Profile:
    """A profile from the dict that Profile.to_dict() gives; the totals are the sums of the rows."""
    params = sum(r["params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    return Profile.from_dict(
        {
            "model": "Net",
            "device": "cpu",
            "dtype": "float32",
            "inputs": [[1, 10]],
            "params": params,
            "trainable_params": params,
            "buffers": 0,
            "size_mb": size_mb,
            "macs": macs,
            "flops": sum(r["flops"] for r in rows),
            "activations_mb": activations_mb,
            "peak_memory_mb": None,
            "layers": [own or row("", "Net"), *rows],
            "uncounted_ops": dict(uncounted or {}),
        }
    )


# a model of 28,900 params: conv 12,800 + out 15,700 + norm 400 (the spec's example, rounded)
NET = make_profile(
    row("conv", "Conv2d", 12_800, 2_000_000, 4_000_000),
    row("out", "Linear", 15_700, 15_680, 31_370),
    row("norm", "LayerNorm", 400, 0, 1_000),
    row("act", "ReLU", 0, 0, 500),
)


def evaluate(name, profile, limits, baseline=None, max_increase=None, strict=False):
    """judge() on a result made of these parts; ``baseline``: the baseline's totals."""
    result = budgets.Result(name, limits=limits, max_increase=max_increase or {}, strict=strict, profile=profile)
    return budgets.judge(result, BaselineEntry(totals=baseline) if baseline is not None else None)


def result_for(profile, limits=None, base=None, increase=None, strict=False, name="net"):
    """A verdict as the session makes it: judged against a baseline entry, with the layer diff."""
    result = budgets.Result(name, limits=limits or {}, max_increase=increase or {}, strict=strict, profile=profile)
    return budgets.judge(result, base)


def broken_result(name, error):
    return budgets.judge(budgets.Result(name, error=error))


# --- budgets.judge -----------------------------------------------------------------------------------


def test_evaluate_shows_headline_metrics_and_budgeted_ones():
    verdict = evaluate("net", NET, {"params": 25_000, "trainable_params": 30_000})
    assert [check.metric for check in verdict.checks] == [
        "params",
        "trainable_params",
        "macs",
        "flops",
        "size_mb",
        "activations_mb",
    ]
    params = verdict.check_for("params")
    assert (params.actual, params.limit, params.status) == (28_900, 25_000, "over")
    assert params.used == pytest.approx(28_900 / 25_000)
    assert verdict.check_for("trainable_params").status == "ok"
    assert verdict.check_for("macs").used is None
    assert verdict.status == "over"
    assert not verdict.passed
    assert [check.metric for check in verdict.failures] == ["params"]
    assert verdict.check_for("buffers") is None


def test_evaluate_at_the_limit_passes():
    verdict = evaluate("net", NET, {"params": 28_900, "macs": 2_015_680})
    assert verdict.passed
    assert verdict.status == "pass"
    assert verdict.check_for("params").used == 1.0


def test_peak_memory_not_measured_is_never_over():
    verdict = evaluate("net", NET, {"peak_memory_mb": 1})
    check = verdict.check_for("peak_memory_mb")
    assert check.status == "not measured"
    assert not check.over_budget
    assert verdict.passed


def test_growth_against_baseline():
    base = {"params": 28_000, "macs": 2_015_680, "flops": 1}
    rules = {"params": Increase(fraction=0.02), "macs": Increase(amount=0)}
    verdict = evaluate("net", NET, {"params": 30_000}, baseline=base, max_increase=rules)
    assert verdict.has_baseline
    params = verdict.check_for("params")
    assert (params.baseline, params.grew_too_much, params.over_budget, params.status) == (28_000, True, False, "grew")
    assert verdict.check_for("macs").status == "ok"  # unchanged
    assert verdict.check_for("flops").status == "ok"  # grew a lot, but no rule for FLOPs
    assert verdict.status == "grew"


def test_over_budget_wins_over_growth():
    verdict = evaluate(
        "net", NET, {"params": 1000}, baseline={"params": 1}, max_increase={"params": Increase(fraction=0)}
    )
    assert verdict.check_for("params").status == "over"
    assert verdict.status == "over"


def test_strict_fails_on_uncounted_ops():
    profile = make_profile(row("x", "Custom", 10, 0, 0), uncounted={"aten::weird": 2})
    assert evaluate("n", profile, {}).passed
    strict = evaluate("n", profile, {}, strict=True)
    assert strict.status == "uncounted"
    assert not strict.passed


# --- reports: the failing item ---------------------------------------------------------------------------


def test_failure_text_over_budget():
    result = result_for(NET, {"params": 25_000, "macs": 3_000_000, "size_mb": 0.2})
    assert result.status == "over"
    assert reports.failure_text(result).splitlines() == [
        "net exceeds its budget",
        "  metric   budget  actual  over",
        "  params   25.0k   28.9k   +3.9k (+15.6%)",
        "  macs     3.00M   2.02M   ok",
        "  size_mb  0.200   0.500   +0.300 (+150.0%)",
        "  largest layers by params: out (Linear) 15.7k, conv (Conv2d) 12.8k",
        "  next: params is over max_params = 25.0k, set in pyproject.toml [tool.netbudget.models.net]: "
        "make the model smaller, or raise the limit there",
        "  next: size_mb is over max_size_mb = 0.200, set in pyproject.toml [tool.netbudget.models.net]: "
        "make the model smaller, or raise the limit there",
    ]


def test_failure_text_growth_with_layer_diff():
    old = make_profile(
        row("conv", "Conv2d", 12_800, 2_000_000, 4_000_000), row("out", "Linear", 15_700, 15_680, 31_370)
    )
    base = entry_of(old)
    result = result_for(NET, {"params": 100_000}, base=base, increase={"params": Increase(fraction=0.01)})
    assert result.status == "grew"
    lines = reports.failure_text(result).splitlines()
    assert lines[0] == "net grew more than max_increase allows over its baseline"
    assert lines[1].split() == ["metric", "budget", "actual", "baseline", "change", "over"]
    assert lines[2].split() == ["params", "100k", "28.9k", "28.5k", "+400", "(+1.4%)", "grew", "+400", "(+1.4%),"] + [
        "more",
        "than",
        "the",
        "allowed",
        "1%",
    ]
    assert "  layers changed since the baseline:" in lines
    diff = lines[lines.index("  layers changed since the baseline:") + 1 :]
    assert diff[0].split() == ["layer", "change", "params", "macs", "flops"]
    # norm (400 params, 1.4% of the model) outranks act (FLOPs only, 500 / 4M)
    assert diff[1].split() == ["norm", "(LayerNorm)", "added", "-", "->", "400", "-", "->", "0", "-", "->", "1.00k"]
    assert diff[2].split() == ["act", "(ReLU)", "added", "-", "->", "0", "-", "->", "0", "-", "->", "500"]


def test_failure_text_error():
    result = broken_result("m", "factory a:b raised: boom")
    assert result.status == "error"
    assert reports.failure_text(result) == "m could not be profiled\n  factory a:b raised: boom"


def test_largest_layers_line():
    net = entry_of(NET)
    assert reports.largest_layers_line(net) == "largest layers by params: out (Linear) 15.7k, conv (Conv2d) 12.8k"
    assert reports.largest_layers_line(net, "macs", 1) == "largest layers by macs: conv (Conv2d) 2.00M"
    assert reports.largest_layers_line(entry_of(make_profile(row("a", "ReLU")))) == ""


# --- reports: summary, Markdown, JSON ------------------------------------------------------------------


def test_summary_lines():
    passing = result_for(NET, {"params": 50_000})
    failing = result_for(NET, {"params": 25_000}, name="big")
    broken = broken_result("broken", "cannot import module 'x'")
    lines = reports.summary_lines([passing, failing, broken], removed=["gone"])
    assert lines[0] == "3 model(s), 1 could not be profiled, 2 failing"  # not "3 profiled"
    assert lines[1].split() == ["model", "metric", "actual", "budget", "used", "vs", "baseline", "status"]
    assert lines[2].split() == ["net", "params", "28.9k", "50.0k", "57.8%", "new", "pass"]
    assert lines[3].split() == ["macs", "2.02M", "-"]
    assert any(line.split() == ["big", "params", "28.9k", "25.0k", "115.6%", "new", "over"] for line in lines)
    assert any(line.split() == ["broken", "-", "-", "-", "-", "-", "error"] for line in lines)
    assert "broken: cannot import module 'x'" in lines
    assert lines[-1] == "gone: in the baseline but no longer registered (removed; kept until --netbudget-update)"
    assert reports.summary_lines([passing])[0] == "1 model(s) profiled, all within budget"


def test_summary_shows_change_against_baseline():
    base = entry({"totals": {"params": 26_600, "macs": 2_015_680}, "layers": {}})
    result = result_for(NET, {}, base=base)
    lines = reports.summary_lines([result])
    assert lines[2].split() == ["net", "params", "28.9k", "-", "+2.3k", "(+8.6%)", "pass"]
    assert lines[3].split() == ["macs", "2.02M", "-", "="]


def test_markdown_report():
    old = make_profile(row("conv", "Conv2d", 12_800, 2_000_000, 4_000_000), row("out", "Linear", 10_000, 10_000, 0))
    changed = result_for(NET, {"params": 25_000}, base=entry_of(old))
    same = result_for(NET, {}, base=entry_of(NET), name="same")
    new = result_for(NET, {}, name="fresh")
    text = reports.markdown(reports.Report([changed, same, new], removed=["gone"]))
    lines = text.splitlines()
    assert lines[0] == "## netbudget"
    # the largest change of all: net's params, 12,800 + 10,000 = 22,800 -> 28,900, +6,100 = +26.8%
    # (its MACs grew 2,010,000 -> 2,015,680, +0.3%; FLOPs 4,000,000 -> 4,032,870, +0.8%)
    assert (
        "**1 over budget (of 3 model(s))** · largest change: <code>net</code> params +26.8% (22.8k -> 28.9k)" in lines
    )
    assert "| model | params | macs | flops | size_mb | activations_mb | status |" in lines
    net_row = next(line for line in lines if line.startswith("| <code>net</code> |"))
    assert "28.9k / 25.0k (116%)<br>+6.1k (+26.8%)" in net_row
    assert net_row.endswith("| ❌ over |")
    assert "| <code>gone</code> | - | - | - | - | - | removed |" in lines
    # a section for the changed model and the new one, none for the unchanged one
    assert "<details open><summary><code>net</code>: over budget</summary>" in lines  # failing: open
    assert "<details><summary><code>fresh</code>: new model</summary>" in lines
    assert "<summary><code>same</code>" not in text
    section = text[text.index("<summary><code>net</code>") : text.index("</details>")]
    assert "net exceeds its budget" in section
    assert "| <code>out</code> (Linear) | resized | 10.0k -> 15.7k | 10.0k -> 15.7k |" in section
    assert "| <code>norm</code> (LayerNorm) | added | - -> 400 | - -> 0 |" in section
    assert section.index("<code>out</code>") < section.index("<code>norm</code>")  # largest change first
    assert "```mermaid\npie showData title MACs by block" in section
    assert '    "conv" : 2000000' in section
    assert text.count("<details") == text.count("</details>") == 2


def test_markdown_error_section():
    broken = broken_result("broken", "boom")
    text = reports.markdown(reports.Report([broken]))
    assert "**1 could not be profiled (of 1 model(s))**" in text
    assert "| ❌ error |" in text
    assert "<details open><summary><code>broken</code>: could not be profiled</summary>\n\n```\nboom\n```" in text


def test_json_report_doubles_as_baseline(tmp_path):
    base = entry_of(make_profile(row("conv", "Conv2d", 12_800, 2_000_000, 4_000_000)))
    text = reports.to_json(reports.Report([result_for(NET, {"params": 25_000}, base=base)], removed=["gone"]))
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["schema"] == 2
    assert data["kind"] == "netbudget-report"
    assert data["removed"] == ["gone"]
    net = data["models"]["net"]
    assert net["status"] == "over"
    assert net["totals"]["params"] == 28_900
    # the figure is in the totals; the reference is written only where it is not the baseline's
    assert net["metrics"]["params"] == {"budget": 25_000, "baseline": 12_800, "max_increase": None, "status": "over"}
    assert [change["path"] for change in net["layer_changes"]] == ["out", "norm", "act"]
    path = tmp_path / "report.json"
    path.write_text(text, encoding="utf-8")
    assert baseline.load(path)["net"].layers["out"] == LayerEntry(
        "Linear", {"params": 15_700, "macs": 15_680, "flops": 31_370}
    )


# --- baseline.py ------------------------------------------------------------------------------------------


def test_entry_from_profile_keeps_rows_with_figures():
    net = entry_of(NET)
    assert net.origin == "pyproject.toml"
    assert net.totals == {
        "params": 28_900,
        "trainable_params": 28_900,
        "buffers": 0,
        "size_mb": 0.5,
        "macs": 2_015_680,
        "flops": 4_032_870,
        "activations_mb": 0.25,
    }
    assert list(net.layers) == ["conv", "out", "norm", "act"]  # the empty model row is left out
    model_work = make_profile(row("a", "Linear", 1, 1, 2), own=row("", "Net", flops=7))
    assert entry_of(model_work).layers["(model)"].to_dict() == {"type": "Net", "params": 0, "macs": 0, "flops": 7}


def test_entry_rounds_floats():
    assert entry_of(make_profile(row("a", "Linear", 1, 1, 2), size_mb=0.1234567891)).totals["size_mb"] == 0.123457


def test_dumps_is_sorted_one_layer_per_line_and_stable():
    models = {
        "zeta": entry_of(NET),
        "alpha": entry_of(make_profile(row("b", "Linear", 2, 2, 4), row("a", "Conv2d", 1, 1, 2))),
    }
    text = baseline.dumps(models)
    assert text == baseline.dumps(dict(reversed(models.items())))
    assert text.endswith("}\n")
    assert json.loads(text) == {"schema": 1, "models": {name: item.to_dict() for name, item in models.items()}}
    lines = text.splitlines()
    assert lines[:4] == ["{", '  "schema": 1,', '  "models": {', '    "alpha": {']
    assert '        "a": {"flops": 2, "macs": 1, "params": 1, "type": "Conv2d"},' in lines
    assert '        "b": {"flops": 4, "macs": 2, "params": 2, "type": "Linear"}' in lines
    assert lines.index('        "a": {"flops": 2, "macs": 1, "params": 1, "type": "Conv2d"},') < lines.index(
        '        "b": {"flops": 4, "macs": 2, "params": 2, "type": "Linear"}'
    )
    assert text.index('"alpha"') < text.index('"zeta"')
    # one line per layer: 4 layers of zeta + 2 of alpha
    assert sum(1 for line in lines if line.startswith("        ")) == 6
    assert baseline.dumps({}) == '{\n  "schema": 1,\n  "models": {\n  }\n}\n'
    assert json.loads(baseline.dumps({})) == {"schema": 1, "models": {}}


def test_load_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "b.json"
    assert baseline.load(path) == {}
    models = {"net": entry_of(NET)}
    baseline.update(path, models, {})
    assert baseline.load(path) == models


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('"x"', "no 'schema' field"),
        ('{"schema": 2, "models": {}}', "schema version 2 is not one this version"),
        ('{"schema": "1", "models": {}}', "schema version '1'"),
        ('{"schema": 1, "models": []}', "missing the 'models' table"),
        ('{"schema": 1, "models": {"m": {"totals": {}}}}', "models.m.layers: expected an object, got null"),
        ('{"schema": 1, "models": {"m": {"totals": [], "layers": {}}}}', "models.m.totals: expected an object, got []"),
        ('{"schema": 1, "models": {"m": 3}}', "models.m: expected an object with 'totals' and 'layers', got 3"),
        (
            '{"schema": 1, "models": {"resnet": {"totals": {}, "layers": {"layer1.0": {"type": "X", "params": "abc"}}}}}',
            'models.resnet.layers["layer1.0"].params: expected a finite number, got "abc"',
        ),
        ('{"schema": 1, "models": {"m": {"totals": {}, "layers": {"fc": {"params": 1}}}}}', "models.m.layers.fc.type"),
        (  # a TypeError (unhashable) before
            '{"schema": 1, "models": {"m": {"totals": {}, "layers": {"fc": {"type": "Linear", "bound": {}}}}}}',
            "models.m.layers.fc.bound: expected one of compute, memory, got {}",
        ),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "b.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(baseline.BaselineError) as info:
        baseline.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_load_rejects_binary(tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(baseline.BaselineError, match="cannot read the file"):
        baseline.load(path)


def test_update_keeps_models_not_in_this_run(tmp_path):
    path = tmp_path / "b.json"
    old = {"a": BaselineEntry(totals={"params": 1}), "b": BaselineEntry(totals={"params": 2})}
    baseline.update(path, {"b": BaselineEntry(totals={"params": 3})}, old)
    assert baseline.load(path) == {"a": BaselineEntry(totals={"params": 1}), "b": BaselineEntry(totals={"params": 3})}


def test_layer_diff_kinds_and_order():
    old = entry(
        {
            "totals": {"params": 10_000, "macs": 1_000_000},
            "layers": {
                "a": {"type": "Linear", "params": 100, "macs": 100, "flops": 200},
                "b": {"type": "Linear", "params": 5_000, "macs": 5_000, "flops": 10_000},
                "gone": {"type": "Conv2d", "params": 1_000, "macs": 500_000, "flops": 1_000_000},
                "same": {"type": "ReLU", "params": 0, "macs": 0, "flops": 50},
                "retyped": {"type": "ReLU", "params": 0, "macs": 0, "flops": 10},
            },
        }
    )
    new = entry(
        {
            "totals": {"params": 12_000, "macs": 600_000},
            "layers": {
                "a": {"type": "Linear", "params": 200, "macs": 200, "flops": 400},  # +100: 1% of params
                "b": {"type": "Linear", "params": 8_000, "macs": 8_000, "flops": 16_000},  # +3000: 25% of params
                "same": {"type": "ReLU", "params": 0, "macs": 0, "flops": 50},
                "retyped": {"type": "GELU", "params": 0, "macs": 0, "flops": 10},
                "new": {"type": "Linear", "params": 2_400, "macs": 0, "flops": 0},  # 20% of params
            },
        }
    )
    changes = budgets.layer_diff(old, new)
    # gone: 500k of 1M MACs = 50%; b: 25%; new: 20%; a: 1%; retyped: nothing, ties sorted by path
    assert [(change.path, change.kind) for change in changes] == [
        ("gone", "removed"),
        ("b", "resized"),
        ("new", "added"),
        ("a", "resized"),
        ("retyped", "resized"),
    ]
    gone, b, added = changes[:3]
    assert (gone.type, gone.old.figures["params"], gone.new) == ("Conv2d", 1_000, None)
    assert (b.old.figures["params"], b.new.figures["params"]) == (5_000, 8_000)
    assert (b.delta("params"), b.delta("macs")) == (3_000, 3_000)
    assert (added.old, added.delta("params")) == (None, 2_400)
    assert changes[-1].type == "GELU"
    assert budgets.layer_diff(old, old) == []


def test_layer_diff_lines_limit():
    changes = [
        budgets.LayerChange(
            f"l{i:02d}",
            "Linear",
            ChangeKind.ADDED,
            None,
            LayerEntry("Linear", {"params": 12 - i, "macs": 0, "flops": 0}),
        )
        for i in range(12)
    ]
    lines = reports.layer_diff_lines(group_changes(changes), limit=10)
    assert lines[0] == "layers changed since the baseline:"
    assert len(lines) == 1 + 1 + 10 + 1
    assert lines[-1] == "  ... and 2 more changed layers"
    assert reports.layer_diff_lines([]) == []


def test_reports_figure_formatting():
    assert reports.value("params", 28_938) == "28.9k"
    assert reports.value("size_mb", 0.110) == "0.110"
    assert reports.value("peak_memory_mb", None) == "not measured"
    assert reports.value("macs", None) == "-"
    check = budgets.MetricCheck("params", 30_860, baseline=28_560, reference=28_560)
    assert reports.change(check) == "+2.3k (+8.1%)"
    assert reports.change(budgets.MetricCheck("params", 5, baseline=None)) == ""
    assert reports.change(budgets.MetricCheck("size_mb", 0.25, reference=0.5)) == "-0.250 (-50.0%)"
    # the gate's change (what max_increase judged) and the reference's (the base branch) apart
    both = budgets.MetricCheck("params", 66, baseline=66, reference=55)
    assert (reports.change(both, gate=True), reports.change(both)) == ("=", "+11 (+20.0%)")


def test_mermaid_charts_split_where_the_model_branches():
    profile = make_profile(
        row("enc", "Seq", 0, 0, 0),
        row("enc.0", "Linear", 10, 100, 200),
        row("enc.1", "Linear", 5, 50, 100),
        row("head", "Linear", 3, 0, 0),
    )
    lines = reports.mermaid_charts(reports.layer_tree(entry_of(profile), []))
    assert lines == [
        "```mermaid",
        "pie showData title MACs by block",  # only enc has MACs: split inside it
        '    "enc.0" : 100',
        '    "enc.1" : 50',
        "```",
        "",
        "```mermaid",
        "pie showData title Params by block",
        '    "enc" : 15',
        '    "head" : 3',
        "```",
        "",
    ]


def test_the_pies_of_a_decoder_have_one_slice_per_repeated_block():
    """A model that wraps everything in ``model`` (as transformers' *ForCausalLM do) with a tied head
    (no params of its own): before, "Params by block" had one slice, ``model``. Four equal layers
    of 100 params and 1,000 MACs each, an embedding of 500 params, a norm of 8, the head 2,000 MACs."""
    layers = [row(f"model.layers.{index}.mlp", "MLP", 100, 1000, 2000) for index in range(4)]
    profile = make_profile(
        row("model.embed", "Embedding", 500, 0, 0),
        *layers,
        row("model.norm", "RMSNorm", 8, 0, 30),
        row("lm_head", "Linear", 0, 2000, 4000),
    )
    lines = reports.mermaid_charts(reports.layer_tree(entry_of(profile), []))
    macs, params = lines[1 : lines.index("```", 1)], lines[lines.index("pie showData title Params by block") :]
    assert macs == ["pie showData title MACs by block", '    "model.layers.{0..3} ×4" : 4000', '    "lm_head" : 2000']
    assert params[:4] == [
        "pie showData title Params by block",
        '    "model.embed" : 500',
        '    "model.layers.{0..3} ×4" : 400',
        '    "model.norm" : 8',
    ]
