"""Verdicts and layer diffs rendered for people: the failing item, the terminal summary,
Markdown for a pull-request comment, and JSON for machines (and ``--netbudget-compare``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__, metrics, units
from . import markdown_text as md
from .baseline import REPORT_KIND, REPORT_SCHEMA, BaselineError, models_table
from .budgets import LayerChange, MetricCheck, Verdict, change_share, changed_with
from .config import DEFAULT_BASELINE
from .layer_table import (
    UPPER_BOUND_MARK,
    bounded_metrics,
    fits_line,
    serve_step_lines,
    train_step_lines,
    upper_bound_lines,
)
from .module_tree import ModuleNode, module_tree, slices
from .repeated import Repeated, group_changes
from .results import (
    ORIGIN_PYPROJECT,
    BaselineEntry,
    CheckStatus,
    LayerEntry,
    RecordError,
    Status,
    record_flag,
    record_text,
    record_texts,
)

LAYER_DIFF_LIMIT = 10
#: What a stale baseline says when there is no baseline file at all.
NO_BASELINE_YET = "there is no such file yet"
#: How far apart two MiB figures stored to six decimals can be from their unrounded difference.
MIB_STORED_RESOLUTION = 1e-6


def value(metric: str, number: float | None) -> str:
    return metrics.get(metric).format(number)


def actual(verdict: Verdict, check: MetricCheck) -> str:
    """A model's figure as the reports print it: ``≤`` before one that is only an upper bound on
    the device it was profiled on (see ``UpperBound``)."""
    mark = UPPER_BOUND_MARK if verdict.upper_bound_of(check.metric) else ""
    return mark + value(check.metric, check.actual)


def change(check: MetricCheck, gate: bool = False) -> str:
    """The change against the reference (what reports compare with), or against the committed
    baseline with ``gate`` (what ``max_increase`` judged)."""
    old = check.baseline if gate else check.reference
    if old is None or check.actual is None:
        return ""
    return metrics.get(check.metric).format_change(old, check.actual)


def update_hint(baseline_file: str = DEFAULT_BASELINE, escape: Callable[[str], str] = str) -> str:
    return f"accept it with `pytest --netbudget --netbudget-update` and commit {escape(baseline_file)}"


def limits_place(verdict: Verdict, escape: Callable[[str], str] = str) -> str:
    """Where a model's limits are set: its table in pyproject.toml, or the test that checked it."""
    if verdict.result.origin == ORIGIN_PYPROJECT:
        return f"{ORIGIN_PYPROJECT} {escape(f'[tool.netbudget.models.{verdict.name}]')}"
    return f"the netbudget marker or check() keywords of {escape(verdict.result.origin)}"


def next_steps(
    verdict: Verdict, baseline_file: str = DEFAULT_BASELINE, escape: Callable[[str], str] = str
) -> list[str]:
    """What the author of a failing change can do about each problem, one line each; ``escape``
    is applied to what comes from the project (names, the baseline's file name)."""
    steps = []
    if verdict.environment_change and not verdict.passed:
        what, changes = changed_with(verdict.environment_change), ", ".join(verdict.environment_change)
        accept = update_hint(baseline_file, escape).replace("accept it", "accept its figures")
        if what == "environment":
            steps.append(
                f"its figures changed with its environment ({changes}), so the change may be the environment's, "
                f"not the model's: if this is the environment to gate on, {accept}; else profile it where its "
                "baseline entry was made"
            )
        else:
            steps.append(
                f"its figures changed with its {what} ({changes}), not necessarily with the model: if the change "
                f"is intended, {accept}; else profile it with the {what} of its baseline entry"
            )
    for check in verdict.checks:
        if check.over_budget:
            key = metrics.get(check.metric).limit_key
            steps.append(
                f"{check.metric} is over {key} = {value(check.metric, check.limit)}, set in {limits_place(verdict, escape)}: "
                "make the model smaller, or raise the limit there"
            )
    if any(check.grew_too_much for check in verdict.checks):
        steps.append(f"if the growth is intended, {update_hint(baseline_file, escape)}")
    for check in verdict.failures:
        reasons = verdict.upper_bound_of(check.metric)
        if reasons:
            steps.append(
                f"{check.metric} is an upper bound here, judged as it stands ({escape('; '.join(reasons))}): "
                "profile the model on cpu or cuda for its exact figure, which is at most this"
            )
    if verdict.strict_failure:
        steps.append(
            "register a counting formula for these ops (pytest_netbudget.register_formula), "
            f"or set strict = false in {limits_place(verdict, escape)}"
        )
    return steps


