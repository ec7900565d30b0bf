"""This machine's own roofline, measured: what ``netbudget calibrate`` runs.

Three figures, each the best of a few timed runs (a peak is what the machine can reach, and
other processes only ever slow a run down): a large float32 matmul's FLOP/s at the thread
count in use, a large copy's bandwidth (bytes read plus bytes written, as the estimate counts
an op's traffic), and the time of a tiny op, the eager overhead every op pays. The result
is a target like any other, named ``this-machine``, so that estimated latency can be held
against measured time on the same machine.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..targets import Target, user_target

MATMUL_SIZE = 2048  # 2 * 2048**3 = 17.2 GFLOP: long enough to time, short on a slow core
COPY_BYTES = 256 * 2**20  # far past any cache
TINY_OPS = 2000


@dataclass(frozen=True)
class Calibration:
    """What was measured, and under which settings."""

    threads: int
    matmul_flops: float  # FLOP/s, float32
    copy_bandwidth: float  # bytes/s, read + written
    op_overhead_s: float
    runs: int

    def target(self, name: str = "this-machine") -> Target:
        return user_target(
            name,
            self.title,
            {"fp32": self.matmul_flops / 1e12},
            self.copy_bandwidth / 1e9,
            self.op_overhead_s * 1e6,
            self.source,
        )

    @property
    def title(self) -> str:
        return f"this machine ({platform.machine() or 'cpu'}, {self.threads} threads)"

    @property
    def source(self) -> str:
        return (
            f"netbudget calibrate: best of {self.runs} runs of a {MATMUL_SIZE}x{MATMUL_SIZE} float32 matmul, "
            f"a {COPY_BYTES // 2**20} MiB copy and {TINY_OPS} one-element adds, torch {torch.__version__}, "
            f"{self.threads} threads"
        )

    def toml(self, name: str = "this-machine") -> str:
        """The table to paste into pyproject.toml."""
        return (
            f"[tool.netbudget.targets.{name}]\n"
            f'title = "{self.title}"\n'
            f"peak_tflops = {{ fp32 = {self.matmul_flops / 1e12:.6g} }}\n"
            f"bandwidth_gbs = {self.copy_bandwidth / 1e9:.6g}\n"
            f"op_overhead_us = {self.op_overhead_s * 1e6:.3g}\n"
            f'source = "{self.source}"\n'
        )


def _best(run: Callable[[], object], runs: int) -> float:
    """The shortest of ``runs`` timed calls, after one untimed warm-up."""
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _time_matmul(runs: int) -> float:
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    return _best(lambda: torch.mm(a, b, out=out), runs)


def _time_copy(runs: int) -> float:
    source = torch.ones(COPY_BYTES // 4)
    destination = torch.empty_like(source)
    return _best(lambda: destination.copy_(source), runs)


def _time_tiny_ops(runs: int) -> float:
    x, y = torch.ones(1), torch.ones(1)

    def tiny_ops() -> None:
        for _ in range(TINY_OPS):
            torch.add(x, y)

    return _best(tiny_ops, runs)


def calibrate(runs: int = 5, threads: int | None = None) -> Calibration:
    """Measure this machine on CPU at ``threads`` (default: torch's current thread count)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            matmul = _time_matmul(runs)
            copy = _time_copy(runs)
            tiny = _time_tiny_ops(runs)
        return Calibration(
            threads=torch.get_num_threads(),
            matmul_flops=2 * MATMUL_SIZE**3 / matmul,
            copy_bandwidth=2 * COPY_BYTES / copy,
            op_overhead_s=tiny / TINY_OPS,
            runs=runs,
        )
    finally:
        torch.set_num_threads(previous)
