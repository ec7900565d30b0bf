"""Verdicts and layer diffs rendered for people: the failing item, the terminal summary,
Markdown for a pull-request comment, and JSON for machines (and ``--netbudget-compare``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import __version__, units
from .baseline import SCHEMA, LayerChange, entry_from_profile
from .budgets import MetricCheck, Verdict
from .config import MB_METRICS

LAYER_DIFF_LIMIT = 10
DIFF_FIGURES = ("params", "macs", "flops")


@dataclass
class ModelResult:
    """One profiled model (registered in pyproject.toml or checked from a test) and what was decided."""

    name: str
    origin: str
    profile: dict[str, Any] | None = None
    verdict: Verdict | None = None
    error: str | None = None
    layer_changes: list[LayerChange] = field(default_factory=list)
    compared: bool = False  # a baseline entry existed for it

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return self.verdict.status if self.verdict else "pass"

    @property
    def changed(self) -> bool:
        return bool(self.layer_changes) or any(
            check.baseline is not None and check.actual != check.baseline for check in self._checks
        )

    @property
    def _checks(self) -> list[MetricCheck]:
        return self.verdict.checks if self.verdict else []


def value(metric: str, number: float | None) -> str:
    if number is None:
        return "not measured" if metric == "peak_memory_mb" else "-"
    return units.format_mb(number) if metric in MB_METRICS else units.format_count(number)


def change(check: MetricCheck) -> str:
    if check.baseline is None or check.actual is None:
        return ""
    return units.format_change(check.baseline, check.actual, is_mb=check.metric in MB_METRICS)


def _over(check: MetricCheck) -> str:
    if not check.measured:
        return "not measured"
    if check.over_budget:
        excess = check.actual - check.limit
        amount = f"+{excess:.3f}" if check.metric in MB_METRICS else "+" + units.format_count(excess, digits=2)
        return f"{amount} (+{excess / check.limit * 100:.1f}%)"
    if check.grew_too_much:
        return f"grew {change(check)}, more than the allowed {check.increase.describe()}"
    return "ok"


def _columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def largest_layers_line(profile: dict[str, Any], metric: str = "params", count: int = 2) -> str:
    rows = sorted((row for row in profile["layers"] if row[metric]), key=lambda row: -row[metric])[:count]
    if not rows:
        return ""
    listed = ", ".join(f"{row['path'] or '(model)'} ({row['type']}) {units.format_count(row[metric])}" for row in rows)
    return f"largest layers by {metric}: {listed}"


def layer_diff_lines(changes: list[LayerChange], limit: int = LAYER_DIFF_LIMIT) -> list[str]:
    if not changes:
        return []
    rows = [["layer", "change", *DIFF_FIGURES]]
    for item in changes[:limit]:
        rows.append([f"{item.path} ({item.type})", item.kind, *(_old_new(item, name) for name in DIFF_FIGURES)])
    lines = ["layers changed since the baseline:", *_columns(rows)]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more changed layers")
    return lines


def _old_new(item: LayerChange, name: str) -> str:
    old = units.format_count(item.old[name]) if item.old else "-"
    new = units.format_count(item.new[name]) if item.new else "-"
    return f"{old} -> {new}"


def failure_text(result: ModelResult, with_layers: bool = True) -> str:
    """What a failing item shows: the diff against the budget, the biggest layers, what changed."""
    if result.error is not None:
        return f"{result.name} could not be profiled\n  {result.error}"
    verdict = result.verdict
    problems = []
    if any(check.over_budget for check in verdict.checks):
        problems.append("exceeds its budget")
    if any(check.grew_too_much for check in verdict.checks):
        problems.append("grew more than max_increase allows over its baseline")
    if verdict.strict_failure:
        problems.append("ran ops that have no counting formula (strict = true)")
    lines = [f"{result.name} " + " and ".join(problems)]
    rows = [["metric", "budget", "actual", "over"]]
    if verdict.has_baseline:
        rows[0][3:3] = ["baseline", "change"]
    for check in verdict.checks:
        if check.limit is None and check.increase is None:
            continue
        row = [check.metric, value(check.metric, check.limit), value(check.metric, check.actual), _over(check)]
        if verdict.has_baseline:
            row[3:3] = [value(check.metric, check.baseline), change(check)]
        rows.append(row)
    if len(rows) > 1:
        lines += _columns(rows)
    if verdict.strict_failure:
        lines.append("  uncounted ops: " + ", ".join(f"{op} x{count}" for op, count in verdict.uncounted_ops.items()))
    largest = largest_layers_line(result.profile)
    if largest:
        lines.append("  " + largest)
    if with_layers:
        lines += ["  " + line for line in layer_diff_lines(result.layer_changes)]
    return "\n".join(lines)


def summary_lines(results: list[ModelResult], removed: list[str] | None = None) -> list[str]:
    """The end-of-session table: each metric as actual / budget, percent used, change, status."""
    over = sum(result.status in ("over", "grew", "uncounted", "error") for result in results)
    lines = [
        f"{len(results)} model(s) profiled, {over} failing"
        if over
        else f"{len(results)} model(s) profiled, all within budget"
    ]
    rows = [["model", "metric", "actual", "budget", "used", "vs baseline", "status"]]
    for result in results:
        if result.error is not None:
            rows.append([result.name, "-", "-", "-", "-", "-", "error"])
            continue
        for index, check in enumerate(result.verdict.checks):
            baseline = change(check) if result.compared else ("new" if index == 0 else "")
            rows.append(
                [
                    result.name if index == 0 else "",
                    check.metric,
                    value(check.metric, check.actual),
                    value(check.metric, check.limit) if check.limit is not None else "-",
                    f"{check.used * 100:.1f}%" if check.used is not None else "",
                    baseline,
                    (result.status if index == 0 else "") if check.status == "ok" else check.status,
                ]
            )
    lines += _columns(rows, indent="")
    for result in results:
        if result.profile and result.profile.get("uncounted_ops"):
            ops = ", ".join(f"{op} x{count}" for op, count in result.profile["uncounted_ops"].items())
            lines.append(f"{result.name}: uncounted ops (no formula, not in MACs/FLOPs): {ops}")
        if result.error is not None:
            lines.append(f"{result.name}: {result.error}")
    for name in removed or []:
        lines.append(f"{name}: in the baseline but no longer registered (removed; kept until --netbudget-update)")
    return lines


def _headline(results: list[ModelResult]) -> str:
    over = sum(result.status == "over" for result in results)
    grew = sum(result.status == "grew" for result in results)
    broken = sum(result.status in ("error", "uncounted") for result in results)
    if not (over or grew or broken):
        return f"All {len(results)} model(s) within budget"
    parts = [f"{over} over budget"] if over else []
    parts += [f"{grew} grew past max_increase"] if grew else []
    parts += [f"{broken} failed to profile"] if broken else []
    return ", ".join(parts) + f" (of {len(results)} model(s))"


_STATUS_ICON = {
    "pass": "✅ pass",
    "over": "❌ over",
    "grew": "⚠️ grew",
    "error": "💥 error",
    "uncounted": "❌ uncounted ops",
}


def markdown(results: list[ModelResult], removed: list[str] | None = None) -> str:
    """A pull-request comment: headline, one table of models, a collapsible block per changed model."""
    metrics = ("params", "macs", "flops", "size_mb", "activations_mb")
    lines = ["## netbudget", "", f"**{_headline(results)}**", ""]
    lines.append("| model | " + " | ".join(metrics) + " | status |")
    lines.append("|---|" + "---|" * len(metrics) + "---|")
    for result in results:
        cells = []
        for metric in metrics:
            check = result.verdict.check_for(metric) if result.verdict else None
            if check is None:
                cells.append("-")
                continue
            cell = value(metric, check.actual)
            if check.limit is not None:
                cell += f" / {value(metric, check.limit)} ({check.used * 100:.0f}%)"
            if result.compared and check.baseline is not None:
                cell += f"<br>{change(check)}"
            cells.append(cell)
        lines.append(
            f"| `{result.name}` | " + " | ".join(cells) + f" | {_STATUS_ICON.get(result.status, result.status)} |"
        )
    for name in removed or []:
        lines.append(f"| `{name}` | " + " | ".join("-" for _ in metrics) + " | removed |")
    lines.append("")
    for result in results:
        if result.error is not None:
            lines += [
                f"<details><summary><code>{result.name}</code>: error</summary>",
                "",
                "```",
                result.error,
                "```",
                "",
                "</details>",
                "",
            ]
            continue
        if not (result.changed or not result.compared or result.status != "pass"):
            continue
        title = "new model" if not result.compared else ("changed" if result.changed else result.status)
        lines += [f"<details><summary><code>{result.name}</code>: {title}</summary>", ""]
        if result.verdict.failures or result.verdict.strict_failure:
            lines += ["```", failure_text(result, with_layers=False), "```", ""]
        if result.layer_changes:
            lines += ["| layer | change | " + " | ".join(DIFF_FIGURES) + " |", "|---|---|" + "---|" * len(DIFF_FIGURES)]
            for item in result.layer_changes[:LAYER_DIFF_LIMIT]:
                figures = " | ".join(_old_new(item, name) for name in DIFF_FIGURES)
                lines.append(f"| `{item.path}` ({item.type}) | {item.kind} | {figures} |")
            if len(result.layer_changes) > LAYER_DIFF_LIMIT:
                lines.append(
                    f"| ... | {len(result.layer_changes) - LAYER_DIFF_LIMIT} more |" + " |" * len(DIFF_FIGURES)
                )
            lines.append("")
        lines += mermaid_charts(result.profile)
        lines += ["</details>", ""]
    return "\n".join(lines)


def top_level_blocks(profile: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Params and MACs of each direct child of the model (the model's own work as '(model)')."""
    blocks: dict[str, dict[str, int]] = {}
    for row in profile["layers"]:
        block = row["path"].split(".")[0] if row["path"] else "(model)"
        totals = blocks.setdefault(block, {"params": 0, "macs": 0})
        totals["params"] += row["params"]
        totals["macs"] += row["macs"]
    return blocks


