"""The per-layer table that ``print(profile)`` and ``netbudget show`` print.

It renders the records of :mod:`pytest_netbudget.results`, which call it from ``Profile.table()``;
at run time it imports only :mod:`pytest_netbudget.units`, and names the records for the type
checker alone, so the import runs one way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import units

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from .results import LayerStats, OpStats, Profile, ServeStep, TrainStep, UpperBound

#: Put before a figure that is only an upper bound on the profile's device (see ``UpperBound``).
UPPER_BOUND_MARK = "≤"

HEADERS = ("Layer", "Type", "Input shape", "Output shape", "Params", "MACs", "FLOPs", "Read", "Write", "Calls")
#: With a training step: its MACs and FLOPs per layer (forward, backward and optimizer together).
TRAIN_HEADERS = ("Train MACs", "Train FLOPs")
#: With a target: the estimated time, FLOPs per byte moved, and what bounds the time.
ESTIMATE_HEADERS = ("Latency ms", "FLOP/B", "Bound")
#: With a serving step: the cache each layer made, and its work in the decode step (with a target,
#: its estimated time there too).
SERVE_HEADERS = ("KV cache", "Decode MACs")
DECODE_ESTIMATE_HEADERS = ("Decode ms",)
_RIGHT_ALIGNED = {
    "Params",
    "MACs",
    "FLOPs",
    "Read",
    "Write",
    "Calls",
    *TRAIN_HEADERS,
    "Latency ms",
    "FLOP/B",
    *SERVE_HEADERS,
    *DECODE_ESTIMATE_HEADERS,
}
_SHAPE_WIDTH = 28


def format_shapes(shapes: list) -> str:
    text = ", ".join("[" + ", ".join(map(str, shape)) + "]" for shape in shapes) if shapes else "-"
    return text if len(text) <= _SHAPE_WIDTH else text[: _SHAPE_WIDTH - 3] + "..."


def _figure(value: float, render: Callable[[Any], str], bounded: bool = False) -> str:
    if not value:
        return "-"
    return UPPER_BOUND_MARK + render(value) if bounded else render(value)


def text_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], right: set[str]) -> list[str]:
    """Columns padded to their widest cell, numbers right-aligned."""
    widths = [
        max(len(header), *(len(row[i]) for row in rows)) if rows else len(header) for i, header in enumerate(headers)
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if header in right else cell.ljust(width)
            for cell, width, header in zip(cells, widths, headers)
        ).rstrip()

    rule = "-" * len(line(headers))
    return [line(headers), rule, *(line(row) for row in rows), rule]


def _estimate(row: LayerStats, bounded: Callable[[str], bool]) -> tuple[str, ...]:
    intensity = row.intensity
    return (
        _figure(row.latency_ms, units.format_ms, bounded("latency_ms")),
        f"{intensity:.3g}" if intensity is not None else "-",
        str(row.bound) if row.bound is not None else "-",
    )


def _served(row: LayerStats, bounded: Callable[[str], bool], estimated: bool) -> tuple[str, ...]:
    served = (
        _figure(row.kv_cache_mb * units.MIB, units.format_bytes),
        _figure(row.decode_macs, units.format_count, bounded("decode_macs")),
    )
    if not estimated:
        return served
    return (*served, _figure(row.decode_latency_ms, units.format_ms, bounded("decode_latency_ms")))


def _row(
    row: LayerStats, model_name: str, train: bool, estimated: bool, serve: bool, bounded: Callable[[str], bool]
) -> tuple[str, ...]:
    """One row's cells; ``bounded(metric)``: whether that figure of the row is only an upper bound."""
    name = row.path.rsplit(".", 1)[-1] if row.path else f"({model_name})"
    count = units.format_count
    step = (
        (_figure(row.train_macs, count, bounded("train_macs")), _figure(row.train_flops, count, bounded("train_flops")))
        if train
        else ()
    )
    return (
        "  " * row.depth + name,
        row.type,
        format_shapes(row.input_shapes),
        format_shapes(row.output_shapes),
        _figure(row.params, lambda v: f"{v:,}"),
        _figure(row.macs, count, bounded("macs")),
        _figure(row.flops, count, bounded("flops")),
        _figure(row.read_bytes, units.format_bytes),
        _figure(row.write_bytes, units.format_bytes),
        str(row.calls) if row.calls else "-",
        *step,
        *(_estimate(row, bounded) if estimated else ()),
        *(_served(row, bounded, estimated) if serve else ()),
    )


def _op_row(name: str, stats: OpStats, depth: int, blank: int) -> tuple[str, ...]:
    """An operator under its module's row: what it cost there in the forward, over all its calls."""
    return (
        "  " * (depth + 1) + "· " + name,
        "op",
        "",
        "",
        "",
        _figure(stats.macs, units.format_count),
        _figure(stats.flops, units.format_count),
        "",
        "",
        str(stats.calls),
        *([""] * blank),
    )


