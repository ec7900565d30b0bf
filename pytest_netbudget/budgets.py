"""A measured model against its limits and its baseline -> a verdict per metric.

``Result`` is the one record a registered model or a check from a test produces;
``judge`` is a pure function of it. Nothing here knows about torch or pytest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import metrics
from .config import Increase
from .results import ChangeKind, CheckStatus, Profile, Status

ORIGIN_PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class Result:
    """One model measured (or not): its identity, its limits, and its profile or the error.

    ``origin`` is ``pyproject.toml`` for a registered model, or the node id of the test
    that checked it. It is plain data, so it travels from a pytest-xdist worker as a dict.
    """

    name: str
    origin: str = ORIGIN_PYPROJECT
    limits: dict[str, float] = field(default_factory=dict)
    max_increase: dict[str, Increase] = field(default_factory=dict)
    strict: bool = False
    profile: Profile | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "limits": self.limits,
            "max_increase": {
                metric: {"fraction": rule.fraction, "amount": rule.amount} for metric, rule in self.max_increase.items()
            },
            "strict": self.strict,
            "profile": self.profile.to_dict() if self.profile is not None else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            name=data["name"],
            origin=data["origin"],
            limits=data["limits"],
            max_increase={metric: Increase(**rule) for metric, rule in data["max_increase"].items()},
            strict=data["strict"],
            profile=Profile.from_dict(data["profile"]) if data["profile"] is not None else None,
            error=data["error"],
        )


@dataclass(frozen=True)
class MetricCheck:
    """One metric of one model: its figure, its limit, its baseline and what that makes it.

    ``baseline`` is the committed baseline's figure, the gate that ``increase`` judges;
    ``reference`` is what the "change" column shows the figure against: the same, or the
    base branch's figure (``--netbudget-base``, ``--netbudget-compare``).
    """

    metric: str
    actual: float | None
    limit: float | None = None
    baseline: float | None = None
    increase: Increase | None = None
    reference: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["increase"] = asdict(self.increase) if self.increase is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricCheck:
        increase = data["increase"]
        return cls(**{**data, "increase": Increase(**increase) if increase is not None else None})

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
    def status(self) -> CheckStatus:
        if not self.measured:
            return CheckStatus.NOT_MEASURED
        if self.over_budget:
            return CheckStatus.OVER
        if self.grew_too_much:
            return CheckStatus.GREW
        return CheckStatus.OK


@dataclass(frozen=True)
class LayerChange:
    """A layer added, removed or resized since the baseline."""

    path: str
    type: str
    kind: ChangeKind
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def delta(self, name: str) -> float:
        return (self.new or {}).get(name, 0) - (self.old or {}).get(name, 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerChange:
        return cls(**{**data, "kind": ChangeKind(data["kind"])})


@dataclass(frozen=True)
class Verdict:
    """Everything decided about one result: a check per metric shown, and what changed.

    ``has_baseline`` / ``layer_changes`` are against the committed baseline (the gate);
    ``has_reference`` / ``reference_changes`` against what the reports compare with, the
    same unless a base branch was given (see :func:`compared_with`).
    """

    result: Result
    checks: list[MetricCheck] = field(default_factory=list)
    has_baseline: bool = False
    layer_changes: list[LayerChange] = field(default_factory=list)
    has_reference: bool = False
    reference_changes: list[LayerChange] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def profile(self) -> Profile | None:
        return self.result.profile

    @property
    def error(self) -> str | None:
        """Why the model could not be profiled, or None."""
        return self.result.error

    @property
    def uncounted_ops(self) -> dict[str, int]:
        return self.profile.uncounted_ops if self.profile is not None else {}

    @property
    def failures(self) -> list[MetricCheck]:
        return [check for check in self.checks if check.status in (CheckStatus.OVER, CheckStatus.GREW)]

    @property
    def strict_failure(self) -> bool:
        return self.result.strict and bool(self.uncounted_ops)

    @property
    def status(self) -> Status:
        if self.result.error is not None:
            return Status.ERROR
        if any(check.over_budget for check in self.checks):
            return Status.OVER
        if self.failures:
            return Status.GREW
        return Status.UNCOUNTED if self.strict_failure else Status.PASS

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def changed(self) -> bool:
        """Different from the reference (what the reports show the change against)."""
        return bool(self.reference_changes) or any(
            check.reference is not None and check.actual != check.reference for check in self.checks
        )

    def check_for(self, metric: str) -> MetricCheck | None:
        return next((check for check in self.checks if check.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        """Everything a report needs to render this verdict again (``netbudget merge``)."""
        return {
            "result": self.result.to_dict(),
            "checks": [check.to_dict() for check in self.checks],
            "has_baseline": self.has_baseline,
            "layer_changes": [item.to_dict() for item in self.layer_changes],
            "has_reference": self.has_reference,
            "reference_changes": [item.to_dict() for item in self.reference_changes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            result=Result.from_dict(data["result"]),
            checks=[MetricCheck.from_dict(check) for check in data["checks"]],
            has_baseline=data["has_baseline"],
            layer_changes=[LayerChange.from_dict(item) for item in data["layer_changes"]],
            has_reference=data["has_reference"],
            reference_changes=[LayerChange.from_dict(item) for item in data["reference_changes"]],
        )


def stored_totals(profile: Profile) -> dict[str, float]:
    """The measured totals as the baseline stores them (MiB to six decimals), so that two
    identical runs compare equal."""
    return {
        name: round(value, 6) if isinstance(value, float) else value
        for name, value in profile.totals.items()
        if value is not None
    }


def judge(
    result: Result,
    baseline: dict[str, Any] | None = None,
    *,
    accept_growth: bool = False,
    layer_changes: list[LayerChange] | None = None,
) -> Verdict:
    """Compare a result's totals with its limits and, when given, its baseline's totals.

    A metric is shown when it is a headline metric, budgeted, or has a ``max_increase``
    and a figure. ``accept_growth`` (an update run) judges budgets only: its figures
    become the new baseline.
    """
    if result.profile is None:
        return Verdict(result, has_baseline=baseline is not None, has_reference=baseline is not None)
    totals = stored_totals(result.profile)
    increase = {} if accept_growth else result.max_increase
    shown = [
        metric.name
        for metric in metrics.METRICS
        if (metric.headline and metric.name in totals)
        or metric.name in result.limits
        or (metric.name in increase and metric.name in totals)
    ]
    previous = {} if baseline is None else baseline
    checks = [
        MetricCheck(
            metric=name,
            actual=totals.get(name),
            limit=result.limits.get(name),
            baseline=previous.get(name),
            increase=increase.get(name),
            reference=previous.get(name),
        )
        for name in shown
    ]
    changes = list(layer_changes or [])
    has_baseline = baseline is not None
    return Verdict(result, checks, has_baseline, changes, has_reference=has_baseline, reference_changes=changes)


def compared_with(
    verdict: Verdict, reference: dict[str, Any] | None, layer_changes: list[LayerChange] | None = None
) -> Verdict:
    """The verdict with its "change" figures against ``reference`` (the base branch's totals, None
    when it has no entry) instead of the committed baseline; pass or fail stays as judged."""
    figures = {} if reference is None else reference
    return replace(
        verdict,
        checks=[replace(check, reference=figures.get(check.metric)) for check in verdict.checks],
        has_reference=reference is not None,
        reference_changes=list(layer_changes or []),
    )
