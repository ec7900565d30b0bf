"""``netbudget history --html``: each model's metrics over the commits that changed the baseline, as
line charts drawn here in SVG (no script), every point labelled with its commit's short hash, date
and subject. Commit subjects and model names are the repository's text: inert, as in every report."""

from __future__ import annotations

from . import metrics
from .history import History
from .html_page import code, page, text

WIDTH, HEIGHT = 880, 230
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 14, 44
#: At most this many commit labels under a chart; the others are in each point's tooltip.
LABELS = 14


def history_html(history: History, chosen: dict[str, list[str]]) -> str:
    commits = history.commits
    body = ["<h1>netbudget history</h1>"]
    if commits:
        span = f"{commits[0].date} to {commits[-1].date}"
        body.append(f'<p class="headline">{len(commits)} commit(s) changed {code(history.baseline)}, {text(span)}</p>')
    else:
        body.append(f'<p class="headline">No commit with a readable {code(history.baseline)} was found.</p>')
    body += [f'<p class="note">{text(note)}</p>' for note in history.notes]
    if history.skipped:
        body += ["<h3>Skipped: the baseline does not parse there</h3>", "<ul>"]
        body += [
            f"<li>{code(commit.short)} {text(commit.subject)}: {text(why)}</li>" for commit, why in history.skipped
        ]
        body.append("</ul>")
    for model, names in chosen.items():
        body += [f"<h2>{code(model)}</h2>", *_presence(history, model)]
        for metric in names:
            body += _chart(history, model, metric)
    body += ["<h2>Commits</h2>", "<table>", "<tr><th>commit</th><th>date</th><th>subject</th><th>baseline</th></tr>"]
    body += [
        f"<tr><td>{code(commit.short)}</td><td>{text(commit.date)}</td><td>{text(commit.subject)}</td>"
        f"<td>{code(commit.path)}</td></tr>"
        for commit in reversed(commits)
    ]
    body.append("</table>")
    return page("netbudget history", body)


def _presence(history: History, model: str) -> list[str]:
    """When the model came and went, if not there all along."""
    present = [model in point for point in history.totals]
    events = [
        f"{'added' if present[index] else 'removed'} in {history.commits[index].short}"
        for index in range(1, len(present))
        if present[index] != present[index - 1]
    ]
    return [f'<p class="note">{text("; ".join(events))}</p>'] if events else []


def _chart(history: History, model: str, metric: str) -> list[str]:
    series = history.series(model, metric)
    known = [(index, figure) for index, figure in enumerate(series) if figure is not None]
    if not known:
        return []
    shown = metrics.get(metric)
    first, last = known[0][1], known[-1][1]
    change = shown.format_change(first, last)
    title = f"{metric}: {shown.format(last)} now, {change} since {history.commits[known[0][0]].short}"
    top = max(figure for _, figure in known) * 1.08 or 1.0
    steps = max(len(series) - 1, 1)

    def x(index: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (index / steps if len(series) > 1 else 0.5)

    def y(figure: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - figure / top)

    svg = [f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">']
    for fraction in (0, 0.5, 1):
        level = top / 1.08 * fraction
        svg.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#d0d7de"/>'
            f'<text x="{LEFT - 6}" y="{y(level) + 4:.1f}" text-anchor="end">{text(shown.format(level))}</text>'
        )
    for run in _runs(known):
        points = " ".join(f"{x(index):.1f},{y(figure):.1f}" for index, figure in run)
        svg.append(f'<polyline points="{points}" fill="none" stroke="#0969da" stroke-width="2"/>')
    previous = None
    for index, figure in known:
        commit = history.commits[index]
        delta = f" ({shown.format_change(previous, figure)})" if previous is not None else ""
        svg.append(
            f'<circle cx="{x(index):.1f}" cy="{y(figure):.1f}" r="4" fill="#0969da">'
            f"<title>{text(commit.label)}: {text(shown.format(figure))}{text(delta)}</title></circle>"
        )
        previous = figure
    every = -(-len(series) // LABELS)
    room = max(int((WIDTH - LEFT - RIGHT) / steps * every / 6.2) - 1, 8)  # characters between two labels
    for index, commit in enumerate(history.commits):
        if index % every and index != len(series) - 1:
            continue
        anchor = "start" if index == 0 and len(series) > 1 else "end" if index == len(series) - 1 > 0 else "middle"
        subject = commit.subject if len(commit.subject) <= room else commit.subject[: room - 1] + "\u2026"
        svg.append(
            f'<text x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="{anchor}">'
            f'<tspan x="{x(index):.1f}">{text(commit.short)} {text(commit.date[5:])}</tspan>'
            f'<tspan x="{x(index):.1f}" dy="14">{text(subject)}</tspan></text>'
        )
    return [f"<h3>{text(title)}</h3>", "".join(svg) + "</svg>"]


def _runs(known: list[tuple[int, float]]) -> list[list[tuple[int, float]]]:
    """Consecutive points, so that a line never crosses commits where the model did not exist."""
    runs: list[list[tuple[int, float]]] = []
    for index, figure in known:
        if runs and runs[-1][-1][0] == index - 1:
            runs[-1].append((index, figure))
        else:
            runs.append([(index, figure)])
    return runs
