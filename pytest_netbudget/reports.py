"""Verdicts and layer diffs rendered for people: the failing item, the terminal summary,
Markdown for a pull-request comment, and JSON for machines (and ``--netbudget-compare``)."""

from __future__ import annotations

import json
from typing import Any

from . import __version__, metrics, units
from .baseline import SCHEMA, entry_from_profile
from .budgets import LayerChange, MetricCheck, Verdict
from .engine.data import Profile
from .engine.table import train_step_lines

LAYER_DIFF_LIMIT = 10


def value(metric: str, number: float | None) -> str:
    return metrics.get(metric).format(number)


def change(check: MetricCheck) -> str:
    if check.baseline is None or check.actual is None:
        return ""
    return metrics.get(check.metric).format_change(check.baseline, check.actual)


def _over(check: MetricCheck) -> str:
    if not check.measured:
        return "not measured"
    if check.over_budget:
        excess = check.actual - check.limit
        return f"{metrics.get(check.metric).format_excess(excess)} (+{excess / check.limit * 100:.1f}%)"
    if check.grew_too_much:
        return f"grew {change(check)}, more than the allowed {check.increase.describe()}"
    return "ok"


def _columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def largest_layers_line(profile: Profile, metric: str = "params", count: int = 2) -> str:
    rows = sorted((row for row in profile.layers if row.figures[metric]), key=lambda row: -row.figures[metric])[:count]
    if not rows:
        return ""
    listed = ", ".join(f"{row.name} ({row.type}) {units.format_count(row.figures[metric])}" for row in rows)
    return f"largest layers by {metric}: {listed}"


def diff_columns(changes: list[LayerChange]) -> list[str]:
    """The per-layer metrics that the changed layers carry, old or new (train figures only
    where a training step was profiled)."""
    carried = {name for item in changes for entry in (item.old, item.new) if entry for name in entry}
    return [name for name in metrics.LAYER_DIFF if name in carried]


def layer_diff_lines(changes: list[LayerChange], limit: int = LAYER_DIFF_LIMIT) -> list[str]:
    if not changes:
        return []
    columns = diff_columns(changes)
    rows = [["layer", "change", *columns]]
    for item in changes[:limit]:
        rows.append([f"{item.path} ({item.type})", item.kind, *(_old_new(item, name) for name in columns)])
    lines = ["layers changed since the baseline:", *_columns(rows)]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more changed layers")
    return lines


def _old_new(item: LayerChange, name: str) -> str:
    old = units.format_count(item.old[name]) if item.old and name in item.old else "-"
    new = units.format_count(item.new[name]) if item.new and name in item.new else "-"
    return f"{old} -> {new}"


def failure_text(verdict: Verdict, with_layers: bool = True) -> str:
    """What a failing item shows: the diff against the budget, the biggest layers, what changed."""
    if verdict.error is not None:
        return f"{verdict.name} could not be profiled\n  {verdict.error}"
    problems = []
    if any(check.over_budget for check in verdict.checks):
        problems.append("exceeds its budget")
    if any(check.grew_too_much for check in verdict.checks):
        problems.append("grew more than max_increase allows over its baseline")
    if verdict.strict_failure:
        problems.append("ran ops that have no counting formula (strict = true)")
    lines = [f"{verdict.name} " + " and ".join(problems)]
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
    largest = largest_layers_line(verdict.profile)
    if largest:
        lines.append("  " + largest)
    if with_layers:
        lines += ["  " + line for line in layer_diff_lines(verdict.layer_changes)]
    return "\n".join(lines)


def summary_lines(verdicts: list[Verdict], removed: list[str] | None = None) -> list[str]:
    """The end-of-session table: each metric as actual / budget, percent used, change, status."""
    over = sum(verdict.status in ("over", "grew", "uncounted", "error") for verdict in verdicts)
    lines = [
        f"{len(verdicts)} model(s) profiled, {over} failing"
        if over
        else f"{len(verdicts)} model(s) profiled, all within budget"
    ]
    rows = [["model", "metric", "actual", "budget", "used", "vs baseline", "status"]]
    for verdict in verdicts:
        if verdict.status == "error":
            rows.append([verdict.name, "-", "-", "-", "-", "-", "error"])
            continue
        for index, check in enumerate(verdict.checks):
            baseline = change(check) if verdict.has_baseline else ("new" if index == 0 else "")
            rows.append(
                [
                    verdict.name if index == 0 else "",
                    check.metric,
                    value(check.metric, check.actual),
                    value(check.metric, check.limit) if check.limit is not None else "-",
                    f"{check.used * 100:.1f}%" if check.used is not None else "",
                    baseline,
                    (verdict.status if index == 0 else "") if check.status == "ok" else check.status,
                ]
            )
    lines += _columns(rows, indent="")
    for verdict in verdicts:
        if verdict.profile is not None and verdict.profile.train is not None:
            step = train_step_lines(verdict.profile)
            lines += [f"{verdict.name}: {step[0]}", *step[1:]]
        if verdict.uncounted_ops:
            ops = ", ".join(f"{op} x{count}" for op, count in verdict.uncounted_ops.items())
            lines.append(f"{verdict.name}: uncounted ops (no formula, not in MACs/FLOPs): {ops}")
        if verdict.error is not None:
            lines.append(f"{verdict.name}: {verdict.error}")
    for name in removed or []:
        lines.append(f"{name}: in the baseline but no longer registered (removed; kept until --netbudget-update)")
    return lines


