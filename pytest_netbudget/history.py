"""A model's figures across the commits that changed its committed baseline, read with the ``git``
binary (no server, no CI artifacts): what ``netbudget history`` charts and writes.

The baseline file is followed across renames (``git log --follow``) along the first-parent line of
the checked-out branch (a merged pull request is one point, at its merge). A commit whose file does
not parse is skipped and listed; a model exists from the commit that added it to the one that
removed it; a shallow clone says how far back it reaches and how to fetch more.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import metrics
from .baseline import BaselineError, parse

#: How github-action-benchmark names a series where smaller is better (its "custom" input format).
TOOL = "customSmallerIsBetter"
#: The benchmark-data name under which ``--json`` files every series.
SUITE = "netbudget"


class HistoryError(Exception):
    """History cannot be read (no git, not a repository, an unknown revision); the message says why."""


@dataclass(frozen=True)
class Commit:
    """A commit that changed the baseline file, and the file's path there."""

    sha: str
    short: str
    timestamp: str  # committer date, ISO 8601
    epoch: int  # the same, seconds since 1970
    subject: str
    author: str
    email: str
    path: str

    @property
    def date(self) -> str:
        return self.timestamp[:10]

    @property
    def label(self) -> str:
        return f"{self.short} {self.date} {self.subject}"


