"""Every figure netbudget gives for the benchmark's models, to check that a change moves none.

    python benchmarks/figures.py write before.json      # on the tree before the change
    python benchmarks/figures.py write after.json       # on the tree after it
    python benchmarks/figures.py compare before.json after.json

``write`` profiles every model of ``models.py`` that runs on CPU, on cpu and on meta, plus
a training step of three of them, and the GRU of ``recurrent.py`` (aten's loop, some 1,400 tiny
ops) forward and training step on both devices, and stores each ``Profile.to_dict()``: totals, every
layer's figures, bytes, shapes and operators, activations, uncounted ops. ``compare``
names each profile that differs and the first differing fields, and exits 1 if any does.
A speed change (issue 13's rule) must leave every one of them identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import recurrent
from models import MODELS

TRAINED = ("cnn", "resnet18", "sdpa_einsum")  # a training step each: forward, backward, optimizer


def collect() -> dict[str, Any]:
    from pytest_netbudget import profile

    figures: dict[str, Any] = {}
    for name, bench in MODELS.items():
        if bench.meta_only:
            continue
        torch.manual_seed(0)
        model = bench.build().eval()
        for device in ("cpu", "meta"):
            figures[f"{name}/{device}"] = profile(model, inputs=bench.make_inputs("cpu"), device=device).to_dict()
        if name in TRAINED:
            step = profile(model, inputs=bench.make_inputs("cpu"), device="cpu", train=True)
            figures[f"{name}/train"] = step.to_dict()
    model, x = recurrent.build()
    for device in ("cpu", "meta"):
        figures[f"gru/{device}"] = profile(model, x, device=device).to_dict()
        figures[f"gru/{device}/train"] = profile(model, x, device=device, train=True, optimizer="sgd").to_dict()
    return figures


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Paths (``resnet50/cpu.layers[3].macs``) at which two JSON values differ. A key on one side only
    whose value is None (a metric added since, not measured for this profile) is no difference."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            if key not in before or key not in after:
                if (before if key in before else after)[key] is not None:
                    found.append(f"{where}.{key} (only in {'after' if key not in before else 'before'})")
            else:
                found += differences(before[key], after[key], f"{where}.{key}" if where else str(key))
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for index, (one, other) in enumerate(zip(before, after)):
            found += differences(one, other, f"{where}[{index}]")
        return found
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="profile every model and store the figures")
    write.add_argument("output", type=Path)
    compare = commands.add_parser("compare", help="say which figures two stored files disagree on")
    compare.add_argument("before", type=Path)
    compare.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        figures = collect()
        args.output.write_text(json.dumps(figures, sort_keys=True, default=str))
        print(f"{len(figures)} profiles written to {args.output}")
        return
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    moved = differences(before, after)
    same = sum(1 for key in before if key in after and not differences(before[key], after[key]))
    print(f"{same} of {len(before)} profiles identical")
    for line in moved[:20]:
        print("  " + line)
    if len(moved) > 20:
        print(f"  ... and {len(moved) - 20} more")
    sys.exit(1 if moved else 0)


if __name__ == "__main__":
    main()