def _over(check: MetricCheck) -> str:
    if not check.measured:
        return "not measured"
    actual, limit, increase = check.actual, check.limit, check.increase
    if check.over_budget and actual is not None and limit is not None:
        excess = actual - limit
        return (
            f"{metrics.get(check.metric).format_excess(excess)} ({units.format_percent(excess / limit, signed=True)})"
        )
    if check.grew_too_much and increase is not None:
        return f"grew {change(check, gate=True)}, more than the allowed {increase.describe()}"
    return "ok"


def _columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def largest_layers_line(measured: BaselineEntry, metric: str = "params", count: int = 2) -> str:
    rows = sorted(
        ((name, row) for name, row in measured.layers.items() if row.figure(metric)),
        key=lambda item: -item[1].figure(metric),
    )[:count]
    if not rows:
        return ""
    listed = ", ".join(f"{name} ({row.type}) {units.format_count(row.figure(metric))}" for name, row in rows)
    return f"largest layers by {metric}: {listed}"


#: The layer diff's column for what bounds a layer's estimated time (compute or memory).
BOUND = "bound"


def diff_columns(changes: list[LayerChange]) -> list[str]:
    """The per-layer metrics that the changed layers carry, old or new (train figures only
    where a training step was profiled)."""
    carried = {name for item in changes for entry in (item.old, item.new) if entry for name in entry.figures}
    columns = [name for name in metrics.LAYER_DIFF if name in carried]
    bounded = any(entry.bound for item in changes for entry in (item.old, item.new) if entry)
    return columns + [BOUND] if bounded else columns


def grouped_changes(verdict: Verdict, gate: bool = False) -> list[Repeated[LayerChange]]:
    """The layers that changed against the reference (or the committed baseline with ``gate``), a
    repeated block once, largest change first (a block repeated n times weighs n of its layers)."""

    def larger(metric: str) -> float:
        check = verdict.check_for(metric)
        before = (check.baseline if gate else check.reference) if check else None
        return max(check.actual or 0 if check else 0, before or 0, 1)

    params, macs = larger("params"), larger("macs")
    changes = verdict.layer_changes if gate else verdict.reference_changes
    return group_changes(changes, lambda change: change_share(change, params, macs))


def layer_name(group: Repeated[LayerChange]) -> str:
    """``model.layers.{0..31}.mlp.up_proj ×32``, or one layer's path."""
    return group.path + (f" ×{group.count}" if group.count > 1 else "")


def figure_change(group: Repeated[LayerChange], name: str) -> str:
    """``old -> new`` of a layer; for a repeated block also the change of all its repeats:
    ``2.05k -> 3.07k each, +32.8k in all``."""
    change = group.first
    shown = f"{_side(change.old, name)} -> {_side(change.new, name)}"
    if group.count == 1 or name == BOUND:
        return shown
    total = group.count * change.delta(name)
    if not total:
        return f"{shown} each"
    return f"{shown} each, {'+' if total > 0 else ''}{metrics.get(name).format(total)} in all"


def layer_diff_lines(groups: list[Repeated[LayerChange]], limit: int = LAYER_DIFF_LIMIT) -> list[str]:
    if not groups:
        return []
    columns = diff_columns([item for group in groups for item in group.items])
    rows = [["layer", "change", *columns]]
    for group in groups[:limit]:
        kind = group.first
        rows.append(
            [f"{layer_name(group)} ({kind.type})", kind.kind, *(figure_change(group, name) for name in columns)]
        )
    lines = ["layers changed since the baseline:", *_columns(rows)]
    if len(groups) > limit:
        lines.append(f"  ... and {len(groups) - limit} more changed layers")
    return lines


def _side(entry: LayerEntry | None, name: str) -> str:
    """A changed layer's figure on one side; ``bound`` says what bounds its estimated time."""
    if entry is None:
        return "-"
    if name == BOUND:
        return str(entry.bound) if entry.bound is not None else "-"
    return metrics.get(name).format(entry.figures[name]) if name in entry.figures else "-"


def failure_text(verdict: Verdict, baseline_file: str = DEFAULT_BASELINE) -> str:
    """What a failing item shows: the diff against the budget and the committed baseline, the
    layers that changed (the biggest layers when over budget), and what to do next."""
    steps = [f"  next: {step}" for step in next_steps(verdict, baseline_file)]
    return "\n".join(problem_lines(verdict) + steps)


