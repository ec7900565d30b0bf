"""How ``profile()`` behaves (spec §1): inputs and outputs of every shape, shared weights, repeated
modules, rows that add up, a model left exactly as it was, errors, uncounted ops, user formulas."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from reference_models import SpecCNN, TiedLM, resnet18
from torch import nn

from pytest_netbudget import Cost, profile, register_formula
from pytest_netbudget.engine import build_model
from pytest_netbudget.results import Profile

MIB = 2**20
DEVICES = ("cpu", "meta")
SUMMED = ("params", "trainable_params", "buffers", "macs", "flops")


def assert_rows_add_up(p: Profile, rows=None) -> None:
    rows = p.layers if rows is None else rows
    for name in SUMMED:
        assert sum(getattr(row, name) for row in rows) == getattr(p, name), name


# --- shared weights, repeated modules ---------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_tied_weights_counted_once(device):
    model = TiedLM(vocab=100, dim=16)
    assert model.head.weight is model.embed.weight
    p = profile(model, torch.randint(0, 100, (2, 5)), device=device)
    params = 100 * 16 + 2 * 16  # the shared matrix once, the LayerNorm's weight and bias
    assert p.params == p.trainable_params == params
    assert p.size_mb == params * 4 / MIB
    # the head still does its matmul with the shared weight
    assert p.macs == 2 * 5 * 16 * 100
    assert model.head.weight is model.embed.weight  # the tie survives profiling


def test_tied_weights_of_a_model_built_on_meta():
    model = build_model(TiedLM, {"vocab": 100, "dim": 16}, torch.device("meta"))
    assert model.embed.weight.device.type == "meta"
    assert model.head.weight is model.embed.weight
    p = profile(model, torch.randint(0, 100, (2, 5)), device="meta")
    assert p.params == 100 * 16 + 2 * 16
    assert p.size_mb == (100 * 16 + 2 * 16) * 4 / MIB
    assert p.macs == 2 * 5 * 16 * 100


def test_untied_model_counts_both_matrices():
    """The control for the tied case: the same model with its own head matrix."""
    model = TiedLM(vocab=100, dim=16)
    model.head.weight = nn.Parameter(model.embed.weight.detach().clone())
    assert profile(model, torch.randint(0, 100, (2, 5)), device="meta").params == 2 * 100 * 16 + 2 * 16


def test_weights_on_meta_cannot_be_profiled_on_cpu():
    model = build_model(TiedLM, None, torch.device("meta"))
    with pytest.raises(ValueError, match="meta"):
        profile(model, torch.randint(0, 100, (2, 5)), device="cpu")


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.shared(x))


@pytest.mark.parametrize("device", DEVICES)
def test_module_called_twice_is_one_row(device):
    p = profile(CalledTwice(), input_shape=(3, 4), device=device)
    assert [row.path for row in p.layers] == ["", "shared"]
    row = p.layers[1]
    assert row.calls == 2
    assert row.params == 4 * 4 + 4  # counted once
    assert row.macs == 2 * (3 * 4 * 4)  # the work of both calls
    assert row.flops == 2 * (2 * 3 * 4 * 4 + 3 * 4)
    assert row.input_shapes == [[3, 4]] and row.output_shapes == [[3, 4]]
    assert p.macs == 2 * 48 and p.params == 20
    assert_rows_add_up(p)


def test_resnet_block_rows():
    """In torchvision's BasicBlock the ReLU module runs twice and the residual add is the block's own work."""
    p = profile(resnet18(), input_shape=(1, 3, 224, 224), device="meta")
    rows = {row.path: row for row in p.layers}
    block_out = 64 * 56 * 56
    assert rows["layer1.0.relu"].calls == 2
    assert rows["layer1.0.relu"].flops == 2 * block_out
    assert rows["layer1.0"].flops == block_out  # out += identity
    assert rows["layer1.0"].macs == 0
    assert rows["layer2.0.downsample.0"].macs == 128 * 28 * 28 * 64  # the 1x1 stride-2 conv
    assert rows[""].macs == rows[""].flops == 0  # flatten is a view
    assert_rows_add_up(p)
    for depth in range(4):
        assert_rows_add_up(p, p.rollup(depth))


# --- inputs and outputs of every shape ----------------------------------------------------------------------


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class Outputs(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor):
        logits, hidden = self.linear(x), x * 2
        if self.kind == "tuple":
            return logits, hidden
        if self.kind == "dict":
            return {"logits": logits, "hidden": hidden}
        return Output(logits, hidden)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tuple", "dict", "dataclass"])
def test_structured_outputs(kind, device):
    p = profile(Outputs(kind), input_shape=(2, 4), device=device)
    assert p.layers[0].output_shapes == [[2, 3], [2, 4]]
    assert p.macs == 2 * 4 * 3
    assert p.flops == 2 * 24 + 2 * 3 + 2 * 4  # linear with bias, and x * 2 in the model's own forward


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = self.a(x) + self.b(y)
        return out if scale is None else out * scale


@pytest.mark.parametrize("device", DEVICES)
def test_multiple_positional_inputs(device):
    p = profile(TwoInputs(), inputs=(torch.randn(3, 4), torch.randn(3, 6)), device=device)
    assert p.inputs == [[3, 4], [3, 6]]
    assert p.layers[0].input_shapes == [[3, 4], [3, 6]]
    assert p.macs == 3 * 4 * 5 + 3 * 6 * 5
    assert p.flops == 2 * p.macs + 2 * 15 + 15  # two biases, the sum


@pytest.mark.parametrize("device", DEVICES)
def test_keyword_inputs(device):
    inputs = {"x": torch.randn(3, 4), "y": torch.randn(3, 6), "scale": torch.randn(3, 5)}
    p = profile(TwoInputs(), inputs=inputs, device=device)
    assert p.inputs == [[3, 4], [3, 6], [3, 5]]
    assert p.macs == 3 * 4 * 5 + 3 * 6 * 5
    assert p.flops == 2 * p.macs + 2 * 15 + 15 + 15  # ... and the scale


def test_single_tensor_input_and_integer_inputs_keep_their_dtype():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    tokens = torch.randint(0, 10, (2, 3))
    for device in DEVICES:
        p = profile(model, tokens, device=device, dtype="float16")
        assert p.macs == 2 * 3 * 4 * 2


# --- dtypes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_halves_size(dtype, device):
    model = SpecCNN()
    full = profile(model, input_shape=(1, 1, 28, 28), device=device)
    half = profile(model, input_shape=(1, 1, 28, 28), device=device, dtype=dtype)
    assert half.size_mb == full.size_mb / 2 == 28_938 * 2 / MIB
    assert half.dtype == dtype and full.dtype == "float32"
    assert (half.params, half.macs, half.flops) == (full.params, full.macs, full.flops)
    assert 0 < half.activations_mb < full.activations_mb
    assert next(model.parameters()).dtype == torch.float32  # the model itself is not cast


def test_half_precision_keeps_integer_buffers():
    """BatchNorm's num_batches_tracked stays int64 (8 bytes) whatever the float dtype."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    p = profile(model, input_shape=(1, 3, 8, 8), device="meta", dtype="float16")
    floats = 4 * 3 * 9 + 2 * 4 + 2 * 4  # conv weight, BN weight and bias, running mean and var
    assert p.size_mb == (floats * 2 + 1 * 8) / MIB
    assert p.buffers == 2 * 4 + 1


