"""``profile()``: run one forward pass under the tracer and leave the model as it was.

The model is never moved or mutated. Profiling on the model's own device and
dtype calls it directly; any other device or dtype runs a stateless call
(``torch.func.functional_call``) with converted copies of its tensors, and on
``meta`` those copies allocate nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .. import devices, metrics, targets, units
from ..formulas import FormulaSet
from ..results import (
    Fits,
    LayerStats,
    OpStats,
    Profile,
    Roofline,
    ServePart,
    ServeSpec,
    ServeStep,
    StepError,
    StepSpec,
    TargetRef,
    TrainStep,
    UpperBound,
    merged_upper_bounds,
)
from .fused_on_meta import fused_attention_on_meta
from .kernel_overrides import VECDOT_AS_MATMUL
from .model_forms import (
    call_with_state,
    is_exported,
    lazy_parameter_error,
    run_exported,
    set_mode,
    swapped_state,
    unwrap,
    unwrap_with_label,
)
from .moving import move, move_tensor, moved_attributes
from .padded_encoders import padded_encoders
from .planned_weights import planned_bytes, planned_shares
from .quantized import is_packed, packed_tensors, stored_bytes
from .recurrent_on_meta import recurrent_on_meta
from .roofline import OpClock
from .serving import ServeRun, longest_context, serve_step
from .state import KeptAttributes, OwnWrites, model_lock, preserved_rng, preserved_settings
from .tracer import Attribution, LayerTally, LiveMemory, Tracer, dtypes_of, shapes_of, storage_key, tensor_leaves
from .training import rebatch, run_step


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; reject devices this machine does not have."""
    name = devices.check_device(str(device), "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return resolved


def torch_dtype(name: str, allowed: tuple[str, ...] = devices.MODEL_DTYPES, label: str = "dtype") -> torch.dtype:
    """The torch dtype of one of our dtype names (``float16`` -> ``torch.float16``)."""
    return getattr(torch, devices.check_dtype(name, label, allowed))


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if str(dtype).removeprefix("torch.") not in devices.MODEL_DTYPES:
            raise ValueError(
                f"dtype {dtype}: profile() casts the model to a floating dtype, one of {', '.join(devices.MODEL_DTYPES)}"
            )
        return dtype
    return torch_dtype(dtype)


def build_model(factory: Callable[..., Any], kwargs: Mapping[str, Any] | None, device: torch.device) -> Any:
    """Call a model factory with its tensors created on ``device`` (on meta: no weights allocated)."""
    context = torch.device(device) if device.type in ("meta", "cuda") else contextlib.nullcontext()
    with context:
        return factory(**dict(kwargs or {}))


def make_inputs(
    inputs: Any, input_shape: Sequence[int] | None, device: torch.device, dtype: torch.dtype | None
) -> tuple[tuple, dict]:
    """Positional and keyword inputs on ``device``: a random float tensor of ``input_shape``,
    or the given tensor / tuple / list (positional) / dict (keyword) moved there."""
    if (inputs is None) == (input_shape is None):
        raise ValueError("give exactly one of inputs=... or input_shape=...")
    if input_shape is not None:
        shape = tuple(input_shape)
        problem = devices.shape_problem(shape)
        if problem:
            raise ValueError(f"input_shape {problem}" + (f", got {list(shape)}" if problem.startswith("must") else ""))
        float_dtype = dtype or torch.float32
        if device.type == "meta":
            return (torch.empty(shape, dtype=float_dtype, device="meta"),), {}
        return (torch.randn(shape, dtype=float_dtype, device=device),), {}
    moved = move(inputs, device, dtype)
    if isinstance(moved, dict):
        return (), moved
    if isinstance(moved, (tuple, list)):
        return tuple(moved), {}
    return (moved,), {}


@dataclass
class _InventoryRow:
    """One module's own parameters and buffers."""

    path: str
    type: str
    counts: dict[str, int]


@dataclass
class _Inventory:
    """One pass over the model's own tensors: per-module counts and what profiling needs to know."""

    rows: list[_InventoryRow]
    modules: list[tuple[str, torch.nn.Module]]  # named_modules(), walked once per profile
    size_bytes: int
    tensors: list[torch.Tensor]  # unique parameters and buffers
    devices: set[torch.device]
    float_dtypes: set[torch.dtype]


_LAZY = torch.nn.parameter.UninitializedTensorMixin  # type: ignore[attr-defined]  # not in torch's stubs


def _inventory(model: torch.nn.Module, dtype: torch.dtype | None) -> _Inventory:
    """Per-module parameter and buffer counts; a tensor shared by two modules counts once,
    for the first module that holds it. A lazy parameter, which has no shape yet, is an error.
    One pass: a large model has thousands of tensors, and this runs on every profile."""
    seen: set[int] = set()
    modules = list(model.named_modules())
    rows, tensors, devices, float_dtypes = [], [], set(), set()
    size_bytes = 0
    for path, module in modules:
        params = trainable = buffers = 0
        for table, is_param in ((module._parameters, True), (module._buffers, False)):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                if isinstance(tensor, _LAZY):
                    raise lazy_parameter_error(path, name, module)
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                tensors.append(tensor)
                devices.add(tensor.device)
                count = tensor.numel()
                if is_packed(tensor):  # a quantized weight (torchao): its packed values and scales
                    size_bytes += stored_bytes(tensor)
                elif tensor.is_floating_point():
                    float_dtypes.add(tensor.dtype)
                    size_bytes += count * (tensor.element_size() if dtype is None else dtype.itemsize)
                else:
                    size_bytes += count * tensor.element_size()
                if not is_param:
                    buffers += count
                else:
                    params += count
                    if tensor.requires_grad:
                        trainable += count
        for tensor in packed_tensors(module):  # quantized weights: not trainable, in their own dtype
            params += tensor.numel()
            size_bytes += stored_bytes(tensor)
        counts = {"params": params, "trainable_params": trainable, "buffers": buffers}
        rows.append(_InventoryRow(path, type(module).__name__, counts))
    return _Inventory(rows, modules, size_bytes, tensors, devices, float_dtypes)


def _stateless_state(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """Converted copies of every parameter and buffer, by every name it has, ties kept."""
    converted: dict[int, torch.Tensor] = {}
    state = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if id(tensor) not in converted:
            copy = move_tensor(tensor.detach(), device, dtype)
            if copy.device.type != "meta" and copy.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
                copy = copy.clone()  # a train-mode forward updates buffers in place: never the user's
            if isinstance(tensor, torch.nn.Parameter):
                copy = torch.nn.Parameter(copy, requires_grad=tensor.requires_grad)
            converted[id(tensor)] = copy
        state[name] = converted[id(tensor)]
    return state


_MODULE_TRAIN = torch.nn.Module.train


@contextlib.contextmanager
def _module_modes(model: torch.nn.Module, train: bool, modules: list[tuple[str, torch.nn.Module]]) -> Iterator[None]:
    """Eval (or train) mode, each of ``modules``' own mode restored afterwards."""
    modes = [(module, module.training) for _, module in modules]
    # Module.train (and its __setattr__) is slow next to a small forward: skip it where it
    # would change nothing, unless a module overrides train() and may do more there.
    if any(was_training != train or type(module).train is not _MODULE_TRAIN for module, was_training in modes):
        set_mode(model, train)
    try:
        yield
    finally:
        for module, was_training in modes:
            if module.training != was_training:
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


@dataclass
class _Prepared:
    """Everything the traced forward needs, decided before it runs."""

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype | None
    args: tuple
    kwargs: dict
    inventory: _Inventory
    state: dict[str, torch.Tensor] | None  # converted copies for a stateless call; None: call the model itself
    external: list[torch.Tensor]  # weights and inputs: never activations
    formulas: FormulaSet
    target: targets.Target | None  # estimated latency on this accelerator
    label: str  # the model's name in the profile (its type; a data-parallel wrapper it was taken out of)


def profile(
    model: torch.nn.Module,
    inputs: Any = None,
    *,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    train: bool | StepSpec = False,
    optimizer: str = "adamw",
    loss: Callable[[Any], Any] | None = None,
    autocast: str | None = None,
    batch: int | None = None,
    serve: ServeSpec | None = None,
    formulas: Mapping[Any, Callable[..., Any]] | None = None,
    target: str | targets.Target | None = None,
) -> Profile:
    """Profile one forward pass of ``model`` (and with ``train=True`` one training step too);
    see the README for what each figure means.

    ``inputs`` is a tensor, a tuple of positional tensors or a dict of keyword tensors;
    ``input_shape`` makes one random float tensor instead. ``dtype`` profiles the model as
    if cast to that floating dtype (size and memory figures follow it). ``formulas`` maps
    ops or module types to formulas for this call only, over the registered ones.

    ``train=True`` adds a training step on copies of the weights: forward in train mode,
    ``loss(outputs)`` (the sum of the floating outputs by default) and its backward, and
    one step of ``optimizer`` (sgd, sgd-momentum, adam, adamw or none); ``autocast`` runs
    the forward in mixed precision (bfloat16 or float16, on cpu or cuda); ``batch`` gives
    every input that many rows (dimension 0) for the step. ``train=StepSpec(...)`` gives the
    same settings as one record (what a registered model's ``train`` table becomes).

    ``target`` (a built-in name such as ``"a100"``, or a ``targets.Target``) adds the forward's
    estimated latency on that accelerator, per layer and in total (a roofline; see the README).

    ``serve=ServeSpec(context=..., batch=...)`` adds a serving step: a prefill of ``context``
    tokens at ``batch`` from the model's own token input, the cache it returns measured, one
    decode step with that cache, the weights at a planned precision, and with ``fits`` the
    longest context that fits that memory (see the README's "Serving step"). With a ``target``
    the prefill and the decode step get their estimated latency too: ``decode_latency_ms``, per layer
    and in total, is the decode step's (``p.serve.decode.latency_ms``).
    """
    step = _step_spec(train, optimizer, loss, autocast, batch)
    accelerator = targets.resolve(target) if isinstance(target, str) else target
    # An exported program gives a new module each time: nothing to share, nothing to lock.
    lock = model_lock(unwrap(model)) if isinstance(model, torch.nn.Module) else contextlib.nullcontext()
    with lock, preserved_rng(), preserved_settings():
        prepared = _prepare(model, inputs, input_shape, device, dtype, formulas, accelerator, copies=False)
        tracer, peak_memory_mb = _trace(prepared)
        result = _assemble(prepared, tracer, peak_memory_mb)
        if serve is not None:
            on_meta = (
                prepared
                if prepared.device.type == "meta"
                else _prepare(model, inputs, input_shape, "meta", dtype, formulas, None, copies=False)
            )
            result = _with_serving(result, prepared, on_meta if serve.fits is not None else None, serve)
        if step is None:
            return result
        prepared = _prepare(model, inputs, input_shape, device, dtype, formulas, accelerator, copies=True)
        problem = step.problem_on(prepared.device.type)
        if problem:
            raise StepError("autocast", problem)
        return _with_step(result, prepared, step)


def _step_spec(
    train: bool | StepSpec,
    optimizer: str,
    loss: Callable[[Any], Any] | None,
    autocast: str | None,
    batch: int | None,
) -> StepSpec | None:
    """The training step, its settings checked (by ``StepSpec``) before anything runs; None without one."""
    if train and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "a training step cannot run inside torch.inference_mode(), which turns autograd off for every tensor: "
            "call profile(..., train=True) outside it"
        )
    if isinstance(train, StepSpec):
        if (optimizer, loss, autocast, batch) != ("adamw", None, None, None):
            raise ValueError(
                "give the training step's settings in train=StepSpec(...) or as keywords "
                "(optimizer=, batch=, autocast=, loss=), not both"
            )
        return train
    return StepSpec(optimizer=optimizer, batch=batch, autocast=autocast, loss=loss) if train else None


def _prepare(
    model: Any,
    inputs: Any,
    input_shape: Sequence[int] | None,
    device: Any,
    dtype: Any,
    formulas: Mapping[Any, Callable[..., Any]] | None,
    accelerator: targets.Target | None,
    copies: bool,
) -> _Prepared:
    """Resolve device and dtype, make the inputs, take stock of the weights, and decide
    whether the model can be called as it is or needs converted copies (``copies``: always,
    as a training step, which writes its weights, does)."""
    model, label = unwrap_with_label(model)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"profile() needs an nn.Module, got {type(model).__name__}")
    target = resolve_device(device)
    target_dtype = resolve_dtype(dtype)
    args, kwargs = make_inputs(inputs, input_shape, target, target_dtype)
    inventory = _inventory(model, target_dtype)
    direct = not inventory.tensors or (
        not copies
        and inventory.devices == {target}
        and (target_dtype is None or inventory.float_dtypes <= {target_dtype})
    )
    if not direct and inventory.devices == {torch.device("meta")} and target.type != "meta":
        raise ValueError("the model's weights are on the meta device: profile it with device='meta'")
    state = None if direct else _stateless_state(model, target, target_dtype)
    weights = inventory.tensors if state is None else list(state.values())
    return _Prepared(
        model,
        target,
        target_dtype,
        args,
        kwargs,
        inventory,
        state,
        weights + tensor_leaves((args, kwargs)),
        FormulaSet(formulas),
        accelerator,
        label,
    )


