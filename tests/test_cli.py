"""``netbudget show``: the per-layer table of one model without pytest (spec §5).

Two runs go through a real subprocess (``python -m pytest_netbudget``) to check exit
codes and that errors never print a traceback; the rest call ``cli.main`` in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_netbudget import cli

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
CNN = "example_project.models:MnistCNN"


def netbudget(*args: str, cwd: Path = EXAMPLE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_netbudget", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def in_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``cli.main`` from the example project, as a user would; sys.path restored afterwards."""
    monkeypatch.chdir(EXAMPLE)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


# --- through the real entry point ------------------------------------------------------------------------------


def test_show_subprocess():
    result = netbudget("show", CNN, "--input-shape", "1,1,28,28")
    assert result.returncode == 0, result.stderr
    assert "28,938" in result.stdout  # params
    assert "2,838,080" in result.stdout  # MACs
    assert "conv1" in result.stdout and "Conv2d" in result.stdout
    assert "on cpu" in result.stdout


def test_forward_failure_subprocess():
    """TextClassifier wants token ids; a float input makes its forward fail: exit 1, the cause, no traceback."""
    result = netbudget("show", "example_project.models:TextClassifier", "--input-shape", "1,16")
    assert result.returncode == 1
    assert "forward pass" in result.stderr and "failed" in result.stderr
    assert "[1, 16]" in result.stderr
    assert "Expected tensor for argument #1 'indices'" in result.stderr  # the cause, from the model
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_module_that_does_not_import_subprocess():
    result = netbudget("show", "no_such_package.models:Net", "--input-shape", "1,4")
    assert result.returncode == 2
    assert "no_such_package" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_shape_subprocess():
    result = netbudget("show", CNN, "--input-shape", "1,a")
    assert result.returncode == 2
    assert "'1,a' is not a shape" in result.stderr
    assert "Traceback" not in result.stderr


# --- in-process ----------------------------------------------------------------------------------------------------


def test_show_meta_depth_1(in_example, capsys):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--device", "meta", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "on meta" in out
    assert "MACs: 2,838,080" in out and "Params: 28,938" in out
    assert "Sequential" in out
    assert "Conv2d" not in out and "MaxPool2d" not in out  # depth 2 folded into depth 1


def test_show_json(in_example, capsys):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == 2_838_080
    assert data["params"] == 28_938
    assert data["flops"] == 2 * 2_838_080 + (3 * 16 * 28 * 28) + (3 * 32 * 14 * 14) + 10  # see test_engine_counts
    assert data["device"] == "cpu"
    assert data["peak_memory_mb"] is None
    assert [row["path"] for row in data["layers"]][:3] == ["", "conv1", "conv1.0"]