def problem_lines(verdict: Verdict, with_layers: bool = True) -> list[str]:
    """Why a model fails: the metrics against budget and baseline, uncounted ops, the layers."""
    if verdict.error is not None:
        return [f"{verdict.name} could not be profiled", f"  {verdict.error}"]
    problems = []
    if any(check.over_budget for check in verdict.checks):
        problems.append("exceeds its budget")
    if any(check.grew_too_much for check in verdict.checks):
        problems.append("grew more than max_increase allows over its baseline")
    if verdict.strict_failure:
        problems.append("ran ops that have no counting formula (strict = true)")
    lines = [f"{verdict.name} " + " and ".join(problems)]
    if verdict.environment_change:
        what = changed_with(verdict.environment_change)
        lines.append(f"  its {what} changed since its baseline entry: {', '.join(verdict.environment_change)}")
    rows = [["metric", "budget", "actual", "over"]]
    if verdict.has_baseline:
        rows[0][3:3] = ["baseline", "change"]
    for check in verdict.checks:
        if check.limit is None and check.increase is None:
            continue
        budget = value(check.metric, check.limit) if check.limit is not None else "-"  # not "no target", "not measured"
        row = [check.metric, budget, actual(verdict, check), _over(check)]
        if verdict.has_baseline:
            row[3:3] = [value(check.metric, check.baseline), change(check, gate=True)]
        rows.append(row)
    if len(rows) > 1:
        lines += _columns(rows)
    if verdict.strict_failure:
        lines.append("  uncounted ops: " + ", ".join(f"{op} x{count}" for op, count in verdict.uncounted_ops.items()))
    if verdict.status is Status.OVER and verdict.measured is not None:
        largest = largest_layers_line(verdict.measured)
        if largest:
            lines.append("  " + largest)
    if with_layers:
        lines += ["  " + line for line in layer_diff_lines(grouped_changes(verdict, gate=True))]
    return lines


def summary_lines(verdicts: list[Verdict], removed: list[str] | None = None, full: bool = True) -> list[str]:
    """The end-of-session summary: with ``full`` (``-v``) each metric as actual / budget, percent
    used, change and status, and the training steps; otherwise one line per model."""
    failing = sum(not verdict.passed for verdict in verdicts)
    broken = sum(verdict.error is not None for verdict in verdicts)
    if broken:
        first = f"{len(verdicts)} model(s), {broken} could not be profiled, {failing} failing"
    else:
        first = f"{len(verdicts)} model(s) profiled, " + (f"{failing} failing" if failing else "all within budget")
    lines = [first, *_columns(_full_rows(verdicts) if full else _model_rows(verdicts), indent="")]
    for verdict in verdicts:
        bounded = bounded_metrics(verdict.upper_bounds)
        if full and verdict.train is not None and verdict.measured is not None:
            step = train_step_lines(verdict.train, verdict.measured.totals, bounded)
            lines += [f"{verdict.name}: {step[0]}", *step[1:]]
        if verdict.serve is not None and verdict.measured is not None:
            step = (
                serve_step_lines(verdict.serve, verdict.measured.totals, bounded)
                if full
                else [fits_line(verdict.serve)]
            )
            lines += [f"{verdict.name}: {step[0]}", *step[1:]] if step[0] else []
        if verdict.uncounted_ops:
            ops = ", ".join(f"{op} x{count}" for op, count in verdict.uncounted_ops.items())
            lines.append(f"{verdict.name}: uncounted ops (no formula, not in MACs/FLOPs): {ops}")
        lines += [f"{verdict.name}: {line}" for line in upper_bound_lines(verdict.upper_bounds, verdict.name)]
        if verdict.environment_change:
            lines.append(
                f"{verdict.name}: its figures changed with its {changed_with(verdict.environment_change)} "
                f"({', '.join(verdict.environment_change)}) "
                "since its baseline entry"
            )
        if verdict.error is not None:
            lines.append(f"{verdict.name}: {verdict.error}")
    for name in removed or []:
        lines.append(f"{name}: in the baseline but no longer registered (removed; kept until --netbudget-update)")
    return lines


