"""Baselines end to end (SPEC §4): write, compare, fail on growth, name the layers, report, update.

Figures by hand: Linear(10, 5) on [1, 10] has 55 params, 50 MACs and 2*50 + 5 (bias) = 105 FLOPs;
Linear(10, 6) has 66 params, 60 MACs. Conv2d(1, 2, 3) on [1, 1, 5, 5]: 20 params, 162 MACs,
2*162 + 18 (bias) = 342 FLOPs, then a ReLU over 18 elements: 18 FLOPs.
Memory traffic (float32, bytes read + written): Linear(10, 5) reads its input 40, weight 200 and
bias 20 and writes 20 = 280; Linear(10, 6): 40 + 240 + 24 + 24 = 328. The conv reads 100 + 72 + 8
and writes 72 = 252; the ReLU reads and writes 72 each = 144. The baseline keeps MiB to 6 decimals.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

pytestmark = pytest.mark.usefixtures("preloaded")

BASELINE = "netbudget-baseline.json"

TINY_AND_CONV = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
max_params = 100

[tool.netbudget.models.conv]
factory = "mymodels:conv"
input_shape = [1, 1, 5, 5]
max_params = 100
"""

MODELS = """
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, {width})

    def forward(self, x):
        return self.fc(x)


def conv():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
"""


def models(width: int = 5) -> str:
    # the comment changes the file's length so that a stale .pyc is never reused
    return MODELS.format(width=width) + "# " + "x" * width + "\n"


def write(pytester, project, width=5, toml=TINY_AND_CONV, top='device = "cpu"\nmax_increase = "2%"'):
    project(toml, top=top, models=models(width))
    shutil.rmtree(pytester.path / "__pycache__", ignore_errors=True)


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def read_baseline(pytester, name=BASELINE):
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


# --- writing the baseline -------------------------------------------------------------------------


def test_update_writes_a_sorted_stable_baseline(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["netbudget: baseline updated: *netbudget-baseline.json (2 model(s) written)"])
    path = pytester.path / BASELINE
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["schema"] == 1
    assert list(data["models"]) == ["conv", "tiny"]
    tiny = data["models"]["tiny"]
    assert tiny["totals"]["params"] == 55
    assert tiny["totals"]["trainable_params"] == 55
    assert tiny["totals"]["macs"] == 50
    assert tiny["totals"]["flops"] == 105
    assert tiny["totals"]["size_mb"] == pytest.approx(55 * 4 / 2**20, abs=1e-6)
    assert "peak_memory_mb" not in tiny["totals"]  # not measured on CPU: not recorded as 0
    fc = {"type": "Linear", "params": 55, "macs": 50, "flops": 105, "memory_access_mb": round(280 / 2**20, 6)}
    assert tiny["layers"] == {"fc": fc}
    conv = data["models"]["conv"]
    assert conv["totals"]["params"] == 20
    assert conv["totals"]["macs"] == 162
    assert conv["layers"] == {
        "0": {"type": "Conv2d", "params": 20, "macs": 162, "flops": 342, "memory_access_mb": round(252 / 2**20, 6)},
        "1": {"type": "ReLU", "params": 0, "macs": 0, "flops": 18, "memory_access_mb": round(144 / 2**20, 6)},
    }
    # one layer per line, keys sorted at every level
    line = '        "fc": {"flops": 105, "macs": 50, "memory_access_mb": 0.000267, "params": 55, "type": "Linear"}'
    assert line in text.splitlines()
    for entry in data["models"].values():
        assert list(entry["totals"]) == sorted(entry["totals"])
    assert text.index('"conv"') < text.index('"tiny"')
    # a second update with nothing changed writes the very same bytes
    again = pytester.runpytest("--netbudget", "--netbudget-update")
    assert again.ret == 0
    assert path.read_bytes() == text.encode("utf-8")
    assert not list(pytester.path.glob(".netbudget-baseline.json.*"))  # no temporary file left behind


