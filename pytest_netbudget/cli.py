"""The ``netbudget`` command: ``show`` prints the per-layer table of one model without pytest,
``formulas`` lists how every op and module type is counted, ``merge`` joins the JSON reports
of sharded or matrix jobs into one report, ``history`` charts the committed baseline over git,
``targets`` lists the accelerators latency is estimated for and ``calibrate`` measures this
machine as one."""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import (
    ConfigError,
    ModelSpec,
    Place,
    formula_modules,
    model_spec,
    project_targets,
    read_pyproject,
    settings_from,
)
from .devices import shape_problem
from .loading import LoadError, import_callable, import_modules, is_factory_path

if TYPE_CHECKING:
    from .history import History

SHOW_EXAMPLES = """examples:
  netbudget show mnist_cnn                                    # a model registered in pyproject.toml
  netbudget show mnist_cnn --device meta --train adamw        # ... with its settings overridden
  netbudget show tiny_decoder --serve context=8192,batch=4,weights=int4,group_size=128,fits=24GiB
  netbudget show pkg.models:Net --input-shape 1,3,224,224 --depth 2
  netbudget show pkg.models:Net --kwargs '{"num_classes": 100}' --input-shape 1,3,224,224
  netbudget show pkg.models:LM --input-shape 1,128 --input-dtype int64 --input-high 50257 --device meta
  netbudget show pkg.models:Net --input-shape 1,3,32,32 --formulas pkg.counting --ops
  netbudget show mnist_cnn --target a100                      # estimated latency per layer on an A100"""


class CommandError(Exception):
    """A mistake on the command line; exit code 2 with this message."""


def parse_shape(text: str) -> list[int]:
    """'1,3,224,224' (or '1x3x224x224') -> [1, 3, 224, 224]."""
    parts = text.replace("x", ",").replace(" ", "").strip("[]()").split(",")
    try:
        shape = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: write positive integers like 1,3,224,224") from None
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: every size must be a positive integer")
    problem = shape_problem(shape)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: {problem}")
    return shape


def parse_depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a depth: write 0 (the model), 1, 2, ...") from None
    if depth < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a depth: 0 is the model itself, 1 its children, ...")
    return depth


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} must be a JSON object of keyword arguments, like '{{\"k\": 1}}'")
    return value


