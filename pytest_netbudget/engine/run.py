"""``profile()``: run one forward pass under the tracer and leave the model as it was.

The model is never moved or mutated. Profiling on the model's own device and
dtype calls it directly; any other device or dtype runs a stateless call
(``torch.func.functional_call``) with converted copies of its tensors, and on
``meta`` those copies allocate nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .. import units
from ..formulas import FormulaSet
from .fused_on_meta import FusedKernelsOnMeta
from .profile import LayerStats, Profile
from .tracer import Tracer, shapes_of, tensor_leaves

DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
    "int64": torch.int64,
    "long": torch.int64,
    "int32": torch.int32,
    "int": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
MODEL_DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "meta")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; reject devices this machine does not have."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "meta", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, allowed: Sequence[str] = MODEL_DTYPES) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES or dtype not in allowed and DTYPES[dtype] not in [DTYPES[name] for name in allowed]:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(allowed)}")
    return DTYPES[dtype]


def build_model(factory: Callable[..., Any], kwargs: Mapping[str, Any] | None, device: torch.device) -> Any:
    """Call a model factory with its tensors created on ``device`` (on meta: no weights allocated)."""
    context = torch.device(device) if device.type in ("meta", "cuda") else contextlib.nullcontext()
    with context:
        return factory(**dict(kwargs or {}))


def _move(value: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    if isinstance(value, torch.Tensor):
        cast = dtype if dtype is not None and value.is_floating_point() else value.dtype
        if device.type == "meta":
            return torch.empty_like(value, device="meta", dtype=cast)
        return value.to(device=device, dtype=cast)
    if isinstance(value, tuple):
        return tuple(_move(item, device, dtype) for item in value)
    if isinstance(value, list):
        return [_move(item, device, dtype) for item in value]
    if isinstance(value, dict):
        return {key: _move(item, device, dtype) for key, item in value.items()}
    return value


def make_inputs(
    inputs: Any, input_shape: Sequence[int] | None, device: torch.device, dtype: torch.dtype | None
) -> tuple[tuple, dict]:
    """Positional and keyword inputs on ``device``: a random float tensor of ``input_shape``,
    or the given tensor / tuple / list (positional) / dict (keyword) moved there."""
    if (inputs is None) == (input_shape is None):
        raise ValueError("give exactly one of inputs=... or input_shape=...")
    if input_shape is not None:
        shape = tuple(input_shape)
        if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in shape):
            raise ValueError(f"input_shape must be positive integers, got {list(input_shape)}")
        float_dtype = dtype or torch.float32
        if device.type == "meta":
            return (torch.empty(shape, dtype=float_dtype, device="meta"),), {}
        return (torch.randn(shape, dtype=float_dtype, device=device),), {}
    moved = _move(inputs, device, dtype)
    if isinstance(moved, dict):
        return (), moved
    if isinstance(moved, (tuple, list)):
        return tuple(moved), {}
    return (moved,), {}


@dataclass
class _Inventory:
    """One pass over the model's own tensors: per-module counts and what profiling needs to know."""

    rows: list[LayerStats]
    size_bytes: int
    tensors: list[torch.Tensor]  # unique parameters and buffers
    devices: set[torch.device]
    float_dtypes: set[torch.dtype]


def _inventory(model: torch.nn.Module, dtype: torch.dtype | None) -> _Inventory:
    """Per-module parameter and buffer counts; a tensor shared by two modules counts once,
    for the first module that holds it."""
    seen: set[int] = set()
    inventory = _Inventory(rows=[], size_bytes=0, tensors=[], devices=set(), float_dtypes=set())
    for path, module in model.named_modules():
        counts = {"params": 0, "trainable_params": 0, "buffers": 0}
        owned = [(tensor, True) for tensor in module._parameters.values() if tensor is not None]
        owned += [(tensor, False) for tensor in module._buffers.values() if tensor is not None]
        for tensor, is_param in owned:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            inventory.tensors.append(tensor)
            inventory.devices.add(tensor.device)
            floating = tensor.is_floating_point()
            if floating:
                inventory.float_dtypes.add(tensor.dtype)
            count = tensor.numel()
            inventory.size_bytes += count * (
                dtype.itemsize if dtype is not None and floating else tensor.element_size()
            )
            if is_param:
                counts["params"] += count
                counts["trainable_params"] += count if tensor.requires_grad else 0
            else:
                counts["buffers"] += count
        inventory.rows.append(LayerStats(path=path, type=type(module).__name__, **counts))
    return inventory