def mermaid_charts(profile: dict[str, Any]) -> list[str]:
    """Where the budget goes: pie charts of the top-level blocks' MACs and params."""
    blocks = top_level_blocks(profile)
    lines = []
    for metric, title in (("macs", "MACs"), ("params", "Params")):
        slices = [(name, figures[metric]) for name, figures in blocks.items() if figures[metric] > 0]
        if not slices:
            continue
        lines += ["```mermaid", f"pie showData title {title} by block"]
        lines += [f'    "{name}" : {amount}' for name, amount in slices]
        lines += ["```", ""]
    return lines


def to_json(results: list[ModelResult], removed: list[str] | None = None) -> str:
    """The report as JSON; its ``models`` entries double as a baseline for ``--netbudget-compare``."""
    models = {}
    for result in results:
        entry: dict[str, Any] = {"origin": result.origin, "status": result.status, "error": result.error}
        if result.profile is not None:
            entry.update(entry_from_profile(result.profile, result.origin))
            entry["uncounted_ops"] = result.profile.get("uncounted_ops", {})
        else:
            entry.update({"totals": {}, "layers": {}})
        if result.verdict is not None:
            entry["metrics"] = {
                check.metric: {
                    "actual": check.actual,
                    "budget": check.limit,
                    "baseline": check.baseline,
                    "max_increase": check.increase.describe() if check.increase else None,
                    "status": check.status,
                }
                for check in result.verdict.checks
            }
        entry["layer_changes"] = [
            {"path": item.path, "type": item.type, "kind": item.kind, "old": item.old, "new": item.new}
            for item in result.layer_changes
        ]
        models[result.name] = entry
    document = {
        "schema": SCHEMA,
        "kind": "netbudget-report",
        "generator": f"pytest-netbudget {__version__}",
        "headline": _headline(results),
        "removed": list(removed or []),
        "models": models,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
