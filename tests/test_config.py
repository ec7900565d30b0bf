"""config.py directly: [tool.netbudget] read, validated and turned into ModelSpecs (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_netbudget import config, metrics
from pytest_netbudget.config import ConfigError, Increase, InputSpec
from pytest_netbudget.results import StepSpec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> config.Settings:
    return config.load_settings(write(tmp_path, text))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


FULL = """
[tool.netbudget]
device = "meta"
baseline = "budgets/base.json"
max_increase = "2%"
strict = true

[tool.netbudget.models.mnist_cnn]
factory = "example_project.models:MnistCNN"
kwargs = { num_classes = 10 }
input_shape = [1, 1, 28, 28]
device = "cpu"
dtype = "float16"
max_params = "30k"
max_trainable_params = "30K"
max_macs = "3M"
max_flops = 6e6
max_size_mb = 0.2
max_activations_mb = 1
max_peak_memory_mb = 512

[tool.netbudget.models.text]
factory = "pkg.models:Text.build"
inputs = [{ shape = [1, 128], dtype = "int64", high = 50257 }, { shape = [1, 128], dtype = "bool" }]
max_increase = { params = "1%", macs = "0", flops = "1k" }
strict = false

[tool.netbudget.models.tagger]
factory = "pkg.models:Tagger"
input_factory = "pkg.models:tagger_inputs"
"""


def test_full_example(tmp_path):
    settings = load(tmp_path, FULL)
    assert settings.path == tmp_path / "pyproject.toml"
    assert settings.baseline == tmp_path / "budgets" / "base.json"
    assert settings.device == "meta"
    assert settings.strict is True
    assert [spec.name for spec in settings.models] == ["mnist_cnn", "text", "tagger"]

    cnn, text, tagger = settings.models
    assert cnn.factory == "example_project.models:MnistCNN"
    assert cnn.kwargs == {"num_classes": 10}
    assert cnn.input_shape == [1, 1, 28, 28]
    assert cnn.inputs is None and cnn.input_factory is None
    assert cnn.device == "cpu"
    assert cnn.dtype == "float16"
    assert cnn.strict is True  # inherited
    assert cnn.limits == {
        "params": 30_000,
        "trainable_params": 30_000,
        "macs": 3_000_000,
        "flops": 6_000_000,
        "size_mb": 0.2,
        "activations_mb": 1,
        "peak_memory_mb": 512,
    }
    # the top-level "2%" applies to every growth metric
    assert set(cnn.max_increase) == set(metrics.GROWTH)
    assert all(rule == Increase(fraction=0.02) for rule in cnn.max_increase.values())

    assert text.factory == "pkg.models:Text.build"
    assert text.device == "meta"  # inherited
    assert text.dtype is None
    assert text.strict is False  # overridden
    assert text.inputs == [
        InputSpec(shape=[1, 128], dtype="int64", low=0, high=50257),
        InputSpec(shape=[1, 128], dtype="bool", low=0, high=None),
    ]
    assert text.max_increase == {
        "params": Increase(fraction=0.01),
        "macs": Increase(amount=0),
        "flops": Increase(amount=1000),
    }
    assert text.limits == {}

    assert tagger.input_factory == "pkg.models:tagger_inputs"
    assert tagger.input_shape is None and tagger.inputs is None


def test_defaults(tmp_path):
    settings = load(tmp_path, '[tool.netbudget.models.m]\nfactory = "a:b"\ninput_shape = [1]\n')
    assert settings.device == "auto"
    assert settings.baseline == tmp_path / "netbudget-baseline.json"
    assert settings.strict is False
    (spec,) = settings.models
    assert (spec.device, spec.dtype, spec.kwargs, spec.limits, spec.max_increase, spec.strict) == (
        "auto",
        None,
        {},
        {},
        {},
        False,
    )


def test_no_table_gives_none_and_empty_table_no_models(tmp_path):
    assert load(tmp_path, "[project]\nname = 'x'\n") is None
    assert load(tmp_path, "[tool.netbudget]\n").models == []


def test_top_level_dtype_is_inherited(tmp_path):
    settings = load(
        tmp_path,
        '[tool.netbudget]\ndtype = "bfloat16"\n[tool.netbudget.models.m]\nfactory = "a:b"\ninput_shape = [2]\n',
    )
    assert settings.models[0].dtype == "bfloat16"


def test_cuda_n_device_is_accepted(tmp_path):
    settings = load(tmp_path, '[tool.netbudget.models.m]\nfactory = "a:b"\ninput_shape = [2]\ndevice = "cuda:1"\n')
    assert settings.models[0].device == "cuda:1"


# --- errors name the file, the table, the key and what is wrong ---------------------------------------


def model(body: str) -> str:
    return f'[tool.netbudget.models.m]\nfactory = "a:b"\ninput_shape = [1, 2]\n{body}\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("max_parms = 1", "[tool.netbudget.models.m] max_parms: unknown key; did you mean 'max_params'?"),
        ("maxx_macs = 1", "[tool.netbudget.models.m] maxx_macs: unknown key; did you mean 'max_macs'?"),
        ("input_shap = [1]", "[tool.netbudget.models.m] input_shap: unknown key; did you mean 'input_shape'?"),
        ("zzz = 1", "[tool.netbudget.models.m] zzz: unknown key; known keys: factory, kwargs,"),
        ('max_params = "12 apples"', "[tool.netbudget.models.m] max_params: '12 apples' is not a quantity"),
        ("max_params = -3", "[tool.netbudget.models.m] max_params: must be a positive budget, got -3"),
        ("max_params = 0", "[tool.netbudget.models.m] max_params: must be a positive budget, got 0"),
        ('max_macs = "0k"', "[tool.netbudget.models.m] max_macs: must be a positive budget, got '0k'"),
        ("max_params = true", "[tool.netbudget.models.m] max_params: expected a number or a quantity"),
        ("max_params = nan", "[tool.netbudget.models.m] max_params: expected a finite number"),
        # 1e400 overflows a float to inf: a usage error here, not an OverflowError after the tests ran.
        ('max_params = "1e400"', "[tool.netbudget.models.m] max_params: '1e400' is too large"),
        ('max_macs = "1e306k"', "[tool.netbudget.models.m] max_macs: '1e306k' is too large"),
        ("max_params = inf", "[tool.netbudget.models.m] max_params: expected a finite number"),
        ('max_increase = "1e400"', "[tool.netbudget.models.m] max_increase: '1e400' is too large"),
        ('max_increase = { params = "1e400" }', "[tool.netbudget.models.m.max_increase] params: '1e400' is too"),
        (f'max_increase = "{"9" * 400}%"', "[tool.netbudget.models.m] max_increase: '999"),
        ("max_params = [1]", "[tool.netbudget.models.m] max_params: expected a number or a quantity"),
        ("kwargs = 3", "[tool.netbudget.models.m] kwargs: must be a table of keyword arguments, got 3"),
        ('device = "tpu"', "[tool.netbudget.models.m] device: unknown device 'tpu'"),
        ('device = "cpux"', "did you mean 'cpu'?"),
        ('device = "cuda:x"', "[tool.netbudget.models.m] device: unknown device 'cuda:x'"),
        ('dtype = "int64"', "[tool.netbudget.models.m] dtype: unknown dtype 'int64'"),
        ('dtype = "flaot32"', "did you mean 'float32'?"),
        ('strict = "no"', "[tool.netbudget.models.m] strict: must be true or false, got 'no'"),
        ('max_increase = "-1%"', "[tool.netbudget.models.m] max_increase: must not be negative"),
        ('max_increase = "a lot"', "[tool.netbudget.models.m] max_increase: 'a lot' is neither a percentage"),
        (
            'max_increase = { parms = "1%" }',
            "[tool.netbudget.models.m.max_increase] parms: unknown key; did you mean 'params'?",
        ),
        ('max_increase = { macs = "-1" }', "[tool.netbudget.models.m.max_increase] macs: must not be negative"),
    ],
)
def test_model_key_errors(tmp_path, body, expected):
    message = error_of(tmp_path, model(body))
    assert message.startswith(f"{tmp_path / 'pyproject.toml'}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('factory = "nocolon"\ninput_shape = [1]', "factory: 'nocolon' is not of the form 'package.module:callable'"),
        ('factory = "a:b:c"\ninput_shape = [1]', "factory: 'a:b:c' is not of the form"),
        ('factory = "a b:c"\ninput_shape = [1]', "factory: 'a b:c' is not of the form"),
        ("factory = 3\ninput_shape = [1]", "factory: 3 is not of the form"),
        ("input_shape = [1]", "factory: missing"),
        ('factory = "a:b"\ninput_shape = [1, 0]', "input_shape: must be a list of positive integers"),
        ('factory = "a:b"\ninput_shape = [1, 2.5]', "got [1, 2.5]"),
        ('factory = "a:b"\ninput_shape = "1,2"', "got '1,2'"),
        ('factory = "a:b"\ninput_shape = [true, 2]', "got [True, 2]"),
        ('factory = "a:b"\ninput_shape = []', "input_shape: must be a list of positive integers"),
        ('factory = "a:b"\ninput_shape = [-1, 3]', "got [-1, 3]"),
        (
            'factory = "a:b"',
            "[tool.netbudget.models.m]: give exactly one of input_shape, inputs or input_factory (found none)",
        ),
        (
            'factory = "a:b"\ninput_shape = [1]\ninput_factory = "a:c"',
            "give exactly one of input_shape, inputs or input_factory (found input_shape, input_factory)",
        ),
        ('factory = "a:b"\ninput_factory = "nocolon"', "input_factory: 'nocolon' is not of the form"),
        ('factory = "a:b"\ninputs = []', "inputs: must be a list of tables"),
        ('factory = "a:b"\ninputs = [[1, 2]]', "inputs[0]: must be a table"),
        ('factory = "a:b"\ninputs = [{ dtype = "float32" }]', "inputs[0].shape: missing"),
        ('factory = "a:b"\ninputs = [{ shape = [1, 0] }]', "inputs[0].shape: must be a list of positive integers"),
        ('factory = "a:b"\ninputs = [{ shape = [1], dtype = "str" }]', "inputs[0].dtype: unknown dtype 'str'"),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "int64" }]',
            "inputs[0].high: an integer input needs 'high'",
        ),
        ('factory = "a:b"\ninputs = [{ shape = [1], hihg = 3 }]', "inputs[0].hihg: unknown key; did you mean 'high'?"),
        ('factory = "a:b"\ninputs = [{ shape = [1], high = "3" }]', "inputs[0].high: must be a number, got '3'"),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "int64", low = 5, high = 5 }]',
            "inputs[0].high: must be greater than low (5), got 5",
        ),
        (
            'factory = "a:b"\ninputs = [{ shape = [1] }, { shape = [2], dtype = "int8" }]',
            "inputs[1].high: an integer input needs 'high'",
        ),
        # Bounds are finite and within what the dtype holds (torch.randint's [low, high)).
        ('factory = "a:b"\ninputs = [{ shape = [1], high = nan }]', "inputs[0].high: must be a finite number, got nan"),
        ('factory = "a:b"\ninputs = [{ shape = [1], low = -inf }]', "inputs[0].low: must be a finite number, got -inf"),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "int64", high = inf }]',
            "inputs[0].high: must be a finite number, got inf",
        ),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "int8", high = 1000 }]',
            "inputs[0].high: must be within int8's range (-128, 128] (exclusive), got 1000",
        ),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "uint8", low = -1, high = 3 }]',
            "inputs[0].low: must be within uint8's range [0, 256), got -1",
        ),
        (
            'factory = "a:b"\ninputs = [{ shape = [1], dtype = "int64", high = 9223372036854775807.0 }]',
            "inputs[0].high: must be within int64's range",
        ),
    ],
)
def test_model_table_errors(tmp_path, table, expected):
    message = error_of(tmp_path, f"[tool.netbudget.models.m]\n{table}\n")
    assert "[tool.netbudget.models.m]" in message
    assert expected in message


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [("int8", -128, 128), ("uint8", 0, 256), ("int16", -(2**15), 2**15), ("int64", -(2**63), 2**63 - 1)],
)
def test_integer_inputs_take_their_dtypes_whole_range(tmp_path, dtype, low, high):
    table = f'[tool.netbudget.models.m]\nfactory = "a:b"\ninputs = [{{ shape = [1], dtype = "{dtype}", low = {low}, high = {high} }}]\n'
    (spec,) = load(tmp_path, table).models
    assert (spec.inputs[0].low, spec.inputs[0].high) == (low, high)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[tool.netbudget]\ndevise = "cpu"', "[tool.netbudget] devise: unknown key; did you mean 'device'?"),
        ("[tool.netbudget]\nmodel = {}", "[tool.netbudget] model: unknown key; did you mean 'models'?"),
        ('[tool.netbudget]\ndevice = "gpu"', "[tool.netbudget] device: unknown device 'gpu'"),
        ('[tool.netbudget]\ndtype = "half"', "[tool.netbudget] dtype: unknown dtype 'half'"),
        ("[tool.netbudget]\nstrict = 1", "[tool.netbudget] strict: must be true or false, got 1"),
        ('[tool.netbudget]\nbaseline = ""', "[tool.netbudget] baseline: must be a file name"),
        ("[tool.netbudget]\nbaseline = 3", "[tool.netbudget] baseline: must be a file name"),
        ("[tool.netbudget]\nmodels = 3", "[tool.netbudget] models: must be a table"),
        ("[tool.netbudget.models]\nm = 3", "[tool.netbudget.models.m]: must be a table"),
        ("[tool]\nnetbudget = 3", "[tool.netbudget]: must be a table"),
        ('[tool.netbudget]\nmax_increase = "-2%"', "[tool.netbudget] max_increase: must not be negative"),
    ],
)
def test_top_level_errors(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'pyproject.toml'}: ")
    assert expected in message


def test_not_toml_names_the_file_and_line(tmp_path):
    message = error_of(tmp_path, '[tool.netbudget]\ndevice = "cpu"\n\nfactory = mymodels:Tiny\n')
    assert message.startswith(f"{tmp_path / 'pyproject.toml'}: not valid TOML: ")
    assert "line 4" in message


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_settings(tmp_path / "missing" / "pyproject.toml")


# --- limits, increases, CUDA ------------------------------------------------------------------------


def test_parse_limits():
    limits = {"max_params": "1.5M", "max_macs": "1e6", "max_size_mb": 0.2, "max_flops": 7}
    assert config.parse_limits(limits, config.Place("netbudget: [limits]")) == {
        "params": 1_500_000,
        "macs": 1_000_000,
        "size_mb": 0.2,
        "flops": 7,
    }
    with pytest.raises(
        ConfigError, match=r"^netbudget: \[limits\] max_parms: unknown key; did you mean 'max_params'\?"
    ):
        config.parse_limits({"max_parms": 1}, config.Place("netbudget: [limits]"))


@pytest.mark.parametrize(
    ("rule", "old", "new", "allowed"),
    [
        (Increase(fraction=0.02), 100, 102, True),
        (Increase(fraction=0.02), 100, 102.5, False),
        (Increase(fraction=0.02), 100, 50, True),  # shrinking is always fine
        (Increase(fraction=0.0), 100, 100, True),
        (Increase(fraction=0.0), 100, 101, False),
        (Increase(fraction=0.1), 0, 1, False),  # anything over zero is more than 10% of nothing
        (Increase(fraction=0.1), 0, 0, True),
        (Increase(fraction=0.02), 0.1, 0.102, True),  # float round-off at the edge is allowed
        (Increase(amount=1000), 28_938, 29_938, True),
        (Increase(amount=1000), 28_938, 29_939, False),
        (Increase(amount=0), 50, 50, True),
        (Increase(amount=0), 50, 51, False),
        (Increase(), 50, 51, False),
    ],
)
def test_increase_allows(rule, old, new, allowed):
    assert rule.allows(old, new) is allowed


def test_increase_describe():
    assert Increase(fraction=0.02).describe() == "2%"
    assert Increase(fraction=0.005).describe() == "0.5%"
    assert Increase(amount=1500).describe() == "1.50k"
    assert Increase(amount=0).describe() == "0"


def test_max_increase_forms(tmp_path):
    where = config.Place.table(tmp_path / "pyproject.toml", "tool.netbudget")
    assert config._max_increase(None, where) == {}
    assert config._max_increase("2%", where) == dict.fromkeys(metrics.GROWTH, Increase(fraction=0.02))
    assert config._max_increase("1k", where) == dict.fromkeys(metrics.GROWTH, Increase(amount=1000))
    assert config._max_increase({"params": "1%", "macs": 0}, where) == {
        "params": Increase(fraction=0.01),
        "macs": Increase(amount=0),
    }


def _settings(tmp_path, device):
    return load(tmp_path, model(f'device = "{device}"'))


def test_check_cuda(tmp_path):
    cuda = _settings(tmp_path, "cuda:0")
    cpu = _settings(tmp_path, "cpu")
    config.check_cuda(cuda, cuda_available=True)
    config.check_cuda(cpu, cuda_available=False)
    with pytest.raises(ConfigError, match=r"\[tool.netbudget.models.m\] device: 'cuda:0' asked for, but CUDA is not"):
        config.check_cuda(cuda, cuda_available=False)
    # the command line overrides what pyproject asks for
    config.check_cuda(cuda, cuda_available=False, device_override="meta")
    with pytest.raises(ConfigError, match="--netbudget-device=cuda: CUDA is not available"):
        config.check_cuda(cpu, cuda_available=False, device_override="cuda")


# --- the training step -------------------------------------------------------------------------------------


def test_train_table(tmp_path):
    settings = load(
        tmp_path,
        model(
            'train = { optimizer = "sgd-momentum", batch = 32, loss_factory = "pkg.losses:ce" }\n'
            'max_train_flops = "1G"\nmax_train_memory_mb = 24'
        ),
    )
    spec = settings.models[0]
    assert spec.train == StepSpec(optimizer="sgd-momentum", batch=32, loss_factory="pkg.losses:ce")
    assert spec.limits == {"train_flops": 1e9, "train_memory_mb": 24}
    assert load(tmp_path, model("train = true")).models[0].train == StepSpec()
    assert load(tmp_path, model("")).models[0].train is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('train = { optimiser = "adamw" }', "train.optimiser: unknown key; did you mean 'optimizer'?"),
        ('train = { optimizer = "lion" }', "train.optimizer: unknown optimizer 'lion'"),
        ('train = { optimizer = "adamW" }', "did you mean 'adamw'?"),
        ("train = { batch = 0 }", "train.batch: must be a positive integer"),
        ('train = { batch = "32" }', "train.batch: must be a positive integer"),
        ('train = { loss_factory = "nocolon" }', "train.loss_factory: 'nocolon' is not of the form"),
        ('train = { autocast = "float8" }', "train.autocast: unknown dtype 'float8'"),
        ('train = { autocast = "bfloat16" }\ndevice = "meta"', "train.autocast: PyTorch has no autocast on meta"),
        ('train = "adamw"', "train: must be a table like"),
        ('max_train_flops = "1G"', "max_train_flops: budgets a training step, but the model has none"),
    ],
)
def test_train_errors(tmp_path, body, expected):
    message = error_of(tmp_path, model(body))
    assert "[tool.netbudget.models.m]" in message
    assert expected in message
