"""The baseline file is never lost or overwritten by mistake (issue 20, SPEC §4): an update never
replaces a file that is not a netbudget baseline, never drops the entries of models it did not
run (not even when the file cannot be read), and keeps the old entry of a model that failed.

Figures by hand (as in test_baseline_workflow.py): Linear(10, 5) on [1, 10] has 10*5 + 5 = 55
params, Linear(10, 6) 66; Conv2d(1, 2, 3) 2*9 + 2 = 20.
"""

from __future__ import annotations

import json

import pytest
from test_baseline_workflow import BASELINE, TINY_AND_CONV, read_baseline, write
from test_plugin_errors import output

pytestmark = pytest.mark.usefixtures("preloaded")

# A baseline of both models as the first update writes it, then damaged three ways.
CONFLICTED = """{
  "schema": 1,
  "models": {
<<<<<<< HEAD
    "tiny": {"origin": "pyproject.toml", "totals": {"params": 55}, "layers": {}},
=======
    "tiny": {"origin": "pyproject.toml", "totals": {"params": 66}, "layers": {}},
>>>>>>> wider-tiny
    "conv": {"origin": "pyproject.toml", "totals": {"params": 20}, "layers": {}}
  }
}
"""

UNREADABLE = [
    pytest.param(lambda text: text.replace('"schema": 1', '"schema": 99'), "schema version 99", id="newer-schema"),
    pytest.param(lambda text: CONFLICTED, "not valid JSON", id="git-conflict-markers"),
    pytest.param(
        lambda text: text.replace('"params": 20,', '"params": "20",', 1),
        'models.conv.totals.params: expected a finite number, got "20"',
        id="a-value-of-the-wrong-type",
    ),
]


@pytest.mark.parametrize(("damage", "problem"), UNREADABLE)
def test_a_partial_update_over_an_unreadable_baseline_is_refused(pytester, project, damage, problem):
    # Before: "could not be read and will be replaced", then only tiny was written: conv's entry was lost.
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    path = pytester.path / BASELINE
    damaged = damage(path.read_text(encoding="utf-8"))
    path.write_text(damaged, encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update", "-k", "tiny")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert path.read_text(encoding="utf-8") == damaged  # untouched
    text = output(result)
    assert problem in text
    result.stdout.fnmatch_lines(
        [
            f"netbudget: ERROR: {BASELINE} could not be read (*), so this partial update (1 of 2 registered "
            "models) did not write it: it would drop the entries it cannot read. Repair the file (resolve a git "
            f"conflict, or restore it: git checkout -- {BASELINE}), or write it whole from this code: "
            "pytest --netbudget --netbudget-update, with no -k or node id"
        ]
    )


@pytest.mark.parametrize(("damage", "problem"), UNREADABLE)
def test_a_full_update_replaces_an_unreadable_baseline_and_says_so(pytester, project, damage, problem):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    path = pytester.path / BASELINE
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [f"netbudget: {BASELINE} could not be read (*{problem}*) and was replaced by this run's 2 model(s)"]
    )
    assert {name: entry["totals"]["params"] for name, entry in read_baseline(pytester)["models"].items()} == {
        "conv": 20,
        "tiny": 55,
    }


@pytest.mark.parametrize("baseline", ["pyproject.toml", "mymodels.py", "package.json"])
def test_a_file_that_is_not_a_baseline_is_never_replaced(pytester, project, baseline):
    # Before: the plain run said to run --netbudget-update, which replaced pyproject.toml with JSON.
    write(pytester, project, top=f'device = "cpu"\nbaseline = "{baseline}"')
    if baseline == "package.json":
        (pytester.path / baseline).write_text('{"name": "web", "scripts": {}}\n', encoding="utf-8")
    before = (pytester.path / baseline).read_text(encoding="utf-8")
    for options in ([], ["--netbudget-update"]):
        result = pytester.runpytest("--netbudget", *options)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        text = output(result)
        assert f"{pytester.path / baseline}: not a netbudget baseline" in text
        assert (
            "netbudget never replaces it: set [tool.netbudget] baseline to a file of its own, "
            "such as 'netbudget-baseline.json'"
        ) in text
        assert "--netbudget-update" not in text.replace(" ".join(["--netbudget", *options]), "")
        assert (pytester.path / baseline).read_text(encoding="utf-8") == before


def test_an_update_keeps_the_old_entry_of_a_model_over_its_budget(pytester, project):
    # Before: the update wrote the failing model's new figures, although failed models keep their entries.
    toml = TINY_AND_CONV + '\n[tool.netbudget.models.extra]\nfactory = "mymodels:Tiny"\ninput_shape = [1, 10]\n'
    write(pytester, project, toml=TINY_AND_CONV)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    # tiny grows to 66 params, past a budget of 60; a new model, extra, fails its budget of 50 too
    over = toml.replace("max_params = 100", "max_params = 60", 1) + "max_params = 50\n"
    write(pytester, project, width=6, toml=over)
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "netbudget: baseline updated: * (1 model(s) written)",
            "netbudget: not written: extra, tiny failed their budgets, so tiny keeps its old entry and extra "
            "gets none; make them fit (or raise their limits) and update again",
        ]
    )
    entries = read_baseline(pytester)["models"]
    assert {name: entry["totals"]["params"] for name, entry in entries.items()} == {"conv": 20, "tiny": 55}
    assert json.dumps(entries).count('"params": 66') == 0


def test_an_update_keeps_the_old_entry_of_a_model_that_could_not_be_profiled_and_says_so(pytester, project):
    # Before: a model whose factory raised kept its old entry without a word in the update's output.
    write(pytester, project, toml=TINY_AND_CONV)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    broken = TINY_AND_CONV.replace('factory = "mymodels:Tiny"', 'factory = "mymodels:Missing"', 1)
    assert broken != TINY_AND_CONV
    write(pytester, project, toml=broken)
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "netbudget: baseline updated: * (1 model(s) written)",
            "netbudget: not written: tiny could not be profiled, so tiny keeps its old entry; fix it (the error is "
            "above) and update again",
        ]
    )
    entries = read_baseline(pytester)["models"]
    assert {name: entry["totals"]["params"] for name, entry in entries.items()} == {"conv": 20, "tiny": 55}
