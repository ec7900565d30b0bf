"""The baseline file: read (every entry validated), read at a git revision, and written as stable JSON.

The file is committed next to pyproject.toml, so it is written for people to read
in a pull request: sorted keys, one layer per line, nothing that changes between
two identical runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from . import __version__, files, metrics
from .results import BaselineEntry, RecordError, json_key

#: The baseline file's format.
SCHEMA = 1
#: What a JSON report says it is, and its format; a report is also read as a baseline (its models'
#: records carry their entries' fields), schema 1 (pytest-netbudget before typed records) included.
REPORT_KIND = "netbudget-report"
REPORT_SCHEMA = 2
_REPORT_SCHEMAS_READ_AS_BASELINE = (1, REPORT_SCHEMA)


class BaselineError(Exception):
    """The baseline (or a report used as one) cannot be used; the message names the file."""


class NotABaseline(BaselineError):
    """The baseline's path holds another file (pyproject.toml, a script, a report): never replaced."""


def load_baseline(path: Path) -> dict[str, BaselineEntry]:
    """The committed baseline, as :func:`load` reads it; ``NotABaseline`` when the file is not (and
    was not) a netbudget baseline, which an update must never replace; ``BaselineError`` when it is
    one that cannot be read (a git conflict, a newer schema, a damaged value)."""
    if not path.exists():
        return {}
    text = _read(path)
    problem = _not_a_baseline(text)
    if problem:
        raise NotABaseline(
            f"{path}: not a netbudget baseline ({problem}); netbudget never replaces it: set [tool.netbudget] "
            f"baseline to a file of its own, such as 'netbudget-baseline.json'"
        )
    return parse(text, str(path))


def _not_a_baseline(text: str) -> str | None:
    """Why ``text`` is not a netbudget baseline, even a damaged one; None when it is one. A baseline
    is a JSON object with a ``schema`` and no ``kind`` (a report has one); text that is no JSON is a
    damaged baseline when it still holds a quoted ``"schema"`` (git conflict markers in one)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None if '"schema"' in text else 'not JSON, and no "schema" field'
    if not isinstance(data, dict) or "schema" not in data:
        return "no 'schema' field"
    if "kind" in data:
        return f"a {data['kind']!s:.40} file"
    return None


def load(path: Path) -> dict[str, BaselineEntry]:
    """Model name -> entry, from a baseline file or a JSON report; {} when the file does not exist.

    Every field the comparison reads is checked (by ``BaselineEntry.from_dict``), so a hand-edited
    or corrupt file is one error naming the file and the JSON path
    (``models.resnet.layers["fc"].params``), never a crash later.
    """
    if not path.exists():
        return {}
    return parse(_read(path), str(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"{path}: cannot read the file: {error}") from None


def parse(text: str, source: str) -> dict[str, BaselineEntry]:
    """Model name -> entry, from the text of a baseline file or a JSON report, validated as
    :func:`load` says; ``source`` names it in errors (a path, or ``REF:path`` read from git)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise BaselineError(f"{source}: not a netbudget baseline or report (no 'schema' field)")
    is_report = data.get("kind") == REPORT_KIND
    models = models_table(data, source, _REPORT_SCHEMAS_READ_AS_BASELINE if is_report else (SCHEMA,))
    try:
        return {name: BaselineEntry.from_dict(entry, f"models{json_key(name)}") for name, entry in models.items()}
    except RecordError as error:
        raise BaselineError(f"{source}: {error}") from None


def models_table(data: dict[str, Any], source: str, readable: tuple[int, ...], then: str = "") -> dict[str, Any]:
    """The 'models' table of a parsed baseline file or report whose schema is one of ``readable``;
    otherwise ``BaselineError`` names the file, its schema and the version that wrote it (and
    ``then``, what to do)."""
    if data.get("schema") not in readable:
        written = f", written by {data['generator']}," if isinstance(data.get("generator"), str) else ""
        kind = "report " if data.get("kind") == REPORT_KIND else ""
        raise BaselineError(
            f"{source}: {kind}schema version {data.get('schema')!r}{written} is not one this version of "
            f"pytest-netbudget ({__version__}) reads (it reads {', '.join(map(str, readable))}); "
            + (then or "upgrade pytest-netbudget or write the file again with this version")
        )
    models = data.get("models")
    if not isinstance(models, dict):
        raise BaselineError(f"{source}: missing the 'models' table")
    return models


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except OSError as error:
        raise BaselineError(f"--netbudget-base needs the git command: {error.strerror}") from None


def at_revision(ref: str, path: Path) -> dict[str, BaselineEntry] | None:
    """The baseline file ``path`` as of git revision ``ref`` (``git show REF:path``); None when
    that revision has no such file (the pull request that introduces netbudget)."""
    directory = path.parent if path.parent.is_dir() else Path.cwd()
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise BaselineError(
            f"--netbudget-base={ref}: the baseline {os.path.normpath(path)} is not in a git repository "
            f"({top.stderr.strip()})"
        )
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


def dumps(models: dict[str, BaselineEntry]) -> str:
    """Sorted JSON with one layer per line, so that its own diff reads well; an entry's fields in
    the order it gives them, its layers last."""
    lines = ["{", f'  "schema": {SCHEMA},', '  "models": {']
    names = sorted(models)
    for model_index, name in enumerate(names):
        entry = models[name].to_dict()
        layers = entry.pop("layers")
        lines.append(f"    {json.dumps(name)}: {{")
        lines += [f"      {json.dumps(key)}: {json.dumps(value, sort_keys=True)}," for key, value in entry.items()]
        lines.append('      "layers": {')
        layer_names = sorted(layers)
        for layer_index, layer in enumerate(layer_names):
            comma = "," if layer_index < len(layer_names) - 1 else ""
            lines.append(f"        {json.dumps(layer)}: {json.dumps(layers[layer], sort_keys=True)}{comma}")
        lines.append("      }")
        lines.append("    }" + ("," if model_index < len(names) - 1 else ""))
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def update(path: Path, fresh: dict[str, BaselineEntry], previous: dict[str, BaselineEntry]) -> None:
    """Rewrite the baseline with this run's models; models that did not run keep their entries.
    Raises ``files.WriteError`` naming the file when it cannot be written."""
    files.write_atomic(path, dumps({**previous, **fresh}), "the baseline")


def differences(old: BaselineEntry, new: BaselineEntry) -> list[str]:
    """What differs between two entries of one model: the totals that changed (in metric
    order), then any other part (``layers``, ...). Neither the origin, the environment nor the
    settings are figures: a new torch that gives the same figures leaves the baseline as good as it was."""
    totals = [name for name in metrics.NAMES if old.totals.get(name) != new.totals.get(name)]
    before, after = old.to_dict(), new.to_dict()
    parts = sorted(
        key
        for key in set(before) | set(after)
        if key not in ("origin", "totals", "environment", "settings") and before.get(key) != after.get(key)
    )
    return totals + parts
