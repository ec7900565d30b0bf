"""The HTML report (``--netbudget-report=PATH.html``, ``netbudget merge --html``): one offline file
with the summary table, and per model a zoomable treemap of its module tree, the layers that
changed, the memory of a training or serving step as stacked bars, and the uncounted ops.

Tables and bars are written here, every piece of model text through :func:`html_page.text`; the
treemap is drawn in the browser by ``assets/treemap.js`` from a JSON tree made here, whose labels
the script only ever sets as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import metrics, reports
from .budgets import MetricCheck, Verdict
from .html_page import asset, code, page, text, visible
from .layer_table import PART_NAMES, fits_line
from .module_tree import ModuleNode
from .results import BaselineEntry, MemoryPart, ServePart, Status

#: Colours of the parts of a memory breakdown, in the order parts are listed.
PART_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


def html_report(report: reports.Report) -> str:
    verdicts = report.verdicts
    body = ["<h1>netbudget</h1>", f'<p class="headline">{text(report.headline)}</p>']
    largest = reports.largest_change_line(verdicts, text)
    if largest:
        body.append(f'<p class="headline">{largest}</p>')
    body += _report_notes(report)
    if report.compared_with:
        body.append(f'<p class="note">Compared with {text(report.compared_with)}.</p>')
    body += [f'<p class="grew">Conflict: {text(conflict)}</p>' for conflict in report.conflicts]
    body += _summary_table(report)
    models = []
    for index, verdict in enumerate(verdicts):
        section, tree = _model_section(verdict, f"model-{index}", report.baseline_file)
        body += section
        if tree is not None:
            models.append(tree)
    return page("netbudget report", body, {"models": models}, asset("treemap.js"))


def _report_notes(report: reports.Report) -> list[str]:
    """What the Markdown puts above its table: a baseline that does not match the code (and the
    command that refreshes it), and the registered models this run did not profile."""
    notes = []
    stale = report.stale_line(text)
    if stale:
        what, _, rest = stale.partition(": ")
        notes.append(f'<p class="{"grew" if report.baseline_checked else "note"}"><strong>{what}:</strong> {rest}</p>')
    if report.not_run:
        names = ", ".join(code(name) for name in report.not_run)
        notes.append(
            f'<p class="note"><strong>not run:</strong> {names}: registered in pyproject.toml, not profiled '
            "(this run was not given <code>--netbudget</code>)</p>"
        )
    return notes


def _status(verdict: Verdict) -> str:
    word = "pass" if verdict.status is Status.PASS else reports.STATUS_WORDS[verdict.status]
    return f'<span class="status {"pass" if verdict.passed else "fail"}">{text(word)}</span>'


def _summary_table(report: reports.Report) -> list[str]:
    columns = reports.summary_columns(report.verdicts)
    rows = ["<table>", "<tr><th>model</th><th>status</th>" + "".join(f"<th>{name}</th>" for name in columns) + "</tr>"]
    for index, verdict in enumerate(report.verdicts):
        cells = []
        for metric in columns:
            figure, shown_change = reports.summary_cell(verdict, metric)
            cell = text(figure)
            if shown_change:
                kind = _direction(verdict.check_for(metric))
                cell += f'<br><span class="{kind}">{text(shown_change)}</span>'
            cells.append(f'<td class="figure">{cell}</td>')
        link = f'<a href="#model-{index}">{code(verdict.name)}</a>'
        rows.append(f"<tr><td>{link}</td><td>{_status(verdict)}</td>{''.join(cells)}</tr>")
    for name in report.removed:
        rows.append(f"<tr><td>{code(name)}</td><td>removed</td>" + "<td>-</td>" * len(columns) + "</tr>")
    return [*rows, "</table>"]


def _model_section(verdict: Verdict, anchor: str, baseline_file: str) -> tuple[list[str], dict[str, Any] | None]:
    """The section of one model, and its tree for the treemap (None when it was not profiled)."""
    lines = [f'<section class="model" id="{anchor}">', f"<h2>{code(verdict.name)} {_status(verdict)}</h2>"]
    lines.append(f'<p class="note">from {text(verdict.result.origin)}</p>')
    if verdict.error is not None or verdict.measured is None:
        return [*lines, f"<pre>{text(verdict.error)}</pre>", "</section>"], None
    lines += _besides_the_model(verdict)
    steps = reports.next_steps(verdict, baseline_file)
    if steps:
        lines += ["<ul>", *(f"<li>next: {text(step)}</li>" for step in steps), "</ul>"]
    if verdict.failures or verdict.strict_failure:
        problems = "\n".join(reports.problem_lines(verdict, with_layers=False))
        lines.append(f'<pre class="problems">{text(problems)}</pre>')
    tree = _tree(verdict, anchor)
    lines += [
        "<h3>Where it goes</h3>",
        '<div class="controls"><label>area <select class="metric"></select></label>',
        '<nav class="crumbs" aria-label="zoom"></nav></div>',
        '<p class="where"></p>',
        '<div class="treemap"></div>',
        '<ul class="legend treemap-legend"></ul>',
    ]
    lines += _layer_diff(verdict)
    lines += _memory_bars(verdict)
    if verdict.uncounted_ops:
        lines += ["<h3>Uncounted ops</h3>", '<p class="note">ran, but no formula counts them: not in MACs or FLOPs</p>']
        lines += ["<table>", "<tr><th>op</th><th>calls</th></tr>"]
        lines += [
            f'<tr><td>{code(op)}</td><td class="figure">{count}</td></tr>'
            for op, count in sorted(verdict.uncounted_ops.items())
        ]
        lines.append("</table>")
    lines += _upper_bounds(verdict)
    return [*lines, "</section>"], tree


def _besides_the_model(verdict: Verdict) -> list[str]:
    """What changed besides the model since the entry it is compared with: its environment or its
    settings (its figures changed with them), or the target its latency was estimated on (not
    compared then)."""
    return [
        f'<p class="note"><strong>{what}</strong>{rest}</p>'
        for what, rest in reports.besides_the_model(verdict, text, code)
    ]


def _upper_bounds(verdict: Verdict) -> list[str]:
    """The figures (marked ≤ in the summary) that the device could not give exactly, and why."""
    if not verdict.upper_bounds:
        return []
    lines = ["<h3>Upper bounds</h3>", '<p class="note">the exact figure is at most the one shown, marked ≤</p>']
    lines += ["<table>", "<tr><th>figures</th><th>layers</th><th>why</th></tr>"]
    for bound in verdict.upper_bounds:
        figures = ", ".join(code(name) for name in bound.metrics)
        layers = ", ".join(code(path or f"({verdict.name})") for path in bound.layers)
        lines.append(f"<tr><td>{figures}</td><td>{layers}</td><td>{text(bound.reason)}</td></tr>")
    return [*lines, "</table>"]


def _direction(check: MetricCheck | None) -> str:
    """The class of a change: grew, shrank, or a note (no figure to compare)."""
    actual, reference = (check.actual, check.reference) if check is not None else (None, None)
    if actual is None or reference is None:
        return "note"
    return "grew" if actual > reference else "shrank" if actual < reference else "note"


def _tree(verdict: Verdict, anchor: str) -> dict[str, Any]:
    root = reports.layer_tree(verdict.measured or BaselineEntry(verdict.result.origin), verdict.reference_changes)
    names = [name for name in metrics.LAYER_DIFF if root.total(name) > 0]
    tree = _node(root, names)
    tree["n"] = visible(verdict.name)  # the zoom path starts at the model's name
    return {"id": anchor, "metrics": names, "compared": verdict.has_reference, "tree": tree}


def _node(node: ModuleNode, names: list[str], own_only: bool = False) -> dict[str, Any]:
    if own_only:
        now = [node.own.get(name, 0) for name in names]
        before = [node.own_old.get(name, 0) for name in names]
    else:
        now = [node.total(name) for name in names]
        before = [node.total_old(name) for name in names]
    result: dict[str, Any] = {
        "n": "(own)" if own_only else visible(node.name),
        "p": visible(node.path),
        "t": visible(node.type),
        "v": now,
        "o": before,
        "s": [metrics.get(name).format(figure) for name, figure in zip(names, now)],
        "d": [metrics.get(name).format_change(old, new) for name, old, new in zip(names, before, now)],
    }
    if not own_only:
        children = [_node(child, names) for child in node.children if any(child.total(name) for name in names)]
        if children and any(node.own.get(name) for name in names):
            children.insert(0, _node(node, names, own_only=True))
        result["c"] = children
    return result


def _layer_diff(verdict: Verdict) -> list[str]:
    if not verdict.reference_changes:
        return []
    columns = reports.diff_columns(verdict.reference_changes)
    lines = ["<h3>Layers changed</h3>", "<table>"]
    lines.append("<tr><th>layer</th><th>type</th><th>change</th>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    for group in reports.grouped_changes(verdict):
        count = f" ×{group.count}" if group.count > 1 else ""
        cells = "".join(f'<td class="figure">{text(reports.figure_change(group, name))}</td>' for name in columns)
        lines.append(
            f"<tr><td>{code(group.path)}{count}</td><td>{code(group.first.type)}</td>"
            f"<td>{text(group.first.kind)}</td>{cells}</tr>"
        )
    return [*lines, "</table>"]


def _memory_bars(verdict: Verdict) -> list[str]:
    """The memory of a training step at its peak and of a serving step, each as one stacked bar
    of its parts with their MiB."""
    bars = []
    if verdict.train is not None:
        step = verdict.train
        title = f"Training step ({step.optimizer}): memory at its peak, in the {step.peak_phase}"
        bars += _stacked_bar(title, step.memory_mb)
    if verdict.serve is not None:
        serve = verdict.serve
        title = (
            f"Serving step (context {serve.context:,}, batch {serve.batch}): weights, KV cache and decode activations"
        )
        bars += _stacked_bar(title, serve.memory_mb)
        fits = fits_line(serve)
        bars += [f'<p class="note">{text(fits)}</p>'] if fits else []
    return ["<h3>Memory</h3>", *bars] if bars else []


def _stacked_bar(title: str, memory_mb: Mapping[MemoryPart, float] | Mapping[ServePart, float]) -> list[str]:
    parts = [(PART_NAMES.get(part, str(part)), figure) for part, figure in memory_mb.items()]
    total = sum(figure for _, figure in parts)
    lines = [f"<p>{text(title)}: {total:.3f} MiB</p>"]
    if total <= 0:
        return lines
    bar = ['<svg class="bar" viewBox="0 0 1000 26" preserveAspectRatio="none" role="img">']
    legend = ['<ul class="legend">']
    left = 0.0
    for index, (name, figure) in enumerate(parts):
        colour = PART_COLOURS[index % len(PART_COLOURS)]
        width = figure / total * 1000
        bar.append(
            f'<rect x="{left:.2f}" y="0" width="{width:.2f}" height="26" fill="{colour}">'
            f"<title>{text(name)} {figure:.3f} MiB</title></rect>"
        )
        left += width
        swatch = f'<svg class="swatch" viewBox="0 0 12 12"><rect width="12" height="12" fill="{colour}"/></svg>'
        legend.append(f"<li>{swatch}{text(name)} {figure:.3f} MiB ({figure / total * 100:.1f}%)</li>")
    return [*lines, "".join(bar) + "</svg>", *legend, "</ul>"]
