"""What profiling produces and what the product passes between its rooms, as typed records that cost
no ``import torch``.

``Profile`` holds the totals and per-layer rows of one profiled model; rows hold the work a module
does itself (outside its children), so that they add up to the totals, and :meth:`Profile.rollup`
folds deeper rows into their ancestors for a depth-limited view. Figures are keyed by the metric
table (:mod:`pytest_netbudget.metrics`); each metric is also a declared, typed attribute
(``profile.params``, ``row.macs``) that a test keeps equal to the table. The names that cross
modules as words (a verdict's status, a layer change's kind, a part of a training step's memory)
are ``str`` enums, so that a typo is an error and JSON keeps its strings.

The engine (torch) produces these records and imports this module, never the reverse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, overload

from . import __version__, devices, metrics, units
from .layer_table import render_layer_table
from .loading import import_callable, is_factory_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


class TextEnum(str, Enum):
    """An enum whose members are their strings: equal to them, hashed, printed and written to JSON
    as them (``enum.StrEnum`` from Python 3.11, here for 3.9)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class Status(TextEnum):
    """Where one model or check stands, all metrics and rules together."""

    PASS = "pass"
    OVER = "over"  # a metric over its budget
    GREW = "grew"  # a metric grew past max_increase over its baseline
    UNCOUNTED = "uncounted"  # strict = true and ops without a formula ran
    ERROR = "error"  # it could not be profiled


class CheckStatus(TextEnum):
    """Where one metric of one model stands."""

    OK = "ok"
    OVER = "over"
    GREW = "grew"
    NOT_MEASURED = "not measured"


class ChangeKind(TextEnum):
    """How a layer differs from its baseline."""

    ADDED = "added"
    REMOVED = "removed"
    RESIZED = "resized"


class MemoryPart(TextEnum):
    """What the live bytes of a forward or a training step are, in the order reports print them."""

    PARAMS = "params"
    BUFFERS = "buffers"
    INPUTS = "inputs"
    GRADS = "grads"
    OPTIMIZER_STATE = "optimizer_state"
    ACTIVATIONS = "activations"  # a forward's intermediates; in a step, what is saved for backward
    TEMPORARIES = "temporaries"


class ServePart(TextEnum):
    """What a serving step's memory is, in the order reports print it."""

    WEIGHTS = "weights"  # at their planned precision, scales and zero points included
    KV_CACHE = "kv_cache"  # the cache (or state) after the prefill
    ACTIVATIONS = "activations"  # the decode step's peak of live intermediate tensors


class Phase(TextEnum):
    """The stages of a training step, in order."""

    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


@dataclass(frozen=True)
class OpStats:
    """What one operator (``aten.mm``) did inside one module, or in the whole model."""

    calls: int = 0
    macs: int = 0
    flops: int = 0

    def __add__(self, other: OpStats) -> OpStats:
        return OpStats(self.calls + other.calls, self.macs + other.macs, self.flops + other.flops)


def _sum_ops(tables: list[dict[str, OpStats]]) -> dict[str, OpStats]:
    summed: dict[str, OpStats] = {}
    for table in tables:
        for name, stats in table.items():
            summed[name] = summed[name] + stats if name in summed else stats
    return dict(sorted(summed.items()))


