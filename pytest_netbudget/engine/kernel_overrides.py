"""Kernels put in front of an aten op's own while a profile runs, so that the tracer sees the op's
work in the form it is counted in.

A kernel registered with ``torch.library`` at an op's autograd dispatch keys runs before the op's
composite decomposition, with or without grad, and only for that op: nothing else pays for it, as
a ``TorchFunctionMode`` seeing every torch call would. A registration is process-wide while it is
active (another thread's calls take it too) and counted, so nested profiles share one; under
``torch.inference_mode`` autograd keys are skipped and the op keeps its own path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


class KernelOverride:
    """``kernel`` in front of ``aten::<op>`` at the dispatch ``keys`` while any holder is inside."""

    def __init__(self, op: str, kernel: Callable[..., Any], keys: tuple[str, ...]) -> None:
        self.op, self.kernel, self.keys = op, kernel, keys
        self._lock = threading.Lock()
        self._active = 0
        self._library: Any = None

    def __enter__(self) -> KernelOverride:
        with self._lock:
            if self._active == 0:
                library = torch.library.Library("aten", "IMPL")
                for key in self.keys:
                    library.impl(self.op, self.kernel, key)
                self._library = library
            self._active += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._library._destroy()
                self._library = None


def _vecdot_as_matmul(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``linalg.vecdot`` as the dot products it is, a batched ``(..., 1, K) @ (..., K, 1)``, which
    the tracer counts as K MACs per output element; its composite (a product and a sum) would count
    only FLOPs. Gradients flow through the matmul as through the composite."""
    x, y = torch.broadcast_tensors(x, y)
    rows = x.movedim(dim, -1).conj().unsqueeze(-2)
    columns = y.movedim(dim, -1).unsqueeze(-1)
    return torch.matmul(rows, columns).squeeze(-1).squeeze(-1)


#: In effect whenever a profile runs, on every device.
VECDOT_AS_MATMUL = KernelOverride("linalg_vecdot", _vecdot_as_matmul, ("AutogradCPU", "AutogradCUDA", "AutogradMeta"))
