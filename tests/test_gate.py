"""A gate CI can trust (issue 10, SPEC §3–§5): nothing lost or mixed up, nothing crashes the
session, nothing from model code becomes live Markdown, no silent pass. Each test here pins one
case that the plugin got wrong before; the unit-level pins live beside the module they test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import MODELS
from test_plugin_errors import assert_usage_error, output

pytestmark = pytest.mark.usefixtures("preloaded")

TINY = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
"""


# --- every quantity is finite ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        pytest.param('max_params = "1e400"', "max_params", id="budget-1e400"),
        pytest.param('max_increase = "1e400"', "max_increase", id="max-increase-1e400"),
    ],
)
def test_an_infinite_quantity_is_a_usage_error_before_anything_runs(pytester, project, line, key):
    # Before: "1e400" parsed to inf; the run profiled, then raised OverflowError while printing
    # the budget, and no report or baseline was written.
    project(TINY + line)
    result = pytester.runpytest("--netbudget", "--netbudget-update", "--netbudget-report=r.json")
    assert_usage_error(result, "[tool.netbudget.models.tiny]", f"{key}: '1e400' is too large")
    assert not (pytester.path / "netbudget-baseline.json").exists()


def test_an_infinite_marker_limit_fails_its_test_with_the_key(pytester, project):
    project()
    pytester.makepyfile(
        test_marker="""
        import pytest
        from torch import nn

        @pytest.mark.netbudget(max_macs="1e400")
        def test_huge(netbudget):
            netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))

        def test_other():
            pass
        """
    )
    result = pytester.runpytest("--netbudget-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    assert "max_macs: '1e400' is too large" in result.stdout.str()
    assert "Traceback" not in output(result)


@pytest.mark.parametrize(
    ("inputs", "key", "fragment"),
    [
        pytest.param('{ shape = [1, 10], dtype = "int64", high = inf }', "inputs[0].high", "finite", id="int64-inf"),
        pytest.param('{ shape = [1, 10], dtype = "int8", high = 1000 }', "inputs[0].high", "int8's range", id="int8"),
        pytest.param("{ shape = [1, 10], high = nan }", "inputs[0].high", "finite", id="nan"),
    ],
)
def test_input_bounds_outside_the_dtype_are_a_usage_error(pytester, project, inputs, key, fragment):
    # Before: int64 high = inf and int8 high = 1000 failed inside torch.randint at run time,
    # high = nan passed the low < high check and made NaN inputs.
    project(f'[tool.netbudget.models.tiny]\nfactory = "mymodels:Tiny"\ninputs = [{inputs}]\n')
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, f"[tool.netbudget.models.tiny] {key}:", fragment)


# --- concurrent and interrupted updates ------------------------------------------------------------

FOUR = "".join(
    f'[tool.netbudget.models.m{width}]\nfactory = "mymodels:Tiny"\nkwargs = {{ n_out = {width} }}\ninput_shape = [1, 10]\n'
    for width in (1, 2, 3, 4)
)

