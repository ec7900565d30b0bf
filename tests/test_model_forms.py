"""Models in other forms than a plain module: compiled, exported, TorchScript, lazy.

The reference: Linear(4, 5) -> ReLU -> Linear(5, 2) on 3 rows: MACs 3*4*5 + 3*5*2 = 90;
FLOPs 2*90 + biases (15 + 6) + ReLU 15 = 216.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import profile_both
from torch import nn

from pytest_netbudget import profile

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

MACS = 3 * 4 * 5 + 3 * 5 * 2
FLOPS = 2 * MACS + (15 + 6) + 15


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))


class WithScriptedPart(nn.Module):
    """An eager model whose first two layers are a TorchScript module."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.jit.script(nn.Sequential(nn.Linear(4, 5), nn.ReLU()))
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_compiled_model_is_profiled_as_its_original():
    eager = profile(mlp(), torch.randn(3, 4), device="cpu")
    compiled = profile_both(torch.compile(mlp()), torch.randn(3, 4))
    assert (compiled.macs, compiled.flops, compiled.params) == (MACS, FLOPS, 4 * 5 + 5 + 5 * 2 + 2)
    assert [row.path for row in compiled.layers] == ["", "0", "1", "2"]
    assert [(row.path, row.macs, row.flops) for row in compiled.layers] == [
        (row.path, row.macs, row.flops) for row in eager.layers
    ]
    assert compiled.model == "Sequential"


def test_exported_program_and_its_module():
    """The exported graph calls ops on the flattened weights; each node names the module it came
    from, so the rows are the eager model's. The graph keeps only modules that hold weights: the
    ReLU's work (15) is its parent's, the root's row."""
    x = torch.randn(3, 4)
    eager = {row.path: (row.macs, row.flops) for row in profile(mlp(), x, device="cpu").layers}
    program = torch.export.export(mlp(), (x,))
    for model in (program, program.module()):
        p = profile_both(model, x)
        assert (p.macs, p.flops, p.params) == (MACS, FLOPS, 37)
        rows = {row.path: (row.macs, row.flops) for row in p.layers}
        assert (rows["0"], rows["2"]) == (eager["0"], eager["2"]) == ((60, 135), (30, 66))
        assert rows[""] == (0, 15)


def test_scripted_submodule_is_charged_to_its_own_row():
    model = WithScriptedPart()
    p = profile_both(model, torch.randn(3, 4))
    rows = {row.path: row for row in p.layers}
    assert (rows["features"].macs, rows["features"].flops) == (3 * 4 * 5, 2 * 60 + 15 + 15)  # + bias, ReLU
    assert (rows["head"].macs, rows["head"].flops) == (3 * 5 * 2, 2 * 30 + 6)
    assert rows["features"].calls == 1 and rows["features"].output_shapes == [[3, 5]]
    assert (p.macs, p.flops, p.params) == (MACS, FLOPS, 37)


@pytest.mark.parametrize("form", ["script", "trace"])
def test_whole_torchscript_model(form: str):
    """Its children run inside the TorchScript interpreter: the work is the root's row."""
    x = torch.randn(3, 4)
    model = torch.jit.script(mlp()) if form == "script" else torch.jit.trace(mlp(), x)
    p = profile_both(model, x)
    assert (p.macs, p.flops, p.params) == (MACS, FLOPS, 37)
    assert p.layers[0].macs == MACS


def test_training_step_of_a_scripted_part_leaves_the_model_as_it_was():
    """Backward: head's weight and input gradients (2 x 30 MACs), features' weight gradient
    only (60; the model's input needs none)."""
    model = WithScriptedPart()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for device in ("cpu", "meta"):
        p = profile(model, torch.randn(3, 4), device=device, train=True, optimizer="sgd")
        rows = {row.path: row.figures["train_macs"] for row in p.layers}
        assert (rows["features"], rows["head"]) == (60 + 60, 30 + 2 * 30)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(param.grad is None for param in model.parameters())


def test_uninitialised_lazy_module_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.LazyLinear(5))
    with pytest.raises(ValueError, match=r"1\.weight \(LazyLinear\) is an uninitialised lazy parameter.*forward"):
        profile(model, torch.randn(3, 4), device="cpu")
    model(torch.randn(3, 4))  # one forward materialises it
    assert profile(model, torch.randn(3, 4), device="meta").macs == 3 * 4 * 4 + 3 * 4 * 5


def test_data_parallel_is_profiled_as_its_module_and_says_so():
    """nn.DataParallel refused the stateless call that meta needs ("The stateless API can't be used
    with nn.DataParallel module"). It is unwrapped, on every device: Linear(4, 3) on 2 rows is
    2 x 4 x 3 = 24 MACs, its rows are the module's, and the profile names the wrapper."""
    wrapped = nn.DataParallel(nn.Sequential(nn.Linear(4, 3)))
    for device in ("cpu", "meta"):
        p = profile(wrapped, torch.randn(2, 4), device=device)
        assert p.macs == 24 and [row.path for row in p.layers] == ["", "0"]
        assert p.model == "Sequential (unwrapped from DataParallel)"
        assert "Model: Sequential (unwrapped from DataParallel) on" in p.table()
