"""The baseline file (validated, stable JSON) and the per-layer diff against it.

The file is committed next to pyproject.toml, so it is written for people to read
in a pull request: sorted keys, one layer per line, nothing that changes between
two identical runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from . import files, metrics
from .budgets import LayerChange, stored_totals
from .results import ChangeKind, Profile

SCHEMA = 1


class BaselineError(Exception):
    """The baseline (or a report used as one) cannot be used; the message names the file."""


def entry_from_profile(profile: Profile, origin: str) -> dict[str, Any]:
    """What the baseline keeps of one profile: where it came from (``pyproject.toml`` or a
    test's node id), totals rounded as stored, the rows that carry figures, and the ops it ran
    that no formula counts (only when there are any: a new one is a line in review)."""
    measured = [name for name in metrics.LAYER_DIFF if profile.totals.get(name) is not None]
    layers = {}
    for row in profile.layers:
        figures = {name: row.figures.get(name, 0) for name in measured}
        if any(figures.values()):
            layers[row.name] = {"type": row.type, **figures}
    entry = {"origin": origin, "totals": stored_totals(profile), "layers": layers}
    if profile.uncounted_ops:
        entry["uncounted_ops"] = dict(sorted(profile.uncounted_ops.items()))
    return entry


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Model name -> entry, from a baseline file or a JSON report; {} when the file does not exist.

    Every field the comparison reads is checked, so a hand-edited or corrupt file is one error
    naming the file and the JSON path (``models.resnet.layers["fc"].params``), never a crash later.
    """
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"{path}: cannot read the file: {error}") from None
    return parse(text, str(path))


def parse(text: str, source: str) -> dict[str, dict[str, Any]]:
    """Model name -> entry, from the text of a baseline file or a JSON report, validated as
    :func:`load` says; ``source`` names it in errors (a path, or ``REF:path`` read from git)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise BaselineError(f"{source}: not a netbudget baseline or report (no 'schema' field)")
    if data["schema"] != SCHEMA:
        raise BaselineError(
            f"{source}: schema version {data['schema']!r} is not one this version of pytest-netbudget reads "
            f"(it reads {SCHEMA}); upgrade pytest-netbudget or write the file again with this version"
        )
    models = data.get("models")
    if not isinstance(models, dict):
        raise BaselineError(f"{source}: missing the 'models' table")
    for name, entry in models.items():
        problem = _entry_problem(entry, f"models{_key(name)}")
        if problem:
            raise BaselineError(f"{source}: {problem}")
    return models


def _key(name: str) -> str:
    """One step of a JSON path: ``.resnet`` for a plain name, ``["conv1.0"]`` for any other."""
    return f".{name}" if name.isidentifier() else f"[{json.dumps(name)}]"


def _figure_problem(value: Any, where: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{where}: expected a finite number, got {json.dumps(value)}"
    return None


def _entry_problem(entry: Any, where: str) -> str | None:
    """What is wrong with one model's entry, at its JSON path; None when it can be compared with."""
    if not isinstance(entry, dict):
        return f"{where}: expected an object with 'totals' and 'layers', got {json.dumps(entry)}"
    if not isinstance(entry.get("origin", ""), str):
        return f"{where}.origin: expected a string, got {json.dumps(entry['origin'])}"
    for part in ("totals", "layers"):
        if not isinstance(entry.get(part), dict):
            return f"{where}.{part}: expected an object, got {json.dumps(entry.get(part))}"
    if not isinstance(entry.get("uncounted_ops", {}), dict):
        return f"{where}.uncounted_ops: expected an object, got {json.dumps(entry['uncounted_ops'])}"
    for part in ("totals", "uncounted_ops"):
        for name, figure in entry.get(part, {}).items():
            problem = _figure_problem(figure, f"{where}.{part}{_key(name)}")
            if problem:
                return problem
    for layer, row in entry["layers"].items():
        at = f"{where}.layers{_key(layer)}"
        if not isinstance(row, dict):
            return f"{at}: expected an object with 'type' and figures, got {json.dumps(row)}"
        if not isinstance(row.get("type"), str):
            return f"{at}.type: expected a string, got {json.dumps(row.get('type'))}"
        for metric, figure in row.items():
            problem = None if metric == "type" else _figure_problem(figure, f"{at}{_key(metric)}")
            if problem:
                return problem
    return None


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except OSError as error:
        raise BaselineError(f"--netbudget-base needs the git command: {error.strerror}") from None