def _headline(verdicts: list[Verdict]) -> str:
    over = sum(verdict.status == "over" for verdict in verdicts)
    grew = sum(verdict.status == "grew" for verdict in verdicts)
    broken = sum(verdict.status in ("error", "uncounted") for verdict in verdicts)
    if not (over or grew or broken):
        return f"All {len(verdicts)} model(s) within budget"
    parts = [f"{over} over budget"] if over else []
    parts += [f"{grew} grew past max_increase"] if grew else []
    parts += [f"{broken} failed to profile"] if broken else []
    return ", ".join(parts) + f" (of {len(verdicts)} model(s))"


_STATUS_ICON = {
    "pass": "✅ pass",
    "over": "❌ over",
    "grew": "⚠️ grew",
    "error": "💥 error",
    "uncounted": "❌ uncounted ops",
}


def markdown(verdicts: list[Verdict], removed: list[str] | None = None) -> str:
    """A pull-request comment: headline, one table of models, a collapsible block per changed model."""
    columns = [
        name
        for name in metrics.HEADLINE
        if not metrics.get(name).train or any(verdict.check_for(name) for verdict in verdicts)
    ]
    lines = ["## netbudget", "", f"**{_headline(verdicts)}**", ""]
    lines.append("| model | " + " | ".join(columns) + " | status |")
    lines.append("|---|" + "---|" * len(columns) + "---|")
    for verdict in verdicts:
        cells = []
        for metric in columns:
            check = verdict.check_for(metric)
            if check is None:
                cells.append("-")
                continue
            cell = value(metric, check.actual)
            if check.limit is not None:
                cell += f" / {value(metric, check.limit)} ({check.used * 100:.0f}%)"
            if verdict.has_baseline and check.baseline is not None:
                cell += f"<br>{change(check)}"
            cells.append(cell)
        lines.append(
            f"| `{verdict.name}` | " + " | ".join(cells) + f" | {_STATUS_ICON.get(verdict.status, verdict.status)} |"
        )
    for name in removed or []:
        lines.append(f"| `{name}` | " + " | ".join("-" for _ in columns) + " | removed |")
    lines.append("")
    for verdict in verdicts:
        if verdict.error is not None:
            lines += [
                f"<details><summary><code>{verdict.name}</code>: error</summary>",
                "",
                "```",
                verdict.error,
                "```",
                "",
                "</details>",
                "",
            ]
            continue
        if not (verdict.changed or not verdict.has_baseline or verdict.status != "pass"):
            continue
        title = "new model" if not verdict.has_baseline else ("changed" if verdict.changed else verdict.status)
        lines += [f"<details><summary><code>{verdict.name}</code>: {title}</summary>", ""]
        if verdict.failures or verdict.strict_failure:
            lines += ["```", failure_text(verdict, with_layers=False), "```", ""]
        if verdict.layer_changes:
            columns = diff_columns(verdict.layer_changes)
            header = "| layer | change | " + " | ".join(columns) + " |"
            lines += [header, "|---|---|" + "---|" * len(columns)]
            for item in verdict.layer_changes[:LAYER_DIFF_LIMIT]:
                figures = " | ".join(_old_new(item, name) for name in columns)
                lines.append(f"| `{item.path}` ({item.type}) | {item.kind} | {figures} |")
            if len(verdict.layer_changes) > LAYER_DIFF_LIMIT:
                lines.append(f"| ... | {len(verdict.layer_changes) - LAYER_DIFF_LIMIT} more |" + " |" * len(columns))
            lines.append("")
        if verdict.profile.train is not None:
            lines += ["```", *train_step_lines(verdict.profile), "```", ""]
        lines += mermaid_charts(verdict.profile)
        lines += ["</details>", ""]
    return "\n".join(lines)


def top_level_blocks(profile: Profile) -> dict[str, dict[str, int]]:
    """Params and MACs of each direct child of the model (the model's own work as '(model)')."""
    blocks: dict[str, dict[str, int]] = {}
    for row in profile.layers:
        block = row.path.split(".")[0] if row.path else "(model)"
        totals = blocks.setdefault(block, {"params": 0, "macs": 0})
        totals["params"] += row.figures["params"]
        totals["macs"] += row.figures["macs"]
    return blocks


def mermaid_charts(profile: Profile) -> list[str]:
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


def to_json(verdicts: list[Verdict], removed: list[str] | None = None) -> str:
    """The report as JSON; its ``models`` entries double as a baseline for ``--netbudget-compare``."""
    models = {}
    for verdict in verdicts:
        origin = verdict.result.origin
        entry: dict[str, Any] = {"origin": origin, "status": verdict.status, "error": verdict.error}
        if verdict.profile is not None:
            entry.update(entry_from_profile(verdict.profile, origin))
            entry["uncounted_ops"] = dict(verdict.uncounted_ops)
            entry["train"] = verdict.profile.train.to_dict() if verdict.profile.train is not None else None
            entry["metrics"] = {
                check.metric: {
                    "actual": check.actual,
                    "budget": check.limit,
                    "baseline": check.baseline,
                    "max_increase": check.increase.describe() if check.increase else None,
                    "status": check.status,
                }
                for check in verdict.checks
            }
        else:
            entry.update({"totals": {}, "layers": {}})
        entry["layer_changes"] = [
            {"path": item.path, "type": item.type, "kind": item.kind, "old": item.old, "new": item.new}
            for item in verdict.layer_changes
        ]
        models[verdict.name] = entry
    document = {
        "schema": SCHEMA,
        "kind": "netbudget-report",
        "generator": f"pytest-netbudget {__version__}",
        "headline": _headline(verdicts),
        "removed": list(removed or []),
        "models": models,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
