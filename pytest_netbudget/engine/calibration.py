"""This machine's own roofline, measured: what ``netbudget calibrate`` runs.

Three peaks, each the best of a few timed runs (a peak is what the machine can reach, and
other processes only ever slow a run down): a large float32 matmul's FLOP/s at the thread
count in use, a large copy's bandwidth (bytes read plus bytes written, as the estimate counts
an op's traffic), and the time of a tiny op, the eager overhead every op pays. Then, per op
family, the share of its roofline that representative ops of typical size attain here (their
roofline time over their best measured time, less the overhead; the median over the family's
ops): convolutions and attention run below the matmul peak, while elementwise ops on tensors
that stay in cache beat the main-memory bandwidth the roof assumes (a share above 1). The result is a target like any other, named ``this-machine``, so that
estimated latency can be held against measured time on the same machine.
"""

from __future__ import annotations

import functools
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..targets import Target, user_target

MATMUL_SIZE = 1024  # 2 * 1024**3 = 2.1 GFLOP: past every cache, yet short enough for a run to go uninterrupted
COPY_BYTES = 64 * 2**20  # source and destination together far past the last-level cache
TINY_OPS = 2000


@dataclass(frozen=True)
class Calibration:
    """What was measured, and under which settings."""

    threads: int
    matmul_flops: float  # FLOP/s, float32
    copy_bandwidth: float  # bytes/s, read + written
    op_overhead_s: float
    runs: int
    cpu_time: bool = False  # timed by the thread's CPU clock rather than the wall clock
    efficiency: dict[str, float] = field(default_factory=dict)  # op family -> share of its roofline attained

    def target(self, name: str = "this-machine", efficiency: bool = True) -> Target:
        """The measured target; ``efficiency=False`` leaves out the per-family shares (the pure roofline)."""
        return user_target(
            name,
            self.title,
            {"fp32": self.matmul_flops / 1e12},
            self.copy_bandwidth / 1e9,
            self.op_overhead_s * 1e6,
            self.source,
            self.efficiency if efficiency else None,
        )

    @property
    def title(self) -> str:
        return f"this machine ({platform.machine() or 'cpu'}, {self.threads} threads)"

    @property
    def source(self) -> str:
        return (
            f"netbudget calibrate: best of {self.runs} runs of a {MATMUL_SIZE}x{MATMUL_SIZE} float32 matmul, "
            f"a {COPY_BYTES // 2**20} MiB copy and {TINY_OPS} one-element adds; efficiency: best of "
            f"{2 * self.runs + 1} runs of each family's representative ops; torch {torch.__version__}, {self.threads} "
            f"threads, {'CPU' if self.cpu_time else 'wall'} time"
        )

    def toml(self, name: str = "this-machine") -> str:
        """The table to paste into pyproject.toml."""
        return (
            f"[tool.netbudget.targets.{name}]\n"
            f'title = "{self.title}"\n'
            f"peak_tflops = {{ fp32 = {self.matmul_flops / 1e12:.6g} }}\n"
            f"bandwidth_gbs = {self.copy_bandwidth / 1e9:.6g}\n"
            f"op_overhead_us = {self.op_overhead_s * 1e6:.3g}\n"
            f"efficiency = {{ {', '.join(f'{family} = {share:.3g}' for family, share in self.efficiency.items())} }}\n"
            f'source = "{self.source}"\n'
        )


Clock = Callable[[], float]


def _best(run: Callable[[], object], runs: int, clock: Clock) -> float:
    """The shortest of ``runs`` timed calls, after one untimed warm-up."""
    run()
    best = float("inf")
    for _ in range(runs):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best


def _time_matmul(runs: int, clock: Clock) -> float:
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    return _best(lambda: torch.mm(a, b, out=out), runs, clock)


