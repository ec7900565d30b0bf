"""A model's layers as the tree of its modules, for the pictures: the HTML treemap and the slices
of the pie charts.

The baseline keeps each layer's own work (what it does outside its children), keyed by path. Here
those rows become a tree whose every node knows its figures now and in the reference (the base
branch or the baseline), so that a block's size and its change are the sums of what is inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .repeated import group_repeated

#: How the reports name the model's own row (the work of its forward outside every child).
MODEL = "(model)"


@dataclass
class ModuleNode:
    """One module: its own figures now (``own``) and in the reference (``own_old``), and its children
    in the model's order. A module the layers never name (a container with no work of its own)
    has an empty type and no figures of its own."""

    path: str
    type: str = ""
    own: dict[str, float] = field(default_factory=dict)
    own_old: dict[str, float] = field(default_factory=dict)
    children: list[ModuleNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The last segment of the path (``up_proj``); the model itself is ``(model)``."""
        return self.path.rsplit(".", 1)[-1] if self.path else MODEL

    def total(self, metric: str) -> float:
        return self.own.get(metric, 0) + sum(child.total(metric) for child in self.children)

    def total_old(self, metric: str) -> float:
        return self.own_old.get(metric, 0) + sum(child.total_old(metric) for child in self.children)

    def carriers(self, metric: str) -> list[ModuleNode]:
        """The children with some of ``metric`` now."""
        return [child for child in self.children if child.total(metric) > 0]


def module_tree(
    layers: Mapping[str, tuple[str, Mapping[str, float]]],
    changes: Iterable[tuple[str, str, Mapping[str, float] | None]] = (),
) -> ModuleNode:
    """The tree of ``layers`` (report name -> (type, own figures), in the model's order; the model's
    own row is ``(model)``), with the reference's figures from ``changes`` ((path, type, figures
    before or None when the layer is new); an unchanged layer's figures are the same before). A
    layer that was removed has no figures now and keeps its old ones, so its parents shrink."""
    root = ModuleNode("")
    nodes = {"": root}

    def node(path: str) -> ModuleNode:
        if path not in nodes:
            parent = node(path.rsplit(".", 1)[0] if "." in path else "")
            nodes[path] = ModuleNode(path)
            parent.children.append(nodes[path])
        return nodes[path]

    for name, (kind, figures) in layers.items():
        found = node("" if name == MODEL else name)
        found.type, found.own, found.own_old = kind, dict(figures), dict(figures)
    for name, kind, before in changes:
        found = node("" if name == MODEL else name)
        found.type = found.type or kind
        found.own_old = dict(before or {})
    return root


@dataclass(frozen=True)
class Slice:
    """A part of a pie: a block (``model.layers.{0..31}`` with ``count`` 32 for a repeated one) and
    its figure (all its repeats together)."""

    label: str
    value: float
    count: int = 1


def slices(root: ModuleNode, metric: str) -> list[Slice]:
    """Where ``metric`` goes, split at the first level of the tree where more than one module has
    some of it (a model that wraps one ``model`` splits inside it). Each part is followed down while
    one child holds all of it (``model`` -> ``model.layers``); a list of repeated blocks (the decoder
    layers of a ``ModuleList``, an ``nn.Sequential``'s items) is one slice per group of equal blocks,
    and a part that holds such a list (``model`` around ``model.layers``) is opened to show it."""
    node = root
    while not node.own.get(metric) and len(node.carriers(metric)) == 1 and node.carriers(metric)[0].children:
        node = node.carriers(metric)[0]
    repeated = _repeated_slices(node, metric)
    if repeated:
        return _own(node, metric) + repeated
    parts = _own(node, metric)
    for child in node.carriers(metric):
        parts += _block_slices(child, metric, open_lists=True)
    return parts


def _block_slices(block: ModuleNode, metric: str, open_lists: bool = False) -> list[Slice]:
    while not block.own.get(metric) and len(block.carriers(metric)) == 1:
        block = block.carriers(metric)[0]
    repeated = _repeated_slices(block, metric)
    if repeated:
        return repeated
    if open_lists and any(_repeated_slices(child, metric) for child in block.carriers(metric)):
        return _own(block, metric) + [part for child in block.carriers(metric) for part in _block_slices(child, metric)]
    return [Slice(block.path, block.total(metric))]


def _own(node: ModuleNode, metric: str) -> list[Slice]:
    """The work a module does itself, as a slice beside its children's."""
    if not node.own.get(metric):
        return []
    return [Slice(f"{node.path} (own)" if node.path else MODEL, node.own[metric])]


def _repeated_slices(node: ModuleNode, metric: str) -> list[Slice]:
    """One slice per group of equal blocks when ``node`` is a list of blocks (its children named
    0, 1, ...) of which some repeat; none otherwise."""
    inside = node.carriers(metric)
    if node.own.get(metric) or not inside or not all(child.name.isdigit() for child in inside):
        return []
    groups = group_repeated(inside, lambda block: block.path, lambda block: (block.type, block.total(metric)))
    if len(groups) == len(inside):
        return []
    return [Slice(group.path, sum(block.total(metric) for block in group.items), group.count) for group in groups]
