"""Composite ops that run whole on strided nested tensors (``torch.nested``, the default layout).

On dense tensors ``matmul`` and ``linear`` decompose into ``mm`` / ``bmm`` / ``addmm``, which the
engine counts; a nested tensor has kernels of its own for them that the dense decomposition
cannot run, so they run whole (PyTorch's math attention on jagged sequences multiplies strided
nested tensors this way). These formulas count them sequence by sequence, from each component's
size, and are used only then: the plan still decomposes a dense call (``nested_only``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .registry import Cost, OpCall, register


def nested_only(formula: Any) -> Any:
    """Mark a formula of a composite op as the count of its whole (nested) runs only."""
    formula.nested_only = True
    return formula


def _components(value: Any, count: int) -> list[list[int]]:
    """Each component's size of a nested tensor; a dense tensor's own size, once per component."""
    if isinstance(value, torch.Tensor) and value.is_nested:
        return value._nested_tensor_size().tolist()
    return [list(value.shape)] * count


def _count(value: Any) -> int:
    return value.size(0) if isinstance(value, torch.Tensor) and value.is_nested else 0


@nested_only
def _matmul(call: OpCall) -> Cost:
    """Per component: the product's rows (every dimension of ``self`` but the last) x K x the
    columns of ``other``."""
    count = max(_count(call["self"]), _count(call["other"]))
    macs = sum(
        math.prod(left[:-1]) * left[-1] * right[-1]
        for left, right in zip(_components(call["self"], count), _components(call["other"], count))
    )
    return Cost(macs)


@nested_only
def _linear(call: OpCall) -> Cost:
    """Per component: its elements x the output features; the bias 1 FLOP per output element."""
    count = _count(call["input"])
    out_features = call["weight"].shape[0]
    macs = sum(math.prod(size) for size in _components(call["input"], count)) * out_features
    bias = macs // call["weight"].shape[-1] if call["bias"] is not None else 0
    return Cost(macs, 2 * macs + bias)


register(
    "aten::matmul",
    _matmul,
    family="nested",
    rule="nested tensors (dense calls decompose into mm/bmm): MACs = the sum over sequences of rows*K*N; FLOPs = 2*MACs",
)
register(
    "aten::linear",
    _linear,
    family="nested",
    rule="nested tensors (dense calls decompose into addmm): MACs = the sum over sequences of elements*out features;"
    " FLOPs = 2*MACs + 1 per output element (bias)",
)
