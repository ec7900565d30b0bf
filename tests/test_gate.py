"""A gate CI can trust (issue 10, SPEC §3–§5): nothing lost or mixed up, nothing crashes the
session, nothing from model code becomes live Markdown, no silent pass. Each test here pins one
case that the plugin got wrong before; the unit-level pins live beside the module they test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("preloaded")

TINY = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
"""


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> str:
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "Traceback" not in text and "INTERNALERROR" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


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
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--netbudget", "--netbudget-update"]
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
