"""Which bytes an op reads and writes: the memory traffic that ``memory_access_mb`` sums.

The rule for most ops: every tensor argument is read whole and every output written whole,
op by op, as an unfused run moves them. Views move nothing (the tracer skips them by their
schema). The exceptions, decided once per op overload from its name and schema:

- an allocation or an alias (``empty``, ``_unsafe_view``, ``alias``) moves nothing;
- a factory that takes a tensor only for its shape (``zeros_like``, ``new_zeros``) reads nothing;
- an argument the op writes without reading it, an ``out=`` tensor or the destination of
  ``copy_``, ``fill_``, ``zero_`` and the random fills, is not read (an in-place ``add_`` or
  ``relu_`` reads its destination, and writes it back: no fresh output, the same bytes);
- a gather (``embedding``, ``index_select``, ``gather``, ``x[idx]``) reads the rows it picks,
  as many bytes as it writes, not its whole source table;
- ``index_copy_`` and ``index_put_`` write their new values into the destination, no more.
"""

from __future__ import annotations

from typing import Any

import torch

from ..formulas.schema import OpSchema

_NO_TRAFFIC = frozenset(
    [
        "aten.empty",
        "aten.empty_like",
        "aten.empty_strided",
        "aten.new_empty",
        "aten.new_empty_strided",
        "aten._unsafe_view",
        "aten._reshape_alias",
        "aten.alias",
        "aten.resize_",
        "aten.set_",
    ]
)
_OVERWRITES = frozenset(
    [
        "aten.copy_",
        "aten.fill_",
        "aten.zero_",
        "aten.uniform_",
        "aten.normal_",
        "aten.random_",
        "aten.exponential_",
        "aten.geometric_",
        "aten.log_normal_",
        "aten.cauchy_",
        "aten.bernoulli_",
    ]
)
_GATHERS = frozenset(["aten.embedding", "aten.index_select", "aten.gather", "aten.index"])
#: Partial writes into the destination (argument 0): the op -> the position of the values written.
_PARTIAL_WRITES = {"aten.index_copy_": 3, "aten.index_put_": 2, "aten._index_put_impl_": 2}


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class Traffic:
    """An op's exception to the plain rule, and the bytes it moves under it."""

    __slots__ = ("gather_source", "moves", "read_positions", "skip_kwargs", "values_at")

    def __init__(self, name: str, schema: OpSchema) -> None:
        written = set(schema.written)
        self.moves = name not in _NO_TRAFFIC
        self.values_at = _PARTIAL_WRITES.get(name)
        self.gather_source = 0 if name in _GATHERS else None
        unread = set(written if name in _OVERWRITES or self.values_at is not None else ())
        if name.endswith("_like") or name.startswith("aten.new_"):
            unread.add(0)  # the tensor whose shape and dtype the new one takes
        if self.gather_source is not None:
            unread.add(self.gather_source)
        self.read_positions = tuple(index for index in schema.tensor_positions if index not in unread)
        self.skip_kwargs = schema.written_keyword_only

    def bytes_moved(self, args: tuple, kwargs: dict, written: int, walk: Any) -> tuple[int, int]:
        """(read, written) for one call; ``written`` is the bytes of its outputs, ``walk`` the
        tracer's argument walker."""
        if not self.moves:
            return 0, 0
        if self.skip_kwargs:
            kwargs = {key: value for key, value in kwargs.items() if key not in self.skip_kwargs}
        read = sum([_nbytes(tensor) for tensor in walk(args, kwargs, self.read_positions)])
        if self.values_at is not None:
            values = args[self.values_at] if self.values_at < len(args) else None
            written = _nbytes(values) if isinstance(values, torch.Tensor) else 0
        if self.gather_source is not None:
            read += written  # the picked rows, in the source's dtype, as many bytes as the output
        return read, written


def traffic_of(schema: OpSchema, name: str) -> Traffic | None:
    """The op's exception to the plain rule (its schema, its name), or None where the plain rule holds."""
    out_kwargs = bool(schema.written_keyword_only)
    special = (
        name in _NO_TRAFFIC
        or name in _OVERWRITES
        or name in _GATHERS
        or name in _PARTIAL_WRITES
        or name.endswith("_like")
        or name.startswith("aten.new_")
        or out_kwargs
    )
    return Traffic(name, schema) if special else None
