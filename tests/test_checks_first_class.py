"""Checks from tests are first-class (SPEC §3): ``netbudget.check()`` gets ``max_increase`` (from
``[tool.netbudget]``, the marker or the call), ``strict``, JUnit properties, a baseline entry and the
summary and report rows; the marker without the fixture is an error; bad limits fail cleanly.

Figures by hand: Linear(10, 5) on [1, 10] has 10*5 + 5 = 55 params, 50 MACs; Linear(10, 6) 66
params (+11, +20.0%), 60 MACs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from test_plugin import OPAQUE_MODELS

pytestmark = pytest.mark.usefixtures("preloaded")

CHECK = """
import pytest
from torch import nn


@pytest.mark.netbudget(max_params=100{marker})
def test_head(netbudget):
    netbudget.check(nn.Linear(10, {width}), input_shape=(1, 10){call})
"""


def checks(pytester, width=5, marker="", call="", top='device = "cpu"\nmax_increase = "2%"'):
    pytester.makepyprojecttoml(f"[tool.netbudget]\n{top}\n")
    pytester.makepyfile(test_head=CHECK.format(width=width, marker=marker, call=call))


def test_a_check_grows_past_the_top_level_max_increase_and_says_what_to_do(pytester):
    checks(pytester)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    entry = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]
    assert [value["origin"] for value in entry.values()] == ["test_head.py::test_head"]
    checks(pytester, width=6)
    result = pytester.runpytest("--netbudget", "-v", "--junitxml=junit.xml", "--netbudget-report=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"^test_head\.py::test_head grew more than max_increase allows over its baseline$",
            r"^\s+params\s+100\s+66\s+55\s+\+11 \(\+20\.0%\)\s+grew \+11 \(\+20\.0%\), more than the allowed 2%$",
            r"^\s+next: if the growth is intended, accept it with `pytest --netbudget --netbudget-update` "
            r"and commit netbudget-baseline.json$",
        ]
    )
    result.stdout.re_match_lines(
        [r"^test_head\.py::test_head\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+grew$"]
    )
    properties = {
        prop.get("name"): prop.get("value") for prop in ET.parse(pytester.path / "junit.xml").iter("property")
    }
    assert properties["netbudget_params"] == "66"
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    (model,) = report["models"].values()
    assert model["status"] == "grew"
    assert model["metrics"]["params"]["max_increase"] == {"fraction": 0.02}


@pytest.mark.parametrize(
    ("marker", "call"),
    [pytest.param(', max_increase="50%"', "", id="marker"), pytest.param("", ', max_increase="50%"', id="call")],
)
def test_a_checks_own_max_increase_overrides_the_top_level(pytester, marker, call):
    checks(pytester, marker=marker, call=call)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    checks(pytester, width=6, marker=marker, call=call)
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1)  # +20% is within 50%
    result.stdout.re_match_lines(
        [r"^test_head\.py::test_head\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$"]
    )


def test_a_check_with_max_increase_per_metric(pytester):
    # params may not grow at all, MACs may: only params fails
    checks(pytester, call=', max_increase={"params": "0", "macs": "50%"}', top='device = "cpu"')
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    checks(pytester, width=6, call=', max_increase={"params": "0", "macs": "50%"}', top='device = "cpu"')
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [r"^\s+params\s+100\s+66\s+55\s+\+11 \(\+20\.0%\)\s+grew .*allowed 0$", r"^\s+macs\s+-\s+60\s+50\s+.*ok$"]
    )


STRICT_CHECK = """
from mymodels import Opaque


def test_opaque(netbudget):
    netbudget.check(Opaque(), input_shape=(1, 10){call})
"""


@pytest.mark.parametrize(
    ("top", "call", "fails"),
    [
        pytest.param("", "", False, id="default"),
        pytest.param("", ", strict=True", True, id="per-call"),
        pytest.param("strict = true", "", True, id="top-level"),
        pytest.param("strict = true", ", strict=False", False, id="call-overrides-top"),
    ],
)
def test_strict_applies_to_checks(pytester, top, call, fails):
    pytester.makepyprojecttoml(f'[tool.netbudget]\ndevice = "cpu"\n{top}\n')
    pytester.makepyfile(mymodels=OPAQUE_MODELS, test_opaque=STRICT_CHECK.format(call=call))
    result = pytester.runpytest("--netbudget")
    if not fails:
        result.assert_outcomes(passed=1)
        return
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_opaque.py::test_opaque ran ops that have no counting formula (strict = true)",
            "  uncounted ops: nbplugtest.mystery x1",
            "  next: register a counting formula for these ops (pytest_netbudget.register_formula), or set "
            "strict = false in the netbudget marker or check() keywords of test_opaque.py::test_opaque",
        ]
    )


def test_the_marker_without_the_fixture_is_an_error_that_says_so(pytester):
    pytester.makepyfile(
        test_marked="""
        import pytest
        from pytest_netbudget import budget

        @pytest.mark.netbudget(max_params=10)
        def test_forgot_the_fixture():
            assert True

        @budget(max_params=10)
        def test_forgot_it_too():
            assert True

        def test_plain():
            assert True
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_marked.py::test_forgot_the_fixture is marked netbudget (@pytest.mark.netbudget or @budget) but "
            "does not use the netbudget fixture, so nothing is checked: add a `netbudget` argument and call "
            "netbudget.check(model, input_shape=...)"
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("marker", "call", "message"),
    [
        pytest.param("", ', max_parms="1k"', "max_parms: unknown key; did you mean 'max_params'?", id="misspelt"),
        pytest.param("", ', max_increase="lots"', "max_increase:", id="bad-increase"),
        pytest.param("", ', strict="yes"', "strict:", id="bad-strict"),
        pytest.param(', max_macs="-3"', "", "max_macs: must be a positive budget", id="marker"),
    ],
)
def test_bad_limits_fail_without_a_chained_traceback(pytester, marker, call, message):
    checks(pytester, marker=marker, call=call)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert f"test_head.py::test_head: netbudget limits {message}" in text
    assert "During handling of the above exception" not in text
    assert "Traceback" not in text


