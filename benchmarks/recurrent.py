"""What profiling a small recurrent model costs, against the floor PyTorch sets (issue 21).

    python benchmarks/recurrent.py --threads 1 --rounds 15

A two-layer GRU (64 -> 128, batch 4, 50 steps) on CPU, as multiples of a bare run (the median
of per-round ratios, every variant paired with a bare run just before it, the order rotated):

- forward: a ``no_grad`` forward under a dispatch mode that only calls each op (the floor of
  any operator-level counter), and ``profile()``;
- training step: forward, backward and an SGD step bare, and ``profile(train=True)``, whose
  time includes its eval forward.

It also prints how many aten ops one forward runs: CPU runs a GRU as aten's C++ loop, about 14
ops per step and layer, each of which a dispatch mode sees.

``--parts`` says where ``profile()``'s time above the floor goes: the forward's profile again with
one part of the tracer's per-op accounting switched off at a time (following live memory, summing
bytes read, keeping the model's own tensors from in-place writes, the per-layer tallies, and all
of the accounting), each as a multiple of the bare forward and in microseconds per op above it.
Those profiles' figures are wrong, by design; only their time is read.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from hotspots import CallOnly, CountOps
from pytest_netbudget import profile
from pytest_netbudget.engine import state, tracer
from targets import paired_ratios

#: What ``--parts`` switches off: (object, attribute, stand-in that does nothing).
PARTS: dict[str, list[tuple[Any, str, Callable[..., Any]]]] = {
    "no live memory": [(tracer.LiveMemory, "saw", lambda self, tensor: None)],
    "no bytes read": [(tracer, "_bytes_read", lambda args, kwargs, positions: (0, None))],
    "no own writes": [(state.OwnWrites, "before", lambda self, schema, args, kwargs: None)],
    "no tallies": [(tracer.LayerTally, "charge", lambda self, op, macs, flops: None)],
    "no accounting": [(tracer.Tracer, "_account", lambda self, *args: None)],
}


@contextlib.contextmanager
def switched_off(part: str) -> Iterator[None]:
    replaced = [(owner, name, getattr(owner, name)) for owner, name, _ in PARTS[part]]
    for owner, name, stand_in in PARTS[part]:
        setattr(owner, name, stand_in)
    try:
        yield
    finally:
        for owner, name, original in replaced:
            setattr(owner, name, original)


def build() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.GRU(64, 128, num_layers=2, batch_first=True).eval(), torch.randn(4, 50, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--parts", action="store_true", help="where the forward profile's time goes, part by part")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x = build()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def mode_only() -> None:
        with torch.no_grad(), CallOnly():
            model(x)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        model.train()
        output, _ = model(x)
        output.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()

    counter = CountOps()
    with torch.no_grad(), counter:
        model(x)
    bare_ms = []
    for _ in range(10):
        start = time.perf_counter()
        forward()
        bare_ms.append((time.perf_counter() - start) * 1000)
    print(
        f"GRU 2x(64 -> 128), batch 4, 50 steps: {counter.count} aten ops a forward, {torch.get_num_threads()} threads"
    )
    variants = {"bare": forward, "dispatch mode only": mode_only, "profile()": lambda: profile(model, x, device="cpu")}
    if args.parts:
        variants.update({f"profile(), {part}": _without(part, model, x) for part in PARTS})
    rounds = paired_ratios(variants, args.rounds)
    ratios = rounds.ratios
    bare_ms = [*bare_ms, *(seconds * 1000 for seconds in rounds.bare)]
    steps = {"bare": step, "profile(train=True)": lambda: profile(model, x, device="cpu", train=True, optimizer="sgd")}
    ratios.update(paired_ratios(steps, args.rounds).ratios)
    print(f"  bare forward {statistics.median(bare_ms):.2f} ms (median of {len(bare_ms)})")
    per_op_us = statistics.median(bare_ms) * 1000 / counter.count
    for name, values in ratios.items():
        ratio = statistics.median(values)
        against = "a bare training step" if "train" in name else "a bare forward"
        above = f", {(ratio - 1) * per_op_us:5.2f} us an op above it" if against == "a bare forward" else ""
        print(f"  {name:32s} {ratio:5.2f}x {against}{above}")


def _without(part: str, model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with switched_off(part):
            profile(model, x, device="cpu")

    return run


if __name__ == "__main__":
    main()