def parse_serve(text: str) -> dict[str, Any]:
    """'context=8192,batch=4,keep=lm_head,keep=embed_tokens' -> a serve table (whole numbers as
    integers, ``keep`` a list); config checks the keys and values as it checks pyproject.toml's."""
    table: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE: write e.g. context=8192,batch=4")
        key, value = key.strip(), value.strip()
        if key == "keep":
            table.setdefault("keep", []).append(value)
        else:
            table[key] = int(value) if value.isdigit() else value
    if not table:
        raise argparse.ArgumentTypeError("give the serving step's settings, e.g. --serve context=8192,batch=4")
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netbudget",
        description="Profile PyTorch models: params, MACs, FLOPs, memory; per layer; a training or serving step.",
        epilog="examples:\n  netbudget show mnist_cnn\n  netbudget formulas --grep conv\n"
        "  netbudget merge shard-*.json --markdown netbudget.md --json netbudget.json\n"
        "  netbudget history --html history.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netbudget (pytest-netbudget) {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser(
        "show",
        help="print the per-layer table and totals of one model",
        description="Profile one model and print its per-layer table and totals, like torchinfo.summary.",
        epilog=SHOW_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument(
        "model", help="a model registered in pyproject.toml, or 'package.module:callable' returning an nn.Module"
    )
    show.add_argument(
        "--pyproject",
        type=Path,
        default=None,
        help="the pyproject.toml that registers the model (default: the nearest one up from here)",
    )
    show.add_argument("--kwargs", type=parse_kwargs, default=None, help="JSON keyword arguments for the factory")
    show.add_argument("--input-shape", type=parse_shape, default=None, help="shape of one input, e.g. 1,3,224,224")
    show.add_argument(
        "--input-dtype", default=None, help="dtype of that input: float32 (default), int64 for token ids, ..."
    )
    show.add_argument("--input-high", type=int, default=None, help="integer inputs: exclusive upper bound (vocabulary)")
    show.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or meta (default: cpu)")
    show.add_argument("--dtype", default=None, help="float32, float16, bfloat16 or float64")
    show.add_argument(
        "--formulas",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first, so that the formulas it registers count (may be given again)",
    )
    show.add_argument("--depth", type=parse_depth, default=None, help="fold layers deeper than this into their parents")
    show.add_argument("--ops", action="store_true", help="list under each layer the operators that did its work")
    show.add_argument(
        "--train",
        metavar="OPTIMIZER",
        default=None,
        help="also profile one training step with this optimizer: sgd, sgd-momentum, adam, adamw or none",
    )
    show.add_argument("--batch", type=int, default=None, help="with --train: rows of every input for the step")
    show.add_argument("--autocast", default=None, help="with --train: mixed precision, bfloat16 or float16")
    show.add_argument(
        "--loss", metavar="MODULE:FN", default=None, help="with --train: fn(outputs) -> scalar loss (default: sum)"
    )
    show.add_argument(
        "--serve",
        metavar="KEY=VALUE,...",
        type=parse_serve,
        default=None,
        help="also profile a serving step: context=N,batch=N and optionally kv_dtype, weights, group_size, "
        "keep (may be given more than once), fits (e.g. 24GiB); over the model's own serve table",
    )
    show.add_argument(
        "--target",
        default=None,
        help="estimate latency per layer on this accelerator (netbudget targets lists them), e.g. a100",
    )
    show.add_argument("--json", action="store_true", help="print the profile as JSON instead of a table")
    formulas = commands.add_parser(
        "formulas",
        help="list how every op and module type is counted",
        description="List every registered formula, one line each: op or module type, family, rule.",
        epilog="examples:\n  netbudget formulas --grep conv\n  netbudget formulas --import pkg.counting",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formulas.add_argument("--grep", metavar="TEXT", default="", help="only lines that contain TEXT (any case)")
    formulas.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first, so that the formulas it registers are listed too",
    )
    merge = commands.add_parser(
        "merge",
        help="merge the JSON reports of sharded or matrix jobs into one report",
        description="Merge JSON reports (pytest --netbudget --netbudget-report=PATH.json, one per shard or job) "
        "into one report and one pull-request comment. A model found in two reports with different figures is "
        "a conflict: named in both outputs, the first report's figures kept, exit code 1.",
        epilog="examples:\n"
        "  netbudget merge shard-1.json shard-2.json --markdown netbudget.md --json netbudget.json --html netbudget.html\n"
        "  netbudget merge reports/*.json > comment.md          # the Markdown on stdout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "targets",
        help="list the built-in accelerators: dense peaks, bandwidth, per-op overhead and their sources",
        description="The accelerators estimated latency can be computed for, each figure with its source.",
    )
    calibrate = commands.add_parser(
        "calibrate",
        help="measure this machine's peaks and print them as the target 'this-machine'",
        description="Time a large float32 matmul (FLOP/s at the thread count in use), a large copy "
        "(bytes read + written per second) and a tiny op (the per-op overhead) on this machine's CPU, "
        "and print [tool.netbudget.targets.this-machine] to paste into pyproject.toml.",
    )
    calibrate.add_argument("--threads", type=int, default=None, help="torch threads to measure at (default: torch's)")
    calibrate.add_argument("--name", default="this-machine", help="the target's name (default: this-machine)")
    calibrate.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the thread's CPU clock (with --threads 1): what runs cost on a machine others share",
    )
    merge.add_argument("reports", nargs="+", metavar="REPORT.json", help="JSON reports to merge")
    merge.add_argument("--markdown", metavar="OUT.md", default=None, help="write the merged Markdown report here")
    merge.add_argument("--json", dest="json_out", metavar="OUT.json", default=None, help="write the merged JSON here")
    merge.add_argument("--html", metavar="OUT.html", default=None, help="write the merged HTML report here")
    history = commands.add_parser(
        "history",
        help="chart each model's figures over the commits that changed the committed baseline",
        description="Read the committed baseline file at every commit that changed it (git log --follow, along the "
        "first parent of HEAD, so a merged pull request is one point) and chart each model's metrics over those "
        "commits, or write them as github-action-benchmark data (each series a customSmallerIsBetter result). "
        "Commits whose baseline does not parse are skipped and listed.",
        epilog="examples:\n"
        "  netbudget history --html history.html\n"
        "  netbudget history mnist_cnn --metric macs --metric params --since v1.0 --html history.html\n"
        "  netbudget history --json benchmark-data.json   # for github-action-benchmark's external-data-json-path",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("models", nargs="*", metavar="MODEL", help="models to chart (default: every one)")
    history.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        default=[],
        help="a metric to chart (may be given again; default: every metric the baseline records)",
    )
    history.add_argument("--since", metavar="REF", default=None, help="only commits after REF (REF..HEAD)")
    history.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="the baseline file (default: the one the nearest pyproject.toml names)",
    )
    history.add_argument("--html", metavar="OUT.html", default=None, help="write the charts here")
    history.add_argument(
        "--json", dest="json_out", metavar="OUT.json", default=None, help="write github-action-benchmark data here"
    )
    return parser