def _full_rows(verdicts: list[Verdict]) -> list[list[str]]:
    rows = [["model", "metric", "actual", "budget", "used", "vs baseline", "status"]]
    for verdict in verdicts:
        if verdict.status is Status.ERROR:
            rows.append([verdict.name, "-", "-", "-", "-", "-", Status.ERROR])
            continue
        for index, check in enumerate(verdict.checks):
            baseline = change(check) if verdict.has_reference else ("new" if index == 0 else "")
            rows.append(
                [
                    verdict.name if index == 0 else "",
                    check.metric,
                    actual(verdict, check),
                    value(check.metric, check.limit) if check.limit is not None else "-",
                    units.format_percent(check.used) if check.used is not None else "",
                    baseline,
                    (verdict.status if index == 0 else "") if check.status is CheckStatus.OK else check.status,
                ]
            )
    return rows


def closest_check(verdict: Verdict) -> MetricCheck | None:
    """The metric a one-line summary shows: a failing one (over budget first), else the one that
    uses most of its budget, else the first."""
    if not verdict.checks:
        return None
    ranked = sorted(
        verdict.checks,
        key=lambda check: (not check.over_budget, not check.grew_too_much, -(check.used or -1.0)),
    )
    return ranked[0]


def _model_rows(verdicts: list[Verdict]) -> list[list[str]]:
    rows = [["model", "status", "nearest its limit", "vs baseline"]]
    for verdict in verdicts:
        check = closest_check(verdict)
        if check is None:
            rows.append([verdict.name, verdict.status, "-", "-"])
            continue
        figure = f"{check.metric} {actual(verdict, check)}"
        used = check.used
        if check.limit is not None and used is not None:
            figure += f" / {value(check.metric, check.limit)} ({units.format_percent(used)})"
        rows.append([verdict.name, verdict.status, figure, change_cell(verdict) if verdict.has_reference else "new"])
    return rows


def change_cell(verdict: Verdict) -> str:
    """The one-line summary's change: the metric of this model that changed most, named
    (``macs -5.0k (-99.0%)``); ``=`` when none changed."""
    found = largest_change([verdict])
    return f"{found[1].metric} {change(found[1])}" if found else "="


def _surely_changed(check: MetricCheck) -> float:
    """How much a figure changed, relative to its old one. A MiB figure is stored to six
    decimals, so its change counts only as far as that rounding vouches for it (a tiny model's
    20 -> 24 bytes of activations reads +21%, no more than the +20% of its parameters)."""
    actual, reference = check.actual, check.reference
    if not reference or actual is None:
        return math.inf  # a figure that had none before (or 0) counts as the largest change
    rounding = MIB_STORED_RESOLUTION if metrics.get(check.metric).is_mib else 0
    return (abs(actual - reference) - rounding) / abs(reference)


#: How each status reads in the headline and in a failing model's section.
STATUS_WORDS = {
    Status.OVER: "over budget",
    Status.GREW: "grew past max_increase",
    Status.UNCOUNTED: "ran uncounted ops (strict)",
    Status.ERROR: "could not be profiled",
}


def headline(verdicts: list[Verdict], not_run: int = 0, stale: list[str] | None = None) -> str:
    """One line for the whole run; ``not_run``: registered models this run did not profile;
    ``stale``: how the committed baseline does not match the code."""
    counts = {status: sum(verdict.status is status for verdict in verdicts) for status in STATUS_WORDS}
    if not any(counts.values()):
        line = f"All {len(verdicts)} model(s) within budget"
    else:
        parts = [f"{count} {STATUS_WORDS[status]}" for status, count in counts.items() if count]
        line = ", ".join(parts) + f" (of {len(verdicts)} model(s))"
    line += f"; {not_run} registered model(s) not run" if not_run else ""
    if stale:
        line += (
            "; no baseline yet" if stale == [NO_BASELINE_YET] else "; the committed baseline does not match the code"
        )
    return line


def largest_change(verdicts: list[Verdict]) -> tuple[Verdict, MetricCheck] | None:
    """The metric that changed most against the reference across these models, relative to its
    old figure (see ``_surely_changed``); equal changes go to the first model and metric in
    table order. None when nothing changed."""
    changed = [
        (verdict, check)
        for verdict in verdicts
        for check in verdict.checks
        if check.reference is not None and check.actual is not None and check.actual != check.reference
    ]
    return max(changed, key=lambda pair: _surely_changed(pair[1]), default=None)


def largest_change_line(verdicts: list[Verdict], escape: Callable[[str], str] = str) -> str:
    """``largest change: <name> macs +25.3% (1.20G -> 1.50G)``, or '' when nothing changed."""
    found = largest_change(verdicts)
    if found is None:
        return ""
    verdict, check = found
    actual, reference = check.actual, check.reference
    percent = (
        units.format_percent((actual - reference) / reference, signed=True)
        if reference and actual is not None
        else "new"
    )
    figures = f"{value(check.metric, check.reference)} -> {value(check.metric, check.actual)}"
    return f"largest change: {escape(verdict.name)} {check.metric} {percent} ({figures})"