@contextlib.contextmanager
def _kernel_overrides(device: torch.device) -> Iterator[None]:
    """The kernels put in front of aten's while a profile runs: vecdot as the dot products it is,
    and on meta the attention and recurrent kernels CPU would take."""
    with VECDOT_AS_MATMUL.on(device), fused_attention_on_meta(device), recurrent_on_meta(device):
        yield


def _trace(prepared: _Prepared) -> tuple[Tracer, float | None]:
    """Run the forward once under the tracer; the CUDA peak when on CUDA."""
    tracer = _new_tracer(prepared)
    measured: dict[str, float] = {}
    _traced_call(prepared, tracer, prepared.args, prepared.kwargs, measured)
    return tracer, measured.get("peak_memory_mb")


def _new_tracer(
    prepared: _Prepared, memory: LiveMemory | None = None, attribution: Attribution | None = None
) -> Tracer:
    """A tracer of the prepared model (its live memory ``memory``, by default one that leaves out its
    weights and inputs); with a target, one that times every op on it."""
    clock = OpClock(prepared.target) if prepared.target is not None else None
    modules = prepared.inventory.modules
    return Tracer(
        prepared.model, prepared.external, prepared.formulas, modules, clock, memory=memory, attribution=attribution
    )


def _traced_call(
    prepared: _Prepared, tracer: Tracer, args: tuple, kwargs: dict, measured: dict[str, float] | None = None
) -> Any:
    """``model(*args, **kwargs)`` under ``tracer`` in eval mode and ``no_grad``, leaving the model as
    it was; returns the output. ``measured`` receives the CUDA peak when on CUDA."""
    model = prepared.model
    kept = KeptAttributes(prepared.inventory.modules)
    # The model's own tensors (on the direct path) and the plain ones its modules hold: what the
    # forward writes to them is undone.
    tracer.own_writes = _own_writes(prepared.inventory.tensors if prepared.state is None else [], kept)
    with (
        kept,
        tracer.own_writes or contextlib.nullcontext(),
        _module_modes(model, False, prepared.inventory.modules),
        padded_encoders(prepared.inventory.modules),
        moved_attributes(model, prepared.device, prepared.dtype)
        if prepared.state is not None
        else contextlib.nullcontext(),
        torch.no_grad(),
        _cuda_peak(prepared.device) as peak,
        _kernel_overrides(prepared.device),
        tracer,
    ):
        if is_exported(model):
            with swapped_state(model, prepared.state or {}):
                output = run_exported(model, args, kwargs, tracer)
        elif prepared.state is None:
            output = model(*args, **kwargs)
        else:
            output = call_with_state(model, prepared.state, args, kwargs)
    if measured is not None:
        measured.update(peak)
    return output