def at_revision(ref: str, path: Path) -> dict[str, dict[str, Any]] | None:
    """The baseline file ``path`` as of git revision ``ref`` (``git show REF:path``); None when
    that revision has no such file (the pull request that introduces netbudget)."""
    directory = path.parent if path.parent.is_dir() else Path.cwd()
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise BaselineError(f"--netbudget-base={ref}: {directory} is not in a git repository ({top.stderr.strip()})")
    root = Path(top.stdout.strip())
    if _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise BaselineError(
            f"--netbudget-base={ref}: no such commit, branch or tag in {root} "
            "(in CI, fetch it first: actions/checkout with fetch-depth: 0, or git fetch origin BRANCH)"
        )
    try:
        inside = Path(os.path.realpath(path)).relative_to(Path(os.path.realpath(root))).as_posix()
    except ValueError:
        raise BaselineError(
            f"--netbudget-base={ref}: the baseline {path} is outside the git repository {root}"
        ) from None
    shown = _git(root, "show", f"{ref}:{inside}")
    if shown.returncode != 0:
        return None
    return parse(shown.stdout, f"{ref}:{inside}")


def dumps(models: dict[str, dict[str, Any]]) -> str:
    """Sorted JSON with one layer per line, so that its own diff reads well."""
    lines = ["{", f'  "schema": {SCHEMA},', '  "models": {']
    names = sorted(models)
    for model_index, name in enumerate(names):
        entry = models[name]
        lines.append(f"    {json.dumps(name)}: {{")
        lines.append(f'      "origin": {json.dumps(entry.get("origin", "pyproject.toml"))},')
        lines.append(f'      "totals": {json.dumps(entry["totals"], sort_keys=True)},')
        if entry.get("uncounted_ops"):
            lines.append(f'      "uncounted_ops": {json.dumps(entry["uncounted_ops"], sort_keys=True)},')
        lines.append('      "layers": {')
        layer_names = sorted(entry["layers"])
        for layer_index, layer in enumerate(layer_names):
            comma = "," if layer_index < len(layer_names) - 1 else ""
            lines.append(f"        {json.dumps(layer)}: {json.dumps(entry['layers'][layer], sort_keys=True)}{comma}")
        lines.append("      }")
        lines.append("    }" + ("," if model_index < len(names) - 1 else ""))
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def update(path: Path, fresh: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]) -> None:
    """Rewrite the baseline with this run's models; models that did not run keep their entries.
    Raises ``files.WriteError`` naming the file when it cannot be written."""
    files.write_atomic(path, dumps({**previous, **fresh}), "the baseline")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two entries of one model: the totals that changed (in metric
    order), then any other part (``layers``, ...); the origin is not a figure."""
    totals = [name for name in metrics.NAMES if old["totals"].get(name) != new["totals"].get(name)]
    parts = sorted(
        key for key in set(old) | set(new) if key not in ("origin", "totals") and old.get(key) != new.get(key)
    )
    return totals + parts


def layer_diff(old: dict[str, Any], new: dict[str, Any]) -> list[LayerChange]:
    """Layers that differ between two entries, largest change first.

    A change is ranked by its share of the model: the larger of its parameter change
    over the model's parameters and its MAC change over the model's MACs.
    """
    old_layers, new_layers = old["layers"], new["layers"]
    changes = []
    for path in sorted(set(old_layers) | set(new_layers)):
        before, after = old_layers.get(path), new_layers.get(path)
        if before is None:
            changes.append(LayerChange(path, after["type"], ChangeKind.ADDED, None, after))
        elif after is None:
            changes.append(LayerChange(path, before["type"], ChangeKind.REMOVED, before, None))
        elif any(before.get(name) != after.get(name) for name in metrics.LAYER_DIFF) or before["type"] != after["type"]:
            changes.append(LayerChange(path, after["type"], ChangeKind.RESIZED, before, after))
    params = max(new["totals"].get("params") or 0, old["totals"].get("params") or 0, 1)
    macs = max(new["totals"].get("macs") or 0, old["totals"].get("macs") or 0, 1)

    def share(change: LayerChange) -> float:
        return max(
            abs(change.delta("params")) / params,
            abs(change.delta("macs")) / macs,
            abs(change.delta("flops")) / (2 * macs),
        )

    return sorted(changes, key=lambda change: (-share(change), change.path))