class StepError(ValueError):
    """A training or serving step's setting that cannot be used: ``key`` names it (``optimizer``,
    ``batch``, ``autocast``, ``loss_factory``, ``loss``; ``serve.context``, ``serve.fits``, ...) and
    ``problem`` says what is wrong, so that each caller says where it was written (a pyproject.toml
    table, a keyword argument)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class StepSpec:
    """The one description of a training step to profile: ``train = { optimizer = "adamw", batch = 32 }``
    in pyproject.toml, ``train=`` of ``netbudget.check()``, or ``profile(..., train=StepSpec(...))``.

    Checked when made (``StepError``), whoever makes it. ``batch`` gives every input that many rows;
    ``autocast`` runs the forward in mixed precision (cpu and cuda); the loss is ``loss`` (a callable
    of the model's outputs), or the callable that ``loss_factory`` (``"package.module:fn"``) names, or
    the sum of the floating outputs.
    """

    optimizer: str = "adamw"
    batch: int | None = None
    autocast: str | None = None
    loss_factory: str | None = None
    loss: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        problem = devices.choice_problem(self.optimizer, "optimizer", devices.OPTIMIZERS)
        if problem:
            raise StepError("optimizer", problem)
        batch = self.batch
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0):
            raise StepError("batch", f"must be a positive integer (the rows of every input), got {batch!r}")
        problem = devices.shape_problem([batch]) if batch is not None else None
        if problem:
            raise StepError("batch", problem)
        if self.autocast is not None:
            problem = devices.choice_problem(self.autocast, "dtype", devices.AUTOCAST_DTYPES)
            if problem:
                raise StepError("autocast", problem)
        if self.loss_factory is not None and not is_factory_path(self.loss_factory):
            raise StepError("loss_factory", f"{self.loss_factory!r} is not of the form 'package.module:callable'")
        if self.loss is not None and not callable(self.loss):
            raise StepError("loss", f"must be a callable of the model's outputs, got {type(self.loss).__name__}")

    def problem_on(self, device_type: str) -> str | None:
        """Why this step cannot run on a device of this type (``meta``, ``cpu``, ``cuda``), or None."""
        if self.autocast is not None and device_type == "meta":
            return (
                'PyTorch has no autocast on meta: profile this step on "cpu", or drop autocast and set '
                'dtype = "bfloat16" for a step entirely in low precision'
            )
        return None

    def resolved_loss(self) -> Callable[[Any], Any] | None:
        """The loss callable: ``loss``, or the one ``loss_factory`` names, imported now (``LoadError``
        says why it cannot be); None for the default sum of the outputs."""
        if self.loss is None and self.loss_factory is not None:
            return import_callable(self.loss_factory)
        return self.loss


@dataclass(frozen=True)
class ServeSpec:
    """The one description of a serving step to profile: ``serve = { context = 8192, batch = 4 }`` in
    pyproject.toml, ``netbudget show --serve``, or ``profile(..., serve=ServeSpec(...))``.

    ``context``: tokens in the cache before the decode step; ``batch``: sequences served at once;
    ``kv_dtype``: the cache's dtype (None: as the model holds it); ``weights``: the planned weight
    precision (None: the model's own), ``group_size`` elements per scale for int8/int4/fp8 (None:
    one per output channel), ``keep`` modules left at their own precision; ``fits``: a memory size
    as written (``"24GiB"``; a number is MiB) for which the longest context that fits is worked
    out (``fits_bytes``). Checked when made (``StepError``, its key ``serve.KEY``), whoever makes it.
    """

    context: int
    batch: int = 1
    kv_dtype: str | None = None
    weights: str | None = None
    group_size: int | None = None
    keep: tuple[str, ...] = ()
    fits: str | float | None = None

    def __post_init__(self) -> None:
        for key in ("context", "batch"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise StepError(f"serve.{key}", f"must be a positive integer, got {value!r}")
        problem = devices.shape_problem([self.batch, self.context])
        if problem:
            raise StepError("serve.context", f"the prefill's tokens [batch, context]: {problem}")
        for key, what, known in (("kv_dtype", "dtype", devices.KV_BYTES), ("weights", "dtype", devices.WEIGHT_BITS)):
            problem = devices.choice_problem(getattr(self, key), what, known) if getattr(self, key) else None
            if problem:
                raise StepError(f"serve.{key}", problem)
        group = self.group_size
        if group is not None:
            if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
                raise StepError("serve.group_size", f"must be a positive integer, got {group!r}")
            if self.weights not in devices.GROUPED_PRECISIONS:
                grouped = ", ".join(devices.GROUPED_PRECISIONS)
                raise StepError(
                    "serve.group_size", f"sets the scales of {grouped} weights, but weights is {self.weights!r}"
                )
        keep = self.keep
        if isinstance(keep, str) or not all(isinstance(name, str) and name.strip() for name in keep):
            raise StepError("serve.keep", f'must be a list of module names like ["lm_head"], got {keep!r}')
        object.__setattr__(self, "keep", tuple(keep))
        self.fits_bytes  # noqa: B018  (checked now: a bad size fails before anything runs)

    @property
    def fits_bytes(self) -> int | None:
        """``fits`` in bytes; None when not given."""
        if self.fits is None:
            return None
        try:
            return units.parse_memory(self.fits)
        except units.QuantityError as error:
            raise StepError("serve.fits", str(error)) from None


@dataclass(frozen=True)
class TrainStep:
    """How a training step was run, and its memory at the peak, split by what the bytes are.

    ``memory_mb`` maps each part (params, buffers, inputs, grads, optimizer_state,
    activations, temporaries) to MiB at the moment of the peak; ``peak_phase`` says when
    that was (forward, loss, backward or optimizer). ``saved_mb`` is the most that was
    saved for backward at one time (at the end of the forward, unless checkpointing
    recomputes): the activation memory a training job is sized by.
    """

    optimizer: str
    batch: int | None
    autocast: str | None
    memory_mb: dict[MemoryPart, float]
    peak_phase: Phase
    saved_mb: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "batch": self.batch,
            "autocast": self.autocast,
            "memory_mb": {str(part): figure for part, figure in self.memory_mb.items()},
            "peak_phase": str(self.peak_phase),
            "saved_mb": self.saved_mb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainStep:
        return cls(
            data["optimizer"],
            data["batch"],
            data["autocast"],
            {MemoryPart(part): figure for part, figure in data["memory_mb"].items()},
            Phase(data["peak_phase"]),
            data["saved_mb"],
        )

    @classmethod
    def from_record(cls, data: Any, where: str) -> TrainStep:
        """The step from a stored record (a JSON report's) at JSON path ``where``, every field
        checked: ``RecordError`` names the one that is wrong."""
        step = record_object(data, where)
        memory = record_figures(step.get("memory_mb"), f"{where}.memory_mb")
        return cls(
            record_text(step.get("optimizer"), f"{where}.optimizer"),
            _optional(record_count, step.get("batch"), f"{where}.batch"),
            _optional(record_text, step.get("autocast"), f"{where}.autocast"),
            {
                record_choice(MemoryPart, part, f"{where}.memory_mb{json_key(part)}"): figure
                for part, figure in memory.items()
            },
            record_choice(Phase, step.get("peak_phase"), f"{where}.peak_phase"),
            record_figure(step.get("saved_mb"), f"{where}.saved_mb"),
        )


class Bound(TextEnum):
    """What bounds an estimated time: the peak FLOP/s or the memory bandwidth."""

    COMPUTE = "compute"
    MEMORY = "memory"


@dataclass(frozen=True)
class Roofline:
    """A layer's estimated time on the target, in ms, split by what bounds each of its ops:
    the time of compute-bound ops, of memory-bound ops, and the per-op overhead. The three
    add up to its ``latency_ms``."""

    compute_ms: float = 0.0
    memory_ms: float = 0.0
    overhead_ms: float = 0.0

    @property
    def bound(self) -> Bound | None:
        if not (self.compute_ms or self.memory_ms):
            return None
        return Bound.COMPUTE if self.compute_ms >= self.memory_ms else Bound.MEMORY

    @classmethod
    def total(cls, parts: list[Roofline | None]) -> Roofline | None:
        present = [part for part in parts if part is not None]
        if not present:
            return None
        return cls(
            *(sum(getattr(part, name) for part in present) for name in ("compute_ms", "memory_ms", "overhead_ms"))
        )

    def to_dict(self) -> dict[str, float]:
        return {"compute_ms": self.compute_ms, "memory_ms": self.memory_ms, "overhead_ms": self.overhead_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Roofline:
        return cls(data["compute_ms"], data["memory_ms"], data["overhead_ms"])


@dataclass(frozen=True)
class TargetRef:
    """The accelerator a profile's latency was estimated for: its name, title, and the version
    of the table its figures come from (a user target's fingerprint), which the baseline keeps."""

    name: str
    title: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetRef:
        return cls(data["name"], data["title"], data["version"])


Figure = TypeVar("Figure")


class _MetricAttribute(Generic[Figure]):
    """A metric read by its attribute's name from the record's figures: ``profile.params`` is
    ``profile.totals["params"]``. Declared on the class with the figure's type, so that type
    checkers and editors know it; ``tests/test_architecture.py`` keeps the declared attributes
    equal to :data:`pytest_netbudget.metrics.METRICS`."""

    name: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        known = metrics.BY_NAME.get(name)
        self.__doc__ = known.description if known is not None else None

    def read(self, record: Any) -> Any:
        raise NotImplementedError

    @overload
    def __get__(self, record: None, owner: type) -> _MetricAttribute[Figure]: ...

    @overload
    def __get__(self, record: object, owner: type) -> Figure: ...

    def __get__(self, record: object, owner: type) -> Any:
        return self if record is None else self.read(record)


class Total(_MetricAttribute[Figure]):
    """A total of :class:`Profile`; None where it was not measured."""

    def read(self, record: Any) -> Any:
        return record.totals.get(self.name)


class LayerFigure(_MetricAttribute[Figure]):
    """A per-layer figure of :class:`LayerStats`; 0 where the row has none."""

    def read(self, record: Any) -> Any:
        return record.figures.get(self.name, 0)


@dataclass(frozen=True)
class LayerStats:
    """One module of the model: its own parameters and the work done in its own forward.

    ``figures`` holds the per-layer metrics (params, macs, ...); read and written bytes
    are the traffic of the module's own ops, as torchstat's memory columns.
    """

    path: str
    type: str
    figures: dict[str, float] = field(default_factory=dict)
    read_bytes: int = 0
    write_bytes: int = 0
    calls: int = 0
    input_shapes: list[Any] = field(default_factory=list)
    output_shapes: list[Any] = field(default_factory=list)
    ops: dict[str, OpStats] = field(default_factory=dict)
    roofline: Roofline | None = None  # with a target: what its estimated time is made of

    # The per-layer metrics (metrics.PER_LAYER), in the table's order.
    params = LayerFigure[int]()
    trainable_params = LayerFigure[int]()
    buffers = LayerFigure[int]()
    macs = LayerFigure[int]()
    flops = LayerFigure[int]()
    memory_access_mb = LayerFigure[float]()
    latency_ms = LayerFigure[float]()
    train_macs = LayerFigure[int]()
    train_flops = LayerFigure[int]()
    train_memory_access_mb = LayerFigure[float]()
    kv_cache_mb = LayerFigure[float]()
    prefill_macs = LayerFigure[int]()
    prefill_flops = LayerFigure[int]()
    decode_macs = LayerFigure[int]()
    decode_flops = LayerFigure[int]()
    decode_latency_ms = LayerFigure[float]()
    weights_mb = LayerFigure[float]()

    @property
    def intensity(self) -> float | None:
        """Arithmetic intensity: forward FLOPs per byte moved; None for a layer that moves nothing."""
        moved = self.read_bytes + self.write_bytes
        return self.flops / moved if moved else None

    @property
    def bound(self) -> Bound | None:
        """What bounds the layer's estimated time on the target (None without one, or without work)."""
        return self.roofline.bound if self.roofline is not None else None

    @property
    def depth(self) -> int:
        """0 for the model itself, 1 for its direct children, ..."""
        return 0 if not self.path else self.path.count(".") + 1

    @property
    def name(self) -> str:
        """The path as reports print it: the model's own row is ``(model)``."""
        return self.path or "(model)"

    def is_within(self, ancestor: str) -> bool:
        return not ancestor or self.path == ancestor or self.path.startswith(ancestor + ".")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "type": self.type, **self.figures}
        data.update(read_bytes=self.read_bytes, write_bytes=self.write_bytes, calls=self.calls)
        data.update(input_shapes=self.input_shapes, output_shapes=self.output_shapes)
        data["ops"] = {name: [stats.calls, stats.macs, stats.flops] for name, stats in self.ops.items()}
        if self.roofline is not None:
            data["roofline"] = self.roofline.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerStats:
        return cls(
            path=data["path"],
            type=data["type"],
            figures={name: data[name] for name in metrics.PER_LAYER if name in data},
            read_bytes=data.get("read_bytes", 0),
            write_bytes=data.get("write_bytes", 0),
            calls=data.get("calls", 0),
            input_shapes=data.get("input_shapes", []),
            output_shapes=data.get("output_shapes", []),
            ops={name: OpStats(*figures) for name, figures in data.get("ops", {}).items()},
            roofline=Roofline.from_dict(data["roofline"]) if data.get("roofline") else None,
        )


@dataclass(frozen=True)
class UpperBound:
    """Figures that the profile's device could not give exactly, and why.

    Where an op's cost depends on values a device does not hold (the group offsets of a grouped
    matrix product, on meta), the engine counts the most the op could do and says so here: each
    figure in ``metrics`` is an upper bound (the exact figure is at most it) in the rows of
    ``layers`` (``""`` is the model's own row), and so in the totals and in every row that folds
    those in. ``reason`` says what could not be had, and what is counted instead. A figure that
    no record names is exact.
    """

    reason: str
    metrics: tuple[str, ...]
    layers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "metrics": list(self.metrics), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> UpperBound:
        """The record at JSON path ``where`` (a report read back), checked field by field."""
        table = record_object(data, where, "an object with 'reason', 'metrics' and 'layers'")
        names = {}
        for key in ("metrics", "layers"):
            names[key] = tuple(record_texts(table.get(key), f"{where}.{key}"))
        unknown = [name for name in names["metrics"] if name not in metrics.BY_NAME]
        if unknown:
            raise RecordError(f"{where}.metrics: {_shown(unknown[0])} is not a metric")
        return cls(record_text(table.get("reason"), f"{where}.reason"), names["metrics"], names["layers"])


def merged_upper_bounds(bounds: Iterable[UpperBound], paths: list[str]) -> tuple[UpperBound, ...]:
    """One record per reason: the figures and layers of every record with that reason, figures in
    the metric table's order and layers in the model's (``paths``)."""
    merged: dict[str, tuple[set[str], set[str]]] = {}
    for bound in bounds:
        figures, layers = merged.setdefault(bound.reason, (set(), set()))
        figures.update(bound.metrics)
        layers.update(bound.layers)
    return tuple(
        UpperBound(
            reason,
            tuple(name for name in metrics.NAMES if name in figures),
            tuple(path for path in paths if path in layers),
        )
        for reason, (figures, layers) in merged.items()
    )


def upper_bounds_of(
    bounds: tuple[UpperBound, ...], metric: str, path: str | None = None, folded: bool = False
) -> list[str]:
    """Why ``metric`` is an upper bound (one reason per record that says so; none: it is exact): in
    the totals, or with ``path`` in that row's own figures (``folded``: with everything below it)."""
    return [
        bound.reason
        for bound in bounds
        if metric in bound.metrics
        and (
            path is None
            or any(layer == path or (folded and (not path or layer.startswith(path + "."))) for layer in bound.layers)
        )
    ]


@dataclass(frozen=True)
class Profile:
    """Totals and per-layer rows of one profiled forward (see the README's counting conventions).

    ``totals`` maps every metric name to its figure; None where it was not measured
    (``peak_memory_mb`` off CUDA, the training step's figures without one). ``upper_bounds``
    names the figures the device could not give exactly (:class:`UpperBound`); every other
    figure is exact.
    """

    model: str
    device: str
    dtype: str
    inputs: list[Any]
    totals: dict[str, float | int | None]
    layers: list[LayerStats]
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    input_dtypes: list[str] = field(default_factory=list)  # of the tensors whose shapes ``inputs`` lists
    train: TrainStep | None = None  # the training step's settings and memory split, when one was profiled
    serve: ServeStep | None = None  # the serving step's settings, memory split and traced calls, when profiled
    target: TargetRef | None = None  # the accelerator latency was estimated for, when one was named
    upper_bounds: tuple[UpperBound, ...] = ()  # figures this device could not give exactly, and why
    torch_version: str = ""  # torch.__version__ of the process that profiled it

    # Every metric (metrics.METRICS), in the table's order.
    params = Total[int]()
    trainable_params = Total[int]()
    buffers = Total[int]()
    macs = Total[int]()
    flops = Total[int]()
    size_mb = Total[float]()
    activations_mb = Total[float]()
    peak_memory_mb = Total[Optional[float]]()
    memory_access_mb = Total[float]()
    latency_ms = Total[Optional[float]]()
    train_macs = Total[Optional[int]]()
    train_flops = Total[Optional[int]]()
    train_memory_mb = Total[Optional[float]]()
    train_peak_memory_mb = Total[Optional[float]]()
    train_memory_access_mb = Total[Optional[float]]()
    kv_cache_mb = Total[Optional[float]]()
    prefill_macs = Total[Optional[int]]()
    prefill_flops = Total[Optional[int]]()
    decode_macs = Total[Optional[int]]()
    decode_flops = Total[Optional[int]]()
    decode_latency_ms = Total[Optional[float]]()
    weights_mb = Total[Optional[float]]()
    serve_memory_mb = Total[Optional[float]]()

    @property
    def roofline(self) -> Roofline | None:
        """The estimated time's parts over the whole model; None without a target."""
        return Roofline.total([row.roofline for row in self.layers])

    @property
    def ops(self) -> dict[str, OpStats]:
        """Per operator over the whole model: calls, MACs and FLOPs."""
        return _sum_ops([row.ops for row in self.layers])

    def rollup(self, depth: int | None = None) -> list[LayerStats]:
        """Rows down to ``depth``; a row at the limit carries the figures of everything below it."""
        if depth is None:
            return list(self.layers)
        folded = []
        for row in self.layers:
            if row.depth > depth:
                continue
            if row.depth < depth:
                folded.append(row)
                continue
            inside = [other for other in self.layers if other.is_within(row.path)]
            folded.append(
                replace(
                    row,
                    figures={name: sum(other.figures.get(name, 0) for other in inside) for name in row.figures},
                    read_bytes=sum(other.read_bytes for other in inside),
                    write_bytes=sum(other.write_bytes for other in inside),
                    ops=_sum_ops([other.ops for other in inside]),
                    roofline=Roofline.total([other.roofline for other in inside]),
                )
            )
        return folded

    def upper_bound_of(self, metric: str, path: str | None = None, folded: bool = False) -> list[str]:
        """Why ``metric`` is only an upper bound on this device, in the totals, or (``path``) in that
        row's own figures (``folded``: as :meth:`rollup` folds a row at its depth); an empty list
        where it is exact."""
        return upper_bounds_of(self.upper_bounds, metric, path, folded)

    def table(self, depth: int | None = None, ops: bool = False) -> str:
        """The per-layer table, rows deeper than ``depth`` folded into their ancestors;
        ``ops=True`` lists each row's operators under it."""
        return render_layer_table(self, depth, ops=ops)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals at the top level beside the rows and uncounted ops;
        ``upper_bounds`` only where there are some."""
        data = {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "inputs": self.inputs,
            "input_dtypes": self.input_dtypes,
            **self.totals,
            "layers": [row.to_dict() for row in self.layers],
            "uncounted_ops": dict(self.uncounted_ops),
            "train": self.train.to_dict() if self.train is not None else None,
            "serve": self.serve.to_dict() if self.serve is not None else None,
            "target": self.target.to_dict() if self.target is not None else None,
            "torch": self.torch_version,
        }
        if self.upper_bounds:
            data["upper_bounds"] = [bound.to_dict() for bound in self.upper_bounds]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """The inverse of :meth:`to_dict` (profiles travel between pytest-xdist workers this way)."""
        return cls(
            model=data["model"],
            device=data["device"],
            dtype=data["dtype"],
            inputs=data["inputs"],
            totals={name: data.get(name) for name in metrics.NAMES},
            layers=[LayerStats.from_dict(row) for row in data["layers"]],
            uncounted_ops=dict(data.get("uncounted_ops", {})),
            input_dtypes=list(data.get("input_dtypes", [])),
            train=TrainStep.from_dict(data["train"]) if data.get("train") else None,
            serve=ServeStep.from_dict(data["serve"]) if data.get("serve") else None,
            target=TargetRef.from_dict(data["target"]) if data.get("target") else None,
            upper_bounds=tuple(
                UpperBound.from_dict(bound, f"upper_bounds[{index}]")
                for index, bound in enumerate(data.get("upper_bounds", []))
            ),
            torch_version=data.get("torch", ""),
        )


@dataclass(frozen=True)
class Fits:
    """The longest context that fits a stated memory at the serving step's batch.

    ``context`` is 0 when not even one token fits, None when the serving memory stops growing
    (every layer's state is bounded: windows, SSM states), so any context fits; ``per_token_mb``
    is what one more token costs there (serve memory at context + 1 minus at context).
    """

    memory_mb: float
    context: int | None
    per_token_mb: float

    def to_dict(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "context": self.context, "per_token_mb": self.per_token_mb}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fits:
        return cls(data["memory_mb"], data["context"], data["per_token_mb"])

    @classmethod
    def from_record(cls, data: Any, where: str) -> Fits:
        fits = record_object(data, where)
        context = fits.get("context")
        if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 0):
            raise RecordError(f"{where}.context: expected a whole number of tokens or null, got {_shown(context)}")
        return cls(
            record_figure(fits.get("memory_mb"), f"{where}.memory_mb"),
            context,
            record_figure(fits.get("per_token_mb"), f"{where}.per_token_mb"),
        )


@dataclass(frozen=True)
class ServeStep:
    """How a serving step was run, its memory split, the fits line, and its two traced calls as
    profiles of their own.

    ``memory_mb`` splits ``serve_memory_mb`` into ``weights``, ``kv_cache`` and ``activations`` (the
    decode step's peak of live intermediate tensors). ``prefill`` is the forward over ``context``
    tokens at ``batch``; ``decode`` the step of one token per sequence with the cache in place:
    each with per-layer rows and per-op figures, as the forward's profile. Reports keep the step
    without them (:meth:`settings`): their figures are the profile's totals and rows already.
    """

    context: int
    batch: int
    kv_dtype: str | None
    weights: str | None
    group_size: int | None
    keep: list[str]
    memory_mb: dict[ServePart, float]
    fits: Fits | None = None
    prefill: Profile | None = None
    decode: Profile | None = None

    def settings(self) -> ServeStep:
        """The step without its traced calls: what a verdict and a report keep."""
        return replace(self, prefill=None, decode=None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "context": self.context,
            "batch": self.batch,
            "kv_dtype": self.kv_dtype,
            "weights": self.weights,
            "group_size": self.group_size,
            "keep": list(self.keep),
            "memory_mb": {str(part): figure for part, figure in self.memory_mb.items()},
            "fits": self.fits.to_dict() if self.fits is not None else None,
        }
        for name, call in (("prefill", self.prefill), ("decode", self.decode)):
            if call is not None:
                data[name] = call.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServeStep:
        return cls(
            context=data["context"],
            batch=data["batch"],
            kv_dtype=data["kv_dtype"],
            weights=data["weights"],
            group_size=data["group_size"],
            keep=list(data["keep"]),
            memory_mb={ServePart(part): figure for part, figure in data["memory_mb"].items()},
            fits=Fits.from_dict(data["fits"]) if data.get("fits") else None,
            prefill=Profile.from_dict(data["prefill"]) if data.get("prefill") else None,
            decode=Profile.from_dict(data["decode"]) if data.get("decode") else None,
        )

    @classmethod
    def from_record(cls, data: Any, where: str) -> ServeStep:
        """The step's settings and figures from a stored record (a JSON report's, which keeps no
        traced calls) at JSON path ``where``, every field checked."""
        step = record_object(data, where)
        memory = record_figures(step.get("memory_mb"), f"{where}.memory_mb")
        return cls(
            context=record_count(step.get("context"), f"{where}.context"),
            batch=record_count(step.get("batch"), f"{where}.batch"),
            kv_dtype=_optional(record_text, step.get("kv_dtype"), f"{where}.kv_dtype"),
            weights=_optional(record_text, step.get("weights"), f"{where}.weights"),
            group_size=_optional(record_count, step.get("group_size"), f"{where}.group_size"),
            keep=record_texts(step.get("keep"), f"{where}.keep"),
            memory_mb={
                record_choice(ServePart, part, f"{where}.memory_mb{json_key(part)}"): figure
                for part, figure in memory.items()
            },
            fits=_optional(Fits.from_record, step.get("fits"), f"{where}.fits"),
        )


def declared_metrics(record: type) -> tuple[str, ...]:
    """The metric attributes a record class declares, in declaration order (what the test
    compares with the metric table)."""
    return tuple(name for name, value in vars(record).items() if isinstance(value, _MetricAttribute))


# --- what the baseline keeps -----------------------------------------------------------------------

#: The origin of a model registered in pyproject.toml; a check from a test has its node id.
ORIGIN_PYPROJECT = "pyproject.toml"


class RecordError(ValueError):
    """A stored record (a baseline entry, a report's model) that cannot be read; the message gives the
    JSON path of what is wrong (``models.resnet.layers["fc"].params: expected a finite number``)."""


def json_key(name: str) -> str:
    """One step of a JSON path: ``.resnet`` for a plain name, ``["conv1.0"]`` for any other."""
    return f".{name}" if name.isidentifier() else f"[{json.dumps(name)}]"


def _shown(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def record_object(data: Any, where: str, what: str = "an object") -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected {what}, got {_shown(data)}")
    return data


def record_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{where}: expected a string, got {_shown(value)}")
    return value


def record_figure(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where}: expected a finite number, got {_shown(value)}")
    return value


def record_figures(data: Any, where: str) -> dict[str, Any]:
    return {
        name: record_figure(value, f"{where}{json_key(name)}") for name, value in record_object(data, where).items()
    }


def record_count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RecordError(f"{where}: expected a positive integer, got {_shown(value)}")
    return value


def record_texts(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list of strings, got {_shown(value)}")
    return [record_text(item, f"{where}[{index}]") for index, item in enumerate(value)]


def record_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RecordError(f"{where}: expected true or false, got {_shown(value)}")
    return value


Choice = TypeVar("Choice", bound=TextEnum)


def record_choice(kind: type[Choice], value: Any, where: str) -> Choice:
    if not isinstance(value, str) or value not in {str(member) for member in kind}:
        raise RecordError(f"{where}: expected one of {', '.join(kind)}, got {_shown(value)}")
    return kind(value)


Read = TypeVar("Read")


def _optional(read: Callable[[Any, str], Read], value: Any, where: str) -> Read | None:
    return None if value is None else read(value, where)


def stored_figure(value: float) -> float:
    """A figure as the baseline stores it: counts whole, MiB and ms to six decimals, so that two
    identical runs compare equal and the file reads well."""
    return round(value, 6) if isinstance(value, float) else value


def stored_totals(profile: Profile) -> dict[str, float]:
    """The measured totals as the baseline stores them (see :func:`stored_figure`); a figure that
    was not measured is left out."""
    return {name: stored_figure(value) for name, value in profile.totals.items() if value is not None}


#: The figures that exist only as an estimate on a target (``latency_ms``).
ESTIMATES = tuple(metric.name for metric in metrics.METRICS if metric.needs_target)


@dataclass(frozen=True)
class LayerEntry:
    """One layer as the baseline keeps it: its module type, its figures of ``metrics.LAYER_DIFF``
    and, with a target, what bounds its estimated time."""

    type: str
    figures: dict[str, float] = field(default_factory=dict)
    bound: Bound | None = None

    def figure(self, name: str) -> float:
        return self.figures.get(name, 0)

    def without_estimates(self) -> LayerEntry:
        return LayerEntry(self.type, {name: value for name, value in self.figures.items() if name not in ESTIMATES})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, **self.figures}
        if self.bound is not None:
            data["bound"] = str(self.bound)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LayerEntry:
        row = record_object(data, where, "an object with 'type' and figures")
        kind = record_text(row.get("type"), f"{where}.type")
        bound = _optional(partial(record_choice, Bound), row.get("bound"), f"{where}.bound")
        figures = record_figures({name: value for name, value in row.items() if name not in ("type", "bound")}, where)
        return cls(kind, figures, bound)


@dataclass(frozen=True)
class EstimateSource:
    """The target a baseline entry's estimated latency was made on, and its table's version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} (table {self.version})"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EstimateSource:
        table = record_object(data, where, "an object with 'name' and 'version'")
        return cls(
            record_text(table.get("name"), f"{where}.name"), record_text(table.get("version"), f"{where}.version")
        )


@dataclass(frozen=True)
class Environment:
    """What a model's figures depend on besides its code: torch's version (its kernels and
    decompositions), the device and the dtype it was profiled on, and the version of
    pytest-netbudget whose rules counted them. The baseline keeps it with each entry, so that
    figures that changed with it are reported as that, not as growth. (The target and table
    version an estimated latency was made on are the entry's ``target``.)"""

    torch: str
    device: str
    dtype: str
    netbudget: str | None = None  # None in an entry written before it was kept

    def changes_from(self, old: Environment) -> list[str]:
        """What changed since ``old``, one part each: ``torch 2.12.0 -> 2.13.0``, ``device cpu -> meta``;
        a part one side does not know is no change."""
        return [
            f"{part} {before} -> {after}"
            for part, before, after in (
                ("torch", old.torch, self.torch),
                ("device", old.device, self.device),
                ("dtype", old.dtype, self.dtype),
                ("pytest-netbudget", old.netbudget, self.netbudget),
            )
            if before is not None and after is not None and before != after
        ]

    def to_dict(self) -> dict[str, str]:
        data = {"torch": self.torch, "device": self.device, "dtype": self.dtype}
        return data if self.netbudget is None else {**data, "netbudget": self.netbudget}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Environment:
        table = record_object(data, where, "an object with 'torch', 'device' and 'dtype'")
        torch, device, dtype = (
            record_text(table.get(part), f"{where}.{part}") for part in ("torch", "device", "dtype")
        )
        return cls(torch, device, dtype, _optional(record_text, table.get("netbudget"), f"{where}.netbudget"))


#: The settings of a training and of a serving step that change a model's figures (``fits`` and the
#: loss do not: the one is a question asked of the figures, the other a scalar).
TRAIN_SETTINGS = ("optimizer", "batch", "autocast")
SERVE_SETTINGS = ("context", "batch", "kv_dtype", "weights", "group_size", "keep")


@dataclass(frozen=True)
class Settings:
    """What a model was profiled with, besides its code and its environment: its inputs (each
    tensor's shape and dtype) and the settings of its training and serving steps (None: no such
    step). The baseline keeps them with each entry, so that figures that changed with them
    (``context = 2048`` made 8192) are reported as that, not as growth."""

    #: The first word of every change :meth:`changes_from` names (an environment's never is one).
    PARTS = ("input", "train", "serve")

    input_shapes: list[list[int]]
    input_dtypes: list[str]
    train: dict[str, Any] | None = None
    serve: dict[str, Any] | None = None

    @classmethod
    def from_profile(cls, profile: Profile) -> Settings:
        return cls(
            [list(shape) for shape in profile.inputs],
            list(profile.input_dtypes),
            _settings_of(profile.train, TRAIN_SETTINGS),
            _settings_of(profile.serve, SERVE_SETTINGS),
        )

    def changes_from(self, old: Settings, dtype: tuple[str, str] | None = None) -> list[str]:
        """What changed since ``old``, one setting each: ``input_shape [1, 3, 32, 32] -> [1, 3, 64, 64]``,
        ``train batch 8 -> 16``, ``serve context 2048 -> 8192``, ``serve step added``. ``dtype``: the
        model's dtype before and after: float inputs that followed a new one are its change, named once
        (by the environment), not a second time here."""
        changes = []
        for name, before, after in (
            ("input_shape", old.input_shapes, self.input_shapes),
            ("input dtype", old.input_dtypes, self.input_dtypes),
        ):
            followed = dtype is not None and all(
                was == now or (was, now) == dtype for was, now in zip(before, after, strict=False)
            )
            if before != after and not (name == "input dtype" and len(before) == len(after) and followed):
                changes.append(
                    f"{name} {', '.join(map(_setting_text, before))} -> {', '.join(map(_setting_text, after))}"
                )
        for step, was, now in (("train", old.train, self.train), ("serve", old.serve, self.serve)):
            if was is None or now is None:
                changes += [f"{step} step {'added' if was is None else 'dropped'}"] if was != now else []
                continue
            changes += [
                f"{step} {key} {_setting_text(was.get(key))} -> {_setting_text(now.get(key))}"
                for key in dict.fromkeys([*was, *now])
                if was.get(key) != now.get(key)
            ]
        return changes

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "inputs": [{"shape": shape, "dtype": dtype} for shape, dtype in zip(self.input_shapes, self.input_dtypes)]
        }
        for step, settings in (("train", self.train), ("serve", self.serve)):
            if settings is not None:
                data[step] = dict(settings)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Settings:
        table = record_object(data, where, "an object with 'inputs'")
        inputs = table.get("inputs")
        if not isinstance(inputs, list):
            raise RecordError(f"{where}.inputs: expected a list of inputs, got {_shown(inputs)}")
        shapes, dtypes = [], []
        for index, item in enumerate(inputs):
            tensor = record_object(item, f"{where}.inputs[{index}]", "an object with 'shape' and 'dtype'")
            shape = tensor.get("shape")
            if not isinstance(shape, list) or not all(
                isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
            ):
                raise RecordError(f"{where}.inputs[{index}].shape: expected a list of sizes, got {_shown(shape)}")
            shapes.append(shape)
            dtypes.append(record_text(tensor.get("dtype"), f"{where}.inputs[{index}].dtype"))
        steps = {
            step: {key: _setting(value, f"{where}.{step}{json_key(key)}") for key, value in settings.items()}
            for step in ("train", "serve")
            if (settings := _optional(record_object, table.get(step), f"{where}.{step}")) is not None
        }
        return cls(shapes, dtypes, steps.get("train"), steps.get("serve"))


def _settings_of(step: TrainStep | ServeStep | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A step's settings by name (``keep`` as a list), read from the step itself: its ``to_dict``
    would write out every traced call of a serving step first."""
    if step is None:
        return None
    return {key: list(value) if isinstance(value := getattr(step, key), (list, tuple)) else value for key in keys}


def _setting(value: Any, where: str) -> Any:
    """One step setting as stored: text, a whole number, none, or a list of names (``keep``)."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise RecordError(f"{where}: expected text, a whole number, null or a list of names, got {_shown(value)}")


def _setting_text(value: Any) -> str:
    """A setting as a change names it: ``none``, ``[1, 3, 32, 32]``, ``["lm_head"]``, ``2048``."""
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, list) and value and isinstance(value[0], str) else str(value)


@dataclass(frozen=True)
class BaselineEntry:
    """What the baseline keeps of one model, and what a JSON report holds of it for
    ``--netbudget-compare``: where it came from (``pyproject.toml`` or a test's node id), its totals
    as stored, the layers that carry figures (in the model's order; the file sorts them), and the
    ops it ran that no formula counts.

    A field added here is read and written by :meth:`from_dict` / :meth:`to_dict` alone: the
    baseline file, the reports and every comparison take the record whole.
    """

    origin: str = ORIGIN_PYPROJECT
    totals: dict[str, float] = field(default_factory=dict)
    layers: dict[str, LayerEntry] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    target: EstimateSource | None = None  # where its estimated latency comes from, when it has one
    environment: Environment | None = None  # what it was profiled with (None in a baseline written before)
    settings: Settings | None = None  # its inputs and step settings (None in a baseline written before)

    @classmethod
    def from_profile(cls, profile: Profile, origin: str) -> BaselineEntry:
        measured = [name for name in metrics.LAYER_DIFF if profile.totals.get(name) is not None]
        layers = {}
        for row in profile.layers:
            figures = {name: stored_figure(row.figures.get(name, 0)) for name in measured}
            if any(figures.values()):
                layers[row.name] = LayerEntry(row.type, figures, row.bound)
        target = EstimateSource(profile.target.name, profile.target.version) if profile.target is not None else None
        environment = (
            Environment(profile.torch_version, profile.device, profile.dtype, __version__)
            if profile.torch_version
            else None
        )
        # as the environment: a profile made by hand (a test's) knows neither its torch nor its inputs' dtypes
        settings = Settings.from_profile(profile) if profile.torch_version else None
        return cls(
            origin,
            stored_totals(profile),
            layers,
            dict(sorted(profile.uncounted_ops.items())),
            target,
            environment,
            settings,
        )

    def without_estimates(self) -> BaselineEntry:
        """The entry less its estimated latency: what can still be compared with an entry whose
        estimate was made on another target, or another version of its table."""
        layers = {path: row.without_estimates() for path, row in self.layers.items()}
        return replace(
            self,
            totals={name: value for name, value in self.totals.items() if name not in ESTIMATES},
            layers={path: row for path, row in layers.items() if any(row.figures.values())},
            target=None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the order the baseline file writes it; ``uncounted_ops`` only when there
        are some (a new one is then a line in review)."""
        data: dict[str, Any] = {"origin": self.origin}
        if self.environment is not None:
            data["environment"] = self.environment.to_dict()
        if self.settings is not None:
            data["settings"] = self.settings.to_dict()
        data["totals"] = dict(self.totals)
        if self.target is not None:
            data["target"] = self.target.to_dict()
        if self.uncounted_ops:
            data["uncounted_ops"] = dict(self.uncounted_ops)
        data["layers"] = {path: row.to_dict() for path, row in self.layers.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BaselineEntry:
        """The entry at JSON path ``where``, every field the comparison reads checked, so that a
        hand-edited or corrupt file is one error naming the path, never a crash later; fields this
        version does not know are ignored (a newer version's file still compares)."""
        entry = record_object(data, where, "an object with 'totals' and 'layers'")
        origin = record_text(entry.get("origin", ORIGIN_PYPROJECT), f"{where}.origin")
        totals = record_object(entry.get("totals"), f"{where}.totals")
        layers = record_object(entry.get("layers"), f"{where}.layers")
        uncounted = record_object(entry.get("uncounted_ops", {}), f"{where}.uncounted_ops")
        return cls(
            origin=origin,
            totals=record_figures(totals, f"{where}.totals"),
            layers={path: LayerEntry.from_dict(row, f"{where}.layers{json_key(path)}") for path, row in layers.items()},
            uncounted_ops=record_figures(uncounted, f"{where}.uncounted_ops"),
            target=EstimateSource.from_dict(entry["target"], f"{where}.target") if entry.get("target") else None,
            environment=(
                Environment.from_dict(entry["environment"], f"{where}.environment")
                if entry.get("environment")
                else None
            ),
            settings=_optional(Settings.from_dict, entry.get("settings"), f"{where}.settings"),
        )