def _own_writes(weights: list[torch.Tensor], kept: KeptAttributes) -> OwnWrites | None:
    """What undoes writes to ``weights`` and to the plain tensors of ``kept``; None when there are none."""
    watched = [*weights, *kept.tensors]
    return OwnWrites(watched) if watched else None


def _assemble(prepared: _Prepared, tracer: Tracer, peak_memory_mb: float | None) -> Profile:
    """The inventory's rows completed with what each module did, and the totals."""
    estimated = prepared.target is not None
    layers = [_layer(row, tally, estimated) for row, tally in zip(prepared.inventory.rows, tracer.tallies)]
    dtype = prepared.dtype or min(prepared.inventory.float_dtypes, key=str, default=torch.float32)
    totals: dict[str, float | int | None] = dict.fromkeys(metrics.NAMES)
    totals.update({name: sum(row.figures[name] for row in layers) for name in layers[0].figures})
    totals.update(
        size_mb=prepared.inventory.size_bytes / units.MIB,
        activations_mb=tracer.memory.peak / units.MIB,
        peak_memory_mb=peak_memory_mb,
    )
    figures = ("macs", "flops", "latency_ms") if estimated else ("macs", "flops")
    return Profile(
        model=prepared.label,
        device=str(prepared.device),
        dtype=str(dtype).replace("torch.", ""),
        inputs=shapes_of((prepared.args, prepared.kwargs)),
        input_dtypes=dtypes_of((prepared.args, prepared.kwargs)),
        totals={name: totals[name] for name in metrics.NAMES},
        layers=layers,
        uncounted_ops=dict(sorted(tracer.uncounted.items())),
        target=_target_ref(prepared.target),
        upper_bounds=_upper_bounds(layers, tracer.tallies, figures),
        torch_version=str(torch.__version__),  # a plain str: TorchVersion does not cross to xdist workers
    )


