"""The result of profiling: totals and one row per module, as plain data.

Rows hold the work a module does itself (outside its children), so that the rows
add up to the totals; :meth:`Profile.rollup` folds deeper rows into their
ancestors for a depth-limited view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

METRICS = ("params", "trainable_params", "buffers", "size_mb", "macs", "flops", "activations_mb", "peak_memory_mb")
LAYER_FIGURES = ("params", "trainable_params", "buffers", "macs", "flops", "read_bytes", "write_bytes")


@dataclass(frozen=True)
class LayerStats:
    """One module of the model: its own parameters and the work done in its own forward."""

    path: str
    type: str
    params: int = 0
    trainable_params: int = 0
    buffers: int = 0
    macs: int = 0
    flops: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    calls: int = 0
    input_shapes: list[Any] = field(default_factory=list)
    output_shapes: list[Any] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """0 for the model itself, 1 for its direct children, ..."""
        return 0 if not self.path else self.path.count(".") + 1

    def is_within(self, ancestor: str) -> bool:
        return not ancestor or self.path == ancestor or self.path.startswith(ancestor + ".")


@dataclass(frozen=True)
class Profile:
    """Totals and per-layer rows of one forward pass (see the README's counting conventions)."""

    model: str
    device: str
    dtype: str
    inputs: list[Any]
    params: int
    trainable_params: int
    buffers: int
    size_mb: float
    macs: int
    flops: int
    activations_mb: float
    peak_memory_mb: float | None
    layers: list[LayerStats]
    uncounted_ops: dict[str, int]

    def rollup(self, depth: int | None = None) -> list[LayerStats]:
        """Rows down to ``depth``; a row at the limit carries the figures of everything below it."""
        if depth is None:
            return list(self.layers)
        kept = [row for row in self.layers if row.depth <= depth]
        folded = []
        for row in kept:
            if row.depth < depth:
                folded.append(row)
                continue
            inside = [other for other in self.layers if other.is_within(row.path)]
            sums = {name: sum(getattr(other, name) for other in inside) for name in LAYER_FIGURES}
            folded.append(replace(row, **sums))
        return folded

    def table(self, depth: int | None = None) -> str:
        """The per-layer table, rows deeper than ``depth`` folded into their ancestors."""
        from .table import render_layer_table

        return render_layer_table(self, depth)

    def __str__(self) -> str:
        return self.table()

    def totals(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in METRICS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: totals, rows and uncounted ops."""
        data = asdict(self)
        data["layers"] = [asdict(row) for row in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """The inverse of :meth:`to_dict` (used to carry profiles between pytest-xdist workers)."""
        fields = dict(data)
        fields["layers"] = [LayerStats(**row) for row in data["layers"]]
        return cls(**fields)