_STATUS_ICON = {
    Status.PASS: "✅ pass",
    Status.OVER: "❌ over",
    Status.GREW: "❌ grew",
    Status.ERROR: "❌ error",
    Status.UNCOUNTED: "❌ uncounted ops",
}


def in_report_order(verdicts: list[Verdict]) -> list[Verdict]:
    """Registered models first, then checks from tests, each by name."""
    return sorted(verdicts, key=lambda verdict: (verdict.result.origin != ORIGIN_PYPROJECT, verdict.name))


@dataclass
class Report:
    """What a report shows: the verdicts, the baseline entries no longer registered, what the
    changes are against, the baseline file, and (from ``netbudget merge``) conflicting shards."""

    verdicts: list[Verdict] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    compared_with: str | None = None
    baseline_file: str = DEFAULT_BASELINE
    conflicts: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # registered models a run without --netbudget skipped
    # How the committed baseline does not match this run, and whether that fails it (--netbudget-check-baseline).
    stale_baseline: list[str] = field(default_factory=list)
    baseline_checked: bool = False

    @property
    def headline(self) -> str:
        # a stale baseline that fails the run is in the headline; one that does not, in the line under it
        return headline(self.verdicts, len(self.not_run), self.stale_baseline if self.baseline_checked else None)

    def stale_line(self, escape: Callable[[str], str] = str) -> str:
        """The stale baseline, what to run about it, and whether it fails the job; '' when it matches."""
        if not self.stale_baseline:
            return ""
        verb = "Write" if self.stale_baseline == [NO_BASELINE_YET] else "Refresh"
        fails = " (this fails the job: --netbudget-check-baseline)" if self.baseline_checked else ""
        return (
            f"{escape(self.baseline_file)} does not match this code: {escape('; '.join(self.stale_baseline))}. "
            f"{verb} it with `pytest --netbudget --netbudget-update` and commit {escape(self.baseline_file)}{fails}."
        )

    @property
    def changed(self) -> bool:
        """Anything a reviewer should see: a model new, changed or failing, an entry removed, a
        conflict between shards (what the Action's ``comment-when: changed`` posts on)."""
        return bool(self.removed or self.conflicts or self.stale_baseline) or any(
            not verdict.passed or verdict.changed or not verdict.has_reference or bool(verdict.estimate_change)
            for verdict in self.verdicts
        )


def summary_columns(verdicts: list[Verdict]) -> list[str]:
    """The metrics of the summary table: the headline ones, a training or serving step's where one was
    profiled."""
    return [
        name
        for name in metrics.HEADLINE
        if not (metrics.get(name).train or metrics.get(name).serve)
        or any(verdict.check_for(name) for verdict in verdicts)
    ]


def summary_cell(verdict: Verdict, metric: str) -> tuple[str, str]:
    """A model's figure in the summary table, ``actual / budget (used%)``, and its change against the
    reference ('' when there is none to show)."""
    check = verdict.check_for(metric)
    if check is None:
        return "-", ""
    figure = actual(verdict, check)
    used = check.used
    if check.limit is not None and used is not None:
        figure += f" / {value(metric, check.limit)} ({units.format_percent(used, decimals=0)})"
    shown_change = change(check) if verdict.has_reference and check.reference is not None else ""
    return figure, shown_change