# --- rows add up ---------------------------------------------------------------------------------------------


class Residual(nn.Module):
    """A parent doing work in its own forward: the residual add and a scale are on its own row."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.Sequential(Residual(), Residual())
        self.head = nn.Linear(8, 2)
        self.frozen = nn.LayerNorm(8)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frozen(self.blocks(self.stem(x))))


@pytest.mark.parametrize("device", DEVICES)
def test_rows_add_up_to_the_totals(device):
    p = profile(Net(), input_shape=(3, 4), device=device)
    rows = {row.path: row for row in p.layers}
    assert rows["blocks.0"].flops == 3 * 8 + 3 * 8  # its own add and multiply, nothing of its children
    assert rows["blocks.0"].macs == 0
    assert rows["blocks.0.body"].flops == 0  # Sequential does no work itself
    assert rows["blocks.0.body.0"].macs == 3 * 8 * 8
    assert p.buffers == 2 * 8
    assert p.trainable_params == p.params - 2 * 8
    stem = 2 * (3 * 4 * 8) + 3 * 8  # matmul, bias
    block = 2 * (2 * (3 * 8 * 8) + 3 * 8) + 3 * 8 + 2 * (3 * 8)  # two linears, ReLU, own add and multiply
    norm = 5 * 3 * 8
    head = 2 * (3 * 8 * 2) + 3 * 2
    assert p.macs == 3 * 4 * 8 + 2 * 2 * (3 * 8 * 8) + 3 * 8 * 2
    assert p.flops == stem + 2 * block + norm + head
    assert_rows_add_up(p)


@pytest.mark.parametrize("device", DEVICES)
def test_rollup_rows_add_up(device):
    p = profile(Net(), input_shape=(3, 4), device=device)
    assert p.rollup() == p.layers
    for depth in range(5):
        rows = p.rollup(depth)
        assert all(row.depth <= depth for row in rows)
        assert_rows_add_up(p, rows)
    top = {row.path: row for row in p.rollup(1)}
    assert set(top) == {"", "stem", "blocks", "head", "frozen"}
    assert top["blocks"].macs == 2 * 2 * 3 * 8 * 8
    assert top["blocks"].params == 2 * 2 * (8 * 8 + 8)
    assert p.rollup(0)[0].macs == p.macs


@pytest.mark.parametrize("device", DEVICES)
def test_two_runs_are_identical(device):
    model = Net()
    first = profile(model, input_shape=(3, 4), device=device).to_dict()
    second = profile(model, input_shape=(3, 4), device=device).to_dict()
    assert first == second


@pytest.mark.parametrize("device", DEVICES)
def test_activations_are_measured_and_repeatable(device):
    model = SpecCNN()
    runs = [profile(model, input_shape=(1, 1, 28, 28), device=device).activations_mb for _ in range(2)]
    assert runs[0] > 0
    assert runs[0] == runs[1]


def test_activations_equal_on_cpu_and_meta():
    model = SpecCNN()
    cpu = profile(model, input_shape=(1, 1, 28, 28), device="cpu").activations_mb
    meta = profile(model, input_shape=(1, 1, 28, 28), device="meta").activations_mb
    assert cpu == meta == 2 * (16 * 28 * 28) * 4 / MIB  # conv1 and ReLU outputs alive together


def test_batchnorm_activations_equal_on_cpu_and_meta():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64))
    cpu = profile(model, input_shape=(1, 3, 16, 16), device="cpu").activations_mb
    meta = profile(model, input_shape=(1, 3, 16, 16), device="meta").activations_mb
    assert cpu == 2 * (64 * 16 * 16) * 4 / MIB  # the conv output and the BN output
    assert meta == cpu


# --- the model is left as it was ----------------------------------------------------------------------------


def hooks_of(model: nn.Module) -> list[tuple[str, str]]:
    found = []
    for path, module in model.named_modules():
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks_with_kwargs",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            if getattr(module, name, None):
                found.append((path, name))
    return found


def snapshot(model: nn.Module) -> dict:
    return {
        "training": {path: module.training for path, module in model.named_modules()},
        "params": [(name, p, p.device, p.dtype, p.requires_grad) for name, p in model.named_parameters()],
        "state": {key: value.clone() for key, value in model.state_dict().items()},
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert len(after["params"]) == len(before["params"])
    for (name, p, device, dtype, grad), (name0, p0, device0, dtype0, grad0) in zip(after["params"], before["params"]):
        assert name == name0 and p is p0 and (device, dtype, grad) == (device0, dtype0, grad0)
        assert p.grad is None
    assert list(after["state"]) == list(before["state"])
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert hooks_of(model) == []


def mixed_mode_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 2))
    model.eval()
    model[2].train()  # a submodule deliberately left in train mode while its parent is in eval
    return model


@pytest.mark.parametrize(("device", "dtype"), [("cpu", None), ("meta", None), ("cpu", "float16")])
def test_model_is_unchanged_by_profiling(device, dtype):
    model = mixed_mode_model()
    before = snapshot(model)
    p = profile(model, input_shape=(2, 3, 8, 8), device=device, dtype=dtype)
    assert p.macs == 2 * 4 * 6 * 6 * 27 + 2 * 144 * 2
    assert_unchanged(model, before)
    assert model.training is False and model[2].training is True


def test_model_in_train_mode_stays_in_train_mode():
    model = mixed_mode_model().train()
    before = snapshot(model)
    profile(model, input_shape=(2, 3, 8, 8), device="cpu")
    assert_unchanged(model, before)
    assert all(module.training for module in model.modules())


def test_profiling_in_train_mode_leaves_buffers_untouched():
    model = mixed_mode_model()
    before = snapshot(model)
    profile(model, input_shape=(2, 3, 8, 8), device="cpu", train=True)
    assert_unchanged(model, before)


def test_profiling_in_train_mode_on_meta_leaves_buffers_untouched():
    model = mixed_mode_model()
    before = snapshot(model)
    profile(model, input_shape=(2, 3, 8, 8), device="meta", train=True)
    assert_unchanged(model, before)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.after = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        raise RuntimeError("exploding model: this forward always fails")


class ExplodingChild(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("exploding child: deep inside the model")


@pytest.mark.parametrize("device", DEVICES)
def test_forward_error_propagates_and_model_is_restored(device):
    model = Exploding()
    model.train()
    model.inner[1].eval()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="exploding model: this forward always fails"):
        profile(model, input_shape=(2, 4), device=device)
    assert_unchanged(model, before)


@pytest.mark.parametrize("device", DEVICES)
def test_error_in_a_child_propagates_and_the_next_run_is_clean(device):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(ExplodingChild()))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="exploding child"):
        profile(model, input_shape=(2, 4), device=device)
    assert_unchanged(model, before)
    p = profile(model[0], input_shape=(2, 4), device=device)
    assert p.macs == 2 * 4 * 4
    assert_unchanged(model, before)


# --- uncounted ops and user formulas ---------------------------------------------------------------------------


@torch.library.custom_op("nbtest::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@mystery.register_fake
def _mystery_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("nbtest::fused_scale", mutates_args=())
def fused_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


@fused_scale.register_fake
def _fused_scale_fake(x: torch.Tensor, factor: float) -> torch.Tensor:
    return torch.empty_like(x)


@register_formula("nbtest::fused_scale")
def _fused_scale_formula(call) -> Cost:
    assert call["factor"] == 3.0  # arguments bound by their schema names
    return Cost(macs=7 * call["x"].numel(), flops=11 * call.first_out.numel())


class UsesCustomOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.nbtest.fused_scale(torch.ops.nbtest.mystery(self.linear(x)), 3.0)


@pytest.mark.parametrize("device", DEVICES)
def test_op_without_formula_is_listed_as_uncounted(device):
    p = profile(UsesCustomOps(), input_shape=(2, 4), device=device)
    assert p.uncounted_ops == {"nbtest.mystery": 1}
    assert "nbtest.mystery" in str(p)
    assert "nbtest.mystery" in p.table(depth=0)


@pytest.mark.parametrize("device", DEVICES)
def test_user_op_formula_is_used(device):
    p = profile(UsesCustomOps(), input_shape=(2, 4), device=device)
    assert "nbtest.fused_scale" not in p.uncounted_ops
    assert p.macs == 2 * 4 * 4 + 7 * (2 * 4)
    assert p.flops == 2 * (2 * 4 * 4) + 11 * (2 * 4)


class FusedMLP(nn.Module):
    """A block the user counts with a module formula; its inner linears must not be counted again."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 16)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _fused_mlp_formula(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Cost:
    assert isinstance(module, FusedMLP) and inputs[0].shape[-1] == 4
    return Cost(macs=1000 * output.shape[0], flops=5)


