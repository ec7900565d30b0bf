"""Bad configuration is a usage error naming file, table and key (SPEC §2); a model that cannot
be built or run fails only its own item with the cause (SPEC §3)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("preloaded")

GOOD = """
[tool.netbudget.models.good]
factory = "mymodels:Tiny"
input_shape = [1, 10]
max_params = 55
"""


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> str:
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


def model_table(body: str, name: str = "bad") -> str:
    return f"[tool.netbudget.models.{name}]\n{body}\n"


# --- bad configuration: a usage error, never a traceback --------------------------------------------

BAD_MODEL_KEYS = [
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_parms = 60',
        "max_parms",
        ["unknown key", "did you mean 'max_params'"],
        id="misspelt-key",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_params = "12 apples"',
        "max_params",
        ["'12 apples' is not a quantity"],
        id="12-apples",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_macs = -5',
        "max_macs",
        ["positive"],
        id="negative-budget",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_params = "-1k"',
        "max_params",
        ["positive"],
        id="negative-quantity",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_size_mb = 0',
        "max_size_mb",
        ["positive"],
        id="zero-budget",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_params = true',
        "max_params",
        ["True"],
        id="bool-budget",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nkwargs = 3',
        "kwargs",
        ["must be a table"],
        id="kwargs-not-table",
    ),
    pytest.param(
        'factory = "nocolon"\ninput_shape = [1, 10]',
        "factory",
        ["'nocolon' is not of the form"],
        id="factory-without-colon",
    ),
    pytest.param(
        "factory = 3\ninput_shape = [1, 10]",
        "factory",
        ["is not of the form"],
        id="factory-not-string",
    ),
    pytest.param("input_shape = [1, 10]", "factory", ["missing"], id="no-factory"),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 0]',
        "input_shape",
        ["positive integers", "[1, 0]"],
        id="shape-zero",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 2.5]',
        "input_shape",
        ["positive integers", "[1, 2.5]"],
        id="shape-float",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = "1,2"',
        "input_shape",
        ["positive integers", "'1,2'"],
        id="shape-string",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = []',
        "input_shape",
        ["positive integers"],
        id="shape-empty",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninputs = [{ shape = [1, -8], dtype = "int64", high = 10 }]',
        "inputs[0].shape",
        ["positive integers"],
        id="inputs-shape-negative",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\ndtype = "float17"',
        "dtype",
        ["unknown dtype 'float17'", "did you mean 'float16'"],
        id="unknown-dtype",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninputs = [{ shape = [1, 8], dtype = "int65", high = 10 }]',
        "inputs[0].dtype",
        ["unknown dtype 'int65'"],
        id="unknown-input-dtype",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninputs = [{ shape = [1, 8], dtype = "int64" }]',
        "inputs[0].high",
        ["needs 'high'"],
        id="int-input-without-high",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninputs = [{ shape = [1, 8], dtpye = "int64", high = 10 }]',
        "inputs[0].dtpye",
        ["did you mean 'dtype'"],
        id="misspelt-input-key",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\ndevice = "tpu"',
        "device",
        ["unknown device 'tpu'"],
        id="unknown-device",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\ninputs = [{ shape = [1, 10] }]',
        None,
        ["exactly one of input_shape, inputs or input_factory", "input_shape, inputs"],
        id="both-inputs",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"',
        None,
        ["exactly one of input_shape, inputs or input_factory", "found none"],
        id="no-input",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_factory = "no_colon"',
        "input_factory",
        ["is not of the form"],
        id="input-factory-without-colon",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_increase = "lots"',
        "max_increase",
        ["neither a percentage"],
        id="bad-max-increase",
    ),
    pytest.param(
        'factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nstrict = "yes"',
        "strict",
        ["true or false"],
        id="strict-not-bool",
    ),
]


@pytest.mark.parametrize(("body", "key", "fragments"), BAD_MODEL_KEYS)
def test_bad_model_configuration_is_a_usage_error(pytester, project, body, key, fragments):
    project(GOOD + model_table(body))
    result = pytester.runpytest("--netbudget")
    place = "[tool.netbudget.models.bad]" + (f" {key}:" if key else ":")
    assert_usage_error(result, "pyproject.toml", place, *fragments)
    assert "netbudget summary" not in result.stdout.str()  # nothing ran


def test_usage_error_names_the_full_path_of_the_file(pytester, project):
    project(model_table('factory = "mymodels:Tiny"\ninput_shape = [1, 10]\nmax_parms = 60'))
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, f"{pytester.path / 'pyproject.toml'}: [tool.netbudget.models.bad] max_parms")


@pytest.mark.parametrize(
    ("top", "place", "fragments"),
    [
        pytest.param('devise = "cpu"', "[tool.netbudget] devise:", ["did you mean 'device'"], id="unknown-top-key"),
        pytest.param('device = "tpu"', "[tool.netbudget] device:", ["unknown device 'tpu'"], id="top-device"),
        pytest.param('dtype = "float8"', "[tool.netbudget] dtype:", ["unknown dtype"], id="top-dtype"),
        pytest.param("max_increase = -2", "[tool.netbudget] max_increase:", ["negative"], id="negative-increase"),
        pytest.param(
            'max_increase = { parms = "1%" }',
            "[tool.netbudget.max_increase] parms:",
            ["did you mean 'params'"],
            id="increase-table-key",
        ),
        pytest.param("baseline = 3", "[tool.netbudget] baseline:", ["must be a file name"], id="baseline-not-string"),
        pytest.param("models = 3", "[tool.netbudget] models:", ["must be a table"], id="models-not-table"),
        pytest.param(
            "[tool.netbudget.models]\nbad = 3",
            "[tool.netbudget.models.bad]:",
            ["must be a table"],
            id="model-not-table",
        ),
    ],
)
def test_bad_top_level_configuration_is_a_usage_error(pytester, project, top, place, fragments):
    project("" if "models" in top else GOOD, top=top)
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, "pyproject.toml", place, *fragments)


def test_cuda_on_a_machine_without_cuda_is_a_usage_error(pytester, project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    project(GOOD + model_table('factory = "mymodels:Tiny"\ninput_shape = [1, 10]\ndevice = "cuda"'))
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, "[tool.netbudget.models.bad] device:", "CUDA is not available")


def test_cuda_device_option_without_cuda_is_a_usage_error(pytester, project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    project(GOOD)
    result = pytester.runpytest("--netbudget", "--netbudget-device=cuda")
    assert_usage_error(result, "--netbudget-device=cuda", "CUDA is not available")


def test_unknown_device_option_is_a_usage_error(pytester, project):
    project(GOOD)
    result = pytester.runpytest("--netbudget", "--netbudget-device=tpu")
    assert_usage_error(result, "--netbudget-device", "unknown device 'tpu'")


def test_report_with_unknown_suffix_is_a_usage_error(pytester, project):
    project(GOOD)
    result = pytester.runpytest("--netbudget", "--netbudget-report=report.txt")
    assert_usage_error(result, "report.txt", ".md, .json or .html")


NOT_TOML = """[tool.netbudget]
device = "cpu"

