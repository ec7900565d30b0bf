"""Every registered model has exactly one result, in the summary and in every report (issue 20,
SPEC §3), whatever its factory or forward does to the process: a ``BaseException``, a change to
process-wide torch settings, or killing its pytest-xdist worker.

Figures by hand: Linear(10, 5) on [1, 10] has 10*5 + 5 = 55 params and 50 MACs.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import MODELS
from test_plugin import QUIET
from test_plugin_errors import output

pytestmark = pytest.mark.usefixtures("preloaded")

TINY = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
"""

HOSTILE_MODELS = (
    MODELS
    + '''
import os
import sys


class Stop(BaseException):
    """Not an Exception: what a library's own cancellation looks like."""


class NotCtrlC(KeyboardInterrupt):
    """Raised by code, not by the SIGINT handler."""


def exits():
    sys.exit(3)


class RaisesInForward(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.fc = nn.Linear(10, 5)
        self.error = error

    def forward(self, x):
        raise self.error


def stops():
    return RaisesInForward(Stop("cancelled by the library"))


def not_ctrl_c():
    return RaisesInForward(NotCtrlC("raised by code"))


def fails_with_pytest():
    import pytest

    pytest.fail("the factory called pytest.fail")


class Dies(nn.Module):
    def forward(self, x):
        os._exit(13)
'''
)


def json_report(pytester, name="r.json"):
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


# --- BaseException in a factory or a forward ---------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "cause"),
    [
        pytest.param("exits", "factory mymodels:exits raised while building the model: SystemExit: 3", id="sys.exit"),
        pytest.param("stops", "the forward pass failed on input [1, 10]: Stop: cancelled by the library", id="base"),
        pytest.param("not_ctrl_c", "NotCtrlC: raised by code", id="keyboard-interrupt-subclass"),
        pytest.param("fails_with_pytest", "Failed: the factory called pytest.fail", id="pytest.fail"),
    ],
)
def test_a_base_exception_from_a_model_is_its_own_error_everywhere(pytester, project, factory, cause):
    # Before: the item failed, but the model was missing from the summary, the JSON and the
    # Markdown, which said "All 1 model(s) within budget" while the job failed.
    project(
        TINY + f'[tool.netbudget.models.hostile]\nfactory = "mymodels:{factory}"\ninput_shape = [1, 10]\n',
        models=HOSTILE_MODELS,
    )
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json", "--netbudget-report=r.md")
    result.assert_outcomes(passed=1, failed=1)
    text = output(result)
    summary = text[text.index("netbudget summary") :]
    assert "2 model(s), 1 could not be profiled, 1 failing" in summary
    assert re.search(r"^hostile\s+error\s", summary, re.MULTILINE)
    assert cause in summary
    report = json_report(pytester)
    assert report["headline"] == "1 could not be profiled (of 2 model(s))"
    assert report["models"]["hostile"]["status"] == "error" and cause in report["models"]["hostile"]["error"]
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "**1 could not be profiled (of 2 model(s))**" in markdown
    assert cause in markdown


CHECK_RAISING_SYSTEM_EXIT = """
import sys
from torch import nn


class Exits(nn.Module):
    def forward(self, x):
        sys.exit("the forward exited")


def test_exits(netbudget):
    netbudget.check(Exits(), input_shape=(1, 10))
"""


def test_a_check_whose_forward_exits_is_an_error_in_every_report(pytester, project):
    project()
    pytester.makepyfile(test_exits=CHECK_RAISING_SYSTEM_EXIT)
    result = pytester.runpytest("--netbudget-report=r.json")
    result.assert_outcomes(failed=1)
    entry = json_report(pytester)["models"]["test_exits.py::test_exits"]
    assert entry["status"] == "error"
    assert entry["error"] == "profiling failed: SystemExit: the forward exited"


# --- the session stops early ---------------------------------------------------------------------------


def test_a_model_the_session_never_reached_is_an_error_that_says_why(pytester, project):
    project(
        f'[tool.netbudget.models.first]\nfactory = "mymodels:exits"\ninput_shape = [1, 10]\n{TINY}',
        models=HOSTILE_MODELS,
    )
    result = pytester.runpytest("--netbudget", "-x", "--netbudget-report=r.json")
    result.assert_outcomes(failed=1)
    report = json_report(pytester)
    assert sorted(report["models"]) == ["first", "tiny"]
    assert report["models"]["tiny"]["status"] == "error"
    assert report["models"]["tiny"]["error"] == (
        "no result: the session ended before this model ran (-x, --maxfail or an interrupt)"
    )
    assert report["headline"] == "2 could not be profiled (of 2 model(s))"


# --- a pytest-xdist worker that dies -------------------------------------------------------------------