@dataclass
class History:
    """Every commit whose baseline was read (oldest first) with each model's totals there, and what
    could not be read."""

    baseline: str
    repository_url: str = ""  # https://github.com/OWNER/REPO when origin is on GitHub
    commits: list[Commit] = field(default_factory=list)
    totals: list[dict[str, dict[str, float]]] = field(default_factory=list)  # per commit: model -> totals
    skipped: list[tuple[Commit, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """Every model that any commit's baseline has, in the order they first appear."""
        return list(dict.fromkeys(name for point in self.totals for name in point))

    def series(self, model: str, metric: str) -> list[float | None]:
        """The figure at each commit; None where the model (or the metric) did not exist."""
        return [point.get(model, {}).get(metric) for point in self.totals]

    def metrics_of(self, model: str) -> list[str]:
        """The metrics any commit recorded for ``model``, in the metric table's order."""
        seen = {name for point in self.totals for name in point.get(model, {})}
        return [name for name in metrics.NAMES if name in seen]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except OSError as error:
        raise HistoryError(f"netbudget history reads the baseline with the git command: {error.strerror}") from None


_RECORD = "\x1e"
_FIELD = "\x1f"
_FORMAT = _RECORD + _FIELD.join(("%H", "%h", "%cI", "%ct", "%s", "%an", "%ae"))


def read_history(baseline_file: Path, since: str | None = None) -> History:
    """Each first-parent commit that changed ``baseline_file`` (following renames), oldest first;
    only those after ``since`` when given (``since..HEAD``)."""
    where = baseline_file.parent if baseline_file.parent.is_dir() else Path.cwd()
    top = _git(where, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise HistoryError(f"{where} is not in a git repository ({top.stderr.strip()})")
    root = Path(top.stdout.strip())
    try:
        inside = Path(os.path.realpath(baseline_file)).relative_to(Path(os.path.realpath(root))).as_posix()
    except ValueError:
        raise HistoryError(f"the baseline {baseline_file} is outside the git repository {root}") from None
    shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    revisions = ["HEAD"]
    if since:
        if _git(root, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}").returncode != 0:
            fetch = " (this clone is shallow: git fetch --unshallow, or actions/checkout with fetch-depth: 0)"
            raise HistoryError(f"--since {since}: no such commit, branch or tag in {root}{fetch if shallow else ''}")
        revisions = [f"{since}..HEAD"]
    log = _git(
        root,
        "log",
        "--follow",
        "--first-parent",
        "--diff-merges=first-parent",
        "--name-status",
        f"--format={_FORMAT}",
        *revisions,
        "--",
        inside,
    )
    if log.returncode != 0:
        raise HistoryError(f"git log of {inside} failed: {log.stderr.strip()}")
    history = History(inside, _github_url(root))
    previous_text = None
    for commit, status in reversed(_commits(log.stdout, inside)):
        if status.startswith("D"):
            history.notes.append(f"{commit.short} deleted {commit.path}")
            previous_text = None
            continue
        shown = _git(root, "show", f"{commit.sha}:{commit.path}")
        if shown.returncode != 0:
            history.skipped.append((commit, f"git show failed: {shown.stderr.strip()}"))
            continue
        if status.startswith("R"):
            history.notes.append(f"{commit.short} renamed the baseline to {commit.path}")
        if shown.stdout == previous_text:
            continue  # renamed, figures unchanged: no new point
        previous_text = shown.stdout
        try:
            entries = parse(shown.stdout, f"{commit.short}:{commit.path}")
        except BaselineError as error:
            history.skipped.append((commit, str(error)))
            continue
        history.commits.append(commit)
        history.totals.append({name: dict(entry.totals) for name, entry in entries.items()})
    if shallow:
        first = history.commits[0].short if history.commits else "the first fetched commit"
        history.notes.append(
            f"this clone is shallow: history stops at {first}; fetch the rest with `git fetch --unshallow` "
            "(in GitHub Actions: actions/checkout with fetch-depth: 0)"
        )
    return history


def _commits(log: str, path: str) -> list[tuple[Commit, str]]:
    """(commit, its name-status letter) from ``git log``'s output, newest first."""
    found = []
    for record in log.split(_RECORD)[1:]:
        header, _, changes = record.partition("\n")
        sha, short, timestamp, epoch, subject, author, email = header.split(_FIELD)
        status, where, before = "M", path, path
        for line in changes.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and re.fullmatch(r"[ACDMRT]\d*", parts[0]):
                status, where, before = parts[0], parts[-1], parts[1]
                break
        found.append((Commit(sha, short, timestamp, int(epoch), subject, author, email, where), status))
        path = before  # older commits know the file by its name before a rename
    return found


def select(history: History, models: list[str], wanted_metrics: list[str]) -> dict[str, list[str]]:
    """Model -> the metrics to chart: the models asked for (all by default) and the metrics asked
    for (every metric a model recorded by default). Raises ``HistoryError`` naming what is unknown."""
    known = history.models
    unknown = [name for name in models if name not in known]
    if unknown:
        raise HistoryError(
            f"no commit's {history.baseline} has model(s) {', '.join(unknown)} (it has: {', '.join(known) or 'none'})"
        )
    bad = [name for name in wanted_metrics if name not in metrics.BY_NAME]
    if bad:
        raise HistoryError(f"unknown metric(s) {', '.join(bad)}; metrics: {', '.join(metrics.NAMES)}")
    chosen = {}
    for model in models or known:
        recorded = history.metrics_of(model)
        chosen[model] = [name for name in (wanted_metrics or recorded) if name in recorded]
    return chosen


def unit(metric: str) -> str:
    """The unit github-action-benchmark prints beside a value."""
    kind = metrics.get(metric).unit
    return metric if kind == "count" else kind


def benchmark_data(history: History, chosen: dict[str, list[str]]) -> dict[str, Any]:
    """The history as github-action-benchmark's data file (what ``external-data-json-path`` and its
    chart page read): one entry per commit, each series a ``customSmallerIsBetter`` result
    (``name``, ``unit``, ``value``, ``extra``)."""
    repository_url = history.repository_url
    entries = []
    for commit, point in zip(history.commits, history.totals):
        benches = [
            {"name": f"{model} {metric}", "unit": unit(metric), "value": point[model][metric], "extra": commit.label}
            for model, names in chosen.items()
            if model in point
            for metric in names
            if metric in point[model]
        ]
        person = {"name": commit.author, "email": commit.email}
        entries.append(
            {
                "commit": {
                    "author": person,
                    "committer": person,
                    "id": commit.sha,
                    "message": commit.subject,
                    "timestamp": commit.timestamp,
                    "url": f"{repository_url}/commit/{commit.sha}" if repository_url else "",
                },
                "date": commit.epoch * 1000,
                "tool": TOOL,
                "benches": benches,
            }
        )
    newest = history.commits[-1].epoch * 1000 if history.commits else 0
    return {"lastUpdate": newest, "repoUrl": repository_url, "entries": {SUITE: entries}}


def _github_url(root: Path) -> str:
    """``https://github.com/OWNER/REPO`` when the ``origin`` remote is on GitHub, else ''."""
    remote = _git(root, "remote", "get-url", "origin").stdout.strip()
    found = re.match(r"(?:https://|git@|ssh://git@)github\.com[:/]([^/]+/[^/]+?)(?:\.git)?/?$", remote)
    return f"https://github.com/{found.group(1)}" if found else ""


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
