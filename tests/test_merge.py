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
        ('{"kind": "netbudget-report", "schema": 7, "models": {}}', "bad.json: report schema 7"),
        (
            '{"kind": "netbudget-report", "schema": 1, "generator": "pytest-netbudget 0.1.0", "models": {}}',
            "bad.json: report schema 1, written by pytest-netbudget 0.1.0; this version (pytest-netbudget "
            "0.1.0) merges schema 2: write the report again with it",
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
