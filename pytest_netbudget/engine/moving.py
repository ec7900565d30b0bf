"""Tensors moved (or cast) to the profiled device wherever they are: in containers, named
tuples, dataclasses and plain objects (a ``transformers`` ``DynamicCache``), and in a
module's plain tensor attributes, which are neither parameters nor buffers.

An object or container that holds a tensor is always copied (shallowly, its tensors
moved), also on the model's own device, so that a forward that reassigns an attribute
of it (a cache appending a step) leaves the caller's object as it was.
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator
from typing import Any

import torch

from .quantized import inner_tensors, is_packed

_NOT_DATA = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType, torch.nn.Module)


def move_tensor(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` on ``device`` (floating tensors cast to ``dtype`` when given); on meta a new
    meta tensor of its shape, which allocates nothing.

    A tensor that requires grad gives a new leaf that requires grad, on every device: a
    training step then computes its gradient everywhere (on meta too), into the copy, never
    into the caller's tensor or the graph that made it."""
    cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
    if is_packed(tensor):  # a quantized weight: its inner tensors moved, its values left packed
        packed: Any = tensor  # a tensor subclass's flatten / unflatten protocol, not Tensor's
        inner = {name: move_tensor(value, device, None) for name, value in inner_tensors(tensor).items()}
        moved = type(packed).__tensor_unflatten__(inner, packed.__tensor_flatten__()[1], tensor.size(), tensor.stride())
    elif device.type == "meta":
        moved = torch.empty_like(tensor, device="meta", dtype=cast)
    else:
        moved = tensor.to(device=device, dtype=cast)
    if tensor.requires_grad:
        moved = moved.detach().requires_grad_()
    return moved


def move(value: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """``value`` with every tensor inside it moved; what holds no tensor is returned as it is."""
    return _move(value, device, dtype, {})[0]


def _move(value: Any, device: torch.device, dtype: torch.dtype | None, memo: dict[int, tuple]) -> tuple[Any, bool]:
    """(the moved value, whether it holds a tensor); ``memo`` keeps shared objects shared."""
    if id(value) in memo:
        return memo[id(value)]
    result: tuple[Any, bool]
    if isinstance(value, torch.Tensor):
        result = (move_tensor(value, device, dtype), True)
    elif isinstance(value, (tuple, list, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        moved = {key: _move(item, device, dtype, memo) for key, item in items}
        if not any(holds for _, holds in moved.values()):
            result = (value, False)
        elif isinstance(value, dict):
            result = ({key: item for key, (item, _) in moved.items()}, True)
        elif hasattr(value, "_fields"):  # a named tuple
            result = (type(value)(*(item for item, _ in moved.values())), True)
        else:
            result = (type(value)(item for item, _ in moved.values()), True)
    elif hasattr(value, "__dict__") and not isinstance(value, _NOT_DATA):
        memo[id(value)] = (value, False)  # a cycle back to this object holds nothing new
        moved = {name: _move(item, device, dtype, memo) for name, item in vars(value).items()}
        if any(holds for _, holds in moved.values()):
            duplicate = copy.copy(value)
            duplicate.__dict__.update({name: item for name, (item, _) in moved.items()})
            result = (duplicate, True)
        else:
            result = (value, False)
    else:
        result = (value, False)
    memo[id(value)] = result
    return result


@contextlib.contextmanager
def moved_attributes(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Each module's plain tensor attributes (a mask kept as ``self.mask``, not a buffer)
    replaced by moved copies until the block ends, also when it raises."""
    originals = []
    try:
        for module in model.modules():
            for name, value in list(vars(module).items()):
                if name.startswith("_") or isinstance(value, _NOT_DATA):
                    continue
                moved = move(value, device, dtype)
                if moved is not value:
                    originals.append((module, name, value))
                    module.__dict__[name] = moved
        yield
    finally:
        for module, name, value in reversed(originals):
            module.__dict__[name] = value
