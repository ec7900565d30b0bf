"""A gate CI can trust (issue 10, SPEC §3–§5): nothing lost or mixed up, nothing crashes the
session, nothing from model code becomes live Markdown, no silent pass. Each test here pins one
case that the plugin got wrong before; the unit-level pins live beside the module they test."""

from __future__ import annotations

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
