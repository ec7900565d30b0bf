"""``netbudget merge``: the JSON reports of ``-k`` shards (or matrix jobs) become one report that
equals the unsharded run's, and a model measured differently in two reports is a conflict.

Figures by hand: Linear(10, 5) on [1, 10] has 55 params, Linear(10, 6) 66 (see test_baseline_workflow.py).
"""

from __future__ import annotations

import json

import pytest
from test_baseline_workflow import TINY_AND_CONV, write

from pytest_netbudget import cli

pytestmark = pytest.mark.usefixtures("preloaded")

CHECK_TEST = """
import torch
import pytest


@pytest.mark.netbudget(max_params=100)
def test_small_head(netbudget):
    netbudget.check(torch.nn.Linear(4, 2), input_shape=(1, 4))  # 4*2 + 2 = 10 params
"""


def test_merged_shards_equal_the_unsharded_report(pytester, project):
    # a baseline with a model that is gone since, then tiny grows: a removed row and a failing model
    toml = TINY_AND_CONV + '\n[tool.netbudget.models.gone]\nfactory = "mymodels:conv"\ninput_shape = [1, 1, 5, 5]\n'
    write(pytester, project, toml=toml)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, width=6)
    pytester.makepyfile(test_head=CHECK_TEST)

    whole = pytester.runpytest("--netbudget", "--netbudget-report=all.json", "--netbudget-report=all.md")
    whole.assert_outcomes(passed=2, failed=1)
    shards = [("tiny", "one.json"), ("conv", "two.json"), ("small_head", "three.json")]
    for keyword, report in shards:
        shard = pytester.runpytest("--netbudget", "-k", keyword, f"--netbudget-report={report}")
        assert len(shard.parseoutcomes()) >= 1  # each shard ran its own model only
        assert json.loads((pytester.path / report).read_text(encoding="utf-8"))["models"].keys() == {
            {"tiny": "tiny", "conv": "conv", "small_head": "test_head.py::test_small_head"}[keyword]
        }

    code = cli.main(["merge", "three.json", "one.json", "two.json", "--markdown", "m.md", "--json", "m.json"])
    assert code == 0
    merged = json.loads((pytester.path / "m.json").read_text(encoding="utf-8"))
    unsharded = json.loads((pytester.path / "all.json").read_text(encoding="utf-8"))
    assert merged == unsharded
    assert list(merged["models"]) == ["conv", "test_head.py::test_small_head", "tiny"]
    assert merged["removed"] == ["gone"]
    assert merged["headline"] == "1 grew past max_increase (of 3 model(s))"
    # the baseline still lists gone, and has no entry for the check: it does not match the code
    assert merged["stale_baseline"] == ["test_head.py::test_small_head has no entry", "gone is no longer registered"]
    assert (pytester.path / "m.md").read_text(encoding="utf-8") == (pytester.path / "all.md").read_text(
        encoding="utf-8"
    )


def test_a_model_with_different_figures_in_two_reports_is_a_conflict(pytester, project, capsys):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "-k", "tiny", "--netbudget-report=narrow.json").ret == 0
    write(pytester, project, width=6)
    assert pytester.runpytest("--netbudget", "-k", "tiny", "--netbudget-report=wide.json").ret == 0
    capsys.readouterr()
    code = cli.main(["merge", "narrow.json", "wide.json", "--markdown", "m.md", "--json", "m.json"])
    assert code == 1
    conflict = "tiny differs between narrow.json and wide.json (params 55 vs 66, trainable_params 55 vs 66, "
    assert f"netbudget: conflict: {conflict}" in capsys.readouterr().err
    merged = json.loads((pytester.path / "m.json").read_text(encoding="utf-8"))
    assert merged["models"]["tiny"]["totals"]["params"] == 55  # the first report's, not overwritten
    assert merged["conflicts"][0].startswith(conflict)
    assert f"> ⚠️ **conflict:** {conflict}" in (pytester.path / "m.md").read_text(encoding="utf-8")