@pytest.mark.parametrize("device", DEVICES)
def test_user_module_formula_replaces_the_ops_inside(device):
    model = nn.Sequential(nn.Linear(4, 4), FusedMLP())
    p = profile(model, input_shape=(3, 4), device=device, formulas={FusedMLP: _fused_mlp_formula})
    rows = {row.path: row for row in p.layers}
    assert (rows["1"].macs, rows["1"].flops) == (1000 * 3, 5)
    assert (rows["1.up"].macs, rows["1.up"].flops) == (0, 0)
    assert (rows["1.down"].macs, rows["1.down"].flops) == (0, 0)
    assert rows["1.up"].params == 4 * 16 + 16  # parameters are still counted where they live
    assert p.macs == 3 * 4 * 4 + 3000
    assert p.flops == 2 * 48 + 12 + 5
    assert p.params == 20 + (4 * 16 + 16) + (16 * 4 + 4)
    assert_rows_add_up(p)


# --- import, arguments -------------------------------------------------------------------------------------------


def test_import_does_not_import_torch():
    code = "import sys, pytest_netbudget; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_shape": (1, 4), "device": "tpu"}, ValueError, "unknown device 'tpu'"),
        ({"input_shape": (1, 4), "device": "cuda:x"}, ValueError, "unknown device"),
        ({"input_shape": (1, 4), "dtype": "int3"}, ValueError, "unknown dtype 'int3'"),
        ({"input_shape": (1, 4), "dtype": "int64"}, ValueError, "unknown dtype"),
        ({"input_shape": (1, 4), "inputs": torch.randn(1, 4)}, ValueError, "exactly one of inputs"),
        ({}, ValueError, "exactly one of inputs"),
        ({"input_shape": (1, 0)}, ValueError, "positive integers"),
        ({"input_shape": (1, "4")}, ValueError, "positive integers"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        profile(nn.Linear(4, 2), **kwargs)


@pytest.mark.parametrize("model", [None, "model", nn.Linear, lambda x: x])
def test_not_a_module(model):
    with pytest.raises(TypeError, match="nn.Module"):
        profile(model, input_shape=(1, 4), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda(device):
    with pytest.raises(ValueError, match="CUDA"):
        profile(nn.Linear(4, 2), input_shape=(1, 4), device=device)


def test_auto_device():
    p = profile(nn.Linear(4, 2), input_shape=(1, 4), device="auto")
    assert p.device.startswith("cuda") if torch.cuda.is_available() else p.device == "cpu"


# --- output -------------------------------------------------------------------------------------------------------


def test_str_and_table():
    p = profile(SpecCNN(), input_shape=(1, 1, 28, 28), device="meta")
    text = str(p)
    assert text == p.table()
    for name in ("conv1", "conv2", "out", "Conv2d", "MaxPool2d", "Linear", "(SpecCNN)"):
        assert name in text
    assert "Params: 28,938" in text
    assert "MACs: 2,838,080" in text
    assert "FLOPs: 5,732,618" in text
    assert "0.110 MiB" in text
    assert "not measured" in text  # peak CUDA memory, on meta
    shallow = p.table(depth=1)
    assert "Sequential" in shallow and "conv1" in shallow
    for deeper in ("Conv2d", "ReLU", "MaxPool2d"):
        assert deeper not in shallow
    assert "MACs: 2,838,080" in shallow  # the footer is the same at every depth
    assert "Sequential" not in p.table(depth=0)


@pytest.mark.parametrize("device", DEVICES)
def test_to_dict_is_json_ready(device):
    p = profile(UsesCustomOps(), input_shape=(2, 4), device=device)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["macs"] == p.macs and data["flops"] == p.flops and data["params"] == p.params
    assert data["peak_memory_mb"] is None
    assert data["uncounted_ops"] == {"nbtest.mystery": 1}
    assert [row["path"] for row in data["layers"]] == ["", "linear"]
    assert Profile.from_dict(data) == p


def test_peak_memory_not_measured_on_cpu():
    assert profile(SpecCNN(), input_shape=(1, 1, 28, 28), device="cpu").peak_memory_mb is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counts_equal_cpu_and_peak_memory_is_measured():
    model = SpecCNN()
    cpu = profile(model, input_shape=(1, 1, 28, 28), device="cpu")
    cuda = profile(model, input_shape=(1, 1, 28, 28), device="cuda")
    assert (cuda.params, cuda.macs, cuda.flops, cuda.size_mb) == (cpu.params, cpu.macs, cpu.flops, cpu.size_mb)
    assert cuda.macs == 2_838_080
    assert isinstance(cuda.peak_memory_mb, float) and cuda.peak_memory_mb > 0
    assert cpu.peak_memory_mb is None
    assert next(model.parameters()).device.type == "cpu"  # profiled on a copy


def test_size_mb_tracks_the_saved_state_dict_within_one_percent(tmp_path):
    """The spec: size_mb is within 1% of the saved state_dict file (the file adds pickle overhead)."""
    model = resnet18()
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    size_mb = profile(model, input_shape=(1, 3, 224, 224), device="meta").size_mb
    file_mb = path.stat().st_size / 2**20
    assert size_mb <= file_mb <= size_mb * 1.01


def test_an_attribution_decides_which_module_each_op_is_charged_to():
    """The tracer's public attribution interface (the training step's is one): here every op goes
    to the model's own row. The spec's CNN does 2,838,080 MACs (SPEC reference table), all there;
    module calls are still counted per module, and the default attribution is the module stack."""
    from pytest_netbudget.engine.tracer import Attribution, Tracer
    from pytest_netbudget.formulas import FormulaSet

    class ToTheModel(Attribution):
        def owner(self, innermost: int | None, args: tuple, kwargs: dict) -> int:
            return 0

    model, x = SpecCNN(), torch.randn(1, 1, 28, 28)
    for attribution, expected in ((ToTheModel(), "all in the model's row"), (Attribution(), "by module")):
        tracer = Tracer(model, [x, *model.parameters()], FormulaSet(), attribution=attribution)
        with torch.no_grad(), tracer:
            model(x)
        macs = [tally.macs for tally in tracer.tallies]
        assert sum(macs) == 2_838_080
        if expected == "all in the model's row":
            assert macs[0] == 2_838_080
        else:  # conv1's convolution: 16 * 28*28 outputs * 25 taps
            paths = [path for path, _ in tracer.modules]
            assert macs[0] == 0 and macs[paths.index("conv1.0")] == 313_600
        assert all(tally.calls == 1 for tally in tracer.tallies)


def test_ops_lists_every_op_that_ran_with_its_calls_free_ones_too():
    """HRNet's upsample_nearest2d never appeared in p.ops (it costs nothing). Now every op that ran
    is listed with its calls: a 1x1 convolution (2 x 2 x 16 = 64 MACs, FLOPs 128 + 32 for the
    bias), the nearest upsampling (free) and the flatten's view (free), each once; the per-layer
    ops add up to the model's, and the rows to the totals. From the calls a user can rebuild
    another tool's convention (fvcore, say, which counts no bias: 160 - 32)."""

    class Upsampling(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(self.conv(x), scale_factor=2, mode="nearest").flatten(1)

    for device in ("cpu", "meta"):
        p = profile(Upsampling(), torch.randn(1, 2, 4, 4), device=device)
        assert {name: stats.calls for name, stats in p.ops.items()} == {
            "aten.convolution": 1,
            "aten.upsample_nearest2d": 1,
            "aten.view": 1,
        }
        assert (p.ops["aten.convolution"].macs, p.ops["aten.convolution"].flops) == (64, 160)
        assert p.ops["aten.upsample_nearest2d"].flops == 0
        assert sum(row.flops for row in p.layers) == p.flops == sum(stats.flops for stats in p.ops.values())


class InPlaceChain(nn.Module):
    """``h`` is made, written in place twice (each op returns ``h`` itself), read once and dropped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + 1
        h.mul_(2)
        h.sigmoid_()
        g = h * 3
        del h
        k = g + 1
        return k.sum(dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_a_tensor_written_in_place_is_one_storage_freed_with_it(device):
    """The tracer follows a tensor that an in-place op hands back once, and lets its storage go
    when the tensor dies. x is [4, 8] (32 floats, 128 bytes). Live: h (128), then g (128 more);
    h is dropped, k (128), then the row sums (4 x 4 bytes): the peak is g + k + the sums, 272
    bytes. Were h kept once per op that handed it back, it would never leave: 400. FLOPs by the
    per-element rules: add, mul_, sigmoid_, mul, add one per output element (5 x 32), the sum one
    per input element (32)."""
    p = profile(InPlaceChain(), input_shape=(4, 8), device=device)
    assert p.activations_mb * MIB == 128 + 128 + 16 == 272
    assert p.flops == 5 * 32 + 32
    assert {name: stats.flops for name, stats in p.ops.items()} == {
        "aten.add": 64,
        "aten.mul_": 32,
        "aten.sigmoid_": 32,
        "aten.mul": 32,
        "aten.sum": 32,
    }
