"""Scatters and index writes that combine what they write with what is there: one FLOP per
element combined. The same ops without a reduction only move data and cost nothing."""

from __future__ import annotations

import math

import torch

from .registry import Cost, OpCall, aten, numel, register


def _scatter(call: OpCall) -> Cost:
    """``scatter``: free as a plain write; with ``reduce=`` one FLOP per index element."""
    return Cost(0, numel(call["index"]) if call.get("reduce") is not None else 0)


def _per_index_element(call: OpCall) -> Cost:
    """``scatter_add``, ``scatter_reduce``: one FLOP per index element; a mean divides each
    output element once more."""
    mean = numel(call.first_out) if call.get("reduce") == "mean" else 0
    return Cost(0, numel(call["index"]) + mean)


def _per_source_element(call: OpCall) -> Cost:
    """``index_add``, ``index_reduce``: one FLOP per source element (two when ``alpha`` scales
    it); a mean divides each output element once more."""
    source = numel(call["source"])
    scaled = source if call.get("alpha", 1) != 1 else 0
    mean = numel(call.first_out) if call.get("reduce") == "mean" else 0
    return Cost(0, source + scaled + mean)


def _indexed_elements(target: torch.Tensor, indices: list, values: torch.Tensor) -> int:
    """Elements that ``target[indices]`` selects: the broadcast integer indices times the
    dimensions they leave; with a boolean mask (its count is data) the values' elements."""
    given = [index for index in indices if index is not None]
    if any(index.dtype == torch.bool for index in given):
        return numel(values)
    selected = math.prod(torch.broadcast_shapes(*(index.shape for index in given))) if given else 1
    left = [size for dim, size in enumerate(target.shape) if dim >= len(indices) or indices[dim] is None]
    return selected * math.prod(left)


def _index_put(call: OpCall) -> Cost:
    """``index_put``: free as a plain write; with ``accumulate=True`` one FLOP per element written."""
    if not call["accumulate"]:
        return Cost(0, 0)
    return Cost(0, _indexed_elements(call["self"], list(call["indices"]), call["values"]))


register(
    "aten::scatter", _scatter, family="indexing", rule="0 as a plain write; with reduce=, 1 FLOP per index element"
)
register(
    aten("scatter_add scatter_reduce"),
    _per_index_element,
    family="indexing",
    rule="1 FLOP per index element; reduce='mean' adds 1 per output element",
)
register(
    aten("index_add index_reduce"),
    _per_source_element,
    family="indexing",
    rule="1 FLOP per source element (2 when alpha is not 1); reduce='mean' adds 1 per output element",
)
register(
    aten("index_put _index_put_impl"),
    _index_put,
    family="indexing",
    rule="0 as a plain write; with accumulate=True, 1 FLOP per element written",
)
