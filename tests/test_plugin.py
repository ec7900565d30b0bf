"""The pytest plugin end to end (SPEC §3): items, failures, summary, options, marker, fixture, xdist.

Expected figures are worked out by hand from the tiny models in conftest.MODELS:
Linear(10, 5) has 55 params and 50 MACs on [1, 10]; Conv2d(1, 2, 3) has 20 params
and 162 MACs on [1, 1, 5, 5].
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.usefixtures("preloaded")

TINY = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
max_params = {max_params}
max_macs = 60
"""

CONV = """
[tool.netbudget.models.conv]
factory = "mymodels:conv"
input_shape = [1, 1, 5, 5]
max_params = 100
max_macs = "1k"
"""


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


# --- items ------------------------------------------------------------------------------------


def test_one_item_per_model_named_after_it(pytester, project):
    project(TINY.format(max_params=60) + CONV)
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*pyproject.toml::tiny PASSED*", "*pyproject.toml::conv PASSED*"])


def test_dash_k_selects_one_model(pytester, project):
    project(TINY.format(max_params=60) + CONV)
    result = pytester.runpytest("--netbudget", "-v", "-k", "tiny")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*pyproject.toml::tiny PASSED*"])
    assert "::conv" not in result.stdout.str()


def test_node_id_of_a_failed_model_reruns_it(pytester, project):
    """The id pytest prints on a FAILED line selects that model, as with any test."""
    project(TINY.format(max_params=60) + CONV)
    result = pytester.runpytest("--netbudget", "-v", "pyproject.toml::conv")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*collected 1 item*", "*pyproject.toml::conv PASSED*"])


def test_collected_count_includes_the_models(pytester, project):
    project(TINY.format(max_params=60) + CONV)
    pytester.makepyfile(test_other="def test_plain():\n    assert True\n")
    result = pytester.runpytest("--netbudget", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["pyproject.toml::tiny", "pyproject.toml::conv", "*3 tests collected*"])


def test_over_budget_fails_that_item_with_the_budget_table(pytester, project):
    # 55 params against 50: +5, 10.0% over; 50 MACs against 60: ok.
    project(TINY.format(max_params=50) + CONV)
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*pyproject.toml::tiny FAILED*", "*pyproject.toml::conv PASSED*"])
    result.stdout.re_match_lines(
        [
            r"^tiny exceeds its budget$",
            r"^\s+metric\s+budget\s+actual\s+over$",
            r"^\s+params\s+50\s+55\s+\+5 \(\+10\.0%\)$",
            r"^\s+macs\s+60\s+50\s+ok$",
            r"^\s+largest layers by params: fc \(Linear\) 55$",
        ]
    )
    assert "Traceback" not in output(result)
    result.stdout.fnmatch_lines(["FAILED pyproject.toml::tiny - tiny exceeds its budget"])


def test_summary_table_at_the_end(pytester, project):
    project(TINY.format(max_params=110) + CONV)
    result = pytester.runpytest("--netbudget", "-v")
    assert result.ret == 0
    result.stdout.re_match_lines(
        [
            r"^=+ netbudget summary =+$",
            r"^2 model\(s\) profiled, all within budget$",
            r"^model\s+metric\s+actual\s+budget\s+used\s+vs baseline\s+status$",
            # conv: 20 of 100 params (20.0%), 162 of 1000 MACs (16.2%)
            r"^conv\s+params\s+20\s+100\s+20\.0%\s+new\s+pass$",
            r"^\s+macs\s+162\s+1\.00k\s+16\.2%",
            # tiny: 55 of 110 params (50.0%), 50 of 60 MACs (83.3%)
            r"^tiny\s+params\s+55\s+110\s+50\.0%\s+new\s+pass$",
            r"^\s+macs\s+50\s+60\s+83\.3%",
        ]
    )
    assert result.stdout.str().count("netbudget summary") == 1


def test_summary_marks_the_failing_model_over(pytester, project):
    project(TINY.format(max_params=50) + CONV)
    result = pytester.runpytest("--netbudget", "-v")
    result.stdout.re_match_lines(
        [r"^2 model\(s\) profiled, 1 failing$", r"^tiny\s+params\s+55\s+50\s+110\.0%\s+new\s+over$"]
    )