def _upper_bounds(
    layers: list[LayerStats], tallies: list[LayerTally], figures: tuple[str, ...]
) -> tuple[UpperBound, ...]:
    """What the tallies of one traced call noted as upper bounds, on ``figures`` (the profile's names
    for that call's work: ``macs`` and ``flops``, ``train_macs``, ...), in the rows that noted them."""
    return merged_upper_bounds(
        (
            UpperBound(reason, figures, (row.path,))
            for row, tally in zip(layers, tallies)
            for reason in sorted(tally.upper_bounds)
        ),
        [row.path for row in layers],
    )


def _serve_run(prepared: _Prepared, spec: ServeSpec, context: int, follow: bool = False) -> ServeRun:
    weights = prepared.inventory.tensors if prepared.state is None else list(prepared.state.values())
    return serve_step(
        prepared.model,
        prepared.args,
        prepared.kwargs,
        weights,
        lambda memory, attribution: _new_tracer(prepared, memory, attribution),
        lambda tracer, args, kwargs: _traced_call(prepared, tracer, args, kwargs),
        context=context,
        batch=spec.batch,
        kv_dtype=spec.kv_dtype,
        follow=follow,
        decode_reads=_planned_reads(prepared, spec) if prepared.target is not None else None,
    )


def _planned_reads(prepared: _Prepared, spec: ServeSpec) -> dict[int, float] | None:
    """The decode tracer's ``read_shares``: each weight the plan stores at another precision, by the
    storage of the tensor the call reads (the model's own, or its converted copy), with the share of
    its bytes a read moves at the plan. None without a plan, or where it changes nothing."""
    if spec.weights is None:
        return None
    shares = planned_shares(prepared.inventory.modules, spec.weights, spec.group_size, spec.keep, prepared.dtype)
    used = prepared.state if prepared.state is not None else dict(prepared.model.named_parameters())
    keys = {name: storage_key(used[name]) for name in shares if name in used}
    return {key: shares[name] for name, key in keys.items() if key is not None} or None