def test_a_model_whose_xdist_worker_dies_is_an_error_in_every_report(pytester, project):
    # Before: the model was missing from the summary, the reports and the headline.
    project(
        TINY
        + '[tool.netbudget.models.conv]\nfactory = "mymodels:conv"\ninput_shape = [1, 1, 5, 5]\n'
        + '[tool.netbudget.models.dies]\nfactory = "mymodels:Dies"\ninput_shape = [1, 10]\n',
        models=HOSTILE_MODELS,
    )
    result = pytester.runpytest_subprocess(
        "--netbudget", "-n", "2", "--netbudget-report=r.json", "--netbudget-report=r.md", *QUIET
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = output(result)
    assert re.search(r"^dies\s+error\s", text, re.MULTILINE), text
    assert "3 model(s), 1 could not be profiled, 1 failing" in text
    report = json_report(pytester)
    assert sorted(report["models"]) == ["conv", "dies", "tiny"]
    assert report["models"]["tiny"]["totals"]["params"] == 55
    error = report["models"]["dies"]["error"]
    assert re.fullmatch(r"no result: worker 'gw\d' crashed while running 'pyproject.toml::dies'", error), error
    assert report["headline"] == "1 could not be profiled (of 3 model(s))"
    assert "**1 could not be profiled (of 3 model(s))**" in (pytester.path / "r.md").read_text(encoding="utf-8")


CHECK_THAT_KILLS_ITS_WORKER = """
import os
from torch import nn


class Dies(nn.Module):
    def forward(self, x):
        os._exit(13)


def test_dies(netbudget):
    netbudget.check(Dies(), input_shape=(1, 10))
"""


def test_a_check_whose_xdist_worker_dies_is_an_error_in_every_report(pytester, project):
    # Before: the test failed, but its check was missing from the reports, which said "All 1 model(s)
    # within budget": a check from a test is not registered, so the controller did not expect it.
    project(TINY)
    pytester.makepyfile(test_dies=CHECK_THAT_KILLS_ITS_WORKER)
    result = pytester.runpytest_subprocess(
        "--netbudget", "-n", "2", "--netbudget-report=r.json", "--netbudget-report=r.md", *QUIET
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = json_report(pytester)
    assert sorted(report["models"]) == ["test_dies.py::test_dies", "tiny"]
    error = report["models"]["test_dies.py::test_dies"]["error"]
    assert re.fullmatch(
        r"no result: worker 'gw\d' crashed while running 'test_dies.py::test_dies' \(the checks of this test\)",
        error,
    ), error
    assert report["headline"] == "1 could not be profiled (of 2 model(s))"
    assert "**1 could not be profiled (of 2 model(s))**" in (pytester.path / "r.md").read_text(encoding="utf-8")
    assert re.search(r"^test_dies.py::test_dies\s+error\s", output(result), re.MULTILINE)


# --- process-wide torch settings ---------------------------------------------------------------------------

STATE_MODELS = (
    MODELS
    + """

SETTINGS = {
    "default device": lambda: str(torch.get_default_device()),
    "default dtype": torch.get_default_dtype,
    "grad mode": torch.is_grad_enabled,
    "deterministic algorithms": torch.are_deterministic_algorithms_enabled,
    "threads": torch.get_num_threads,
}
AT_START = {name: read() for name, read in SETTINGS.items()}


def leaky_factory():
    torch.set_default_device("meta")
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    return nn.Linear(10, 5)


class LeakyForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        torch.set_grad_enabled(False)
        return self.fc(x)


def healthy():
    changed = {name: read() for name, read in SETTINGS.items() if read() != AT_START[name]}
    assert not changed, f"process-wide torch settings leaked into this model: {changed}"
    return Tiny()
"""
)


def test_process_wide_torch_settings_are_restored_before_the_next_model(pytester, project):
    # Before: a factory that set the default device to meta made the next, healthy model fail.
    # A fresh process, so that nothing leaks into this one if the settings are not restored.
    tables = "".join(
        f'[tool.netbudget.models.{name}]\nfactory = "mymodels:{factory}"\ninput_shape = [1, 10]\n'
        for name, factory in (
            ("a_leaky", "leaky_factory"),
            ("b_healthy", "healthy"),
            ("c_leaky_forward", "LeakyForward"),
            ("d_healthy", "healthy"),
        )
    )
    project(tables, models=STATE_MODELS)
    result = pytester.runpytest_subprocess("--netbudget", "--netbudget-report=r.json", *QUIET)
    report = json_report(pytester)
    for name in ("b_healthy", "c_leaky_forward", "d_healthy"):
        assert report["models"][name]["status"] == "pass", report["models"][name]["error"]
    assert report["models"]["b_healthy"]["totals"]["params"] == 55
    assert report["models"]["d_healthy"]["totals"]["macs"] == 50
    # The leaky factory's own model was built on meta by its own doing: that is its own error.
    assert report["models"]["a_leaky"]["status"] == "error"
    result.assert_outcomes(passed=3, failed=1)


# --- a report from a run that did not profile the registered models ----------------------------------

CHECK = """
from torch import nn


def test_head(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
"""


def test_a_report_without_netbudget_says_the_registered_models_were_not_run(pytester, project):
    # Before: the report said "All 1 model(s) within budget" and nothing about the two models
    # registered in pyproject.toml, which had not been profiled.
    project(TINY + '[tool.netbudget.models.conv]\nfactory = "mymodels:conv"\ninput_shape = [1, 1, 5, 5]\n')
    pytester.makepyfile(test_head=CHECK)
    result = pytester.runpytest("--netbudget-report=r.json", "--netbudget-report=r.md")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "netbudget: 2 model(s) registered in pyproject.toml were not run (conv, tiny): this run was not "
            "given --netbudget, so the reports cover the checks from tests only"
        ]
    )
    report = json_report(pytester)
    assert report["not_run"] == ["conv", "tiny"]
    assert report["headline"] == "All 1 model(s) within budget; 2 registered model(s) not run"
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "**All 1 model(s) within budget; 2 registered model(s) not run**" in markdown
    assert (
        "> ⚠️ **not run:** <code>conv</code>, <code>tiny</code>: registered in pyproject.toml, not profiled "
        "(this run was not given `--netbudget`)"
    ) in markdown