def markdown(report: Report) -> str:
    """A pull-request comment: headline, what it compares with, one table of models, then a
    section per new, changed or failing model (a failing one open, its layer changes first)."""
    verdicts, compared_with, conflicts = report.verdicts, report.compared_with, report.conflicts
    columns = summary_columns(verdicts)
    largest = largest_change_line(verdicts, md.code)
    lines = ["## netbudget", "", f"**{report.headline}**" + (f" · {largest}" if largest else ""), ""]
    stale = report.stale_line(md.inline)
    if stale:
        what, _, rest = stale.partition(": ")
        lines += [f"> {'❌' if report.baseline_checked else '⚠️'} **{what}:** {rest}", ""]
    if report.not_run:
        names = ", ".join(md.code(name) for name in report.not_run)
        lines += [
            f"> ⚠️ **not run:** {names}: registered in pyproject.toml, not profiled "
            "(this run was not given `--netbudget`)",
            "",
        ]
    if compared_with:
        lines += [f"Compared with {md.inline(compared_with)}.", ""]
    lines += [f"> ⚠️ **conflict:** {md.inline(conflict)}" for conflict in conflicts or []]
    lines += [""] if conflicts else []
    lines.append("| model | " + " | ".join(columns) + " | status |")
    lines.append("|---|" + "---|" * len(columns) + "---|")
    for verdict in verdicts:
        cells = []
        for metric in columns:
            figure, shown_change = summary_cell(verdict, metric)
            cells.append(figure + (f"<br>{shown_change}" if shown_change else ""))
        lines.append(f"| {md.code(verdict.name)} | " + " | ".join(cells) + f" | {_STATUS_ICON[verdict.status]} |")
    for name in report.removed:
        lines.append(f"| {md.code(name)} | " + " | ".join("-" for _ in columns) + " | removed |")
    lines.append("")
    fits = [(verdict.name, fits_line(verdict.serve)) for verdict in verdicts if verdict.serve is not None]
    # "does it still fit?" for every served model, changed or not (a section shows only changes)
    lines += [f"- {md.code(name)}: {md.inline(line)}" for name, line in fits if line]
    lines += [""] if lines[-1] != "" else []
    for verdict in verdicts:
        lines += _model_section(verdict, report.baseline_file)
    return fit_comment(lines)


#: GitHub refuses a pull-request comment longer than 65,536 characters; a report is cut 1,000
#: before that, leaving room for the lines a workflow appends (the Action's link to the HTML report).
COMMENT_LIMIT = 65_536 - 1_000
CUT_NOTE = (
    "\n\n*This report was cut at GitHub's limit of 65,536 characters for a comment: the full report is in "
    "the JSON report (the job's artifact).*\n"
)