def _with_step_figures(
    result: Profile,
    layers: list[LayerStats],
    totals: dict[str, float | int | None],
    uncounted: dict[str, int],
    step_bounds: Iterable[UpperBound],
    **step: Any,
) -> Profile:
    """The forward's profile with a step's figures added (a training or serving step, ``step``:
    its record): its rows, totals and uncounted ops, and its upper bounds merged with the forward's."""
    return replace(
        result,
        layers=layers,
        totals=totals,
        uncounted_ops=uncounted,
        upper_bounds=merged_upper_bounds((*result.upper_bounds, *step_bounds), [row.path for row in layers]),
        **step,
    )


def _with_serving(result: Profile, prepared: _Prepared, on_meta: _Prepared | None, spec: ServeSpec) -> Profile:
    """The forward's profile with a serving step's figures added to its rows and totals."""
    if is_exported(prepared.model):
        raise ValueError("a serving step calls the model with its cache, which an exported program cannot take")
    run = _serve_run(prepared, spec, spec.context, follow=on_meta is prepared)
    weights = planned_bytes(prepared.inventory.modules, spec.weights, spec.group_size, spec.keep, prepared.dtype)
    prefill = replace(
        _assemble(prepared, run.prefill, None), inputs=run.prefill_inputs, input_dtypes=run.prefill_input_dtypes
    )
    decode = _assemble(prepared, run.decode, None)
    decode = replace(
        decode,
        inputs=run.decode_inputs,
        input_dtypes=run.decode_input_dtypes,
        totals={**decode.totals, "activations_mb": run.decode_activation_bytes / units.MIB},
    )
    layers = [
        replace(
            row,
            figures={
                **row.figures,
                "kv_cache_mb": kv / units.MIB,
                "prefill_macs": before.macs,
                "prefill_flops": before.flops,
                "decode_macs": after.macs,
                "decode_flops": after.flops,
                **({"decode_latency_ms": after.latency_ms} if prepared.target is not None else {}),
                "weights_mb": planned / units.MIB,
            },
        )
        for row, kv, before, after, planned in zip(result.layers, run.kv_bytes, prefill.layers, decode.layers, weights)
    ]
    parts = {
        ServePart.WEIGHTS: sum(weights),
        ServePart.KV_CACHE: sum(run.kv_bytes),
        ServePart.ACTIVATIONS: run.decode_activation_bytes,
    }
    totals = dict(result.totals)
    totals.update(
        {
            name: sum(row.figures[name] for row in layers)
            for name in metrics.PER_LAYER
            if metrics.get(name).serve and name in layers[0].figures
        }
    )
    totals["serve_memory_mb"] = sum(parts.values()) / units.MIB
    uncounted = _uncounted(result.uncounted_ops, prefill.uncounted_ops, decode.uncounted_ops)
    fits = None
    if spec.fits is not None and on_meta is not None:
        fits = _fits(on_meta, spec, sum(weights), run if on_meta is prepared else None)
    decode_figures = ("decode_macs", "decode_flops") + (("decode_latency_ms",) if prepared.target else ())
    step_bounds = [
        *_upper_bounds(layers, run.prefill.tallies, ("prefill_macs", "prefill_flops")),
        *_upper_bounds(layers, run.decode.tallies, decode_figures),
    ]
    return _with_step_figures(
        result,
        layers,
        totals,
        uncounted,
        step_bounds,
        serve=ServeStep(
            context=spec.context,
            batch=spec.batch,
            kv_dtype=spec.kv_dtype,
            weights=spec.weights,
            group_size=spec.group_size,
            keep=list(spec.keep),
            memory_mb={part: figure / units.MIB for part, figure in parts.items()},
            prefill=prefill,
            decode=decode,
            fits=fits,
        ),
    )