# Each process waits at sessionfinish until all four got there, and its baseline write is slowed
# down, so that without the lock their read-merge-write windows overlap every time.
RACE_CONFTEST = """
import os, time
from pathlib import Path

import pytest

import pytest_netbudget.baseline as baseline

_dumps = baseline.dumps


def slow_dumps(models):
    time.sleep(0.5)
    return _dumps(models)


baseline.dumps = slow_dumps


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    barrier = Path(os.environ["RACE_BARRIER"])
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def test_four_parallel_updates_keep_all_four_entries(pytester, project, monkeypatch, tmp_path):
    # Before: every process read the file, then wrote it with its own model: one entry survived.
    project(FOUR)
    pytester.makeconftest(RACE_CONFTEST)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    monkeypatch.setenv("RACE_BARRIER", str(barrier))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    # Only this plugin: the processes start faster with no other plugin to load.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    command = [sys.executable, "-m", "pytest", "-p", "pytest_netbudget.plugin", "-p", "no:cacheprovider", "-q"]
    command += ["--netbudget", "--netbudget-update"]
    runs = [
        subprocess.Popen([*command, "-k", f"m{width}"], cwd=pytester.path, stdout=subprocess.PIPE, text=True)
        for width in (1, 2, 3, 4)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    entries = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]
    # Linear(10, n): 10n + n params.
    assert {name: entry["totals"]["params"] for name, entry in entries.items()} == {
        "m1": 11,
        "m2": 22,
        "m3": 33,
        "m4": 44,
    }
    assert not [name for name in os.listdir(pytester.path) if name.endswith((".lock", ".tmp"))]


def test_a_model_that_fails_keeps_its_previous_entry(pytester, project):
    # As before this issue: an update writes what was measured; a model that could not be
    # profiled keeps the entry it had.
    project(TINY + '[tool.netbudget.models.conv]\nfactory = "mymodels:conv"\ninput_shape = [1, 1, 5, 5]\n')
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    project(TINY + '[tool.netbudget.models.conv]\nfactory = "mymodels:conv"\ninput_shape = [1, 7]\n')
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["netbudget: baseline updated: * (1 model(s) written)"])
    entries = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]
    # Conv2d(1, 2, 3): 2*9 + 2 = 20 params; Linear(10, 5): 55.
    assert {name: entry["totals"]["params"] for name, entry in entries.items()} == {"conv": 20, "tiny": 55}


INTERRUPTING_TEST = """
def test_ctrl_c():
    raise KeyboardInterrupt
"""


def test_an_interrupted_update_writes_no_baseline_and_says_so(pytester, project):
    # Before: Ctrl-C after the models ran wrote their figures as if the run had completed.
    project(TINY)
    pytester.makepyfile(test_stop=INTERRUPTING_TEST)
    result = pytester.runpytest("--netbudget", "--netbudget-update", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not (pytester.path / "netbudget-baseline.json").exists()
    result.stdout.fnmatch_lines(["netbudget: ERROR: the run was interrupted, so the baseline was not written"])


CRASHING_CONFTEST = """
def pytest_runtest_logfinish(nodeid):
    if nodeid.endswith("test_after"):
        raise RuntimeError("a plugin crashed")
"""


def test_a_crashed_session_writes_no_baseline_and_says_so(pytester, project):
    project(TINY)
    pytester.makeconftest(CRASHING_CONFTEST)
    pytester.makepyfile(test_after="def test_after():\n    pass\n")
    baseline = pytester.path / "netbudget-baseline.json"
    baseline.write_text('{"schema": 1, "models": {}}', encoding="utf-8")
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert baseline.read_text(encoding="utf-8") == '{"schema": 1, "models": {}}'
    assert "netbudget: ERROR: the run was interrupted, so the baseline was not written" in output(result)


# --- every registered model and every check has exactly one result -----------------------------------

# conftest's tiny models, and one failure on each path below
PATH_MODELS = (
    MODELS
    + """
from pytest_netbudget import Cost, register_formula


def __getattr__(name):
    if name == "Lazy":
        raise RuntimeError("the lazy attribute failed to load")
    raise AttributeError(name)


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


@register_formula(Custom)
def custom_cost(module, inputs, output):
    return Cost(macs=-4)


def custom():
    return nn.Sequential(Custom())


class Greedy(nn.Module):
    def forward(self, x):
        return torch.empty(2**45) if x.numel() else x