def test_without_update_no_baseline_is_written(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget")
    assert result.ret == 0
    assert not (pytester.path / BASELINE).exists()


def test_update_keeps_models_that_did_not_run(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, width=6)
    result = pytester.runpytest("--netbudget", "--netbudget-update", "-k", "tiny")
    result.stdout.fnmatch_lines(["netbudget: baseline updated: *(1 model(s) written)"])
    data = read_baseline(pytester)
    assert sorted(data["models"]) == ["conv", "tiny"]
    assert data["models"]["tiny"]["totals"]["params"] == 66
    assert data["models"]["conv"]["totals"]["params"] == 20


def test_baseline_path_from_pyproject(pytester, project):
    (pytester.path / "budgets").mkdir()
    write(pytester, project, top='device = "cpu"\nbaseline = "budgets/base.json"')
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    assert read_baseline(pytester, "budgets/base.json")["models"]["tiny"]["totals"]["params"] == 55
    assert not (pytester.path / BASELINE).exists()


# --- the whole pull-request workflow -----------------------------------------------------------------


def test_growth_fails_with_layer_diff_reports_and_step_summary(pytester, project, monkeypatch):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    baseline_before = (pytester.path / BASELINE).read_bytes()

    # the pull request widens tiny's layer: 55 -> 66 params (+11, +20.0%), 50 -> 60 MACs
    write(pytester, project, width=6)
    step_summary = pytester.path / "step_summary.md"
    step_summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result = pytester.runpytest(
        "--netbudget", "-v", "--netbudget-report=out/report.md", "--netbudget-report=out/report.json"
    )
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*pyproject.toml::tiny FAILED*", "*pyproject.toml::conv PASSED*"])
    result.stdout.re_match_lines(
        [
            r"^tiny grew more than max_increase allows over its baseline$",
            r"^\s+metric\s+budget\s+actual\s+baseline\s+change\s+over$",
            r"^\s+params\s+100\s+66\s+55\s+\+11 \(\+20\.0%\)\s+grew \+11 \(\+20\.0%\), more than the allowed 2%$",
            r"^\s+macs\s+-\s+60\s+50\s+\+10 \(\+20\.0%\)\s+grew \+10 \(\+20\.0%\), more than the allowed 2%$",
            r"^\s+layers changed since the baseline:$",
            r"^\s+layer\s+change\s+params\s+macs\s+flops\s+memory_access_mb$",
            # FLOPs: 2 * MACs + bias; traffic 280 -> 328 bytes (input 40 + weight 200 + bias 20 read,
            # 20 written; then 40 + 240 + 24 and 24), 0.000267 -> 0.000313 MiB at the stored six decimals
            r"^\s+fc \(Linear\)\s+resized\s+55 -> 66\s+50 -> 60\s+105 -> 126\s+0\.000267 -> 0\.000313$",
            r"^\s+next: if the growth is intended, accept it with `pytest --netbudget --netbudget-update` "
            r"and commit netbudget-baseline.json$",
        ]
    )
    assert "largest layers" not in result.stdout.str()  # a growth failure is about what changed
    # the summary shows the change per metric, and conv unchanged
    result.stdout.re_match_lines(
        [
            r"^=+ netbudget summary =+$",
            r"^2 model\(s\) profiled, 1 failing$",
            r"^conv\s+params\s+20\s+100\s+20\.0%\s+=\s+pass$",
            r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+grew$",
            r"^\s+macs\s+60\s+-\s+\+10 \(\+20\.0%\)\s+grew$",
            r"^netbudget: report written to out/report.md$",
            r"^netbudget: report written to out/report.json$",
        ]
    )
    assert "Traceback" not in output(result)
    assert (pytester.path / BASELINE).read_bytes() == baseline_before  # only --netbudget-update writes it

    markdown = (pytester.path / "out" / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("## netbudget\n")
    assert "**1 grew past max_increase (of 2 model(s))**" in markdown
    assert "| model | params | macs | flops | size_mb | activations_mb | status |" in markdown
    tiny_row = next(line for line in markdown.splitlines() if line.startswith("| <code>tiny</code> |"))
    assert "66 / 100 (66%)<br>+11 (+20.0%)" in tiny_row
    assert "grew" in tiny_row
    assert any(line.startswith("| <code>conv</code> |") and "pass" in line for line in markdown.splitlines())
    details = markdown[markdown.index("<details open><summary><code>tiny</code>: grew past max_increase") :]
    details = details[: details.index("</details>")]
    assert (
        "- **next:** if the growth is intended, accept it with `pytest --netbudget --netbudget-update` "
        "and commit netbudget-baseline.json"
    ) in details
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 |" in details
    assert details.index("| <code>fc</code> (Linear)") < details.index("tiny grew more")  # the changed layers first
    assert "```mermaid" in details
    assert "Compared with netbudget-baseline.json as checked out (HEAD)." in markdown
    assert "<summary><code>conv</code>" not in markdown  # unchanged and passing: no section

    report = json.loads((pytester.path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["schema"] == 2
    assert report["models"]["tiny"]["totals"]["params"] == 66
    assert report["models"]["tiny"]["status"] == "grew"
    assert report["models"]["tiny"]["metrics"]["params"]["baseline"] == 55
    assert report["models"]["tiny"]["layer_changes"] == [
        {
            "path": "fc",
            "type": "Linear",
            "kind": "resized",
            "old": {
                "type": "Linear",
                "params": 55,
                "macs": 50,
                "flops": 105,
                "memory_access_mb": round(280 / 2**20, 6),
            },
            "new": {
                "type": "Linear",
                "params": 66,
                "macs": 60,
                "flops": 2 * 60 + 6,
                "memory_access_mb": round(328 / 2**20, 6),
            },
        }
    ]
    assert report["models"]["conv"]["status"] == "pass"
    assert report["models"]["conv"]["totals"]["params"] == 20

    assert step_summary.read_text(encoding="utf-8") == "earlier step\n" + markdown + "\n"

    # the change is accepted: update, then the same code passes
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    pytester.runpytest("--netbudget", "-v", "--netbudget-update")
    assert read_baseline(pytester)["models"]["tiny"]["totals"]["params"] == 66
    accepted = pytester.runpytest("--netbudget", "-v")
    accepted.assert_outcomes(passed=2)
    accepted.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+=\s+pass$"])


def test_growth_within_max_increase_passes_and_shows_the_change(pytester, project):
    write(pytester, project, top='device = "cpu"\nmax_increase = "25%"')
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    write(pytester, project, width=6, top='device = "cpu"\nmax_increase = "25%"')
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$"])


def test_growth_without_max_increase_is_reported_but_passes(pytester, project):
    write(pytester, project, top='device = "cpu"')
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    write(pytester, project, width=6, top='device = "cpu"')
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-report=r.md")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$"])
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "<details><summary><code>tiny</code>: changed</summary>" in markdown
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 |" in markdown


def test_per_metric_max_increase(pytester, project):
    # params may grow 1%, MACs not at all; FLOPs are not limited. A batch of 2 doubles MACs and FLOPs only.
    top = 'device = "cpu"\nmax_increase = { params = "1%", macs = "0" }'
    toml = '[tool.netbudget.models.tiny]\nfactory = "mymodels:Tiny"\ninput_shape = [{batch}, 10]\n'
    write(pytester, project, toml=toml.format(batch=1), top=top)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, toml=toml.format(batch=2), top=top)
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"^tiny grew more than max_increase allows over its baseline$",
            r"^\s+params\s+-\s+55\s+55\s+=\s+ok$",
            r"^\s+macs\s+-\s+100\s+50\s+\+50 \(\+100\.0%\)\s+grew \+50 \(\+100\.0%\), more than the allowed 0$",
        ]
    )
    failure = result.stdout.str()[: result.stdout.str().index("netbudget summary")]
    assert not re.search(r"^\s+flops\s", failure, re.MULTILINE)  # no row for FLOPs (only the layer diff's column)
    # the same model on its old input passes: no growth at all is allowed and none happened
    write(pytester, project, toml=toml.format(batch=1), top=top)
    pytester.runpytest("--netbudget").assert_outcomes(passed=1)