def _fits(on_meta: _Prepared, spec: ServeSpec, weights: int, known_run: ServeRun | None) -> Fits:
    """The longest context whose serving memory fits ``spec.fits`` bytes, searched on meta.
    Each measurement is a prefill and two decode steps: the memory at a context and one token later."""
    known: dict[int, int] = {}

    def measured(context: int, run: ServeRun) -> None:
        known[context] = weights + sum(run.kv_bytes) + run.decode_activation_bytes
        if run.following is not None:
            known[context + 1] = weights + sum(run.following)

    if known_run is not None:
        measured(spec.context, known_run)

    def memory_at(context: int) -> int:
        if context not in known:
            measured(context, _serve_run(on_meta, spec, context, follow=True))
        return known[context]

    budget = spec.fits_bytes or 0
    context = longest_context(memory_at, spec.context, budget, floor=weights)
    at = context or spec.context
    return Fits(
        memory_mb=budget / units.MIB,
        context=context,
        per_token_mb=(memory_at(at + 1) - memory_at(at)) / units.MIB,
    )


def _uncounted(*tables: Mapping[str, int]) -> dict[str, int]:
    """Ops without a formula over several traced calls of one model: each with the most calls any
    one call made (a second call running the same code adds no new op)."""
    merged: dict[str, int] = {}
    for table in tables:
        for op, count in table.items():
            merged[op] = max(count, merged.get(op, 0))
    return dict(sorted(merged.items()))