"""
)


@pytest.fixture
def own_registry(monkeypatch):
    """The models below register a formula: keep it out of the registry other tests see."""
    from pytest_netbudget.formulas import registry

    for name in ("_op_formulas", "_module_formulas", "_registered"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))


def json_report(pytester, name="r.json"):
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("table", "cause"),
    [
        pytest.param(
            'factory = "mymodels:Lazy"\ninput_shape = [1, 10]',
            "RuntimeError: the lazy attribute failed to load",
            id="factory-import-raises",
        ),
        pytest.param(
            'factory = "mymodels:custom"\ninput_shape = [1, 10]',
            "formula mymodels.custom_cost for module:Custom returned Cost(macs=-4, flops=None)",
            id="formula-negative",
        ),
        pytest.param(
            'factory = "mymodels:Greedy"\ninput_shape = [1, 10]',
            "the forward pass ran out of memory on device cpu",
            id="out-of-memory",
        ),
    ],
)
def test_a_failure_on_a_models_path_is_its_own_error_everywhere(pytester, project, own_registry, table, cause):
    # Before: a module __getattr__ raising escaped the item as a raw traceback, the summary said
    # "all within budget" and the JSON report left the model out; a negative formula cost passed
    # silently; running out of CPU memory named neither the device nor device = "meta".
    project(TINY + f"[tool.netbudget.models.broken]\n{table}\n", models=PATH_MODELS)
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-report=r.json", "--netbudget-report=r.md")
    result.assert_outcomes(passed=1, failed=1)
    text = output(result)
    assert "Traceback" not in text
    summary = text[text.index("netbudget summary") :]
    assert "2 model(s), 1 could not be profiled, 1 failing" in summary
    assert re.search(r"^broken\s+-\s+-\s+-\s+-\s+-\s+error$", summary, re.MULTILINE)
    assert "broken: " in summary and cause in summary
    entry = json_report(pytester)["models"]["broken"]
    assert entry["status"] == "error" and cause in entry["error"]
    assert cause in (pytester.path / "r.md").read_text(encoding="utf-8")
    if "memory" in cause:
        assert 'Set device = "meta" for this model' in summary


CHECK_TESTS = """
import pytest
from torch import nn


class Broken(nn.Module):
    def forward(self, x):
        raise ValueError("the check's forward failed")


def test_broken(netbudget):
    netbudget.check(Broken(), input_shape=(1, 10))


def test_bad_dtype(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10), dtype="float17")