def test_model_max_increase_overrides_the_top_level(pytester, project):
    toml = TINY_AND_CONV.replace(
        "max_params = 100\n\n[tool.netbudget.models.conv]", 'max_increase = "50%"\n\n[tool.netbudget.models.conv]'
    )
    write(pytester, project, toml=toml)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, width=6, toml=toml)
    pytester.runpytest("--netbudget").assert_outcomes(passed=2)


def test_shrinking_passes(pytester, project):
    write(pytester, project, width=6)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    write(pytester, project, width=5)
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^tiny\s+params\s+55\s+100\s+55\.0%\s+-11 \(-16\.7%\)\s+pass$"])


def test_model_without_baseline_entry_is_new(pytester, project):
    write(pytester, project, toml=TINY_AND_CONV.split("[tool.netbudget.models.conv]")[0])
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-report=r.md", "--netbudget-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [r"^conv\s+params\s+20\s+100\s+20\.0%\s+new\s+pass$", r"^tiny\s+params\s+55\s+.*=\s+pass$"]
    )
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "<details><summary><code>conv</code>: new model</summary>" in markdown
    assert "<summary><code>tiny</code>" not in markdown
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["conv"]["metrics"]["params"]["baseline"] is None


def test_removed_model_is_reported_and_kept_until_update(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, toml=TINY_AND_CONV.split("[tool.netbudget.models.conv]")[0])
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.md", "--netbudget-report=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["conv: in the baseline but no longer registered (removed; kept until --netbudget-update)"]
    )
    assert "| <code>conv</code> | - | - | - | - | - | removed |" in (pytester.path / "r.md").read_text(encoding="utf-8")
    assert json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["removed"] == ["conv"]
    assert sorted(read_baseline(pytester)["models"]) == ["conv", "tiny"]  # kept


