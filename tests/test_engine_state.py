"""Profiling leaves the model and the process exactly as they were: writes of the forward to the
model's own parameters and buffers undone, the random number generator's state restored, and
one model profiled from several threads at once gives every thread the right rows."""

from __future__ import annotations

import threading

import torch
from torch import nn

from pytest_netbudget import profile


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


class StepCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.fc(x)


class KVCache(nn.Module):
    """Appends each call's keys to a cache buffer at a position buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.key = nn.Linear(4, 4, bias=False)
        self.register_buffer("cache", torch.zeros(2, 8, 4))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start, length = int(self.position), x.shape[1]
        self.cache[:, start : start + length] = self.key(x)
        self.position.add_(length)
        return self.cache[:, : start + length].sum()


class ReassignedBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total = self.total + x.sum(0)  # replaces the buffer by assignment
        return self.total


def test_step_counter_buffer_is_restored():
    model = StepCounter()
    before = state_of(model)
    for device in ("cpu", "meta"):
        p = profile(model, torch.randn(3, 4), device=device)
        assert_same_state(model, before)
    assert p.flops == 1 + 2 * 3 * 4 * 4 + 3 * 4  # the counter's add, the linear layer and its bias


def test_key_value_cache_buffer_is_restored():
    model = KVCache()
    before = state_of(model)
    for _ in range(2):  # the second profile sees the first one's writes undone
        p = profile(model, torch.randn(2, 3, 4), device="cpu")
        assert p.macs == 2 * 3 * 4 * 4
        assert_same_state(model, before)


def test_embedding_max_norm_renormalisation_is_undone():
    """nn.Embedding(max_norm=1) rescales, in place, every looked-up row whose norm is above 1."""
    model = nn.Embedding(10, 4, max_norm=1.0)
    with torch.no_grad():
        model.weight.mul_(5)  # every row's norm is well above 1
    before = state_of(model)
    profile(model, torch.tensor([[1, 2, 3]]), device="cpu")
    assert_same_state(model, before)
    model(torch.tensor([[1, 2, 3]]))  # the write the profile undid
    assert not torch.equal(model.weight, before["weight"])


def test_buffer_replaced_by_assignment_is_put_back():
    model = ReassignedBuffer()
    total = model.total
    profile(model, torch.ones(3, 4), device="cpu")
    assert model.total is total and torch.equal(total, torch.zeros(4))


def test_random_number_generator_is_restored():
    """A random input (input_shape) and dropout in a training step draw from the global generator."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    profile(model, input_shape=(2, 4), device="cpu", train=True, optimizer="sgd")
    assert torch.equal(torch.rand(3), expected)


def test_one_model_profiled_from_several_threads():
    """Eight threads profile one model at once; each gets the rows of a profile run alone, and the
    model's modes are as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4), nn.Dropout()))
    model.train()
    model[2].eval()
    alone = profile(model, torch.randn(2, 8), device="cpu")
    expected = [(row.path, row.calls, row.macs, row.flops) for row in alone.layers]
    results: list = []

    def run() -> None:
        p = profile(model, torch.randn(2, 8), device="cpu")
        results.append([(row.path, row.calls, row.macs, row.flops) for row in p.layers])

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8
    assert [module.training for module in model.modules()] == [True, True, True, False, False, False]


class SetsProcessSettings(nn.Module):
    """A forward that changes process-wide torch settings (as some library code does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_default_device("meta")
        return self.fc(x)


def test_process_wide_settings_a_forward_changes_are_put_back():
    """Default device and dtype, grad mode, deterministic algorithms and the thread count are as
    before the profile, also when the forward raised after changing them."""
    from pytest_netbudget.engine.state import PROCESS_SETTINGS

    before = [read() for _, read, _ in PROCESS_SETTINGS]
    try:
        profile(SetsProcessSettings(), torch.ones(1, 4), device="cpu")
        assert [read() for _, read, _ in PROCESS_SETTINGS] == before
        assert torch.empty(1).dtype == torch.float32 and torch.empty(1).device.type == "cpu"
    finally:  # never leave the settings changed for the rest of the suite, even when this fails
        for (_, read, write), value in zip(PROCESS_SETTINGS, before):
            if read() != value:
                write(value)