def render_layer_table(profile: Profile, depth: int | None = None, ops: bool = False) -> str:
    """Tree of modules with their figures and a totals footer.

    A row with children shown lists the work done in its own forward outside them;
    a row cut off by ``depth`` carries everything below it. Either way the rows add
    up to the totals. ``ops`` lists under each row the operators that did its work.
    """
    train, estimated, serve = profile.train is not None, profile.target is not None, profile.serve is not None
    headers = (
        HEADERS
        + (TRAIN_HEADERS if train else ())
        + (ESTIMATE_HEADERS if estimated else ())
        + (SERVE_HEADERS if serve else ())
        + (DECODE_ESTIMATE_HEADERS if serve and estimated else ())
    )
    cells = []
    for row in profile.rollup(depth):
        folded = depth is not None and row.depth == depth

        def bounded(metric: str, path: str = row.path, folded: bool = folded) -> bool:
            return bool(profile.upper_bound_of(metric, path, folded))

        cells.append(_row(row, profile.model, train, estimated, serve, bounded))
        if ops:
            blank = len(headers) - len(HEADERS)
            cells += [_op_row(name, stats, row.depth, blank) for name, stats in row.ops.items()]
    lines = text_table(headers, cells, _RIGHT_ALIGNED)
    lines += footer_lines(profile)
    if ops:
        lines.append("Operators (whole model): " + _op_totals(profile))
    return "\n".join(lines)


def _op_totals(profile: Profile) -> str:
    if not profile.ops:
        return "none ran"
    return ", ".join(
        f"{name} x{stats.calls} ({units.format_count(stats.macs)} MACs, {units.format_count(stats.flops)} FLOPs)"
        for name, stats in profile.ops.items()
    )


def footer_lines(profile: Profile) -> list[str]:
    peak = (
        f"{profile.peak_memory_mb:.3f} MiB"
        if profile.peak_memory_mb is not None
        else f"not measured (measured on CUDA only; this run: {profile.device})"
    )
    lines = [
        f"Model: {profile.model} on {profile.device}, {profile.dtype}, inputs {format_shapes(profile.inputs)}",
        f"Params: {profile.params:,} ({units.format_count(profile.params)}), trainable {profile.trainable_params:,}, "
        f"buffers {profile.buffers:,}",
        f"Size: {profile.size_mb:.3f} MiB (parameters and buffers)",
        f"MACs: {_mark(profile, 'macs')}{profile.macs:,} ({units.format_count(profile.macs)})",
        f"FLOPs: {_mark(profile, 'flops')}{profile.flops:,} ({units.format_count(profile.flops)})",
        f"Activations (peak live): {profile.activations_mb:.3f} MiB",
        f"Peak CUDA memory: {peak}",
        f"Memory traffic: {profile.memory_access_mb:.3f} MiB read and written by every op, unfused",
    ]
    bounded = bounded_metrics(profile.upper_bounds)
    lines += estimate_lines(profile)
    lines += train_step_lines(profile.train, profile.totals, bounded) if profile.train is not None else []
    lines += serve_step_lines(profile.serve, profile.totals, bounded) if profile.serve is not None else []
    if profile.uncounted_ops:
        ops = ", ".join(f"{name} x{count}" for name, count in profile.uncounted_ops.items())
        lines.append(f"Uncounted ops (no formula; their MACs/FLOPs are missing): {ops}")
    lines += upper_bound_lines(profile.upper_bounds, profile.model)
    return lines


def bounded_metrics(bounds: tuple[UpperBound, ...]) -> set[str]:
    """The metrics that ``bounds`` mark as only upper bounds, in any row."""
    return {name for bound in bounds for name in bound.metrics}


def _mark(profile: Profile, metric: str) -> str:
    return UPPER_BOUND_MARK if profile.upper_bound_of(metric) else ""


def _mark_if(metric: str, bounded: Collection[str]) -> str:
    return UPPER_BOUND_MARK if metric in bounded else ""


def upper_bound_lines(bounds: tuple[UpperBound, ...], model_name: str) -> list[str]:
    """One line per reason a figure is only an upper bound (marked ``≤``): the figures, the rows,
    and why; none where every figure is exact."""
    return [
        f"{UPPER_BOUND_MARK} upper bound ({', '.join(bound.metrics)}; the exact figure is at most this) in "
        f"{', '.join(path or f'({model_name})' for path in bound.layers)}: {bound.reason}"
        for bound in bounds
    ]


def estimate_lines(profile: Profile) -> list[str]:
    """The estimated latency, what it is made of, and on which target's figures."""
    target = profile.target
    if target is None:
        return []
    parts = profile.roofline
    if parts is None:
        return []
    return [
        f"Estimated latency on {target.title} (target {target.name}, table {target.version}): "
        f"{_mark(profile, 'latency_ms')}{units.format_ms(profile.latency_ms)} ms, a roofline lower bound: compute-bound ops "
        f"{units.format_ms(parts.compute_ms)} ms, memory-bound ops {units.format_ms(parts.memory_ms)} ms, "
        f"per-op overhead {units.format_ms(parts.overhead_ms)} ms"
    ]