def _time_copy(runs: int, clock: Clock) -> float:
    source = torch.ones(COPY_BYTES // 4)
    destination = torch.empty_like(source)
    return _best(lambda: destination.copy_(source), runs, clock)


def _time_tiny_ops(runs: int, clock: Clock) -> float:
    x, y = torch.ones(1), torch.ones(1)

    def tiny_ops() -> None:
        for _ in range(TINY_OPS):
            torch.add(x, y)

    return _best(tiny_ops, runs, clock)


class _Op(torch.nn.Module):
    """One representative op as a module, so that the engine estimates it as it would in a model."""

    def __init__(self, function: Callable[..., Any], **weights: torch.Tensor) -> None:
        super().__init__()
        self.function = function
        for name, tensor in weights.items():
            self.register_buffer(name, tensor)

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.function(self, *inputs)


def _representatives() -> dict[str, list[tuple[torch.nn.Module, tuple]]]:
    """Per family, ops of the sizes ResNets, BERT-base-sized transformers and small LSTMs run at batch 1."""
    image = torch.randn(1, 64, 56, 56)
    tokens = torch.randn(128, 768)
    ones, zeros = torch.ones(64), torch.zeros(64)
    lstm = torch.nn.LSTM(256, 256, batch_first=True)
    return {
        "linalg": [(_Op(lambda m, x: F.linear(x, m.w, m.b), w=torch.randn(3072, 768), b=torch.randn(3072)), (tokens,))],
        "conv": [
            (_Op(lambda m, x: F.conv2d(x, m.w, padding=1), w=torch.randn(64, 64, 3, 3)), (image,)),
            (_Op(lambda m, x: F.conv2d(x, m.w), w=torch.randn(256, 64, 1, 1)), (image,)),
            (
                _Op(lambda m, x: F.conv2d(x, m.w, stride=2, padding=3), w=torch.randn(64, 3, 7, 7)),
                (torch.randn(1, 3, 224, 224),),
            ),
        ],
        "elementwise": [
            (_Op(lambda m, x: F.gelu(x)), (torch.randn(128, 3072),)),
            (_Op(lambda m, x: F.layer_norm(x, (768,), m.w, m.b), w=torch.ones(768), b=torch.zeros(768)), (tokens,)),
            (
                _Op(lambda m, x: F.batch_norm(x, m.mean, m.var, m.w, m.b), mean=zeros, var=ones, w=ones, b=zeros),
                (image,),
            ),
            (_Op(lambda m, x, y: x + y), (image, torch.randn(1, 64, 56, 56))),
            (_Op(lambda m, x: torch.relu(x)), (image,)),
        ],
        "pooling": [(_Op(lambda m, x: F.max_pool2d(x, 3, 2, 1)), (torch.randn(1, 64, 112, 112),))],
        "attention": [(_Op(lambda m, q: F.scaled_dot_product_attention(q, q, q)), (torch.randn(1, 12, 128, 64),))],
        "recurrent": [(lstm, (torch.randn(1, 50, 256),))],
        "free": [(_Op(lambda m, x: torch.cat([x, x], 1)), (image,))],
    }


def _efficiencies(base: Target, runs: int, clock: Clock) -> dict[str, float]:
    """Per family, the median over its representatives of roofline time / best measured time."""
    from .run import profile  # the engine estimates each op as it would inside a model

    shares = {}
    with torch.no_grad():
        for family, ops in _representatives().items():
            attained = []
            for module, inputs in ops:
                estimate = profile(module, inputs, device="cpu", target=base)
                parts = estimate.roofline
                assert parts is not None  # a profile on a target has its roofline
                roof_s = (parts.compute_ms + parts.memory_ms) / 1e3
                measured = _best(functools.partial(module, *inputs), runs, clock)
                attained.append(roof_s / max(measured - parts.overhead_ms / 1e3, 1e-9))
            shares[family] = statistics.median(attained)
    return shares


def calibrate(runs: int = 10, threads: int | None = None, cpu_time: bool = False) -> Calibration:
    """Measure this machine on CPU at ``threads`` (default: torch's current thread count).

    ``cpu_time`` times with the calling thread's CPU clock instead of the wall clock: on a
    machine that other processes share, what a run costs when it is not waiting for a core.
    It needs one thread (a CPU clock of one thread does not see the others' work)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if cpu_time and torch.get_num_threads() != 1:
            raise ValueError(f"CPU time measures one thread: calibrate with threads=1, not {torch.get_num_threads()}")
        clock = time.thread_time if cpu_time else time.perf_counter
        with torch.no_grad():
            matmul = _time_matmul(runs, clock)
            copy = _time_copy(runs, clock)
            tiny = _time_tiny_ops(runs, clock)
        peaks = Calibration(
            threads=torch.get_num_threads(),
            matmul_flops=2 * MATMUL_SIZE**3 / matmul,
            copy_bandwidth=2 * COPY_BYTES / copy,
            op_overhead_s=tiny / TINY_OPS,
            runs=runs,
            cpu_time=cpu_time,
        )
        return replace(peaks, efficiency=_efficiencies(peaks.target(efficiency=False), 2 * runs + 1, clock))
    finally:
        torch.set_num_threads(previous)