@pytest.mark.parametrize("option", [["--netbudget-layers"], ["--netbudget-layers=1"], ["--netbudget-layers", "1"]])
def test_layers_option_prints_per_layer_tables(pytester, project, option):
    project(TINY.format(max_params=60) + CONV)
    result = pytester.runpytest("--netbudget", *option)
    assert result.ret == 0
    result.stdout.re_match_lines(
        [
            r"^-+ conv: layers -+$",
            r"^\s+0\s+Conv2d\s+\[1, 1, 5, 5\]\s+\[1, 2, 3, 3\]\s+20\s+162\b",
            r"^-+ tiny: layers -+$",
            r"^\s+fc\s+Linear\s+\[1, 10\]\s+\[1, 5\]\s+55\s+50\b",
        ]
    )


def test_layers_depth_folds_deeper_rows(pytester, project):
    project('[tool.netbudget.models.nested]\nfactory = "mymodels:nested"\ninput_shape = [1, 10]\n')
    full = pytester.runpytest("--netbudget", "--netbudget-layers")
    full.stdout.re_match_lines(
        [
            r"^  0\s+Sequential\s+\[1, 10\]\s+\[1, 4\]\s+-\s+-",
            r"^    0\s+Linear\s+\[1, 10\]\s+\[1, 4\]\s+44\s+40\b",
            r"^    1\s+ReLU\s",
            r"^  1\s+Linear\s+\[1, 4\]\s+\[1, 2\]\s+10\s+8\b",
        ]
    )
    shallow = pytester.runpytest("--netbudget", "--netbudget-layers=1")
    # block 0 carries its Linear's 44 params and 40 MACs; no row below depth 1
    shallow.stdout.re_match_lines(
        [r"^  0\s+Sequential\s+\[1, 10\]\s+\[1, 4\]\s+44\s+40\b", r"^  1\s+Linear\s+\[1, 4\]\s+\[1, 2\]\s+10\s+8\b"]
    )
    assert "ReLU" not in shallow.stdout.str()


def test_no_layers_tables_without_the_option(pytester, project):
    project(TINY.format(max_params=60))
    result = pytester.runpytest("--netbudget")
    assert ": layers" not in result.stdout.str()


def test_device_option_meta(pytester, project):
    project(TINY.format(max_params=60) + CONV, top='device = "cpu"')
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-device=meta", "--netbudget-layers")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^tiny\s+params\s+55\s+60\s+91\.7%", r"^Model: Tiny on meta\b"])


def test_junitxml_carries_item_names_and_properties(pytester, project):
    project(TINY.format(max_params=60) + CONV)
    result = pytester.runpytest("--netbudget", "--junitxml=junit.xml")
    assert result.ret == 0
    tree = ET.parse(pytester.path / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    assert set(cases) == {"tiny", "conv"}
    properties = {
        name: {prop.get("name"): prop.get("value") for prop in case.iter("property")} for name, case in cases.items()
    }
    assert properties["tiny"]["netbudget_params"] == "55"
    assert properties["tiny"]["netbudget_macs"] == "50"
    assert properties["conv"]["netbudget_params"] == "20"
    assert properties["conv"]["netbudget_macs"] == "162"


def test_without_netbudget_no_items_no_summary_ordinary_tests_unaffected(pytester, project):
    project(TINY.format(max_params=50))  # over budget, but not asked for
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    text = result.stdout.str()
    assert "pyproject.toml::" not in text
    assert "netbudget summary" not in text
    assert "netbudget:" not in text
    result.stdout.fnmatch_lines(["*test_plain.py::test_one PASSED*"])


def test_with_netbudget_ordinary_tests_still_run(pytester, project):
    project(TINY.format(max_params=60))
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_plain.py::test_one PASSED*"])


def test_netbudget_without_table_is_a_usage_error_naming_the_file(pytester):
    # Before: exit 5 ("no tests ran") or 0 beside other tests, nothing profiled: a misconfigured CI passed.
    pytester.makepyprojecttoml("[project]\nname = 'x'\n")
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest("--netbudget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--netbudget: {pytester.path / 'pyproject.toml'} has no [[]tool.netbudget[]] table;*"]
    )
    (pytester.path / "pyproject.toml").unlink()
    result = pytester.runpytest("--netbudget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--netbudget: {pytester.path / 'pyproject.toml'} does not exist;*"])


