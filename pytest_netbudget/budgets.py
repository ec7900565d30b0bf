"""A profile's totals against its limits and its baseline -> a verdict per metric.

Plain arithmetic over plain dicts: nothing here knows about torch or pytest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import METRICS, Increase

#: Metrics shown for every model, budgeted or not.
HEADLINE_METRICS = ("params", "macs", "flops", "size_mb", "activations_mb")


@dataclass(frozen=True)
class MetricCheck:
    """One metric of one model: its figure, its limit, its baseline and what that makes it."""

    metric: str
    actual: float | None
    limit: float | None = None
    baseline: float | None = None
    increase: Increase | None = None

    @property
    def measured(self) -> bool:
        return self.actual is not None

    @property
    def over_budget(self) -> bool:
        return self.measured and self.limit is not None and self.actual > self.limit

    @property
    def grew_too_much(self) -> bool:
        return (
            self.measured
            and self.baseline is not None
            and self.increase is not None
            and not self.increase.allows(self.baseline, self.actual)
        )

    @property
    def used(self) -> float | None:
        """Fraction of the budget used, when there is a budget and a figure."""
        if not self.measured or self.limit is None:
            return None
        return self.actual / self.limit

    @property
    def status(self) -> str:
        if not self.measured:
            return "not measured"
        if self.over_budget:
            return "over"
        if self.grew_too_much:
            return "grew"
        return "ok"


@dataclass(frozen=True)
class Verdict:
    """Everything decided about one model."""

    name: str
    checks: list[MetricCheck]
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    has_baseline: bool = False

    @property
    def failures(self) -> list[MetricCheck]:
        return [check for check in self.checks if check.status in ("over", "grew")]

    @property
    def strict_failure(self) -> bool:
        return self.strict and bool(self.uncounted_ops)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.strict_failure

    @property
    def status(self) -> str:
        if any(check.over_budget for check in self.checks):
            return "over"
        if self.failures:
            return "grew"
        return "uncounted" if self.strict_failure else "pass"

    def check_for(self, metric: str) -> MetricCheck | None:
        return next((check for check in self.checks if check.metric == metric), None)


def evaluate(
    name: str,
    totals: dict[str, Any],
    limits: dict[str, float],
    baseline: dict[str, Any] | None = None,
    max_increase: dict[str, Increase] | None = None,
    strict: bool = False,
    uncounted_ops: dict[str, int] | None = None,
) -> Verdict:
    """Compare ``totals`` (metric -> figure) with ``limits`` and, when given, a baseline's totals."""
    max_increase = max_increase or {}
    shown = [
        metric
        for metric in METRICS
        if metric in HEADLINE_METRICS or metric in limits or (metric in max_increase and totals.get(metric) is not None)
    ]
    checks = [
        MetricCheck(
            metric=metric,
            actual=totals.get(metric),
            limit=limits.get(metric),
            baseline=None if baseline is None else baseline.get(metric),
            increase=max_increase.get(metric),
        )
        for metric in shown
    ]
    return Verdict(
        name=name,
        checks=checks,
        uncounted_ops=dict(uncounted_ops or {}),
        strict=strict,
        has_baseline=baseline is not None,
    )
