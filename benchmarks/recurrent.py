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
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from hotspots import CallOnly, CountOps
from pytest_netbudget import profile
from targets import paired_ratios


def build() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.GRU(64, 128, num_layers=2, batch_first=True).eval(), torch.randn(4, 50, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
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
    ratios = paired_ratios(variants, args.rounds).ratios
    steps = {"bare": step, "profile(train=True)": lambda: profile(model, x, device="cpu", train=True, optimizer="sgd")}
    ratios.update(paired_ratios(steps, args.rounds).ratios)
    print(f"  bare forward {statistics.median(bare_ms):.2f} ms (median of 10)")
    for name, values in ratios.items():
        ratio = statistics.median(values)
        against = "a bare training step" if "train" in name else "a bare forward"
        print(f"  {name:22s} {ratio:5.2f}x {against}")


if __name__ == "__main__":
    main()