def test_loading_the_plugin_does_not_import_torch(pytester):
    pytester.makepyprojecttoml("[project]\nname = 'x'\n")
    pytester.makepyfile(
        test_light="""
        import sys

        def test_no_torch():
            assert "torch" not in sys.modules
            assert "pytest_netbudget.plugin" in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


# --- inputs and model options ------------------------------------------------------------------


def test_integer_inputs_with_embedding(pytester, project):
    # Embedding(100, 4): 400 params; an index lookup is not a MAC.
    models = """
    from torch import nn

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 4)

        def forward(self, tokens):
            assert tokens.dtype.is_floating_point is False
            assert int(tokens.max()) < 100
            return self.embed(tokens).mean(1)
    """
    project(
        """
[tool.netbudget.models.bag]
factory = "mymodels:Bag"
inputs = [{ shape = [1, 8], dtype = "int64", high = 100 }]
max_params = 400
""",
        models=models,
    )
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"^bag\s+params\s+400\s+400\s+100\.0%\s+new\s+pass$", r"^\s+macs\s+0\s+-"])


def test_input_factory_and_kwargs(pytester, project):
    # Tiny(n_out=3) = Linear(10, 3): 33 params; a [2, 10] batch from the input factory: 2 * 30 = 60 MACs.
    models = """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, n_out=5):
            super().__init__()
            self.fc = nn.Linear(10, n_out)

        def forward(self, x, scale=1.0):
            return self.fc(x) * scale

    def inputs():
        return {"x": torch.ones(2, 10), "scale": 2.0}
    """
    project(
        """
[tool.netbudget.models.tiny3]
factory = "mymodels:Tiny"
kwargs = { n_out = 3 }
input_factory = "mymodels:inputs"
max_params = 33
max_macs = 60
""",
        models=models,
    )
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-layers")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [
            r"^tiny3\s+params\s+33\s+33\s+100\.0%",
            r"^\s+macs\s+60\s+60\s+100\.0%",
            r"^\s+fc\s+Linear\s+\[2, 10\]\s+\[2, 3\]",
        ]
    )


def test_dtype_float16_halves_size(pytester, project):
    # Linear(256, 256): 65,792 params; 4 bytes each = 0.250977 MiB, 2 bytes each = 0.125488 MiB.
    models = """
    from torch import nn

    def wide():
        return nn.Linear(256, 256)
    """
    project(
        """
[tool.netbudget.models.full]
factory = "mymodels:wide"
input_shape = [1, 256]

[tool.netbudget.models.half]
factory = "mymodels:wide"
input_shape = [1, 256]
dtype = "float16"
device = "meta"
""",
        models=models,
    )
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-report=report.json")
    result.assert_outcomes(passed=2)
    models_json = json.loads((pytester.path / "report.json").read_text())["models"]
    full = models_json["full"]["totals"]["size_mb"]
    half = models_json["half"]["totals"]["size_mb"]
    assert full == pytest.approx(65792 * 4 / 2**20, abs=1e-6)
    assert half == pytest.approx(full / 2, abs=1e-6)
    result.stdout.re_match_lines([r"^\s+size_mb\s+0\.251\s", r"^\s+size_mb\s+0\.125\s"])


def test_model_without_limits_is_profiled_and_listed(pytester, project):
    project(
        """
[tool.netbudget.models.free]
factory = "mymodels:Tiny"
input_shape = [1, 10]
"""
    )
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pyproject.toml::free PASSED*"])
    result.stdout.re_match_lines([r"^free\s+params\s+55\s+-\s+new\s+pass$", r"^\s+macs\s+50\s+-"])


# --- the marker and the fixture -----------------------------------------------------------------


FIXTURE_TESTS = """
import pytest
from torch import nn

from pytest_netbudget import budget


@pytest.mark.netbudget(max_params=60)
def test_marker_pass(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))


@pytest.mark.netbudget(max_params=50)
def test_marker_fail(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))


@budget(max_params="60", max_macs=50)
def test_budget_pass(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))


@budget(max_macs=49)
def test_budget_fail(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))


@pytest.mark.netbudget(max_params=10)
def test_kwargs_override_marker(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10), max_params=55)


@pytest.mark.netbudget(max_params=1000)
def test_kwargs_override_marker_to_fail(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10), max_params="54")


def test_profile_returns_figures(netbudget):
    p = netbudget.profile(nn.Conv2d(1, 2, 3), input_shape=(1, 1, 5, 5))
    assert (p.params, p.macs) == (20, 162)