PART_NAMES = {"optimizer_state": "optimizer state", "kv_cache": "kv cache"}


def train_step_lines(
    step: TrainStep, totals: Mapping[str, float | int | None], bounded: Collection[str] = ()
) -> list[str]:
    """The training step in a few lines: settings, work (from the model's ``totals``; ``bounded``
    names those that are only upper bounds), and the memory at its peak by part."""
    settings = [step.optimizer if step.optimizer != "none" else "no optimizer"]
    settings += [f"batch {step.batch}"] if step.batch is not None else []
    settings += [f"autocast {step.autocast}"] if step.autocast is not None else []
    parts = ", ".join(f"{PART_NAMES.get(part, part)} {value:.3f}" for part, value in step.memory_mb.items())
    macs, flops = totals.get("train_macs") or 0, totals.get("train_flops") or 0
    lines = [
        f"Training step ({', '.join(settings)}): MACs {_mark_if('train_macs', bounded)}{macs:,} "
        f"({units.format_count(macs)}), FLOPs {_mark_if('train_flops', bounded)}{flops:,} ({units.format_count(flops)})",
        f"  memory at its peak (in the {step.peak_phase}): {totals.get('train_memory_mb') or 0:.3f} MiB = {parts}",
        f"  most saved for backward at once: {step.saved_mb:.3f} MiB",
        f"  memory traffic of the step: {totals.get('train_memory_access_mb') or 0:.3f} MiB read and written, unfused",
    ]
    cuda_peak = totals.get("train_peak_memory_mb")
    if cuda_peak is not None:
        lines.append(f"  peak CUDA memory of the step: {cuda_peak:.3f} MiB")
    return lines


def serve_step_lines(
    step: ServeStep, totals: Mapping[str, float | int | None], bounded: Collection[str] = ()
) -> list[str]:
    """The serving step in a few lines: settings, prefill and decode work (from the model's
    ``totals``; ``bounded`` names those that are only upper bounds), memory by part, and what fits."""
    settings = [f"context {step.context:,}", f"batch {step.batch}", f"kv cache {step.kv_dtype or 'as held'}"]
    weights = step.weights or "own dtype"
    weights += f", group {step.group_size}" if step.group_size is not None else ""
    weights += f", kept: {', '.join(step.keep)}" if step.keep else ""
    parts = ", ".join(f"{PART_NAMES.get(part, part)} {value:.3f}" for part, value in step.memory_mb.items())
    prefill_macs, decode_macs = totals.get("prefill_macs") or 0, totals.get("decode_macs") or 0
    mark = {name: _mark_if(name, bounded) for name in ("prefill_macs", "prefill_flops", "decode_macs", "decode_flops")}
    lines = [
        f"Serving step ({', '.join(settings)}; weights {weights}):",
        f"  prefill ({step.context:,} tokens x {step.batch}): MACs {mark['prefill_macs']}{prefill_macs:,} "
        f"({units.format_count(prefill_macs)}), "
        f"FLOPs {mark['prefill_flops']}{units.format_count(totals.get('prefill_flops') or 0)}",
        f"  decode (1 token x {step.batch}): MACs {mark['decode_macs']}{decode_macs:,} "
        f"({units.format_count(decode_macs)}), "
        f"FLOPs {mark['decode_flops']}{units.format_count(totals.get('decode_flops') or 0)}"
        + _decode_estimate(totals, bounded),
        f"  memory: {totals.get('serve_memory_mb') or 0:.3f} MiB = {parts}",
    ]
    fits = fits_line(step)
    return lines + ([f"  {fits}"] if fits else [])


def _decode_estimate(totals: Mapping[str, float | int | None], bounded: Collection[str]) -> str:
    """The decode step's estimated time on the target, where there is one."""
    latency = totals.get("decode_latency_ms")
    if latency is None:
        return ""
    return f", estimated {_mark_if('decode_latency_ms', bounded)}{units.format_ms(latency)} ms a step (a roofline)"


def fits_line(step: ServeStep) -> str:
    """What the stated memory holds at the serving step's batch (a derived line, not a budget)."""
    if step.fits is None:
        return ""
    memory = units.format_bytes(step.fits.memory_mb * units.MIB)
    if step.fits.context is None:
        return f"fits {memory} at any context at batch {step.batch}: the memory stops growing (bounded state)"
    if step.fits.context == 0:
        weights = sum(figure for part, figure in step.memory_mb.items() if part == "weights")
        return f"fits {memory}: not even one token at batch {step.batch} (weights {weights:.3f} MiB)"
    return (
        f"fits {memory}: up to {step.fits.context:,} tokens of context at batch {step.batch} "
        f"(+{units.format_bytes(step.fits.per_token_mb * units.MIB)} a token there)"
    )
