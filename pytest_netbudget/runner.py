"""Run one registered model: import its factory, build it, make its inputs, profile it.

Whatever goes wrong on the way becomes the ``Result``'s error, a message that says
what and suggests a way out; the plugin fails only that model's item with it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from . import devices
from .budgets import Result
from .config import ConfigError, InputSpec, ModelSpec
from .engine.run import build_model, profile, resolve_device, torch_dtype
from .engine.serving import ServeError
from .engine.state import preserved_settings
from .formulas import FormulaError
from .loading import LoadError, import_callable, stops_the_run
from .results import Profile, StepError


class ModelError(Exception):
    """The model could not be built or run; the message is the cause, for the user."""


def make_tensor(spec: InputSpec, device: torch.device) -> torch.Tensor:
    """A tensor of the spec's shape and dtype: random ints in [low, high) or random floats."""
    dtype = torch_dtype(spec.dtype, devices.INPUT_DTYPES)
    if device.type == "meta":
        return torch.empty(spec.shape, dtype=dtype, device="meta")
    if dtype.is_floating_point:
        tensor = torch.rand(spec.shape, dtype=dtype, device=device)
        high = 1.0 if spec.high is None else spec.high
        return tensor * (high - spec.low) + spec.low
    if dtype == torch.bool:
        return torch.randint(0, 2, spec.shape, device=device).bool()
    if spec.high is None:  # config requires it for an integer input; a spec made by hand may lack it
        raise ValueError(f"an integer input needs 'high' (exclusive upper bound), dtype {spec.dtype}")
    return torch.randint(int(spec.low), int(spec.high), spec.shape, dtype=dtype, device=device)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(error)


def out_of_memory_text(what: str, device: torch.device | str, error: BaseException) -> str:
    return (
        f"{what} ran out of memory on device {device}: {describe(error)}\n"
        '  Set device = "meta" for this model to count it without allocating weights or activations.'
    )


META_HINT = (
    "\n  On the meta device tensors have shapes but no values: a forward that reads values "
    '(.item(), data-dependent shapes, Python branches on tensors) cannot run there. Set device = "cpu" for this model.'
)


def check_error_text(error: BaseException, device: str) -> str:
    """Why a check from a test could not be profiled: the formula's own message, running out of
    memory with the way out, or the exception (with the meta hint on meta)."""
    if isinstance(error, (FormulaError, StepError, LoadError, ConfigError)):  # they name what is wrong themselves
        return str(error)
    if isinstance(error, ServeError):
        return f"serving step: {error}"
    if is_out_of_memory(error):
        return out_of_memory_text("the forward pass", device, error)
    return f"profiling failed: {describe(error)}{META_HINT if device == 'meta' else ''}"


def run_spec(spec: ModelSpec, device_override: str | None = None) -> Result:
    """Build and profile one registered model; a failure anywhere is the result's error."""
    result = Result(name=spec.name, limits=spec.limits, max_increase=spec.max_increase, strict=spec.strict)
    try:
        with preserved_settings():  # what the factory sets process-wide is not the next model's
            return replace(result, profile=profile_spec(spec, device_override))
    except ModelError as error:
        return replace(result, error=str(error))
    except BaseException as error:  # a path not foreseen above: still this model's own error, never the session's
        if stops_the_run(error):
            raise
        return replace(result, error=f"profiling failed: {describe(error)}")


def profile_spec(spec: ModelSpec, device_override: str | None = None) -> Profile:
    """Build and profile one registered model; raise ``ModelError`` with the cause on any failure."""
    try:
        factory = import_callable(spec.factory)
        input_factory = import_callable(spec.input_factory) if spec.input_factory else None
    except LoadError as error:
        raise ModelError(str(error)) from None
    try:
        device = resolve_device(device_override or spec.device)
    except ValueError as error:
        raise ModelError(str(error)) from None
    try:
        model = build_model(factory, spec.kwargs, device)
    except BaseException as error:
        if stops_the_run(error):
            raise
        if is_out_of_memory(error):
            raise ModelError(out_of_memory_text(f"factory {spec.factory}", device, error)) from None
        raise ModelError(f"factory {spec.factory} raised while building the model: {describe(error)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory {spec.factory} returned a {type(model).__name__}, not a torch.nn.Module")
    step = spec.train
    if step is not None:
        try:
            step = replace(step, loss=step.resolved_loss())
        except LoadError as error:
            raise ModelError(f"train.loss_factory: {error}") from None
    inputs: Any = None
    try:
        if input_factory is not None:
            inputs = input_factory()
        elif spec.inputs is not None:
            inputs = tuple(make_tensor(item, device) for item in spec.inputs)
    except BaseException as error:
        if stops_the_run(error):
            raise
        source = f"input_factory {spec.input_factory}" if input_factory is not None else "making the inputs"
        raise ModelError(f"{source} raised: {describe(error)}") from None
    try:
        return profile(
            model,
            inputs,
            input_shape=spec.input_shape,
            device=device,
            dtype=spec.dtype,
            train=step if step is not None else False,
            serve=spec.serve,
            target=spec.target,
        )
    except FormulaError as error:
        raise ModelError(str(error)) from None
    except ServeError as error:
        raise ModelError(f"serving step: {error}") from None
    except StepError as error:  # a setting this device cannot run (autocast under --netbudget-device=meta)
        raise ModelError(f"train.{error}") from None
    except BaseException as error:
        if stops_the_run(error):
            raise
        if is_out_of_memory(error):
            raise ModelError(out_of_memory_text("the forward pass", device, error)) from None
        hint = META_HINT if device.type == "meta" else ""
        shape: Any = spec.input_shape or [item.shape for item in spec.inputs or []] or spec.input_factory
        steps = [name for name, given in (("the training step", step), ("the serving step", spec.serve)) if given]
        what = " or ".join(["the forward pass", *steps])
        raise ModelError(f"{what} failed on input {shape}: {describe(error)}{hint}") from None