def test_the_same_model_in_two_reports_appears_once(pytester, project, capsys):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-report=a.json").ret == 0
    assert cli.main(["merge", "a.json", "a.json"]) == 0  # no output named: the Markdown on stdout
    out = capsys.readouterr().out
    assert out.count("| <code>tiny</code> |") == 1
    assert "**All 2 model(s) within budget**" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{ nope", "cannot read the report bad.json"),
        ('{"schema": 1, "models": {}}', "bad.json: not a netbudget JSON report"),
        ('{"kind": "netbudget-report", "schema": 7, "models": {}}', "bad.json: report schema version 7 is not"),
        (
            '{"kind": "netbudget-report", "schema": 1, "generator": "pytest-netbudget 0.1.0", "models": {}}',
            "bad.json: report schema version 1, written by pytest-netbudget 0.1.0, is not one this version of "
            "pytest-netbudget (0.1.0) reads (it reads 2); write the report again with this version (--netbudget-report)",
        ),
        (
            '{"kind": "netbudget-report", "schema": 2, "models": {"m": {"origin": "x", "totals": {}, "layers": {}}}}',
            "bad.json: models.m: not a model record this version reads (KeyError: 'error')",
        ),
        (
            '{"kind": "netbudget-report", "schema": 2, "models": {"m": {"totals": {"params": "1"}, "layers": {}}}}',
            'bad.json: models.m.totals.params: expected a finite number, got "1"',
        ),
    ],
)
def test_merge_rejects_what_is_not_a_report(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    assert cli.main(["merge", "bad.json", "--json", "out.json"]) == 2
    assert f"netbudget: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_merge_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["merge", "--help"])
    assert "netbudget merge shard-1.json shard-2.json --markdown netbudget.md --json netbudget.json" in (
        capsys.readouterr().out
    )


# --- malformed reports: exit 2, the file and the JSON path, never NaN -----------------------------------


#: A serving step's settings and figures as a report keeps them (the record's shape; figures made up).
SERVE_RECORD = {
    "context": 16,
    "batch": 2,
    "kv_dtype": None,
    "weights": "int4",
    "group_size": 32,
    "keep": ["lm_head"],
    "memory_mb": {"weights": 1.5, "kv_cache": 0.25, "activations": 0.125},
    "fits": {"memory_mb": 64.0, "context": 4096, "per_token_mb": 0.015625},
}


@pytest.fixture
def good_report():
    """A report of one model, tiny = Linear(10, 5) on [1, 10] (55 params, budget 60, baseline 55)
    with its SGD training step, as --netbudget-report writes it, and a serving step's record."""
    import torch

    from pytest_netbudget import profile
    from pytest_netbudget.budgets import Result, judge
    from pytest_netbudget.config import Increase
    from pytest_netbudget.reports import Report, to_json
    from pytest_netbudget.results import BaselineEntry

    measured = profile(torch.nn.Linear(10, 5), input_shape=(1, 10), device="cpu", train=True)
    result = Result(
        name="tiny", limits={"params": 60}, max_increase={"params": Increase(fraction=0.02)}, profile=measured
    )
    verdict = judge(result, BaselineEntry.from_profile(measured, "pyproject.toml"))
    report = json.loads(to_json(Report([verdict])))
    report["models"]["tiny"]["serve"] = json.loads(json.dumps(SERVE_RECORD))
    return report


def mutate(document, path, value):
    """``document`` with the value at ``path`` (keys) set, or deleted when ``value`` is DELETE."""
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(("models", "tiny"), 7, "models.tiny: expected an object", id="model-a-number"),
        pytest.param(("models", "tiny", "metrics"), None, "models.tiny.metrics: expected an object", id="metrics-null"),
        pytest.param(
            ("models", "tiny", "metrics", "params"), {}, "models.tiny.metrics.params.budget: missing", id="metric-{}"
        ),
        pytest.param(
            ("models", "tiny", "metrics", "params", "budget"),
            "58",
            'models.tiny.metrics.params.budget: expected a number, got "58"',
            id="budget-a-string",
        ),
        pytest.param(
            ("models", "tiny", "metrics", "params", "budget"),
            0,
            "models.tiny.metrics.params.budget: a budget is a positive number, got 0",
            id="budget-0",
        ),
        pytest.param(
            ("models", "tiny", "metrics", "params", "baseline"),
            float("inf"),
            "models.tiny.metrics.params.baseline: expected a finite number, got Infinity",
            id="past-float-range",
        ),
        pytest.param(("models", "tiny", "totals"), DELETE, "models.tiny.totals: expected an object", id="no-totals"),
        pytest.param(("models", "tiny", "layers"), DELETE, "models.tiny.layers: expected an object", id="no-layers"),
        pytest.param(
            ("models", "tiny", "layer_changes"), None, "models.tiny.layer_changes: expected a list", id="changes-null"
        ),
        # the report's own lists: before, a traceback (null, a number) or a string read letter by letter
        pytest.param(("not_run",), None, "not_run: expected a list of strings, got null", id="not-run-null"),
        pytest.param(("removed",), "conv", 'removed: expected a list of strings, got "conv"', id="removed-a-string"),
        pytest.param(("stale_baseline",), [7], "stale_baseline[0]: expected a string, got 7", id="stale-a-number"),
        pytest.param(("baseline_checked",), "yes", 'baseline_checked: expected true or false, got "yes"', id="checked"),
        pytest.param(("baseline_file",), None, "baseline_file: expected a string, got null", id="baseline-file"),
        # the training and serving steps: before, a figure past float range stopped the JSON writer with a
        # message that named neither the file nor the figure, and a string was shown as a figure
        pytest.param(
            ("models", "tiny", "train", "memory_mb", "grads"),
            float("inf"),
            "models.tiny.train.memory_mb.grads: expected a finite number, got Infinity",
            id="train-figure-past-float-range",
        ),
        pytest.param(
            ("models", "tiny", "train", "saved_mb"),
            "58",
            'models.tiny.train.saved_mb: expected a finite number, got "58"',
            id="train-figure-a-string",
        ),
        pytest.param(
            ("models", "tiny", "train", "batch"),
            0,
            "models.tiny.train.batch: expected a positive integer, got 0",
            id="train-batch-0",
        ),
        pytest.param(
            ("models", "tiny", "train", "peak_phase"),
            "later",
            'models.tiny.train.peak_phase: expected one of forward, loss, backward, optimizer, got "later"',
            id="train-phase",
        ),
        pytest.param(
            ("models", "tiny", "train", "memory_mb"),
            {"gpu": 1.0},
            "models.tiny.train.memory_mb.gpu: expected one of params, buffers, inputs, grads, optimizer_state, "
            "activations, temporaries",
            id="train-part",
        ),
        pytest.param(
            ("models", "tiny", "serve", "fits", "per_token_mb"),
            float("inf"),
            "models.tiny.serve.fits.per_token_mb: expected a finite number, got Infinity",
            id="serve-figure-past-float-range",
        ),
        pytest.param(
            ("models", "tiny", "serve", "context"),
            "16",
            'models.tiny.serve.context: expected a positive integer, got "16"',
            id="serve-context-a-string",
        ),
        pytest.param(
            ("models", "tiny", "serve", "keep"),
            "lm_head",
            'models.tiny.serve.keep: expected a list of strings, got "lm_head"',
            id="serve-keep-a-string",
        ),
        pytest.param(
            ("models", "tiny", "serve", "memory_mb", "kv_cache"),
            None,
            "models.tiny.serve.memory_mb.kv_cache: expected a finite number, got null",
            id="serve-figure-null",
        ),
        pytest.param(("models", "tiny", "serve"), 7, "models.tiny.serve: expected an object, got 7", id="serve-7"),
    ],
)
def test_merge_names_the_file_and_json_path_of_a_malformed_report(
    tmp_path, monkeypatch, capsys, good_report, path, value, message
):
    # Before: a traceback and exit 1 (the conflict code), or NaN written into the merged JSON.
    monkeypatch.chdir(tmp_path)
    # 1e400 is what a hand-edited report holds; json reads it as inf and writes it back as Infinity
    text = json.dumps(mutate(good_report, path, value)).replace("Infinity", "1e400")
    (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    assert cli.main(["merge", "bad.json", "--json", "out.json", "--markdown", "out.md"]) == 2
    err = capsys.readouterr().err
    assert f"netbudget: error: bad.json: {message}" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


def test_the_untouched_report_merges(tmp_path, monkeypatch, capsys, good_report):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.json").write_text(json.dumps(good_report), encoding="utf-8")
    assert cli.main(["merge", "good.json", "--json", "out.json"]) == 0
    merged = (tmp_path / "out.json").read_text(encoding="utf-8")
    assert "NaN" not in merged and "Infinity" not in merged
    tiny = json.loads(merged)["models"]["tiny"]
    assert tiny["totals"]["params"] == 55
    assert tiny["serve"] == SERVE_RECORD  # the steps travel whole
    assert tiny["train"] == good_report["models"]["tiny"]["train"]


def leaf_paths(document, path=()):
    """The JSON path of every value in ``document``, containers too."""
    yield path
    children = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else ()
    )
    for key, child in children:
        yield from leaf_paths(child, (*path, key))


def test_any_value_of_a_report_replaced_by_a_wrong_one_merges_or_is_named(tmp_path, monkeypatch, capsys, good_report):
    # Every value of the report in turn becomes null, a string or a figure past float range: netbudget merge
    # either takes it (a value it may hold) or exits 2 naming the file; never a traceback, never NaN written.
    monkeypatch.chdir(tmp_path)
    paths = [path for path in leaf_paths(good_report) if path]
    assert len(paths) > 100
    for path in paths:
        for value in (None, "58", float("inf")):
            text = json.dumps(mutate(json.loads(json.dumps(good_report)), path, value)).replace("Infinity", "1e400")
            (tmp_path / "bad.json").write_text(text, encoding="utf-8")
            (tmp_path / "out.json").unlink(missing_ok=True)
            code = cli.main(["merge", "bad.json", "--json", "out.json", "--markdown", "out.md"])
            err = capsys.readouterr().err
            assert code in (0, 2), (path, value, err)
            if code == 2:
                assert err.startswith("netbudget: error: bad.json: "), (path, value, err)
            else:
                merged = (tmp_path / "out.json").read_text(encoding="utf-8")
                assert "NaN" not in merged and "Infinity" not in merged, (path, value)