def test_update_drops_a_removed_model(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, toml=TINY_AND_CONV.split("[tool.netbudget.models.conv]")[0])
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert result.ret == 0
    assert sorted(read_baseline(pytester)["models"]) == ["tiny"]
    again = pytester.runpytest("--netbudget")
    assert "no longer registered" not in again.stdout.str()


def test_compare_with_a_json_report_shows_the_change_but_the_baseline_is_the_gate(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-report=base.json").ret == 0
    write(pytester, project, width=6)
    # no baseline file: the report only sets the "change" column, nothing is judged against it
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-compare=base.json", "--netbudget-report=r.md")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [
            r"^conv\s+params\s+20\s+100\s+20\.0%\s+=\s+pass$",
            r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$",
        ]
    )
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "Compared with the report base.json; budgets and max_increase: the checked-out" in markdown
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 |" in markdown
    assert not (pytester.path / BASELINE).exists()


def test_compare_leaves_the_gate_to_the_baseline_file(pytester, project):
    write(pytester, project, width=5)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0  # baseline file: 55
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-report=base.json").ret == 0  # report: 55
    write(pytester, project, width=6)
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-compare=base.json")
    result.assert_outcomes(passed=1, failed=1)  # grew over the baseline file
    result.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+grew$"])
    # accepted in the baseline file: green, and the change against the report still shows
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-compare=base.json")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$"])


