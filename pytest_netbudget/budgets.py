"""A measured model against its limits and its baseline -> a verdict per metric, and the layers
that changed.

``Result`` is the one record a registered model or a check from a test produces; ``judge`` is a
pure function of it and the model's baseline entry. ``Verdict`` is what every report renders, and
its ``to_dict`` is the one record of a model in a JSON report. Nothing here knows torch or pytest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from . import metrics
from .config import Increase
from .results import (
    ORIGIN_PYPROJECT,
    BaselineEntry,
    ChangeKind,
    CheckStatus,
    LayerEntry,
    Profile,
    RecordError,
    ServeStep,
    Settings,
    Status,
    TrainStep,
    UpperBound,
    json_key,
    record_figure,
    record_object,
    record_text,
    upper_bounds_of,
)


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
            "max_increase": {metric: rule.to_dict() for metric, rule in self.max_increase.items()},
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
            max_increase={metric: Increase.from_dict(rule) for metric, rule in data["max_increase"].items()},
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
        """As a report's model holds it under the metric's name: the figure itself is in the model's
        ``totals``, and ``reference`` is written only where it is not the baseline's figure."""
        data: dict[str, Any] = {"budget": self.limit, "baseline": self.baseline}
        if self.reference != self.baseline:
            data["reference"] = self.reference
        data["max_increase"] = self.increase.to_dict() if self.increase is not None else None
        data["status"] = self.status
        return data

    @classmethod
    def from_dict(cls, metric: str, data: Any, actual: float | None, where: str) -> MetricCheck:
        """The check of ``metric`` from its record at JSON path ``where``, each field checked:
        a budget is a positive number, the other figures finite ones (or null)."""
        data = record_object(data, where)
        for key in ("budget", "baseline", "max_increase"):
            if key not in data:
                raise RecordError(f"{where}.{key}: missing")
        limit = _optional_figure(data["budget"], f"{where}.budget")
        if limit is not None and limit <= 0:
            raise RecordError(f"{where}.budget: a budget is a positive number, got {limit!r}")
        baseline = _optional_figure(data["baseline"], f"{where}.baseline")
        increase = data["max_increase"]
        return cls(
            metric,
            actual,
            limit=limit,
            baseline=baseline,
            increase=None if increase is None else _increase(increase, f"{where}.max_increase"),
            reference=_optional_figure(data.get("reference", baseline), f"{where}.reference"),
        )

    @property
    def measured(self) -> bool:
        return self.actual is not None

    @property
    def over_budget(self) -> bool:
        return self.actual is not None and self.limit is not None and self.actual > self.limit

    @property
    def grew_too_much(self) -> bool:
        return (
            self.actual is not None
            and self.baseline is not None
            and self.increase is not None
            and not self.increase.allows(self.baseline, self.actual)
        )

    @property
    def used(self) -> float | None:
        """Fraction of the budget used, when there is a budget and a figure."""
        if self.actual is None or self.limit is None:
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
    """A layer added, removed or resized since the baseline, with its entries before and after."""

    path: str
    type: str
    kind: ChangeKind
    old: LayerEntry | None
    new: LayerEntry | None

    def delta(self, name: str) -> float:
        return (self.new.figure(name) if self.new else 0) - (self.old.figure(name) if self.old else 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "kind": self.kind,
            "old": self.old.to_dict() if self.old is not None else None,
            "new": self.new.to_dict() if self.new is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LayerChange:
        data = record_object(data, where)

        def entry(side: str) -> LayerEntry | None:
            value = data[side]
            return None if value is None else LayerEntry.from_dict(value, f"{where}.{side}")

        path, kind = record_text(data.get("path"), f"{where}.path"), record_text(data.get("kind"), f"{where}.kind")
        if kind not in set(ChangeKind):
            raise RecordError(f"{where}.kind: expected one of {', '.join(ChangeKind)}, got {json.dumps(kind)}")
        return cls(path, record_text(data.get("type"), f"{where}.type"), ChangeKind(kind), entry("old"), entry("new"))


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list, got {json.dumps(value)}")
    return value


def _optional_figure(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{where}: expected a number, got {json.dumps(value)}")
    return record_figure(value, where)


def _increase(data: Any, where: str) -> Increase:
    """A stored ``max_increase`` (``{"fraction": 0.02}`` or ``{"amount": 1000}``), checked."""
    rule = record_object(data, where, 'an object like {"fraction": 0.02}')
    fraction = _optional_figure(rule.get("fraction"), f"{where}.fraction")
    amount = _optional_figure(rule.get("amount"), f"{where}.amount")
    if (fraction is None) == (amount is None) or (fraction or amount or 0) < 0:
        raise RecordError(
            f'{where}: expected {{"fraction": F}} or {{"amount": A}}, not negative, got {json.dumps(rule)}'
        )
    return Increase(fraction=fraction, amount=amount)


def layer_diff(old: BaselineEntry, new: BaselineEntry) -> list[LayerChange]:
    """Layers that differ between two entries, largest change first.

    A change is ranked by its share of the model: the larger of its parameter change
    over the model's parameters and its MAC change over the model's MACs.
    """
    old_layers, new_layers = old.layers, new.layers
    # A figure only one side measured (an entry written before the metric existed, a step added)
    # is no layer's change; the totals show it.
    compared = [name for name in metrics.LAYER_DIFF if name in old.totals and name in new.totals]
    changes = []
    for path in sorted(set(old_layers) | set(new_layers)):
        before, after = old_layers.get(path), new_layers.get(path)
        if before is None and after is not None:
            changes.append(LayerChange(path, after.type, ChangeKind.ADDED, None, after))
        elif after is None and before is not None:
            changes.append(LayerChange(path, before.type, ChangeKind.REMOVED, before, None))
        elif (
            before is not None
            and after is not None
            and (
                any(before.figures.get(name) != after.figures.get(name) for name in compared)
                or before.type != after.type
            )
        ):
            changes.append(LayerChange(path, after.type, ChangeKind.RESIZED, before, after))
    params = max(new.totals.get("params") or 0, old.totals.get("params") or 0, 1)
    macs = max(new.totals.get("macs") or 0, old.totals.get("macs") or 0, 1)
    return sorted(changes, key=lambda change: (-change_share(change, params, macs), change.path))


def change_share(change: LayerChange, params: float, macs: float) -> float:
    """How much of a model of ``params`` parameters and ``macs`` MACs (the larger of before and
    after) a layer's change is: the larger of its parameter, MAC and FLOP shares."""
    return max(
        abs(change.delta("params")) / params,
        abs(change.delta("macs")) / macs,
        abs(change.delta("flops")) / (2 * macs),
    )


@dataclass(frozen=True)
class Verdict:
    """Everything decided about one result: a check per metric shown, and what changed.

    ``measured`` is the result's figures as the baseline keeps them and ``train`` its training
    step: what the reports render (a verdict read back from a JSON report has no ``profile``).
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
    measured: BaselineEntry | None = None
    train: TrainStep | None = None
    serve: ServeStep | None = None  # its settings, memory split and fits line (no traced calls)
    upper_bounds: tuple[UpperBound, ...] = ()  # figures the device could not give exactly, and why
    # How its environment (torch, device, dtype, pytest-netbudget) and its settings (inputs, train and serve
    # steps) changed since the baseline entry, when its figures changed with them: ["torch 2.12.0 -> 2.13.0",
    # "serve context 2048 -> 8192"]; empty when either did not change (or is unknown). See changed_with.
    environment_change: list[str] = field(default_factory=list)
    # How the target its latency was estimated on changed since the entry the reports compare it
    # with ("a100 (table 1) -> a100 (table 2)"): its estimated latency was not compared then.
    estimate_change: str | None = None

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def profile(self) -> Profile | None:
        """The whole profile, in the run that measured it (None when read from a report)."""
        return self.result.profile

    @property
    def error(self) -> str | None:
        """Why the model could not be profiled, or None."""
        return self.result.error

    @property
    def uncounted_ops(self) -> dict[str, int]:
        return self.measured.uncounted_ops if self.measured is not None else {}

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

    def upper_bound_of(self, metric: str) -> list[str]:
        """Why the model's ``metric`` is only an upper bound (it is judged as it stands: a budget it
        is within is surely kept); an empty list where the figure is exact."""
        return upper_bounds_of(self.upper_bounds, metric)

    def to_dict(self) -> dict[str, Any]:
        """The model's one record in a JSON report: its baseline entry's fields (so that
        ``--netbudget-compare`` reads the report as a baseline), its status, the training step,
        each metric's budget, baseline and rule, and the layers that changed; everything
        ``netbudget merge`` needs to render the report again, nothing twice (the reference's
        figures and changes only where they are not the baseline's)."""
        entry = (self.measured or BaselineEntry(self.result.origin)).to_dict()
        data: dict[str, Any] = {
            "origin": entry.pop("origin"),
            "status": self.status,
            "error": self.error,
            "strict": self.result.strict,
            **entry,
            "train": self.train.to_dict() if self.train is not None else None,
            "serve": self.serve.to_dict() if self.serve is not None else None,
            "metrics": {check.metric: check.to_dict() for check in self.checks},
            "has_baseline": self.has_baseline,
            "layer_changes": [change.to_dict() for change in self.layer_changes],
        }
        if self.has_reference != self.has_baseline:
            data["has_reference"] = self.has_reference
        if self.reference_changes != self.layer_changes:
            data["reference_changes"] = [change.to_dict() for change in self.reference_changes]
        if self.upper_bounds:
            data["upper_bounds"] = [bound.to_dict() for bound in self.upper_bounds]
        if self.environment_change:
            data["environment_change"] = list(self.environment_change)
        if self.estimate_change:
            data["estimate_change"] = self.estimate_change
        return data

    @classmethod
    def from_dict(cls, name: str, data: Any, where: str = "") -> Verdict:
        """The verdict of model ``name`` from its record in a JSON report (at JSON path ``where``);
        ``RecordError`` names what is missing or wrong."""
        where = where or f"models{json_key(name)}"
        try:
            measured = BaselineEntry.from_dict(data, where)
            error = data["error"]
            if error is not None:
                record_text(error, f"{where}.error")
            checks = [
                MetricCheck.from_dict(metric, check, measured.totals.get(metric), f"{where}.metrics{json_key(metric)}")
                for metric, check in record_object(data.get("metrics"), f"{where}.metrics").items()
            ]
            layer_changes = [
                LayerChange.from_dict(change, f"{where}.layer_changes[{index}]")
                for index, change in enumerate(_list(data.get("layer_changes"), f"{where}.layer_changes"))
            ]
            reference_changes = [
                LayerChange.from_dict(change, f"{where}.reference_changes[{index}]")
                for index, change in enumerate(_list(data.get("reference_changes", []), f"{where}.reference_changes"))
            ]
            result = Result(
                name=name,
                origin=measured.origin,
                limits={check.metric: check.limit for check in checks if check.limit is not None},
                max_increase={check.metric: check.increase for check in checks if check.increase is not None},
                strict=bool(data["strict"]),
                error=error,
            )
            train = TrainStep.from_record(data["train"], f"{where}.train") if data["train"] is not None else None
            serve = ServeStep.from_record(data["serve"], f"{where}.serve") if data.get("serve") is not None else None
            upper_bounds = tuple(
                UpperBound.from_dict(bound, f"{where}.upper_bounds[{index}]")
                for index, bound in enumerate(_list(data.get("upper_bounds", []), f"{where}.upper_bounds"))
            )
            has_baseline = bool(data["has_baseline"])
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as problem:
            raise RecordError(
                f"{where}: not a model record this version reads ({type(problem).__name__}: {problem})"
            ) from None
        return cls(
            result,
            checks,
            has_baseline,
            layer_changes,
            has_reference=bool(data.get("has_reference", has_baseline)),
            reference_changes=reference_changes if "reference_changes" in data else list(layer_changes),
            measured=None if error is not None else measured,
            train=train,
            serve=serve,
            upper_bounds=upper_bounds,
            environment_change=[
                record_text(change, f"{where}.environment_change[{index}]")
                for index, change in enumerate(_list(data.get("environment_change", []), f"{where}.environment_change"))
            ],
            estimate_change=(
                record_text(data["estimate_change"], f"{where}.estimate_change") if "estimate_change" in data else None
            ),
        )


def estimate_change(old: BaselineEntry, new: BaselineEntry) -> str | None:
    """How the target of two entries' estimated latency differs (another target, or the same one
    from another version of its table: ``a100 (table 1) -> a100 (table 2)``); None when alike."""
    if old.target == new.target:
        return None
    return f"{old.target or 'no target'} -> {new.target or 'no target'}"


def comparable_entries(old: BaselineEntry | None, new: BaselineEntry) -> tuple[BaselineEntry | None, BaselineEntry]:
    """Two entries of one model as far as they compare: an estimated latency made on another
    target or table is a changed estimate, not growth, so both lose their estimates then."""
    if old is None or estimate_change(old, new) is None:
        return old, new
    return old.without_estimates(), new.without_estimates()


def judge(result: Result, baseline: BaselineEntry | None = None, *, accept_growth: bool = False) -> Verdict:
    """Compare a result's totals with its limits and, when given, its baseline entry's totals and
    layers.

    A metric is shown when it is a headline metric, budgeted, or has a ``max_increase``
    and a figure. ``accept_growth`` (an update run) judges budgets only: its figures
    become the new baseline.
    """
    has_baseline = baseline is not None
    if result.profile is None:
        return Verdict(result, has_baseline=has_baseline, has_reference=has_baseline)
    measured = BaselineEntry.from_profile(result.profile, result.origin)
    estimate = estimate_change(baseline, measured) if baseline is not None else None
    baseline, comparable = comparable_entries(baseline, measured)
    totals = measured.totals
    increase = {} if accept_growth else result.max_increase
    shown = [
        metric.name
        for metric in metrics.METRICS
        if (metric.headline and metric.name in totals)
        or metric.name in result.limits
        or (metric.name in increase and metric.name in totals)
    ]
    previous = baseline.totals if baseline is not None else {}
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
    changes = layer_diff(baseline, comparable) if baseline is not None else []
    return Verdict(
        result,
        checks,
        has_baseline,
        changes,
        has_reference=has_baseline,
        reference_changes=list(changes),
        measured=measured,
        train=result.profile.train,
        serve=result.profile.serve.settings() if result.profile.serve is not None else None,
        upper_bounds=result.profile.upper_bounds,
        environment_change=environment_change(baseline, comparable) if baseline is not None else [],
        estimate_change=estimate,
    )


def environment_change(old: BaselineEntry, new: BaselineEntry) -> list[str]:
    """How the environment and the settings changed between two entries whose figures differ
    (``torch 2.12.0 -> 2.13.0``, ``serve context 2048 -> 8192``): then the change may be theirs, not
    the model's. Empty when the figures are equal; a part an entry does not know (a baseline written
    before it was kept) is no change."""
    if old.totals == new.totals and old.layers == new.layers:
        return []
    changes = []
    if old.environment is not None and new.environment is not None:
        changes += new.environment.changes_from(old.environment)
    if old.settings is not None and new.settings is not None:
        dtypes = (old.environment.dtype, new.environment.dtype) if old.environment and new.environment else None
        changes += new.settings.changes_from(old.settings, dtypes)
    return changes


def changed_with(changes: list[str]) -> str:
    """What an ``environment_change`` list names: ``environment``, ``settings`` (each of their
    changes starts with one of ``Settings.PARTS``), or ``environment and settings``."""
    settings = [change.partition(" ")[0].partition("_")[0] in Settings.PARTS for change in changes]
    if all(settings):
        return "settings"
    return "environment and settings" if any(settings) else "environment"


def compared_with(verdict: Verdict, reference: BaselineEntry | None) -> Verdict:
    """The verdict with its "change" figures and layer changes against ``reference`` (the base
    branch's entry, None when it has none) instead of the committed baseline; pass or fail stays
    as judged."""
    changes: list[LayerChange] = []
    estimate = None
    if reference is not None and verdict.measured is not None:
        estimate = estimate_change(reference, verdict.measured)
        base, comparable = comparable_entries(reference, verdict.measured)
        if base is not None:
            reference = base
            changes = layer_diff(base, comparable)
    figures = reference.totals if reference is not None else {}
    return replace(
        verdict,
        checks=[replace(check, reference=figures.get(check.metric)) for check in verdict.checks],
        has_reference=reference is not None,
        reference_changes=changes,
        estimate_change=estimate,
    )
