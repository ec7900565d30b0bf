"""On meta, take the fused attention kernel that CPU takes, so activation figures agree.

PyTorch picks no fused kernel for meta tensors: ``F.scaled_dot_product_attention``
runs its math path there and forms the whole score matrix, which the CPU flash
kernel never does (one causal 1x8x2048x64 call: 276 MB on meta against 4 MB on
CPU). Where CPU would run the flash kernel, the routing below calls the same kernel on
meta, whose meta implementation only infers shapes. MACs and FLOPs do not change
(both paths are counted alike); the live-tensor peak then matches CPU.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F

from .kernel_overrides import KernelOverride

FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def cpu_takes_flash(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float = 0.0, enable_gqa: bool = False
) -> bool:
    """Whether CPU's ``_fused_sdp_choice`` picks its flash kernel for these inputs:
    4-d inputs of one float dtype, one head size, no dropout, and equal head counts or, with
    ``enable_gqa`` (grouped-query attention), key and value heads that divide the query's."""
    tensors = (query, key, value)
    heads = query.shape[1] == key.shape[1] if not enable_gqa else query.shape[1] % key.shape[1] == 0
    return (
        all(tensor.dim() == 4 for tensor in tensors)
        and query.dtype in FLASH_DTYPES
        and all(tensor.dtype == query.dtype for tensor in tensors)
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and heads
        and key.shape[1] == value.shape[1]
        and dropout_p == 0.0
    )


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
    if not cpu_takes_flash(query, key, value, dropout_p, enable_gqa):
        return None
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # As the CPU path does before its kernel: keep -> 0, mask out -> -inf.
        attn_mask = torch.where(attn_mask, 0.0, float("-inf")).to(query.dtype)
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return kernel(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


_ATTENTION = torch.ops.aten.scaled_dot_product_attention.default
_MHA_CODE = F.multi_head_attention_forward.__code__


def _meta_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``aten::scaled_dot_product_attention`` on meta tensors: the flash kernel where CPU takes
    it, else the composite (math) path that meta takes anyway.

    Calls from inside ``F.multi_head_attention_forward`` keep the math path, as they did when
    this routing was a ``TorchFunctionMode`` (off while it handled that outer call), so that no
    figure moves: routing them too would make ``nn.MultiheadAttention``'s meta activations
    equal CPU's (ViT-B/16: 8.17 -> 8.08 MiB), a change of figures to decide on its own."""
    caller = sys._getframe(2)  # frame 1 is KernelOverride's dispatching kernel, which called this one
    fused = None if caller.f_code is _MHA_CODE else _flash_attention(*args, **kwargs)
    return fused if fused is not None else _ATTENTION.decompose(*args, **kwargs)


#: While active, meta-device ``F.scaled_dot_product_attention`` calls run the kernel CPU would:
#: a kernel for ``aten::scaled_dot_product_attention`` at the ``AutogradMeta`` key, which meta
#: calls reach before the composite decomposes them. A model that calls no attention pays nothing.
FUSED_KERNELS_ON_META = KernelOverride("scaled_dot_product_attention", _meta_attention, ("meta",))


def fused_kernels_wanted(device: torch.device) -> bool:
    """On meta, where this torch has the CPU flash kernel (2.2 and later)."""
    return device.type == "meta" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
