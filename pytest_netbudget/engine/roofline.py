"""Estimated time per op on a target: the larger of its compute time at the peak for its
dtype and its memory time at the target's bandwidth, plus the target's per-op overhead.

The tracer asks once per op that moves bytes or does arithmetic, with that op's own FLOPs
and bytes (a sum of maxima, not the maximum of sums: a layer of one heavy GEMM and many
cheap elementwise ops is neither all compute nor all memory). Each op's time goes to its
module's compute-bound or memory-bound part, and its overhead to a third, so a layer's
parts add up to its time and the larger bound part says what bounds it. A target may give an
op family's efficiency (the share of its roofline its kernels attain): the family's ops then
take their roofline time over that share.
"""

from __future__ import annotations

from typing import Any

import torch

from ..targets import Target, precision_of


class OpClock:
    """Seconds per FLOP by dtype, per byte, and per op, of one target, ready for the tracer."""

    __slots__ = ("_efficiency", "_per_flop", "_target", "matmul_fp32", "overhead", "per_byte")

    def __init__(self, target: Target) -> None:
        self._target = target
        self._per_flop: dict[torch.dtype, float] = {}
        self._efficiency = dict(target.efficiency)  # op family -> share of its roofline attained
        #: float32 matmuls run at the tf32 peak where PyTorch is allowed to use it
        #: (``torch.set_float32_matmul_precision("high")``), as the part itself would.
        tf32 = torch.get_float32_matmul_precision() != "highest"
        self.matmul_fp32 = 1 / target.peak("tf32" if tf32 else "fp32")
        self.per_byte = 1 / target.bandwidth
        self.overhead = target.op_overhead_s

    def per_flop(self, dtype: torch.dtype) -> float:
        seconds = self._per_flop.get(dtype)
        if seconds is None:
            seconds = self._per_flop[dtype] = 1 / self._target.peak(precision_of(str(dtype).removeprefix("torch.")))
        return seconds

    def charge(self, tally: Any, flops: int, macs: int, moved: int, dtype: torch.dtype, family: str | None) -> None:
        """Add one op's time to ``tally`` (a LayerTally); ``family`` is its formula's op family."""
        if not (flops or moved):
            return  # an allocation or a no-op launches nothing
        if macs and dtype == torch.float32:
            per_flop = self.matmul_fp32
        else:
            per_flop = self._per_flop.get(dtype) or self.per_flop(dtype)
        attained = self._efficiency.get(family, 1.0) if self._efficiency and family is not None else 1.0
        compute = flops * per_flop / attained
        memory = moved * self.per_byte / attained
        if compute >= memory:
            tally.compute_s += compute
        else:
            tally.memory_s += memory
        tally.overhead_s += self.overhead
