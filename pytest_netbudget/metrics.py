"""The one table of metrics: what each figure is called, how it prints, and what it takes part in.

Every layer that handles figures (config keys, budgets, the baseline, reports, the
profile data) reads this table instead of keeping its own list, so a new metric is
one row here plus the code that measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import units


@dataclass(frozen=True)
class Metric:
    """One figure of a profile.

    ``unit`` is ``"count"`` (printed with k/M/G suffixes), ``"MiB"`` (three decimals) or
    ``"ms"`` (three significant digits).
    ``growth``: a plain ``max_increase = "2%"`` applies to it (the others take one by name:
    ``max_increase = { latency_ms = "5%" }``). ``per_layer``: every layer
    row carries it and the rows add up to the total. ``layer_diff``: the baseline keeps it
    per layer and the layer diff compares it. ``headline``: shown for every model that
    has a figure, budgeted or not. ``measured_on``: where it exists at all (None: everywhere).
    ``train``: measured by a training step, so only for models profiled with one.
    ``serve``: measured by a serving step (prefill and one decode step), likewise.
    ``needs_target``: an estimate on a named accelerator, so only for models given a target.
    """

    name: str
    unit: str
    description: str
    growth: bool = False
    per_layer: bool = False
    layer_diff: bool = False
    headline: bool = False
    measured_on: str | None = None
    train: bool = False
    serve: bool = False
    needs_target: bool = False

    @property
    def limit_key(self) -> str:
        """The budget's key in pyproject.toml and the marker: ``max_params``."""
        return f"max_{self.name}"

    @property
    def is_mib(self) -> bool:
        return self.unit == "MiB"

    def format(self, value: float | None) -> str:
        """The figure as the summary and reports print it; a missing one says why."""
        if value is None:
            return "not measured" if self.measured_on else "no target" if self.needs_target else "-"
        if self.unit == "ms":
            return units.format_ms(value)
        return units.format_mb(value) if self.is_mib else units.format_count(value)

    def format_change(self, old: float, new: float) -> str:
        return units.format_change(old, new, is_mb=self.is_mib)

    def format_excess(self, excess: float) -> str:
        """How far over a limit: ``+3.9k`` or ``+0.012``."""
        if self.unit == "ms":
            return "+" + units.format_ms(excess)
        return units.format_mb(excess, signed=True) if self.is_mib else "+" + units.format_count(excess, digits=2)


#: In the order every table prints them.
METRICS: tuple[Metric, ...] = (
    Metric(
        "params",
        "count",
        "elements of the unique parameters",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
    ),
    Metric("trainable_params", "count", "parameters with requires_grad", per_layer=True),
    Metric("buffers", "count", "elements of registered buffers", per_layer=True),
    Metric(
        "macs",
        "count",
        "multiply-accumulates of linear algebra",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
    ),
    Metric(
        "flops", "count", "2 * macs plus per-element work", growth=True, per_layer=True, layer_diff=True, headline=True
    ),
    Metric("size_mb", "MiB", "bytes of unique parameters and buffers / 2**20", growth=True, headline=True),
    Metric("activations_mb", "MiB", "peak bytes of live intermediate tensors", growth=True, headline=True),
    Metric(
        "peak_memory_mb", "MiB", "torch.cuda.max_memory_allocated during the forward", growth=True, measured_on="CUDA"
    ),
    Metric(
        "memory_access_mb",
        "MiB",
        "bytes every op of the forward reads and writes, unfused (an upper bound for a fusing compiler) / 2**20",
        per_layer=True,
        layer_diff=True,
    ),
    Metric(
        "latency_ms",
        "ms",
        "estimated forward time on the target: per op max(FLOPs / peak, bytes / bandwidth) + overhead (a roofline)",
        per_layer=True,
        layer_diff=True,
        needs_target=True,
    ),
    Metric(
        "train_macs",
        "count",
        "multiply-accumulates of one training step: forward, backward and optimizer",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
        train=True,
    ),
    Metric(
        "train_flops",
        "count",
        "FLOPs of one training step: forward, backward and the optimizer's per-element work",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
        train=True,
    ),
    Metric("train_memory_mb", "MiB", "peak live bytes over one training step", growth=True, headline=True, train=True),
    Metric(
        "train_peak_memory_mb",
        "MiB",
        "torch.cuda.max_memory_allocated during the training step",
        growth=True,
        measured_on="CUDA",
        train=True,
    ),
    Metric(
        "train_memory_access_mb",
        "MiB",
        "bytes every op of one training step reads and writes, unfused / 2**20",
        per_layer=True,
        layer_diff=True,
        train=True,
    ),
    Metric(
        "kv_cache_mb",
        "MiB",
        "bytes of the cache the model returns after a prefill of context tokens at batch, at kv_dtype",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
        serve=True,
    ),
    Metric(
        "prefill_macs",
        "count",
        "multiply-accumulates of the prefill: the forward over context tokens at batch",
        growth=True,
        per_layer=True,
        serve=True,
    ),
    Metric("prefill_flops", "count", "FLOPs of the prefill", growth=True, per_layer=True, serve=True),
    Metric(
        "decode_macs",
        "count",
        "multiply-accumulates of one decode step: one token per sequence at position context, the cache in place",
        growth=True,
        per_layer=True,
        layer_diff=True,
        headline=True,
        serve=True,
    ),
    Metric(
        "decode_flops",
        "count",
        "FLOPs of one decode step",
        growth=True,
        per_layer=True,
        layer_diff=True,
        serve=True,
    ),
    Metric(
        "decode_latency_ms",
        "ms",
        "estimated time of one decode step on the target, the weights read at their planned precision and the "
        "cache as held (a roofline, as latency_ms)",
        per_layer=True,
        layer_diff=True,
        serve=True,
        needs_target=True,
    ),
    Metric(
        "weights_mb",
        "MiB",
        "bytes of the weights at the planned precision, scales and zero points included, and the buffers",
        growth=True,
        per_layer=True,
        serve=True,
    ),
    Metric(
        "serve_memory_mb",
        "MiB",
        "weights_mb + kv_cache_mb + the decode step's peak live activations",
        growth=True,
        headline=True,
        serve=True,
    ),
)

BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
LIMIT_KEYS: tuple[str, ...] = tuple(metric.limit_key for metric in METRICS)
GROWTH: tuple[str, ...] = tuple(metric.name for metric in METRICS if metric.growth)
PER_LAYER: tuple[str, ...] = tuple(metric.name for metric in METRICS if metric.per_layer)
LAYER_DIFF: tuple[str, ...] = tuple(metric.name for metric in METRICS if metric.layer_diff)
HEADLINE: tuple[str, ...] = tuple(metric.name for metric in METRICS if metric.headline)


def get(name: str) -> Metric:
    return BY_NAME[name]