# --- which paths select what -------------------------------------------------------------------------

REGISTERED = '[tool.netbudget.models.tiny]\nfactory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_params = 100\n'


@pytest.mark.parametrize(
    ("args", "ran"),
    [
        pytest.param([], {"tiny", "test_head.py::test_head"}, id="no-path"),
        pytest.param(["test_head.py"], {"test_head.py::test_head"}, id="test-file-only"),
        pytest.param(["pyproject.toml"], {"tiny"}, id="pyproject-only"),
        pytest.param(["pyproject.toml", "test_head.py"], {"tiny", "test_head.py::test_head"}, id="both"),
        pytest.param(["."], {"tiny", "test_head.py::test_head"}, id="the-directory"),
        pytest.param(["-k", "head"], {"test_head.py::test_head"}, id="dash-k"),
    ],
)
def test_paths_select_as_pytests_own_selection(pytester, project, args, ran):
    project(REGISTERED)
    pytester.makepyfile(test_head=CHECK.format(width=5, marker="", call=""))
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json", *args)
    assert result.ret == 0
    assert set(json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["models"]) == ran


# --- a check's training step ----------------------------------------------------------------------------

# Linear(8, 8) on [1, 8], one SGD step: the forward's addmm 1*8*8 = 64 MACs, the backward's weight
# gradient grad_out^T [8, 1] @ input [1, 8] = 64 MACs (the input needs no gradient; the bias's is a
# sum), SGD's update per element, no MACs: 128 train MACs.
STEP_CHECK = """
from torch import nn


def test_step(netbudget):
    netbudget.check(nn.Linear(8, 8), input_shape=(1, 8){call})
"""


@pytest.mark.parametrize(
    ("call", "outcome", "lines"),
    [
        pytest.param(
            ', max_train_flops="1"',
            "failed",
            [
                r".*test_step\.py::test_step: netbudget limits max_train_flops: budgets a training step, but the "
                r'model has none: pass train=True, or the settings: train=\{"optimizer": "sgd", "batch": 8\}.*'
            ],
            id="a step's limit without a step: a clear error",
        ),
        pytest.param(
            ', train={"optimizer": "sgd"}, max_train_macs=127',
            "failed",
            [r"^test_step\.py::test_step exceeds its budget$", r"^\s+train_macs\s+127\s+128\s+\+1 \(\+0\.8%\)$"],
            id="the step runs and is judged",
        ),
        pytest.param(', train={"optimizer": "sgd"}, max_train_macs=128', "passed", [], id="at its limit"),
        pytest.param(
            ', train={"optimizer": "lion"}',
            "failed",
            [r".*netbudget limits train\.optimizer: unknown optimizer 'lion': use one of sgd, sgd-momentum.*"],
            id="settings checked as pyproject.toml's",
        ),
    ],
)
def test_a_check_takes_the_same_training_step_as_a_registered_model(pytester, call, outcome, lines):
    # Before: max_train_flops="1" was accepted, the step never ran, the figure was "not measured" and
    # the check passed.
    pytester.makepyprojecttoml('[tool.netbudget]\ndevice = "cpu"\n')
    pytester.makepyfile(test_step=STEP_CHECK.format(call=call))
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(**{outcome: 1})
    if lines:
        result.stdout.re_match_lines(lines)
    if outcome == "passed":
        result.stdout.re_match_lines([r"^test_step\.py::test_step: Training step \(sgd\): MACs 128 \(128\)"])


def test_the_marker_gives_a_check_its_training_step(pytester):
    pytester.makepyprojecttoml('[tool.netbudget]\ndevice = "meta"\n')
    pytester.makepyfile(
        test_step="""
import pytest
from torch import nn


@pytest.mark.netbudget(max_train_macs=128, train={"optimizer": "sgd"})
def test_step(netbudget):
    netbudget.check(nn.Linear(8, 8), input_shape=(1, 8))
"""
    )
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"^test_step\.py::test_step\s+params\s+72\s+.*", r"^\s+train_macs\s+128\s+128\s+100\.0%"]
    )