def test_compare_with_a_missing_file_is_a_usage_error(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-compare=nothere.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--netbudget-compare=nothere.json: no such file" in output(result)
    assert "Traceback" not in output(result)


# --- bad baselines -------------------------------------------------------------------------------

#: Files at the baseline's path that are not netbudget baselines at all: never replaced (issue 20).
NOT_BASELINES = [
    pytest.param("{ not json", ['not JSON, and no "schema" field'], id="not-json"),
    pytest.param('{"models": {}}', ["no 'schema' field"], id="no-schema"),
    pytest.param("[1, 2]", ["no 'schema' field"], id="not-an-object"),
]

#: Baselines that cannot be read: a plain run stops, a full update replaces them (and says so).
BAD_BASELINES = [
    pytest.param('{"schema": 99, "models": {}}', ["schema version 99"], id="schema-99"),
    pytest.param('{"schema": 1}', ["missing the 'models' table"], id="no-models"),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"layers": {}}}}', ["models.tiny.totals: expected an object"], id="no-totals"
    ),
    # Field by field, each at its JSON path (before: these aborted the session with INTERNALERROR, exit 3).
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"totals": {"params": "abc"}, "layers": {}}}}',
        ['models.tiny.totals.params: expected a finite number, got "abc"'],
        id="total-string",
    ),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"totals": {"params": 55}, "layers": {"fc": {"type": "Linear", "params": "abc"}}}}}',
        ['models.tiny.layers.fc.params: expected a finite number, got "abc"'],
        id="layer-figure-string",
    ),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"totals": {}, "layers": {"fc.0": {"type": 3, "params": 1}}}}}',
        ['models.tiny.layers["fc.0"].type: expected a string, got 3'],
        id="layer-type-number",
    ),
    pytest.param(
        '{"schema": 1, "models": {"my net": {"totals": {}, "layers": {"3": [1]}}}}',
        ['models["my net"].layers["3"]: expected an object'],
        id="layer-not-object",
    ),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"totals": {"macs": NaN}, "layers": {}}}}',
        ["models.tiny.totals.macs: expected a finite number, got NaN"],
        id="total-nan",
    ),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"totals": {"macs": true}, "layers": {}}}}',
        ["models.tiny.totals.macs: expected a finite number, got true"],
        id="total-bool",
    ),
    pytest.param(
        '{"schema": 1, "models": {"tiny": {"origin": 7, "totals": {}, "layers": {}}}}',
        ["models.tiny.origin: expected a string, got 7"],
        id="origin-number",
    ),
]


@pytest.mark.parametrize(("content", "fragments"), BAD_BASELINES)
def test_bad_baseline_is_a_usage_error_and_left_alone(pytester, project, content, fragments):
    write(pytester, project)
    path = pytester.path / BASELINE
    path.write_text(content, encoding="utf-8")
    result = pytester.runpytest("--netbudget")
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in text
    assert f"{path}:" in text
    for fragment in fragments:
        assert fragment in text
    assert (
        "Repair the file (resolve a git conflict, or restore it: git checkout -- netbudget-baseline.json), or "
        "write it whole from this code: pytest --netbudget --netbudget-update, with no -k or node id"
    ) in text
    assert path.read_text(encoding="utf-8") == content


@pytest.mark.parametrize(("content", "fragments"), BAD_BASELINES)
def test_bad_baseline_is_replaced_by_a_full_update(pytester, project, content, fragments):
    write(pytester, project)
    path = pytester.path / BASELINE
    path.write_text(content, encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [f"netbudget: {BASELINE} could not be read (*) and was replaced by this run's 2 model(s)"]
    )
    assert sorted(read_baseline(pytester)["models"]) == ["conv", "tiny"]


@pytest.mark.parametrize(("content", "fragments"), NOT_BASELINES)
@pytest.mark.parametrize("update", [False, True], ids=["plain", "update"])
def test_a_file_that_is_no_baseline_is_a_usage_error_and_never_replaced(pytester, project, content, fragments, update):
    write(pytester, project)
    path = pytester.path / BASELINE
    path.write_text(content, encoding="utf-8")
    result = pytester.runpytest("--netbudget", *(["--netbudget-update"] if update else []))
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{path}: not a netbudget baseline ({fragments[0]}); netbudget never replaces it" in text
    assert "Traceback" not in text
    assert path.read_text(encoding="utf-8") == content