def fit_comment(lines: list[str], limit: int = COMMENT_LIMIT) -> str:
    """The Markdown lines as one text GitHub accepts as a comment: when longer than ``limit``, the
    lines that fit (a line too long to show at all, a 100 kB name, is left out and said so), any
    open code block and ``<details>`` closed, and a note that says where the rest is."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    room = limit - len(CUT_NOTE)
    kept: list[str] = []
    size, fence, details = 0, "", 0
    for line in lines:
        if len(line) > room // 2:
            line = f"*(a line of {len(line):,} characters left out)*"
        after = _blocks_after(line, fence, details)
        closing = (len(after[0]) + 1 if after[0] else 0) + len("\n</details>") * after[1]
        if size + len(line) + 1 + closing > room:
            break
        kept.append(line)
        size += len(line) + 1
        fence, details = after
    return "\n".join([*kept, *([fence] if fence else []), *["</details>"] * details]) + CUT_NOTE


def _blocks_after(line: str, fence: str, details: int) -> tuple[str, int]:
    """The code block (its fence) and the number of ``<details>`` open after ``line``."""
    if fence:
        return ("" if line == fence else fence), details
    if line.startswith("```"):
        return line[: len(line) - len(line.lstrip("`"))], details
    if line.startswith("<details"):
        return fence, details + 1
    if line == "</details>":
        return fence, details - 1
    return fence, details


def besides_the_model(
    verdict: Verdict, escape: Callable[[str], str], code: Callable[[str], str]
) -> list[tuple[str, str]]:
    """What changed besides the model since the entry it is compared with, each as (what, the rest
    of the sentence, escaped): its environment or settings (its figures changed with them), or the
    target its latency was estimated on (not compared then). The Markdown and the HTML say these."""
    notes = []
    if verdict.environment_change:
        notes.append(
            (
                f"{changed_with(verdict.environment_change)} changed",
                f" since its baseline entry: {escape(', '.join(verdict.environment_change))} "
                "(its figures changed with it)",
            )
        )
    if verdict.estimate_change:
        notes.append(
            (
                "estimated latency not compared",
                f": its target changed, {escape(verdict.estimate_change)} (another target or table, not growth; "
                f"{code('pytest --netbudget --netbudget-update')} records the new estimate)",
            )
        )
    return notes


def _section_title(verdict: Verdict) -> str:
    if not verdict.passed:
        return STATUS_WORDS[verdict.status]
    if not verdict.has_reference:
        return "new model"
    if verdict.changed:
        return "changed"
    if verdict.uncounted_ops:
        return "uncounted ops"
    return "upper bounds" if verdict.upper_bounds else "target changed"


def _model_section(verdict: Verdict, baseline_file: str) -> list[str]:
    """The collapsible block of one new, changed or failing model, or one that ran uncounted ops,
    has figures that are only upper bounds or whose estimate's target changed; none for an
    unchanged, exact pass."""
    failing = not verdict.passed
    shown = verdict.uncounted_ops or verdict.upper_bounds or verdict.estimate_change
    if not (failing or verdict.changed or not verdict.has_reference or shown):
        return []
    title = _section_title(verdict)
    lines = [f"<details{' open' if failing else ''}><summary>{md.code(verdict.name)}: {title}</summary>", ""]
    if verdict.error is not None:
        return [*lines, *md.fence([verdict.error]), "", "</details>", ""]
    lines += [
        f"- **{what}**{rest}" for what, rest in besides_the_model(verdict, md.inline, lambda command: f"`{command}`")
    ]
    lines += [f"- **next:** {step}" for step in next_steps(verdict, baseline_file, md.inline)]
    if verdict.uncounted_ops:
        ops = ", ".join(f"{md.code(op)} ×{count}" for op, count in sorted(verdict.uncounted_ops.items()))
        lines.append(f"- **uncounted ops** (no formula, not in MACs/FLOPs): {ops}")
    for bound in verdict.upper_bounds:
        figures = ", ".join(md.code(name) for name in bound.metrics)
        layers = ", ".join(md.code(path or f"({verdict.name})") for path in bound.layers)
        lines.append(
            f"- **{UPPER_BOUND_MARK} upper bound** ({figures}; the exact figure is at most this) in {layers}: "
            f"{md.inline(bound.reason)}"
        )
    lines += [""] if lines[-1] != "" else []
    groups = grouped_changes(verdict)
    if groups:
        columns = diff_columns(verdict.reference_changes)
        header = "| layer | change | " + " | ".join(columns) + " |"
        lines += [header, "|---|---|" + "---|" * len(columns)]
        for group in groups[:LAYER_DIFF_LIMIT]:
            figures = " | ".join(figure_change(group, name) for name in columns)
            repeats = f" ×{group.count}" if group.count > 1 else ""
            lines.append(
                f"| {md.code(group.path)}{repeats} ({md.inline(group.first.type)}) | {group.first.kind} | {figures} |"
            )
        if len(groups) > LAYER_DIFF_LIMIT:
            lines.append(f"| ... | {len(groups) - LAYER_DIFF_LIMIT} more |" + " |" * len(columns))
        lines.append("")
    if verdict.failures or verdict.strict_failure:
        lines += [*md.fence(problem_lines(verdict, with_layers=False)), ""]
    if verdict.measured is None:
        return [*lines, "</details>", ""]
    bounded = bounded_metrics(verdict.upper_bounds)
    if verdict.train is not None:
        lines += [*md.fence(train_step_lines(verdict.train, verdict.measured.totals, bounded)), ""]
    if verdict.serve is not None:
        lines += [*md.fence(serve_step_lines(verdict.serve, verdict.measured.totals, bounded)), ""]
    lines += mermaid_charts(layer_tree(verdict.measured, verdict.reference_changes))
    return [*lines, "</details>", ""]


def layer_tree(measured: BaselineEntry, changes: list[LayerChange]) -> ModuleNode:
    """The module tree of a model's measured layers, with the figures before ``changes`` of the
    layers that changed (what the pictures draw)."""
    layers = {name: (row.type, row.figures) for name, row in measured.layers.items()}
    before = [(change.path, change.type, change.old.figures if change.old else None) for change in changes]
    return module_tree(layers, before)


def mermaid_charts(tree: ModuleNode) -> list[str]:
    """Where the budget goes: pie charts of MACs and params, split where the model first branches,
    a repeated block (the decoder layers) one slice."""
    lines = []
    for metric, title in (("macs", "MACs"), ("params", "Params")):
        parts = slices(tree, metric)
        if not parts:
            continue
        chart = [
            f"pie showData title {title} by block",
            *(
                f'    "{md.mermaid_label(part.label + (f" ×{part.count}" if part.count > 1 else ""))}" : {part.value}'
                for part in parts
            ),
        ]
        lines += [*md.fence(chart, "mermaid"), ""]
    return lines


def to_json(report: Report) -> str:
    """The report as JSON: one record per model (``Verdict.to_dict``), which ``netbudget merge``
    reads back whole and ``--netbudget-compare`` reads as a baseline entry."""
    document = {
        "schema": REPORT_SCHEMA,
        "kind": REPORT_KIND,
        "generator": f"pytest-netbudget {__version__}",
        "headline": report.headline,
        "compared_with": report.compared_with,
        "baseline_file": report.baseline_file,
        "removed": list(report.removed),
        "not_run": list(report.not_run),
        "stale_baseline": list(report.stale_baseline),
        "baseline_checked": report.baseline_checked,
        "conflicts": list(report.conflicts),
        "changed": report.changed,
        "models": {verdict.name: verdict.to_dict() for verdict in sorted(report.verdicts, key=lambda v: v.name)},
    }
    # Not sort_keys: a model's layers keep the model's order, which its charts follow.
    # allow_nan=False: a NaN or infinity is no JSON a reader takes back; every figure is checked finite.
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


class ReportError(ValueError):
    """A file given to ``netbudget merge`` is not a report it can merge; the message names it."""


def merge_reports(documents: dict[str, Any]) -> Report:
    """One report from JSON reports (file name -> parsed JSON) of shards or matrix jobs.

    A model in several reports with the same result appears once; with different results it is
    a conflict: the first report's is kept and the conflict is named, never silently overwritten.
    """
    read: dict[str, tuple[Report, dict[str, Verdict]]] = {}
    for source, document in documents.items():
        if not isinstance(document, dict) or document.get("kind") != REPORT_KIND:
            raise ReportError(f"{source}: not a netbudget JSON report (--netbudget-report=PATH.json writes one)")
        try:
            models = models_table(
                document, source, (REPORT_SCHEMA,), "write the report again with this version (--netbudget-report)"
            )
            read[source] = (
                _report_fields(document),
                {name: Verdict.from_dict(name, record) for name, record in models.items()},
            )
        except BaselineError as error:
            raise ReportError(str(error)) from None
        except RecordError as error:
            raise ReportError(f"{source}: {error}") from None
    first = next(iter(read.values()), (Report(), {}))[0]
    merged = Report(compared_with=first.compared_with, baseline_file=first.baseline_file)
    seen: dict[str, tuple[str, Verdict]] = {}
    for source, (fields, verdicts) in read.items():
        merged.removed += [name for name in fields.removed if name not in merged.removed]
        merged.not_run += [name for name in fields.not_run if name not in merged.not_run]
        merged.stale_baseline += [problem for problem in fields.stale_baseline if problem not in merged.stale_baseline]
        merged.baseline_checked = merged.baseline_checked or fields.baseline_checked
        for name, verdict in verdicts.items():
            if name not in seen:
                seen[name] = (source, verdict)
                merged.verdicts.append(verdict)
            elif seen[name][1].to_dict() != verdict.to_dict():
                merged.conflicts.append(_conflict(name, seen[name], (source, verdict)))
    merged.verdicts = in_report_order(merged.verdicts)
    merged.removed.sort()
    merged.not_run = sorted(set(merged.not_run) - {verdict.name for verdict in merged.verdicts})
    return merged


def _report_fields(document: dict[str, Any]) -> Report:
    """A JSON report's own fields besides its models (what it compared with, the lists of
    removed, not-run models and stale-baseline findings), each checked: ``RecordError`` names
    the one that is wrong. A report written before a field existed lacks it: the default."""
    compared_with = document.get("compared_with")
    return Report(
        compared_with=None if compared_with is None else record_text(compared_with, "compared_with"),
        baseline_file=record_text(document.get("baseline_file", DEFAULT_BASELINE), "baseline_file"),
        removed=record_texts(document.get("removed", []), "removed"),
        not_run=record_texts(document.get("not_run", []), "not_run"),
        stale_baseline=record_texts(document.get("stale_baseline", []), "stale_baseline"),
        baseline_checked=record_flag(document.get("baseline_checked", False), "baseline_checked"),
    )


def _conflict(name: str, first: tuple[str, Verdict], other: tuple[str, Verdict]) -> str:
    (source, verdict), (other_source, other_verdict) = first, other
    totals = verdict.measured.totals if verdict.measured else {}
    other_totals = other_verdict.measured.totals if other_verdict.measured else {}
    differ = [
        f"{metric} {value(metric, totals.get(metric))} vs {value(metric, other_totals.get(metric))}"
        for metric in metrics.NAMES
        if totals.get(metric) != other_totals.get(metric)
    ]
    what = ", ".join(differ) if differ else f"status {verdict.status} vs {other_verdict.status}"
    return f"{name} differs between {source} and {other_source} ({what}); this report shows {source}'s"
