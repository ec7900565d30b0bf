"""Baselines know their environment (issue 20, SPEC §4): each entry records torch's version, the
device and the dtype that produced it; a figure that changed together with them is reported as
that, with what to do, not as plain growth; a baseline written before these fields still works.

Figures by hand (as in test_baseline_workflow.py): Linear(10, 5) on [1, 10] has 55 params.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_baseline_workflow import BASELINE, read_baseline, write

from pytest_netbudget import __version__

pytestmark = pytest.mark.usefixtures("preloaded")

TORCH = torch.__version__


def edit_baseline(pytester, change) -> None:
    """Rewrite the baseline file with ``change(models)`` applied (a hand edit, or an older file)."""
    path = pytester.path / BASELINE
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["models"])
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_each_entry_records_torch_the_device_and_the_dtype(pytester, project):
    # Before: the baseline recorded none of them, so a torch upgrade read as plain growth.
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entries = read_baseline(pytester)["models"]
    assert entries["tiny"]["environment"] == {
        "torch": TORCH,
        "device": "cpu",
        "dtype": "float32",
        "netbudget": __version__,  # the counting rules are the plugin's: an upgrade can change figures
    }
    assert pytester.runpytest("--netbudget", "--netbudget-update", "--netbudget-device=meta").ret == 0
    assert read_baseline(pytester)["models"]["conv"]["environment"]["device"] == "meta"


def test_a_baseline_written_before_environments_still_compares(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0

    def forget(models):
        for entry in models.values():
            del entry["environment"]

    edit_baseline(pytester, forget)
    result = pytester.runpytest("--netbudget", "--netbudget-check-baseline", "-v")
    assert result.ret == 0
    assert "its environment" not in result.stdout.str()
    result.stdout.re_match_lines([r"^tiny\s+params\s+55\s+100\s+55\.0%\s+=\s+pass$"])


def test_the_same_figures_on_a_new_torch_or_device_are_no_change(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    edit_baseline(pytester, lambda models: models["tiny"]["environment"].update(torch="2.12.0"))
    # torch "changed" and the run is on meta: the figures are equal, so the baseline is as good as it was
    result = pytester.runpytest("--netbudget", "--netbudget-check-baseline", "--netbudget-device=meta")
    assert result.ret == 0
    assert "its environment" not in result.stdout.str()


def fewer_params_on_an_older_torch(pytester, project) -> None:
    """A baseline that says tiny had 50 params on torch 2.12.0: its 55 now are +10%, past max_increase = 2%."""
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0

    def older(models):
        models["tiny"]["environment"]["torch"] = "2.12.0"
        models["tiny"]["totals"]["params"] = 50

    edit_baseline(pytester, older)


def assert_reports_name(pytester, change: str, shown: str, what: str = "environment") -> None:
    """The JSON report r.json names tiny's ``change`` (and no change of conv), and the Markdown report
    r.md says it as ``shown``: the Markdown text of ``change``, inert."""
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["tiny"]["environment_change"] == [change]
    assert "environment_change" not in report["models"]["conv"]
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert f"- **{what} changed** since its baseline entry: {shown} (its figures changed with it)" in markdown


def test_growth_that_came_with_a_new_torch_is_reported_as_that(pytester, project):
    # Before: after a torch upgrade the model "grew", with nothing to say why or what to do.
    fewer_params_on_an_older_torch(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json", "--netbudget-report=r.md")
    result.assert_outcomes(passed=1, failed=1)
    change = f"torch 2.12.0 -> {TORCH}"
    result.stdout.fnmatch_lines(
        [
            "tiny grew more than max_increase allows over its baseline",
            f"  its environment changed since its baseline entry: {change}",
            "*",
            f"  next: its figures changed with its environment ({change}), so the change may be the environment's, "
            "not the model's: if this is the environment to gate on, accept its figures with `pytest --netbudget "
            "--netbudget-update` and commit netbudget-baseline.json; else profile it where its baseline entry was made",
        ]
    )
    result.stdout.fnmatch_lines([f"tiny: its figures changed with its environment ({change}) since its baseline entry"])
    assert_reports_name(pytester, change, change.replace(">", "&#62;"))


def netbudget_of(version):
    return lambda environment: environment.update(netbudget=version)


def torch_without_netbudget(environment):
    del environment["netbudget"]
    environment["torch"] = "2.12.0"


@pytest.mark.parametrize(
    ("older", "change"),
    [
        # Before: the entry did not say which pytest-netbudget counted it: new counting rules read as growth.
        pytest.param(netbudget_of("0.0.9"), f"pytest-netbudget 0.0.9 -> {__version__}", id="new-pytest-netbudget"),
        # an entry written before it named pytest-netbudget compares the rest of its environment
        pytest.param(torch_without_netbudget, f"torch 2.12.0 -> {TORCH}", id="entry-without-it"),
    ],
)
def test_growth_that_came_with_a_new_pytest_netbudget_is_reported_as_that(pytester, project, older, change):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0

    def fewer_params_then(models):
        older(models["tiny"]["environment"])
        models["tiny"]["totals"]["params"] = 50

    edit_baseline(pytester, fewer_params_then)
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"  its environment changed since its baseline entry: {change}"])
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["tiny"]["environment_change"] == [change]


def test_a_stale_baseline_names_the_environment_that_changed(pytester, project):
    write(pytester, project, top='device = "cpu"')  # no max_increase: a change is a stale baseline, not a failure
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0

    def on_meta(models):
        models["tiny"]["environment"]["device"] = "meta"
        models["tiny"]["totals"]["params"] = 50

    edit_baseline(pytester, on_meta)
    result = pytester.runpytest("--netbudget", "--netbudget-check-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "netbudget: ERROR: netbudget-baseline.json does not match this run: tiny's params differ "
            "(with its environment: device meta -> cpu); refresh it with *"
        ]
    )