"""


@pytest.mark.parametrize("flag", [[], ["--netbudget"]])
def test_fixture_check_with_marker_and_budget(pytester, flag):
    pytester.makepyprojecttoml('[tool.netbudget]\ndevice = "cpu"\n')
    pytester.makepyfile(test_checks=FIXTURE_TESTS)
    result = pytester.runpytest(*flag, "-v")
    result.assert_outcomes(passed=4, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*test_marker_pass PASSED*",
            "*test_marker_fail FAILED*",
            "*test_budget_pass PASSED*",
            "*test_budget_fail FAILED*",
            "*test_kwargs_override_marker PASSED*",
            "*test_kwargs_override_marker_to_fail FAILED*",
            "*test_profile_returns_figures PASSED*",
        ]
    )
    result.stdout.re_match_lines(
        [
            r"^test_checks.py::test_marker_fail exceeds its budget$",
            r"^\s+params\s+50\s+55\s+\+5 \(\+10\.0%\)$",
            r"^test_checks.py::test_budget_fail exceeds its budget$",
            r"^\s+macs\s+49\s+50\s+\+1 \(\+2\.0%\)$",
            r"^test_checks.py::test_kwargs_override_marker_to_fail exceeds its budget$",
            r"^\s+params\s+54\s+55\s+\+1 \(\+1\.9%\)$",
        ]
    )
    # the checks appear in the end-of-session summary
    result.stdout.re_match_lines(
        [
            r"^=+ netbudget summary =+$",
            r"^6 model\(s\) profiled, 3 failing$",
        ]
    )
    text = result.stdout.str()
    summary = text[text.index("netbudget summary") :]
    for name in ("test_marker_pass", "test_marker_fail", "test_budget_pass", "test_kwargs_override_marker"):
        assert f"\ntest_checks.py::{name} " in summary  # a check is named after its test's node id
    assert "test_profile_returns_figures" not in summary  # profile() checks nothing
    assert "Traceback" not in text


def test_fixture_check_name_and_several_checks(pytester):
    pytester.makepyfile(
        test_many="""
        from torch import nn

        def test_two(netbudget):
            netbudget.check(nn.Linear(10, 5), input_shape=(1, 10), name="head", max_params=55)
            netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
            netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [
            r"^head\s+params\s+55\s+55\s+100\.0%",
            r"^test_many.py::test_two\[2\]\s+params\s+55\s+-",
            r"^test_many.py::test_two\[3\]\s+params\s+55",
        ]
    )