def _target_ref(target: targets.Target | None) -> TargetRef | None:
    return TargetRef(target.name, target.title, target.version) if target is not None else None


def _layer(row: _InventoryRow, tally: LayerTally, estimated: bool) -> LayerStats:
    """One row: the module's own tensors and what its own ops did; with a target, their time."""
    figures: dict[str, float] = {**row.counts, "macs": tally.macs, "flops": tally.flops}
    figures["memory_access_mb"] = (tally.read_bytes + tally.write_bytes) / units.MIB
    roofline = None
    if estimated:
        roofline = Roofline(tally.compute_s * 1e3, tally.memory_s * 1e3, tally.overhead_s * 1e3)
        figures["latency_ms"] = roofline.compute_ms + roofline.memory_ms + roofline.overhead_ms
    return LayerStats(
        path=row.path,
        type=row.type,
        figures=figures,
        read_bytes=tally.read_bytes,
        write_bytes=tally.write_bytes,
        calls=tally.calls,
        input_shapes=tally.input_shapes,
        output_shapes=tally.output_shapes,
        ops={name: OpStats(*figures) for name, figures in sorted(tally.ops.items())},
        roofline=roofline,
    )


def _with_step(result: Profile, prepared: _Prepared, settings: StepSpec) -> Profile:
    """The forward's profile with one traced training step's figures added to its rows and totals."""
    device = prepared.device
    args, kwargs = prepared.args, prepared.kwargs
    if settings.batch is not None:
        args, kwargs = rebatch(args, settings.batch), rebatch(kwargs, settings.batch)

    kept = KeptAttributes(prepared.inventory.modules)
    own_writes = _own_writes([], kept)  # the step's weights are copies; plain tensors may be the user's

    @contextlib.contextmanager
    def around() -> Iterator[dict[str, float]]:
        with (
            kept,
            own_writes or contextlib.nullcontext(),
            _module_modes(prepared.model, True, prepared.inventory.modules),
            moved_attributes(prepared.model, device, prepared.dtype),
            _cuda_peak(device) as measured,
            _kernel_overrides(device),
        ):
            yield measured

    step = run_step(
        prepared.model,
        prepared.state or {},
        args,
        kwargs,
        prepared.formulas,
        optimizer=settings.optimizer,
        loss=settings.resolved_loss(),
        autocast=torch_dtype(settings.autocast, devices.AUTOCAST_DTYPES, "autocast") if settings.autocast else None,
        device=device,
        around=around,
        own_writes=own_writes,
    )
    tallies = step.tracer.tallies
    layers = [
        replace(
            row,
            figures={
                **row.figures,
                "train_macs": tally.macs,
                "train_flops": tally.flops,
                "train_memory_access_mb": (tally.read_bytes + tally.write_bytes) / units.MIB,
            },
        )
        for row, tally in zip(result.layers, tallies)
    ]
    uncounted = _uncounted(result.uncounted_ops, step.tracer.uncounted)
    totals = dict(result.totals)
    totals.update(
        train_macs=sum(tally.macs for tally in tallies),
        train_flops=sum(tally.flops for tally in tallies),
        train_memory_access_mb=sum(row.figures["train_memory_access_mb"] for row in layers),
        train_memory_mb=step.peak_bytes / units.MIB,
        train_peak_memory_mb=step.cuda_peak_mb,
    )
    step_bounds = _upper_bounds(layers, tallies, ("train_macs", "train_flops"))
    return _with_step_figures(
        result,
        layers,
        totals,
        uncounted,
        step_bounds,
        train=TrainStep(
            optimizer=settings.optimizer,
            batch=settings.batch,
            autocast=settings.autocast,
            memory_mb={part: figure / units.MIB for part, figure in step.parts.items()},
            peak_phase=step.peak_phase,
            saved_mb=step.most_saved / units.MIB,
        ),
    )
