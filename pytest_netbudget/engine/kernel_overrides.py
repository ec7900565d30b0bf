"""Kernels put in front of an aten op's own while a profile runs, so that the tracer sees the op's
work in the form it is counted in.

A kernel registered with ``torch.library`` at an op's autograd dispatch key runs before the op's
composite decomposition, with or without grad, and only for that op: nothing else pays for it, as
a ``TorchFunctionMode`` seeing every torch call would. Under ``torch.inference_mode`` autograd
keys are skipped: the op then reaches the tracer whole, which runs the kernel in effect in its
place (``kernel_in_effect``).

A profile registers the key of its own device only, and a registration, once made, stays for
the process: registering and removing them around every profile made the dispatcher's next calls
slower, about 0.1 ms a profile (a fifth of the spec CNN's fixed cost). Outside a profile the
kernel hands the call to the op's own composite, which is what aten runs for it; inside one (on
any thread, while any profile on that device is active) it runs the counted form.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

#: The autograd key of each device type a profile runs on.
_AUTOGRAD_KEYS = {"cpu": "AutogradCPU", "cuda": "AutogradCUDA", "meta": "AutogradMeta"}
#: Op overload -> the override made for it.
_OVERRIDES: dict[Any, KernelOverride] = {}


class KernelOverride:
    """``kernel`` in front of ``aten::<op>`` for one device type's tensors while any holder is inside;
    ``op`` names an overload too (``"lstm.input"``), the default one when it names none."""

    def __init__(self, op: str, kernel: Callable[..., Any], device_types: tuple[str, ...]) -> None:
        self.op, self.kernel, self.device_types = op, kernel, device_types
        name, _, overload = op.partition(".")
        self.overload = getattr(getattr(torch.ops.aten, name), overload or "default")
        _OVERRIDES[self.overload] = self
        self._lock = threading.Lock()
        self._libraries: dict[str, Any] = {}  # dispatch key -> the torch.library.Library holding it
        self._holders: dict[str, int] = {}  # dispatch key -> profiles inside now

    @contextlib.contextmanager
    def on(self, device: torch.device) -> Iterator[None]:
        """The kernel in place for ``device``'s tensors inside the block (nothing for other devices)."""
        key = _AUTOGRAD_KEYS.get(device.type) if device.type in self.device_types else None
        if key is None:
            yield
            return
        with self._lock:
            if key not in self._libraries:
                library = torch.library.Library("aten", "IMPL")
                library.impl(self.op, self._dispatching(key), key)
                self._libraries[key] = library
            self._holders[key] = self._holders.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._holders[key] -= 1

    def _dispatching(self, key: str) -> Callable[..., Any]:
        """The registered kernel: ours while a holder is inside, else the op's own composite."""
        composite = self.overload.decompose
        kernel, holders = self.kernel, self._holders

        def dispatching(*args: Any, **kwargs: Any) -> Any:
            return kernel(*args, **kwargs) if holders.get(key) else composite(*args, **kwargs)

        return dispatching


def kernel_in_effect(func: Any, tensors: list[torch.Tensor]) -> Callable[..., Any] | None:
    """The kernel in front of ``func`` for these tensors' device while a profile runs there, else None."""
    override = _OVERRIDES.get(func)
    if override is None or not tensors:
        return None
    key = _AUTOGRAD_KEYS.get(tensors[0].device.type)
    return override.kernel if key is not None and override._holders.get(key) else None


def _vecdot_as_matmul(x: torch.Tensor, y: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``linalg.vecdot`` as the dot products it is, a batched ``(..., 1, K) @ (..., K, 1)``, which
    the tracer counts as K MACs per output element; its composite (a product and a sum) would count
    only FLOPs. Gradients flow through the matmul as through the composite."""
    x, y = torch.broadcast_tensors(x, y)
    rows = x.movedim(dim, -1).conj().unsqueeze(-2)
    columns = y.movedim(dim, -1).unsqueeze(-1)
    return torch.matmul(rows, columns).squeeze(-1).squeeze(-1)


#: In effect whenever a profile runs, for the tensors of the device it runs on.
VECDOT_AS_MATMUL = KernelOverride("linalg_vecdot", _vecdot_as_matmul, ("cpu", "cuda", "meta"))