def _merge(args: argparse.Namespace) -> int:
    """Read the reports, write the merged Markdown and JSON (Markdown on stdout when neither is asked for)."""
    from .html_report import html_report
    from .reports import ReportError, markdown, merge_reports, to_json

    documents = {}
    for name in args.reports:
        try:
            documents[name] = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"cannot read the report {name}: {error}") from None
    try:
        merged = merge_reports(documents)
    except ReportError as error:
        raise CommandError(str(error)) from None
    renderers = [(args.markdown, markdown), (args.json_out, to_json), (args.html, html_report)]
    _write_files([(target, functools.partial(render, merged)) for target, render in renderers], "the merged report")
    if args.markdown is None and args.json_out is None and args.html is None:
        print(markdown(merged))
    for conflict in merged.conflicts:
        print(f"netbudget: conflict: {conflict}", file=sys.stderr)
    return 1 if merged.conflicts else 0


def _history(args: argparse.Namespace) -> int:
    """Read the baseline's history, write the charts and the data (a summary on stdout when neither is asked for)."""
    from .history import HistoryError, benchmark_data, read_history, select, to_json
    from .history_chart import history_html

    baseline_file = args.baseline or _configured_baseline()
    try:
        history = read_history(baseline_file, args.since)
        chosen = select(history, args.models, args.metrics)
    except HistoryError as error:
        raise CommandError(str(error)) from None
    _write_files(
        [
            (args.html, lambda: history_html(history, chosen)),
            (args.json_out, lambda: to_json(benchmark_data(history, chosen))),
        ],
        "the history",
    )
    for note in history.notes:
        print(f"netbudget: {note}", file=sys.stderr)
    for commit, why in history.skipped:
        print(f"netbudget: skipped {commit.short} ({commit.subject}): {why}", file=sys.stderr)
    if args.html is None and args.json_out is None:
        print(_history_summary(history, chosen))
    return 0


def _write_files(outputs: list[tuple[str | None, Callable[[], str]]], what: str) -> None:
    """Write ``render()`` to each target given (its folder made), atomically; a failure names the file."""
    from .files import WriteError, write_atomic

    for target, render in outputs:
        if target is None:
            continue
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(target), render(), what)
        except OSError as error:
            raise CommandError(f"{target}: cannot write {what}: {error.strerror}") from None
        except WriteError as error:
            raise CommandError(str(error)) from None


def _history_summary(history: History, chosen: dict[str, list[str]]) -> str:
    """One line per model and metric: the first and last figure and the change between them."""
    from . import metrics

    lines = [f"{len(history.commits)} commit(s) changed {history.baseline}"]
    for model, names in chosen.items():
        for metric in names:
            known = [
                (commit, figure)
                for commit, figure in zip(history.commits, history.series(model, metric))
                if figure is not None
            ]
            (first, old), (last, new) = known[0], known[-1]
            shown = metrics.get(metric)
            lines.append(
                f"{model} {metric}: {shown.format(old)} at {first.short} -> {shown.format(new)} at {last.short} "
                f"({shown.format_change(old, new)}, {len(known)} commit(s))"
            )
    return "\n".join(lines)