def _stateless_state(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """Converted copies of every parameter and buffer, by every name it has, ties kept."""
    converted: dict[int, torch.Tensor] = {}
    state = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if id(tensor) not in converted:
            copy = _move(tensor.detach(), device, dtype)
            if copy.device.type != "meta" and copy.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
                copy = copy.clone()  # a train-mode forward updates buffers in place: never the user's
            if isinstance(tensor, torch.nn.Parameter):
                copy = torch.nn.Parameter(copy, requires_grad=tensor.requires_grad)
            converted[id(tensor)] = copy
        state[name] = converted[id(tensor)]
    return state


@contextlib.contextmanager
def _forward_mode(model: torch.nn.Module, train: bool) -> Iterator[None]:
    """Eval (or train) mode under no_grad, each module's own mode restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.train(train)
    try:
        with torch.no_grad():
            yield
    finally:
        for module, was_training in modes:
            module.training = was_training


@contextlib.contextmanager
def _cuda_peak(device: torch.device) -> Iterator[dict[str, float]]:
    measured: dict[str, float] = {}
    if device.type != "cuda":
        yield measured
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield measured
    torch.cuda.synchronize(device)
    measured["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / units.MIB


def profile(
    model: torch.nn.Module,
    inputs: Any = None,
    *,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    train: bool = False,
    formulas: Mapping[Any, Callable[..., Any]] | None = None,
) -> Profile:
    """Profile one forward pass of ``model``; see the README for what each figure means.

    ``inputs`` is a tensor, a tuple of positional tensors or a dict of keyword tensors;
    ``input_shape`` makes one random float tensor instead. ``dtype`` profiles the model as
    if cast to that floating dtype (size and memory figures follow it). ``formulas`` maps
    ops or module types to formulas for this call only, over the registered ones.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"profile() needs an nn.Module, got {type(model).__name__}")
    target = resolve_device(device)
    target_dtype = resolve_dtype(dtype)
    args, kwargs = make_inputs(inputs, input_shape, target, target_dtype)
    inventory = _inventory(model, target_dtype)

    # In train mode the forward may update buffers (BatchNorm statistics), so it runs on copies.
    direct = not inventory.tensors or (
        not train
        and inventory.devices == {target}
        and (target_dtype is None or inventory.float_dtypes <= {target_dtype})
    )
    if not direct and inventory.devices == {torch.device("meta")} and target.type != "meta":
        raise ValueError("the model's weights are on the meta device: profile it with device='meta'")
    if direct:
        state: dict[str, torch.Tensor] = {}
        external = inventory.tensors
    else:
        state = _stateless_state(model, target, target_dtype)
        external = list(state.values())

    tracer = Tracer(model, external + tensor_leaves((args, kwargs)), FormulaSet(formulas))
    fused = FusedKernelsOnMeta() if FusedKernelsOnMeta.wanted(target) else contextlib.nullcontext()
    with _forward_mode(model, train), _cuda_peak(target) as measured, fused:
        tracer.attach()
        try:
            with tracer:
                if direct:
                    model(*args, **kwargs)
                else:
                    torch.func.functional_call(model, state, args, kwargs, tie_weights=True, strict=False)
        finally:
            tracer.detach()

    # A tally's fields are the measured half of a LayerStats row.
    layers = [replace(row, **vars(tally)) for row, tally in zip(inventory.rows, tracer.tallies)]
    dtype_name = str(target_dtype or min(inventory.float_dtypes, key=str, default=torch.float32)).replace("torch.", "")
    return Profile(
        model=type(model).__name__,
        device=str(target),
        dtype=dtype_name,
        inputs=shapes_of((args, kwargs)),
        params=sum(row.params for row in layers),
        trainable_params=sum(row.trainable_params for row in layers),
        buffers=sum(row.buffers for row in layers),
        size_mb=inventory.size_bytes / units.MIB,
        macs=sum(row.macs for row in layers),
        flops=sum(row.flops for row in layers),
        activations_mb=tracer.memory.peak / units.MIB,
        peak_memory_mb=measured.get("peak_memory_mb"),
        layers=layers,
        uncounted_ops=dict(sorted(tracer.uncounted.items())),
    )
