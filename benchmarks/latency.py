"""Estimated against measured latency on this machine's CPU (issue 23).

    python benchmarks/latency.py                 # calibrate, then every CPU model of models.py
    python benchmarks/latency.py --rounds 5 --models cnn,resnet18 --layers

Everything runs on one thread and is timed by that thread's CPU clock (``time.thread_time``),
so that other processes on a shared machine (this one has 2 cores and several users) do not
move the figures; the wall-clock medians are printed beside them.

1. ``netbudget calibrate --threads 1 --cpu-time``'s measurement defines the target
   ``this-machine``: a large float32 matmul's FLOP/s, a large copy's bandwidth, a tiny op's
   time, and each op family's share of its roofline (``--no-efficiency``: the pure roofline).
2. Every model is profiled on CPU with that target: its estimated forward latency, and whether
   its time is compute- or memory-bound (the larger of its compute-bound and memory-bound ops' time).
3. The measured latency is the median of interleaved rounds: each round runs every model's bare
   ``no_grad`` eval forward once, the order rotated every round.
4. Per model: estimate / measured; over all models: Spearman's rank correlation and the median of
   |estimate - measured| / measured. ``--layers`` adds the same ratio per module type (leaf
   modules timed by forward pre-hooks and hooks, medians over the rounds), to find which class
   of layers the roofline misses.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from models import MODELS
from pytest_netbudget import profile
from pytest_netbudget.engine.calibration import calibrate

CPU_MODELS = [name for name, bench in MODELS.items() if not bench.meta_only]


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (no ties expected among measured times)."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        for rank, index in enumerate(order):
            result[index] = float(rank)
        return result

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (n * (n * n - 1))


def measure(names: list[str], rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median CPU and wall seconds of a bare no_grad forward per model, from interleaved rounds."""
    built = {}
    for name in names:
        bench = MODELS[name]
        model = bench.build().eval()
        inputs = bench.make_inputs("cpu")
        with torch.no_grad():
            model(*inputs)  # warm-up
        built[name] = (model, inputs)
    cpu: dict[str, list[float]] = defaultdict(list)
    wall: dict[str, list[float]] = defaultdict(list)
    with torch.no_grad():
        for round_index in range(rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                model, inputs = built[name]
                start, start_wall = time.thread_time(), time.perf_counter()
                model(*inputs)
                cpu[name].append(time.thread_time() - start)
                wall[name].append(time.perf_counter() - start_wall)
    return (
        {name: statistics.median(values) for name, values in cpu.items()},
        {name: statistics.median(values) for name, values in wall.items()},
    )


def leaf_times(name: str, rounds: int) -> dict[str, float]:
    """Median seconds per leaf module type over ``rounds`` forwards (hooks around each leaf)."""
    bench = MODELS[name]
    model = bench.build().eval()
    inputs = bench.make_inputs("cpu")
    started: dict[int, float] = {}
    per_round: dict[str, float] = defaultdict(float)
    handles = []
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue
        kind = type(module).__name__

        def before(mod, args):
            started[id(mod)] = time.thread_time()

        def after(mod, args, output, kind=kind):
            per_round[kind] += time.thread_time() - started.pop(id(mod), time.thread_time())

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    samples: dict[str, list[float]] = defaultdict(list)
    with torch.no_grad():
        model(*inputs)
        for _ in range(rounds):
            per_round.clear()
            model(*inputs)
            for kind, seconds in per_round.items():
                samples[kind].append(seconds)
    for handle in handles:
        handle.remove()
    return {kind: statistics.median(values) for kind, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", default=",".join(CPU_MODELS))
    parser.add_argument("--layers", action="store_true", help="also estimate / measured per leaf module type")
    parser.add_argument("--no-efficiency", action="store_true", help="the pure roofline: no per-family shares")
    args = parser.parse_args()
    names = [name for name in args.models.split(",") if name]

    torch.set_num_threads(1)
    calibration = calibrate(threads=1, cpu_time=True)
    target = calibration.target(efficiency=not args.no_efficiency)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"this-machine: {calibration.matmul_flops / 1e9:.1f} GFLOP/s (float32 matmul), "
        f"{calibration.copy_bandwidth / 1e9:.2f} GB/s (copy, read + written), "
        f"{calibration.op_overhead_s * 1e6:.2f} us per op"
    )
    shares = ", ".join(f"{family} {share:.3g}" for family, share in calibration.efficiency.items())
    print(f"efficiency (share of the roofline attained): {shares}" + (" (not used)" if args.no_efficiency else ""))
    profiles = {}
    for name in names:
        bench = MODELS[name]
        profiles[name] = profile(bench.build(), bench.make_inputs("cpu"), device="cpu", target=target)
    measured, wall = measure(names, args.rounds)

    print()
    print(
        f"{'model':<12} {'estimate ms':>12} {'measured ms':>12} {'ratio':>7}  bound    "
        "compute / memory / overhead ms  (wall ms)"
    )
    errors = []
    for name in names:
        p = profiles[name]
        parts = p.roofline
        bound = "compute" if parts.compute_ms >= parts.memory_ms else "memory"
        real = measured[name] * 1e3
        errors.append(abs(p.latency_ms - real) / real)
        print(
            f"{name:<12} {p.latency_ms:>12.2f} {real:>12.2f} {p.latency_ms / real:>7.2f}  {bound:<8} "
            f"{parts.compute_ms:.2f} / {parts.memory_ms:.2f} / {parts.overhead_ms:.2f}  ({wall[name] * 1e3:.2f})"
        )
    estimates = [profiles[name].latency_ms for name in names]
    reals = [measured[name] for name in names]
    print()
    print(f"Spearman rank correlation: {spearman(estimates, reals):.3f} over {len(names)} models")
    print(f"median |estimate - measured| / measured: {statistics.median(errors) * 100:.0f}%")

    if args.layers:
        by_kind_estimate: dict[str, float] = defaultdict(float)
        by_kind_measured: dict[str, float] = defaultdict(float)
        for name in names:
            for row in profiles[name].layers:
                if row.latency_ms and not any(
                    other.path.startswith(row.path + ".") for other in profiles[name].layers if row.path
                ):
                    by_kind_estimate[row.type] += row.latency_ms
            for kind, seconds in leaf_times(name, args.rounds).items():
                by_kind_measured[kind] += seconds * 1e3
        print()
        print(f"{'leaf module type':<28} {'estimate ms':>12} {'measured ms':>12} {'ratio':>7}")
        for kind in sorted(by_kind_measured, key=lambda kind: -by_kind_measured[kind]):
            estimate = by_kind_estimate.get(kind, 0.0)
            real = by_kind_measured[kind]
            print(f"{kind:<28} {estimate:>12.2f} {real:>12.2f} {estimate / real if real else 0:>7.2f}")


if __name__ == "__main__":
    main()