# As a report for --netbudget-compare, these files read as they do for the JSON parser.
BAD_REPORTS = [
    pytest.param("{ not json", ["not valid JSON"], id="not-json"),
    pytest.param('{"models": {}}', ["no 'schema' field"], id="no-schema"),
    pytest.param("[1, 2]", ["no 'schema' field"], id="not-an-object"),
    *BAD_BASELINES,
]


@pytest.mark.parametrize(("content", "fragments"), BAD_REPORTS)
def test_bad_compare_file_is_a_usage_error_even_with_update(pytester, project, content, fragments):
    write(pytester, project)
    (pytester.path / "other.json").write_text(content, encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update", "--netbudget-compare=other.json")
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert "--netbudget-compare=other.json: other.json: " in text
    assert all(fragment in text for fragment in fragments)
    # --netbudget-update rewrites the baseline, never the compare file: it is not suggested.
    assert "--netbudget-update" not in text.replace("--netbudget-compare=other.json", "")
    assert "pass a JSON report written by --netbudget-report" in text
    assert not (pytester.path / BASELINE).exists()


# --- a baseline that cannot be written -------------------------------------------------------------


def assert_write_failed(result: pytest.RunResult, path) -> None:
    assert result.ret != 0
    assert result.ret != pytest.ExitCode.INTERNAL_ERROR
    text = output(result)
    assert "Traceback" not in text
    result.stdout.fnmatch_lines([f"netbudget: ERROR: {path}: cannot write the baseline: *; the old file is untouched"])


def test_update_into_a_missing_directory_fails_clearly(pytester, project):
    write(pytester, project, top='device = "cpu"\nbaseline = "nodir/base.json"')
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    result.assert_outcomes(passed=2)
    assert_write_failed(result, pytester.path / "nodir" / "base.json")
    assert not (pytester.path / "nodir").exists()


def test_update_onto_a_directory_in_the_way_fails_clearly(pytester, project):
    write(pytester, project, top='device = "cpu"\nbaseline = "inway"')
    (pytester.path / "inway").mkdir()
    (pytester.path / "inway" / "keep.txt").write_text("keep me", encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert_write_failed(result, pytester.path / "inway")
    assert (pytester.path / "inway" / "keep.txt").read_text(encoding="utf-8") == "keep me"
    assert not [name for name in os.listdir(pytester.path) if name.endswith(".tmp")]


def test_update_into_a_read_only_directory_fails_clearly(pytester, project):
    directory = pytester.path / "ro"
    directory.mkdir()
    write(pytester, project, top='device = "cpu"\nbaseline = "ro/base.json"')
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    old = (directory / "base.json").read_bytes()
    write(pytester, project, width=6, top='device = "cpu"\nbaseline = "ro/base.json"')
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("this user can write into a read-only directory (root)")
        result = pytester.runpytest("--netbudget", "--netbudget-update")
        assert_write_failed(result, directory / "base.json")
        assert (directory / "base.json").read_bytes() == old
        assert os.listdir(directory) == ["base.json"]
    finally:
        directory.chmod(0o755)


def test_unwritable_report_fails_the_run(pytester, project):
    write(pytester, project)
    (pytester.path / "report.md").mkdir()
    result = pytester.runpytest("--netbudget", "--netbudget-report=report.md")
    result.assert_outcomes(passed=2)
    assert result.ret == 1
    # Before: "... report.md: cannot write the baseline: ..." (the report was called the baseline).
    result.stdout.fnmatch_lines(["netbudget: ERROR: report.md: cannot write the report: *; the old file is untouched"])
    (error_line,) = [line for line in result.outlines if line.startswith("netbudget: ERROR:")]
    assert "baseline" not in error_line


# pytest-xdist with --netbudget-update is covered in test_plugin.py's xdist test (one subprocess run for both).
