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

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, overload

from . import metrics
from .layer_table import render_layer_table

if TYPE_CHECKING:
    from collections.abc import Mapping


class TextEnum(str, Enum):
    """An enum whose members are their strings: equal to them, hashed, printed and written to JSON
    as them (``enum.StrEnum`` from Python 3.11, here for 3.9)."""

    def __str__(self) -> str:
        return str.__str__(self)

    __format__ = str.__format__


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

    # The per-layer metrics (metrics.PER_LAYER), in the table's order.
    params = LayerFigure[int]()
    trainable_params = LayerFigure[int]()
    buffers = LayerFigure[int]()
    macs = LayerFigure[int]()
    flops = LayerFigure[int]()
    train_macs = LayerFigure[int]()
    train_flops = LayerFigure[int]()
    kv_cache_mb = LayerFigure[float]()
    prefill_macs = LayerFigure[int]()
    prefill_flops = LayerFigure[int]()
    decode_macs = LayerFigure[int]()
    decode_flops = LayerFigure[int]()
    weights_mb = LayerFigure[float]()

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
        )


@dataclass(frozen=True)
class Profile:
    """Totals and per-layer rows of one profiled forward (see the README's counting conventions).

    ``totals`` maps every metric name to its figure; None where it was not measured
    (``peak_memory_mb`` off CUDA, the training step's figures without one).
    """

    model: str
    device: str
    dtype: str
    inputs: list[Any]
    totals: dict[str, float | int | None]
    layers: list[LayerStats]
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    train: TrainStep | None = None  # the training step's settings and memory split, when one was profiled
    serve: ServeStep | None = None  # the serving step's settings, memory split and traced calls, when profiled

    # Every metric (metrics.METRICS), in the table's order.
    params = Total[int]()
    trainable_params = Total[int]()
    buffers = Total[int]()
    macs = Total[int]()
    flops = Total[int]()
    size_mb = Total[float]()
    activations_mb = Total[float]()
    peak_memory_mb = Total[Optional[float]]()
    train_macs = Total[Optional[int]]()
    train_flops = Total[Optional[int]]()
    train_memory_mb = Total[Optional[float]]()
    train_peak_memory_mb = Total[Optional[float]]()
    kv_cache_mb = Total[Optional[float]]()
    prefill_macs = Total[Optional[int]]()
    prefill_flops = Total[Optional[int]]()
    decode_macs = Total[Optional[int]]()
    decode_flops = Total[Optional[int]]()
    weights_mb = Total[Optional[float]]()
    serve_memory_mb = Total[Optional[float]]()

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
                )
            )
        return folded

    def table(self, depth: int | None = None, ops: bool = False) -> str:
        """The per-layer table, rows deeper than ``depth`` folded into their ancestors;
        ``ops=True`` lists each row's operators under it."""
        return render_layer_table(self, depth, ops=ops)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals at the top level beside the rows and uncounted ops."""
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "inputs": self.inputs,
            **self.totals,
            "layers": [row.to_dict() for row in self.layers],
            "uncounted_ops": dict(self.uncounted_ops),
            "train": self.train.to_dict() if self.train is not None else None,
            "serve": self.serve.to_dict() if self.serve is not None else None,
        }

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
            train=TrainStep.from_dict(data["train"]) if data.get("train") else None,
            serve=ServeStep.from_dict(data["serve"]) if data.get("serve") else None,
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


@dataclass(frozen=True)
class ServeStep:
    """How a serving step was run, its memory split, and its two traced calls as profiles of their own.

    ``memory_mb`` splits ``serve_memory_mb`` into ``weights``, ``kv_cache`` and ``activations`` (the
    decode step's peak of live intermediate tensors). ``prefill`` is the forward over ``context``
    tokens at ``batch``; ``decode`` the step of one token per sequence with the cache in place:
    each with per-layer rows and per-op figures, as the forward's profile.
    """

    context: int
    batch: int
    kv_dtype: str | None
    weights: str | None
    group_size: int | None
    keep: list[str]
    memory_mb: dict[ServePart, float]
    prefill: Profile
    decode: Profile
    fits: Fits | None = None

    def settings_dict(self) -> dict[str, Any]:
        """The settings, the memory split and the fits line: what a report keeps (the prefill's and the
        decode step's figures are the profile's totals and rows already)."""
        return {
            "context": self.context,
            "batch": self.batch,
            "kv_dtype": self.kv_dtype,
            "weights": self.weights,
            "group_size": self.group_size,
            "keep": list(self.keep),
            "memory_mb": {str(part): figure for part, figure in self.memory_mb.items()},
            "fits": self.fits.to_dict() if self.fits is not None else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings_dict(), "prefill": self.prefill.to_dict(), "decode": self.decode.to_dict()}

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
            prefill=Profile.from_dict(data["prefill"]),
            decode=Profile.from_dict(data["decode"]),
            fits=Fits.from_dict(data["fits"]) if data.get("fits") else None,
        )


def declared_metrics(record: type) -> tuple[str, ...]:
    """The metric attributes a record class declares, in declaration order (what the test
    compares with the metric table)."""
    return tuple(name for name, value in vars(record).items() if isinstance(value, _MetricAttribute))