def test_budget_with_misspelt_limit_fails_at_import(pytester):
    pytester.makepyfile(
        test_bad="""
        from pytest_netbudget import budget

        @budget(max_parms=1)
        def test_never(netbudget):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*max_parms*did you mean 'max_params'*"])


def test_misspelt_marker_limit_is_reported_without_traceback(pytester):
    pytester.makepyfile(
        test_marker="""
        import pytest
        from torch import nn

        @pytest.mark.netbudget(max_parms=60)
        def test_bad_marker(netbudget):
            netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
        """
    )
    result = pytester.runpytest()
    text = output(result)
    assert result.ret != 0
    assert "max_parms: unknown key; did you mean 'max_params'?" in text
    assert "test_marker.py::test_bad_marker" in text
    assert "plugin.py" not in text
    assert "raise pytest.UsageError" not in text


def test_budget_with_bad_quantity_fails_at_import():
    from pytest_netbudget import budget

    with pytest.raises(ValueError, match="12 apples"):
        budget(max_params="12 apples")
    with pytest.raises(ValueError, match="positive"):
        budget(max_macs=0)
    assert budget(max_params="12M").mark.kwargs == {"max_params": "12M"}


# --- pytest-xdist ---------------------------------------------------------------------------------


# Only a few subprocess runs: pytest-xdist workers each import torch, which takes seconds.
# Plugins that have nothing to do with this are left out to keep the run short.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:anyio")


def test_xdist_runs_every_model_prints_one_summary_writes_one_baseline(pytester, project):
    project(
        TINY.format(max_params=60)
        + CONV
        + """
[tool.netbudget.models.two]
factory = "mymodels:two_layers"
input_shape = [1, 10]
max_params = 54
"""
    )
    result = pytester.runpytest_subprocess(
        "--netbudget", "-v", "-n", "2", "--netbudget-update", "--netbudget-report=report.json", *QUIET
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*PASSED*pyproject.toml::*"] * 3)
    text = result.stdout.str()
    assert text.count("netbudget summary") == 1
    assert text.count("baseline updated") == 1
    result.stdout.re_match_lines(
        [
            r"^3 model\(s\) profiled, all within budget$",
            r"^conv\s+params\s+20\s+100\s",
            r"^tiny\s+params\s+55\s+60\s",
            r"^two\s+params\s+54\s+54\s+100\.0%",
            r"^netbudget: report written to report.json$",
            r"^netbudget: baseline updated: .*netbudget-baseline.json \(3 model\(s\) written\)$",
        ]
    )
    baseline = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))
    assert sorted(baseline["models"]) == ["conv", "tiny", "two"]
    two = baseline["models"]["two"]["totals"]
    assert (two["params"], two["macs"], two["flops"]) == (54, 48, 2 * 48 + 4 + 2)  # FLOPs: MACs twice, plus biases
    report = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    assert sorted(report["models"]) == ["conv", "tiny", "two"]


# --- ops without a counting formula ------------------------------------------------------------------

OPAQUE_MODELS = '''
import torch
from torch import nn

if not hasattr(torch.ops.nbplugtest, "mystery"):  # pytester imports this module once per run

    @torch.library.custom_op("nbplugtest::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @mystery.register_fake
    def _(x):
        return torch.empty_like(x)


class Opaque(nn.Module):
    """Linear(10, 5) (55 params, 50 MACs on [1, 10]), then an op nobody wrote a formula for."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        return torch.ops.nbplugtest.mystery(self.fc(x))
'''
OPAQUE = '[tool.netbudget.models.opaque]\nfactory = "mymodels:Opaque"\ninput_shape = [1, 10]\n'


def test_uncounted_ops_are_listed_but_pass_without_strict(pytester, project):
    project(OPAQUE, models=OPAQUE_MODELS)
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["opaque: uncounted ops (no formula, not in MACs/FLOPs): nbplugtest.mystery x1"])


def test_strict_fails_a_model_with_uncounted_ops(pytester, project):
    project(OPAQUE + "strict = true\n", models=OPAQUE_MODELS)
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "opaque ran ops that have no counting formula (strict = true)",
            "  uncounted ops: nbplugtest.mystery x1",
        ]
    )
    assert "Traceback" not in output(result)


# --- a training step -----------------------------------------------------------------------------------------

# Tiny (Linear(10, 5)) on [1, 10], one SGD step, by hand:
#   train_macs: forward 50, weight gradient 50 (the input needs no gradient) = 100
#   train_flops: forward 2*50 + 5 bias = 105, loss sum 5, weight gradient 2*50 = 100,
#   bias gradient (a sum over the row) 5, SGD one add per parameter 55 -> 270
TRAIN = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
train = {{ optimizer = "sgd" }}
max_train_macs = {max_train_macs}
"""


def test_a_training_step_is_budgeted_reported_and_kept_in_the_baseline(pytester, project):
    project(TRAIN.format(max_train_macs=90))
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-update", "--netbudget-report=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"^tiny exceeds its budget$",
            r"^\s+train_macs\s+90\s+100\s+\+10 \(\+11\.1%\)$",
            r"^\s+train_flops\s+270\s+-$",  # the summary: unbudgeted, shown for a model with a step
            r"^tiny: Training step \(sgd\): MACs 100 \(100\), FLOPs 270 \(270\)$",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())["models"]["tiny"]
    assert report["metrics"]["train_macs"]["status"] == "over"
    assert report["train"]["optimizer"] == "sgd"
    assert report["train"]["memory_mb"]["params"] * 2**20 == 55 * 4
    # over its budget, the model gets no entry (issue 20); within it, the step is kept per layer
    assert json.loads((pytester.path / "netbudget-baseline.json").read_text())["models"] == {}
    project(TRAIN.format(max_train_macs=100))
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entry = json.loads((pytester.path / "netbudget-baseline.json").read_text())["models"]["tiny"]
    assert (entry["totals"]["train_macs"], entry["totals"]["train_flops"]) == (100, 270)
    assert entry["layers"]["fc"]["train_macs"] == 100


def test_a_training_step_within_budget_passes(pytester, project):
    project(TRAIN.format(max_train_macs=100))
    pytester.runpytest("--netbudget").assert_outcomes(passed=1)
