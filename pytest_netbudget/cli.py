"""``netbudget show``: the per-layer table of one model, without pytest; ``netbudget formulas``:
how every op and module type is counted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .config import ConfigError, ModelSpec, Place, model_spec
from .loading import LoadError, import_callable


def parse_shape(text: str) -> list[int]:
    """'1,3,224,224' (or '1x3x224x224') -> [1, 3, 224, 224]."""
    parts = text.replace("x", ",").replace(" ", "").strip("[]()").split(",")
    try:
        shape = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: write positive integers like 1,3,224,224") from None
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: every size must be a positive integer")
    return shape


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netbudget", description="Profile PyTorch models: params, MACs, FLOPs, memory."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print the per-layer table and totals of one model")
    show.add_argument("factory", help="'package.module:callable' returning an nn.Module")
    show.add_argument(
        "--input-shape", type=parse_shape, required=True, help="shape of one float input, e.g. 1,3,224,224"
    )
    show.add_argument(
        "--input-dtype", default="float32", help="dtype of that input: float32 (default), int64 for token ids, ..."
    )
    show.add_argument("--input-high", type=int, default=None, help="integer inputs: exclusive upper bound (vocabulary)")
    show.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or meta (default: cpu)")
    show.add_argument("--dtype", default=None, help="float32, float16, bfloat16 or float64")
    show.add_argument("--depth", type=int, default=None, help="fold layers deeper than this into their parents")
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
    show.add_argument("--json", action="store_true", help="print the profile as JSON instead of a table")
    formulas = commands.add_parser(
        "formulas",
        help="list how every op and module type is counted",
        description="List every registered formula, one line each: op or module type, family, rule.",
        epilog="example: netbudget formulas --grep conv",
    )
    formulas.add_argument("--grep", metavar="TEXT", default="", help="only lines that contain TEXT (any case)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "formulas":
        return _list_formulas(args.grep)
    sys.path.insert(0, os.getcwd())
    try:
        import_callable(args.factory)
        spec = _spec(args)
    except (LoadError, ConfigError, ValueError) as error:
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
    """The command line as a registered model, validated as pyproject.toml would be."""
    if args.input_dtype == "float32" and args.input_high is None:
        inputs: dict = {"input_shape": args.input_shape}
    else:
        tensor = {"shape": args.input_shape, "dtype": args.input_dtype}
        if args.input_high is not None:
            tensor["high"] = args.input_high
        inputs = {"inputs": [tensor]}
    table = {"factory": args.factory, "device": args.device, **inputs}
    if args.dtype is not None:
        table["dtype"] = args.dtype
    step = {"batch": args.batch, "autocast": args.autocast, "loss_factory": args.loss}
    if args.train is not None:
        table["train"] = {"optimizer": args.train, **{key: value for key, value in step.items() if value is not None}}
    elif any(value is not None for value in step.values()):
        raise ConfigError("--batch, --autocast and --loss describe a training step: give --train OPTIMIZER too")
    return model_spec(args.factory, table, Place("netbudget show:"))


if __name__ == "__main__":
    raise SystemExit(main())