def _configured_baseline() -> Path:
    """The baseline file that the nearest pyproject.toml with a [tool.netbudget] table names."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        path = folder / "pyproject.toml"
        settings = settings_from(read_pyproject(path), path) if path.is_file() else None
        if settings is not None:
            return settings.baseline
    raise CommandError(
        f"no pyproject.toml with a [tool.netbudget] table in {Path.cwd()} or a folder above it: "
        "give the baseline file with --baseline PATH"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sys.path.insert(0, os.getcwd())
    try:
        if args.command == "merge":
            return _merge(args)
        if args.command == "history":
            return _history(args)
        if args.command == "targets":
            return _list_targets()
        if args.command == "calibrate":
            return _calibrate(args.threads, args.name, args.cpu_time)
        _import_project_formulas(getattr(args, "pyproject", None))
        if args.command == "formulas":
            import_modules(args.imports, "--import")
            return _list_formulas(args.grep)
        import_modules(args.formulas, "--formulas")
        spec = _spec(args)
    except (CommandError, LoadError, ConfigError, ValueError) as error:
        print(f"netbudget: error: {error}", file=sys.stderr)
        return 2

    from .engine.run import resolve_device
    from .runner import ModelError, profile_spec

    try:
        resolve_device(spec.device)
    except ValueError as error:  # a device this machine does not have: a usage error here
        print(f"netbudget: error: {error}", file=sys.stderr)
        return 2
    try:
        result = profile_spec(spec)
    except ModelError as error:
        print(f"netbudget: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table(args.depth, ops=args.ops))
    return 0


def _list_targets() -> int:
    from .targets import TABLE_VERSION, table_rows

    rows = table_rows()
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    print(f"built-in targets, table version {TABLE_VERSION} (dense peaks; sparse tensor-core figures halved)")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    return 0


def _calibrate(threads: int | None, name: str, cpu_time: bool) -> int:
    if threads is not None and threads <= 0:
        raise CommandError(f"--threads must be a positive integer, got {threads}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise CommandError(f"--name {name!r}: a target's name is letters, digits, '-' and '_' (a TOML bare key)")
    from .engine.calibration import calibrate

    if cpu_time and threads != 1:
        raise CommandError("--cpu-time measures one thread: give --threads 1 too")
    print(calibrate(threads=threads, cpu_time=cpu_time).toml(name), end="")
    return 0


def _project(given: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The project's pyproject.toml (the one given, or the nearest up from here with a
    ``[tool.netbudget]`` table) and its parsed contents; None where there is none."""
    candidates = [given] if given else [folder / "pyproject.toml" for folder in (Path.cwd(), *Path.cwd().parents)]
    for path in candidates:
        if not path.is_file():
            continue
        data = read_pyproject(path)
        if "netbudget" in data.get("tool", {}):
            return path, data
    return None


def _import_project_formulas(given: Path | None) -> None:
    """Import ``[tool.netbudget] formulas`` of the project's pyproject.toml, as pytest does, so that
    the project's own ops count here too."""
    project = _project(given)
    if project is None:
        return
    path, data = project
    names = formula_modules(data, path)
    if names and str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    import_modules(names, Place.table(path, "tool.netbudget").key("formulas"))


def _list_formulas(grep: str) -> int:
    """One aligned line per registered formula, sorted by name; 1 when ``grep`` matches none."""
    from .formulas import registered

    records = registered()
    name_width = max(len(record.name) for record in records)
    family_width = max(len(record.family) for record in records)
    lines = [f"{record.name:<{name_width}}  {record.family:<{family_width}}  {record.rule}" for record in records]
    matching = [line for line in lines if grep.lower() in line.lower()]
    if not matching:
        print(f"netbudget: no formula matches {grep!r}", file=sys.stderr)
        return 1
    print("\n".join(matching))
    return 0


