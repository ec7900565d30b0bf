"""On meta, take the fused attention kernels that CPU takes, so activation figures agree.

PyTorch picks no fused kernel for meta tensors: ``F.scaled_dot_product_attention``
runs its math path there and forms the whole score matrix, which the CPU flash
kernel never does (one causal 1x8x2048x64 call: 276 MB on meta against 4 MB on
CPU), and ``nn.MultiheadAttention`` refuses its fast path (one fused op on CPU) for
meta tensors. Where CPU would run the flash kernel, the routing below calls the same
kernel on meta, whose meta implementation only infers shapes; while a meta profile runs,
``nn.MultiheadAttention`` takes its fast path on meta wherever it would on CPU. MACs and
FLOPs do not change (both paths are counted alike); the live-tensor peak and a training
step's figures then match CPU.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch.nn.modules import activation
from torch.utils._python_dispatch import _disable_current_modes

from .kernel_overrides import KernelOverride


def _cpu_probe(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with ``tensor``'s sizes, dtype, last-dimension stride and ``requires_grad``,
    holding one row: all that CPU's kernel choice reads, for a few bytes."""
    last = tensor.stride(-1) if tensor.dim() else 1
    row = torch.empty(max((tensor.shape[-1] - 1) * last + 1, 0) if tensor.dim() else 1, dtype=tensor.dtype)
    probe = row.as_strided(tensor.shape, (0,) * (tensor.dim() - 1) + ((last,) if tensor.dim() else ()))
    return probe.requires_grad_(tensor.requires_grad)


#: ``sdp::SDPBackend::flash_attention``, as ``_fused_sdp_choice`` answers it.
FLASH_ATTENTION = 1


def cpu_sdp_choice(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> int:
    """The kernel (``sdp::SDPBackend``'s number) CPU's ``F.scaled_dot_product_attention`` picks for
    tensors like these, asked of CPU's own ``_fused_sdp_choice`` (grouped-query attention, masks and
    strides included)."""
    gqa = {"enable_gqa": True} if enable_gqa else {}  # a keyword torch has had since 2.5 only
    with _disable_current_modes():  # the probes are no op of the model's: no dispatch mode sees them
        probes = [_cpu_probe(tensor) for tensor in (query, key, value)]
        mask = _cpu_probe(attn_mask) if attn_mask is not None else None
        choose: Any = torch._fused_sdp_choice  # its stub lags its signature (enable_gqa)
        return choose(*probes, mask, dropout_p, is_causal, scale=scale, **gqa)


def _flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Any = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    """CPU's flash branch of ``scaled_dot_product_attention``, where CPU takes it; else None."""
    if cpu_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) != FLASH_ATTENTION:
        return None
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # As CPU does before its kernel: keep -> 0, mask out -> -inf, in the query's dtype.
        minus_infinity = torch.scalar_tensor(float("-inf"), dtype=query.dtype, device=attn_mask.device)
        zero = torch.scalar_tensor(0.0, dtype=query.dtype, device=attn_mask.device)
        attn_mask = torch.where(attn_mask, zero, minus_infinity)
        del minus_infinity, zero  # freed before the kernel runs, as CPU's temporaries are
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return kernel(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


_ATTENTION = torch.ops.aten.scaled_dot_product_attention.default


def _meta_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``aten::scaled_dot_product_attention`` on meta tensors: the flash kernel where CPU takes
    it, else the composite (math) path that CPU takes then too."""
    fused = _flash_attention(*args, **kwargs)
    return fused if fused is not None else _ATTENTION.decompose(*args, **kwargs)


#: While active, meta-device ``F.scaled_dot_product_attention`` calls run the kernel CPU would:
#: a kernel for ``aten::scaled_dot_product_attention`` at the ``AutogradMeta`` key, which meta
#: calls reach before the composite decomposes them. A model that calls no attention pays nothing.
FUSED_KERNELS_ON_META = KernelOverride("scaled_dot_product_attention", _meta_attention, ("meta",))


class _FastPathOnMeta:
    """``nn.MultiheadAttention`` takes its fast path for meta tensors too, on the threads inside.

    Its forward asks ``torch.nn.modules.activation._check_arg_device`` whether each tensor is on
    cpu, cuda or a private backend; every other condition (eval mode, no grad, batch first, ...)
    is checked as usual. While a holder is inside, that module-level function is ours, and answers
    yes for meta tensors on the holder's thread; the original is put back when the last one leaves.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._local = threading.local()
        self._original = getattr(activation, "_check_arg_device", None)  # torch 2.1 checks devices inline

    def _check_arg_device(self, tensor: torch.Tensor | None) -> bool:
        if tensor is not None and tensor.device.type == "meta" and getattr(self._local, "depth", 0) > 0:
            return True
        return self._original(tensor) if self._original is not None else True  # set whenever this is in place

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        if self._original is None:
            yield
            return
        with self._lock:
            if self._holders == 0:
                cast(Any, activation)._check_arg_device = self._check_arg_device
            self._holders += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    activation._check_arg_device = self._original


MHA_FAST_PATH_ON_META = _FastPathOnMeta()


@contextlib.contextmanager
def fused_attention_on_meta(device: torch.device) -> Iterator[None]:
    """On meta (where this torch has the CPU flash kernel, 2.2 and later): attention as CPU runs it."""
    if device.type != "meta" or not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        yield
        return
    with FUSED_KERNELS_ON_META.on(device), MHA_FAST_PATH_ON_META.on():
        yield