def test_show_json_meta_half(in_example, capsys):
    assert (
        cli.main(["show", CNN, "--input-shape", "1x1x28x28", "--json", "--device", "meta", "--dtype", "float16"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == 2_838_080
    assert data["dtype"] == "float16"
    assert data["size_mb"] == 28_938 * 2 / 2**20


@pytest.mark.parametrize("shape", ["1,a", "1,0", "", "1,-3"])
def test_bad_shape(in_example, capsys, shape):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["show", CNN, "--input-shape", shape])
    assert exit_info.value.code == 2
    assert "is not a shape" in capsys.readouterr().err


def test_missing_input_shape(in_example, capsys):
    assert cli.main(["show", CNN]) == 2
    assert "give --input-shape (the model's input), e.g. --input-shape 1,3,224,224" in capsys.readouterr().err


def test_missing_attribute(in_example, capsys):
    assert cli.main(["show", "example_project.models:NoSuchModel", "--input-shape", "1,4"]) == 2
    err = capsys.readouterr().err
    assert "NoSuchModel" in err and "example_project.models" in err


def test_not_a_factory_path(in_example, capsys):
    assert cli.main(["show", "example_project.models.MnistCNN", "--input-shape", "1,4"]) == 2
    assert "module:callable" in capsys.readouterr().err


def test_module_raising_on_import(in_tmp, capsys):
    (in_tmp / "broken_models.py").write_text("raise RuntimeError('broken on purpose')\n")
    assert cli.main(["show", "broken_models:Net", "--input-shape", "1,4"]) == 2
    err = capsys.readouterr().err
    assert "broken_models" in err and "broken on purpose" in err


def test_factory_that_raises_or_returns_no_module(in_tmp, capsys):
    (in_tmp / "odd_models.py").write_text(
        "def raising():\n    raise ValueError('no weights today')\n\ndef not_a_module():\n    return 42\n"
    )
    assert cli.main(["show", "odd_models:raising", "--input-shape", "1,4"]) == 1
    err = capsys.readouterr().err
    assert "odd_models:raising" in err and "no weights today" in err
    assert cli.main(["show", "odd_models:not_a_module", "--input-shape", "1,4"]) == 1
    assert "returned a int, not a torch.nn.Module" in capsys.readouterr().err


def test_bad_device_and_dtype(in_example, capsys):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--dtype", "int3"]) == 2
    assert "unknown dtype 'int3'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda(in_example, capsys):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_token_inputs_for_a_model_that_takes_ids(in_example, capsys):
    """--input-dtype int64 --input-high V feeds token ids: the LSTM tagger on 4 sentences of 32 tokens.

    MACs by hand: embedding 0; LSTM layer 1, per direction and token 4*128*(64+128),
    layer 2 4*128*(256+128); tagger 256*17 per token. 128 tokens in all.
    """
    tokens = 4 * 32
    lstm = 2 * tokens * 4 * 128 * (64 + 128) + 2 * tokens * 4 * 128 * (256 + 128)
    expected = lstm + tokens * 256 * 17
    argv = ["show", "example_project.models:LSTMTagger", "--input-shape", "4,32", "--input-dtype", "int64"]
    assert cli.main([*argv, "--input-high", "5000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == expected
    assert cli.main(argv) == 2  # an integer input without --input-high
    assert "needs 'high'" in capsys.readouterr().err


def test_show_ops_lists_each_layers_operators(in_example, capsys):
    """conv1's convolution: 16 * 28*28 * 25 = 313,600 MACs (314k); the head's addmm 1568 * 10 = 15.7k."""
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--depth", "1", "--ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    conv1 = next(index for index, line in enumerate(lines) if line.split()[:2] == ["conv1", "Sequential"])
    assert lines[conv1 + 1].split() == ["·", "aten.convolution", "op", "314k", "640k", "1"]
    assert lines[conv1 + 2].split() == ["·", "aten.max_pool2d_with_indices", "op", "-", "12.5k", "1"]
    assert lines[conv1 + 3].split() == ["·", "aten.relu", "op", "-", "12.5k", "1"]
    assert any(line.split() == ["·", "aten.addmm", "op", "15.7k", "31.4k", "1"] for line in lines)
    assert lines[-1].startswith("Operators (whole model): aten.addmm x1 (15.7k MACs, 31.4k FLOPs), aten.convolution x2")


def test_show_train_adds_the_step_columns_and_its_memory(in_example, capsys):
    """The CNN's AdamW step at batch 32: 3 x 32 x 2,838,080 MACs less conv1's input gradient
    (32 x 313,600), which autograd skips: 262,420,480."""
    args = ["show", CNN, "--input-shape", "1,1,28,28", "--depth", "1", "--device", "meta", "--train", "adamw"]
    assert cli.main([*args, "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-4:] == ["Train", "MACs", "Train", "FLOPs"]
    assert "Training step (adamw, batch 32): MACs 262,420,480 (262M)" in out
    assert "  memory at its peak (in the backward): " in out and "optimizer state 0.221" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch", "8"], "--batch, --autocast and --loss describe a training step: give --train OPTIMIZER too"),
        (["--train", "lion"], "unknown optimizer 'lion'"),
        (["--train", "adamw", "--batch", "0"], "train.batch: must be a positive integer"),
    ],
)
def test_show_train_errors(in_example, capsys, extra, message):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", *extra]) == 2
    assert message in capsys.readouterr().err


# --- registered models, overrides, formulas, version --------------------------------------------------------


def test_show_a_registered_model_with_its_own_settings(in_example, capsys):
    """mnist_cnn in the example's pyproject.toml: its input [1, 1, 28, 28], device cpu, and its
    AdamW step at batch 32 (262,420,480 MACs, by hand in test_show_train_...)."""
    assert cli.main(["show", "mnist_cnn", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Model: MnistCNN on cpu, float32, inputs [1, 1, 28, 28]" in out
    assert "Training step (adamw, batch 32): MACs 262,420,480" in out


def test_show_a_registered_model_found_from_a_subfolder_with_overrides(in_example, monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLE / "example_project")
    assert cli.main(["show", "mnist_cnn", "--device", "meta", "--kwargs", '{"num_classes": 100}']) == 0
    out = capsys.readouterr().out
    # Linear(1568, 100): 156,900 params, plus the convolutions' 416 + 12,832.
    assert "Params: 170,148" in out
    assert "on meta" in out


def test_show_kwargs_for_a_factory_path(in_example, capsys):
    assert cli.main(["show", CNN, "--input-shape", "1,1,28,28", "--kwargs", '{"num_classes": 100}']) == 0
    assert "Params: 170,148" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "mnist_cnnn"], "did you mean 'mnist_cnn'? registered: lstm_tagger, mnist_cnn, text_classifier"),
        (["show", CNN, "--input-shape", "1,1,28,28", "--kwargs", "[1]"], "must be a JSON object"),
        (["show", CNN, "--input-shape", "1,1,28,28", "--kwargs", "{oops"], "is not JSON"),
        (["show", CNN, "--input-shape", "1,1,28,28", "--depth", "-1"], "0 is the model itself"),
        (
            ["show", CNN, "--input-shape", "1,1,28,28", "--formulas", "no_such_module"],
            "--formulas: cannot import module 'no_such_module'",
        ),
        (["show", "mnist_cnn", "--input-dtype", "int64"], "give --input-shape too"),
    ],
)
def test_show_usage_errors(in_example, capsys, args, message):
    try:
        code = cli.main(args)
    except SystemExit as exit_info:  # argparse's own checks
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_show_with_formulas_from_a_module(in_tmp, capsys):
    """A model whose op has no built-in formula: counted once --formulas imports the module that registers it."""
    (in_tmp / "nbcliops.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "from pytest_netbudget import Cost, register_formula\n"
        "torch.library.define('nbcli::scale', '(Tensor x) -> Tensor')\n"
        "@torch.library.impl('nbcli::scale', ['cpu', 'meta'])\n"
        "def _scale(x):\n"
        "    return x * 2\n"
        "class Scaled(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.ops.nbcli.scale(x)\n"
        "@register_formula('nbcli::scale')\n"
        "def _scale_cost(call):\n"
        "    '''3 FLOPs per element.'''\n"
        "    return Cost(0, 3 * call.out.numel())\n"
    )
    args = ["show", "nbcliops:Scaled", "--input-shape", "2,5"]
    assert cli.main([*args, "--formulas", "nbcliops"]) == 0
    assert "FLOPs: 30 (30)" in capsys.readouterr().out  # 3 x 10 elements


def test_version_and_help_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == "netbudget (pytest-netbudget) 0.1.0"
    for command in (["show"], ["formulas"], []):
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        assert "examples:\n  netbudget " in capsys.readouterr().out