def _spec(args: argparse.Namespace) -> ModelSpec:
    """The model to show: registered (its table, with the command line's options over it) or a
    factory path; validated as pyproject.toml is, so that one message reads the same."""
    if is_factory_path(args.model):
        import_callable(args.model)
        table = _command_table({"factory": args.model, "device": "cpu"}, args)
        project = _project(args.pyproject)
        own_targets = project_targets(project[1], project[0])[0] if project is not None else {}
        return model_spec(args.model, table, Place("netbudget show:"), own_targets)
    path, data = _registering_pyproject(args.model, args.pyproject)
    settings_from(data, path)  # the file's own mistakes are reported as the file's
    models = data["tool"]["netbudget"]["models"]
    models[args.model] = _command_table(models[args.model], args)
    try:
        settings = settings_from(data, path)
    except ConfigError as error:  # the file alone is valid: the mistake is the command line's
        own = f"tool.netbudget.models.{args.model}"
        problem = str(error).removeprefix(Place.table(path, own).label + " ")
        raise CommandError(
            f"netbudget show {args.model}: {problem} (a command-line option, over [{own}] in {path})"
        ) from None
    if settings is None:  # found above: the file has [tool.netbudget.models]
        raise CommandError(f"{path} has no [tool.netbudget] table")
    root = str(path.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return next(spec for spec in settings.models if spec.name == args.model)


def _registering_pyproject(name: str, given: Path | None) -> tuple[Path, dict[str, Any]]:
    """The pyproject.toml that registers ``name``: the one given, or the nearest up from here."""
    candidates = [given] if given else [folder / "pyproject.toml" for folder in (Path.cwd(), *Path.cwd().parents)]
    for path in candidates:
        if not path.is_file():
            continue
        data = read_pyproject(path)
        models = data.get("tool", {}).get("netbudget", {}).get("models")
        if not isinstance(models, dict):
            continue
        if name in models:
            return path, data
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CommandError(
            f"{name!r} is neither 'package.module:callable' nor a model registered in {path} "
            f"({hint}registered: {', '.join(sorted(models)) or 'none'})"
        )
    where = str(given) if given else f"{Path.cwd()} or a folder above it"
    raise CommandError(
        f"{name!r} is not 'package.module:callable', and no pyproject.toml with [tool.netbudget.models] "
        f"was found in {where}"
    )


def _command_table(table: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A model table with the command line's options over it."""
    table = copy.deepcopy(table)
    if args.kwargs is not None:
        table["kwargs"] = {**table.get("kwargs", {}), **args.kwargs}
    if args.input_shape is not None:
        for key in ("input_shape", "inputs", "input_factory"):
            table.pop(key, None)
        if (args.input_dtype or "float32") == "float32" and args.input_high is None:
            table["input_shape"] = args.input_shape
        else:
            tensor = {"shape": args.input_shape, "dtype": args.input_dtype or "float32"}
            if args.input_high is not None:
                tensor["high"] = args.input_high
            table["inputs"] = [tensor]
    elif args.input_dtype is not None or args.input_high is not None:
        raise CommandError("--input-dtype and --input-high describe --input-shape's tensor: give --input-shape too")
    elif not any(key in table for key in ("input_shape", "inputs", "input_factory")):
        raise CommandError("give --input-shape (the model's input), e.g. --input-shape 1,3,224,224")
    if args.device is not None:
        table["device"] = args.device
    if args.dtype is not None:
        table["dtype"] = args.dtype
    if args.target is not None:
        table["target"] = args.target
    step = {"batch": args.batch, "autocast": args.autocast, "loss_factory": args.loss}
    if args.train is not None:
        table["train"] = {**_step_table(table.get("train")), "optimizer": args.train}
    if any(value is not None for value in step.values()):
        if args.train is None and "train" not in table:
            raise CommandError("--batch, --autocast and --loss describe a training step: give --train OPTIMIZER too")
        table["train"] = {**_step_table(table.get("train")), **{k: v for k, v in step.items() if v is not None}}
    if args.serve is not None:
        table["serve"] = {**_step_table(table.get("serve")), **args.serve}
    return table


def _step_table(value: Any) -> dict[str, Any]:
    """A step's table as written (``train = true`` has none), to lay the command line's options over."""
    return dict(value) if isinstance(value, dict) else {}