@pytest.mark.netbudget(max_params="lots")
def test_bad_limit(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
"""


def test_a_check_that_cannot_be_profiled_is_an_error_in_every_output(pytester, project):
    # Before: the exception failed the test with a traceback and the check was in no summary or report.
    project()
    pytester.makepyfile(test_checks=CHECK_TESTS)
    result = pytester.runpytest("--netbudget-report=r.json")
    result.assert_outcomes(failed=3)
    summary = output(result)[output(result).index("netbudget summary") :]
    assert "test_checks.py::test_bad_dtype: profiling failed: ChoiceError: dtype: unknown dtype 'float17'" in summary
    assert "test_checks.py::test_broken: profiling failed: ValueError: the check's forward failed" in summary
    assert "test_checks.py::test_bad_limit: test_checks.py::test_bad_limit: netbudget limits max_params:" in summary
    models = json_report(pytester)["models"]
    assert sorted(models) == [
        "test_checks.py::test_bad_dtype",
        "test_checks.py::test_bad_limit",
        "test_checks.py::test_broken",
    ]
    assert {entry["status"] for entry in models.values()} == {"error"}


SAME_NAME = """
from torch import nn


def test_fits(netbudget):
    netbudget.check(nn.Linear(10, {width}), input_shape=(1, 10))
"""


def test_checks_are_keyed_by_node_id(pytester, project):
    # Before: both checks were "test_fits"; --netbudget-update wrote one entry for two results, and
    # the next run compared each model with the other's figures.
    project()
    pytester.makepyfile(test_a=SAME_NAME.format(width=1), test_b=SAME_NAME.format(width=2))
    result = pytester.runpytest("--netbudget-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["netbudget: baseline updated: * (2 model(s) written)"])
    entries = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]
    # Linear(10, n): 11n params.
    assert {name: entry["totals"]["params"] for name, entry in entries.items()} == {
        "test_a.py::test_fits": 11,
        "test_b.py::test_fits": 22,
    }
    assert {name: entry["origin"] for name, entry in entries.items()} == {name: name for name in entries}


NAMED = """
from torch import nn


def test_one(netbudget):
    netbudget.check(nn.Linear(10, 1), input_shape=(1, 10), name="{first}")


def test_two(netbudget):
    netbudget.check(nn.Linear(10, 2), input_shape=(1, 10), name="shared")
"""


@pytest.mark.parametrize(
    ("first", "message"),
    [
        pytest.param("shared", "check name 'shared' of test_named.py::test_two is already used by", id="two-checks"),
        pytest.param("tiny", "check name 'tiny' of test_named.py::test_one is a model registered in", id="model"),
    ],
)
def test_a_check_name_that_is_taken_is_a_clear_error(pytester, project, first, message):
    # Before: the second result overwrote the first in the baseline and the reports.
    project(TINY)
    pytester.makepyfile(test_named=NAMED.format(first=first))
    result = pytester.runpytest("--netbudget", "--netbudget-update")
    result.assert_outcomes(passed=2, failed=1)
    assert message in output(result)
    assert "pass another name=" in output(result)
    entries = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]
    assert entries["tiny"]["totals"]["params"] == 55  # the registered Linear(10, 5) kept its own entry
    assert entries["shared"]["totals"]["params"] == (11 if first == "shared" else 22)


# --- no silent pass: uncounted ops are in the baseline too -------------------------------------------


def test_a_new_uncounted_op_is_a_line_in_the_baseline_diff(tmp_path):
    # Before: the baseline kept totals and layers only, so a model that started running an op no
    # formula counts (its MACs silently missing) changed nothing in the committed file.
    from test_budgets_reports import make_profile, row

    from pytest_netbudget import baseline
    from pytest_netbudget.results import BaselineEntry

    counted = make_profile(row("fc", "Linear", 55, 50, 105))
    uncounted = make_profile(row("fc", "Linear", 55, 50, 105), uncounted={"mylib::fused": 3})
    before = baseline.dumps({"net": BaselineEntry.from_profile(counted, "pyproject.toml")})
    after = baseline.dumps({"net": BaselineEntry.from_profile(uncounted, "pyproject.toml")})
    added = sorted(set(after.splitlines()) - set(before.splitlines()))
    assert added == ['      "uncounted_ops": {"mylib::fused": 3},']
    path = tmp_path / "b.json"
    path.write_text(after, encoding="utf-8")
    entry = baseline.load(path)["net"]
    assert entry.uncounted_ops == {"mylib::fused": 3}
    assert baseline.differences(BaselineEntry.from_profile(counted, "pyproject.toml"), entry) == ["uncounted_ops"]
    path.write_text(after.replace(": 3}", ': "3"}'), encoding="utf-8")
    with pytest.raises(
        baseline.BaselineError, match=r'models\.net\.uncounted_ops\["mylib::fused"\]: expected a finite'
    ):
        baseline.load(path)


# --- no silent pass: nothing measured is said ----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["--netbudget-update"], id="update"),
        pytest.param(["--netbudget-report=r.md"], id="report"),
    ],
)
def test_a_file_asked_for_without_netbudget_and_no_check_fails_and_says_why(pytester, project, options):
    # Before: exit 0 and no file: the CI step that posts the report found nothing, the baseline
    # was never refreshed, and nobody was told.
    project(TINY)
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest(*options)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"netbudget: ERROR: no model or check ran, so nothing was written ({options[0]}): "
            "add --netbudget to profile the models registered in pyproject.toml"
        ]
    )
    assert not (pytester.path / "netbudget-baseline.json").exists() and not (pytester.path / "r.md").exists()


def test_netbudget_selecting_no_model_says_nothing_was_written(pytester, project):
    project(TINY)
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest("--netbudget", "--netbudget-update", "-k", "test_one")
    assert result.ret == pytest.ExitCode.OK  # -k chose no model: not a mistake
    result.stdout.fnmatch_lines(["netbudget: no model or check ran, so nothing was written (--netbudget-update)"])
