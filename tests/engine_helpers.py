"""What the engine's count tests share: a cpu-and-meta profile, FlopCounterMode's total, and
a table of hand-derived cases over modules whose own forward calls one function."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pytest_netbudget import profile

FIGURES = ("params", "trainable_params", "buffers", "size_mb", "macs", "flops")


def profile_both(model: nn.Module, inputs: Any = None, **kwargs: Any):
    """Profile on cpu and on meta; every figure must be identical, and no op may go uncounted."""
    cpu = profile(model, inputs, device="cpu", **kwargs)
    meta = profile(model, inputs, device="meta", **kwargs)
    for name in FIGURES:
        assert getattr(cpu, name) == getattr(meta, name), (
            f"{name}: cpu {getattr(cpu, name)} != meta {getattr(meta, name)}"
        )
    assert cpu.uncounted_ops == {}, cpu.uncounted_ops
    assert meta.uncounted_ops == {}, meta.uncounted_ops
    return cpu


def as_args(inputs: Any) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def flop_counter_total(model: nn.Module, inputs: Any, device: str = "cpu") -> int:
    """FlopCounterMode's total for a plain eval / no_grad forward of ``model`` on ``device``."""
    args = as_args(inputs)
    if device == "meta":
        model = copy.deepcopy(model).to("meta")
        args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*args)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


class Call(nn.Module):
    """A module whose own forward calls ``fn(self, *inputs)``: functional code, no child modules."""

    def __init__(self, fn: Callable[..., Any], **parameters: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in parameters.items():
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, *inputs: Any) -> Any:
        return self.fn(self, *inputs)


@dataclass
class Case:
    id: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    macs: int
    flops: int
    params: int = 0
    flop_counter: bool = True  # FlopCounterMode sees every matmul-like op on CPU


def r(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape)


def rs(*shapes: tuple[int, ...]) -> Callable[[], tuple]:
    return lambda: tuple(torch.randn(*shape) for shape in shapes)
