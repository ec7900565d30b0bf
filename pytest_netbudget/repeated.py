"""Repeated blocks told once: the same change to every decoder layer reads as one row,
``model.layers.{0..31}.mlp.up_proj`` ×32, instead of thirty-two near-identical rows.

Items whose paths differ only in numeric segments (the indices of an ``nn.ModuleList`` or
``nn.Sequential``) and that are otherwise equal (same kind of change, type and figures; the caller
says what "equal" means with a key) merge into one :class:`Repeated` whose path holds an index set
at each varying segment. Nested lists merge too (``layers.{0..31}.experts.{0..7}.w1`` ×256).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, Union

from .budgets import LayerChange
from .results import LayerEntry

Item = TypeVar("Item")
#: One segment of a path: a name, or the sorted indices that a repeated block takes there.
Segment = Union[str, tuple[int, ...]]
#: A working group: its path's segments, the positions of its items, its key.
_Group = tuple[tuple[Segment, ...], tuple[int, ...], Hashable]


def index_set(indices: Sequence[int]) -> str:
    """``{0..31}`` for a run, ``{0..3,7,9..11}`` for runs and singles."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    parts = [f"{low}..{high}" if high > low + 1 else f"{low},{high}" if high > low else str(low) for low, high in runs]
    return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class Repeated(Generic[Item]):
    """Items that are one block repeated: the path with index sets, and the items in input order."""

    segments: tuple[Segment, ...]
    items: tuple[Item, ...]

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def first(self) -> Item:
        return self.items[0]

    @property
    def path(self) -> str:
        """``model.layers.{0..31}.mlp.up_proj``; a single item's own path."""
        return ".".join(index_set(part) if isinstance(part, tuple) else part for part in self.segments)


def _numeric(segment: Segment) -> bool:
    return isinstance(segment, tuple) or segment.isdigit()


def _indices(segment: Segment) -> tuple[int, ...]:
    return segment if isinstance(segment, tuple) else (int(segment),)


def group_repeated(
    items: Sequence[Item], path: Callable[[Item], str], key: Callable[[Item], Hashable]
) -> list[Repeated]:
    """``items`` merged where they are one block repeated, in the order of each group's first item.

    Two groups merge when their paths are equal but at one numeric segment, their keys are equal,
    and they have the same shape elsewhere (so ``layers.0.mlp`` never merges with ``layers.1.attn``).
    Deeper segments merge first, so a list of lists becomes one group when it is a full product.
    """
    # Working groups: (segments, positions of their items in ``items``, key).
    groups: list[_Group] = [(tuple(path(item).split(".")), (index,), key(item)) for index, item in enumerate(items)]
    changed = True
    while changed:
        changed = False
        for position in reversed(range(max((len(segments) for segments, _, _ in groups), default=0))):
            buckets: dict[Hashable, list[int]] = {}
            for number, (segments, _, group_key) in enumerate(groups):
                if position < len(segments) and _numeric(segments[position]):
                    pattern = (*segments[:position], None, *segments[position + 1 :])
                    buckets.setdefault((pattern, group_key), []).append(number)
            joined: dict[int, _Group] = {}
            for bucket in buckets.values():
                taken = [index for number in bucket for index in _indices(groups[number][0][position])]
                if len(bucket) < 2 or len(set(taken)) != len(taken):
                    continue  # a single group, or an index twice (two paths would become one)
                segments, _, group_key = groups[bucket[0]]
                merged_segments: tuple[Segment, ...] = (
                    *segments[:position],
                    tuple(sorted(taken)),
                    *segments[position + 1 :],
                )
                members = tuple(sorted(index for number in bucket for index in groups[number][1]))
                merged: _Group = (merged_segments, members, group_key)
                for number in bucket:
                    joined[number] = merged
            if joined:
                changed = True
                kept: list[_Group] = []
                seen: set[int] = set()
                for number, group in enumerate(groups):
                    replacement = joined.get(number, group)
                    if id(replacement) not in seen:
                        seen.add(id(replacement))
                        kept.append(replacement)
                groups = kept
    groups.sort(key=lambda group: group[1][0])
    return [Repeated(segments, tuple(items[index] for index in members)) for segments, members, _ in groups]


def group_changes(
    changes: Sequence[LayerChange], share: Callable[[LayerChange], float] | None = None
) -> list[Repeated[LayerChange]]:
    """Layer changes with one row per repeated block: the same kind of change, type and figures
    before and after at paths that differ only in list indices. With ``share`` (a change's part of
    the model), a block repeated n times ranks as n of its layers; the order is otherwise kept."""
    groups = group_repeated(changes, lambda change: change.path, _change_key)
    if share is None:
        return groups
    return sorted(groups, key=lambda group: -share(group.first) * group.count)


def _change_key(change: LayerChange) -> Hashable:
    def figures(side: LayerEntry | None) -> tuple:
        return tuple(sorted(side.figures.items())) if side is not None else ()

    return (change.kind, change.type, figures(change.old), figures(change.new))