[tool.netbudget.models.tiny]
factory = mymodels:Tiny
input_shape = [1, 10]
"""


def test_pyproject_that_is_not_toml_is_a_usage_error_with_the_line(pytester):
    (pytester.path / "pyproject.toml").write_text(NOT_TOML)
    pytester.makepyfile(mymodels="")
    result = pytester.runpytest("--netbudget")
    text = assert_usage_error(result, "pyproject.toml")
    assert "line 5" in text


def test_config_is_only_read_with_netbudget(pytester, project):
    # without --netbudget a broken [tool.netbudget] does not stop ordinary tests
    project(model_table('factory = "nocolon"\ninput_shape = [1, 10]'))
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


# --- runtime errors: only that model's item fails, with the cause ---------------------------------

RUNTIME_MODELS = """
import torch
from torch import nn

NUMBER = 3


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        return self.fc(x)


def explode():
    raise RuntimeError("the factory blew up on purpose")


def not_a_module():
    return "just a string"


class Reads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        if x.sum().item() > 1e9:
            return x
        return self.fc(x)


def bad_inputs():
    raise ValueError("no inputs today")
"""

BROKEN_MODULE = "import torch\nraise ImportError('broken on purpose')\n"


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param(
            'factory = "no_such_module_xyz:Net"\ninput_shape = [1, 10]',
            ["cannot import module 'no_such_module_xyz'", "ModuleNotFoundError"],
            id="module-missing",
        ),
        pytest.param(
            'factory = "brokenmodels:Net"\ninput_shape = [1, 10]',
            ["cannot import module 'brokenmodels'", "broken on purpose"],
            id="module-raises",
        ),
        pytest.param(
            'factory = "mymodels:Missing"\ninput_shape = [1, 10]',
            ["module 'mymodels' has no attribute 'Missing'"],
            id="missing-attribute",
        ),
        pytest.param(
            'factory = "mymodels:NUMBER"\ninput_shape = [1, 10]',
            ["'mymodels:NUMBER' is a int, not a callable"],
            id="not-callable",
        ),
        pytest.param(
            'factory = "mymodels:explode"\ninput_shape = [1, 10]',
            ["factory mymodels:explode raised", "RuntimeError: the factory blew up on purpose"],
            id="factory-raises",
        ),
        pytest.param(
            'factory = "mymodels:Tiny"\nkwargs = { width = 3 }\ninput_shape = [1, 10]',
            ["factory mymodels:Tiny raised", "TypeError", "width"],
            id="bad-kwargs",
        ),
        pytest.param(
            'factory = "mymodels:not_a_module"\ninput_shape = [1, 10]',
            ["factory mymodels:not_a_module returned a str, not a torch.nn.Module"],
            id="not-a-module",
        ),
        pytest.param(
            'factory = "mymodels:Tiny"\ninput_shape = [1, 7]',
            ["the forward pass failed on input [1, 7]", "RuntimeError", "1x7"],
            id="shape-mismatch",
        ),
        pytest.param(
            'factory = "mymodels:Tiny"\ninput_factory = "mymodels:bad_inputs"',
            ["input_factory mymodels:bad_inputs raised", "ValueError: no inputs today"],
            id="input-factory-raises",
        ),
        pytest.param(
            'factory = "mymodels:Reads"\ninput_shape = [1, 10]\ndevice = "meta"',
            ["the forward pass failed on input [1, 10]", "meta", 'device = "cpu"'],
            id="item-on-meta",
        ),
    ],
)
def test_runtime_error_fails_only_that_item(pytester, project, body, fragments):
    project(GOOD + model_table(body), models=RUNTIME_MODELS)
    pytester.makepyfile(brokenmodels=BROKEN_MODULE)
    result = pytester.runpytest("--netbudget", "-v")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*pyproject.toml::good PASSED*", "*pyproject.toml::bad FAILED*"])
    text = result.stdout.str()
    failure = text[text.index("= FAILURES =") : text.index("netbudget summary")]
    assert "bad could not be profiled" in failure
    for fragment in fragments:
        assert fragment in failure, f"{fragment!r} not in:\n{failure}"
    assert "Traceback" not in text
    assert "mymodels.py:" not in failure  # no traceback entries pointing into the model code
    # the summary lists both: the good model and the error
    result.stdout.re_match_lines([r"^bad\s+-\s+-\s+-\s+-\s+-\s+error$", r"^good\s+params\s+55\s+55\s+100\.0%"])


def test_the_same_model_on_cpu_passes_where_meta_fails(pytester, project):
    project(
        model_table('factory = "mymodels:Reads"\ninput_shape = [1, 10]\ndevice = "cpu"', name="reads"),
        models=RUNTIME_MODELS,
    )
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(passed=1)
