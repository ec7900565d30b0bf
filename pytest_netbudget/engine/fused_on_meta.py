"""On meta, take the fused attention kernel that CPU takes, so activation figures agree.

PyTorch picks no fused kernel for meta tensors: ``F.scaled_dot_product_attention``
runs its math path there and forms the whole score matrix, which the CPU flash
kernel never does (one causal 1x8x2048x64 call: 276 MB on meta against 4 MB on
CPU). Where CPU would run the flash kernel, this mode calls the same kernel on
meta, whose meta implementation only infers shapes. MACs and FLOPs do not change
(both paths are counted alike); the live-tensor peak then matches CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def cpu_takes_flash(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float = 0.0, enable_gqa: bool = False
) -> bool:
    """Whether CPU's ``_fused_sdp_choice`` picks its flash kernel for these inputs:
    4-d inputs of one float dtype, one head size, equal head counts, no dropout."""
    tensors = (query, key, value)
    return (
        all(tensor.dim() == 4 for tensor in tensors)
        and query.dtype in FLASH_DTYPES
        and all(tensor.dtype == query.dtype for tensor in tensors)
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and query.shape[1] == key.shape[1] == value.shape[1]
        and not enable_gqa
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


class FusedKernelsOnMeta(TorchFunctionMode):
    """Routes meta-device ``F.scaled_dot_product_attention`` calls to the kernel CPU would run."""

    @staticmethod
    def wanted(device: torch.device) -> bool:
        """On meta, where this torch has the CPU flash kernel (2.2 and later)."""
        return device.type == "meta" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and getattr(args[0], "is_meta", False):
            fused = _flash_attention(*args, **kwargs)
            if fused is not None:
                return fused
        return func(*args, **kwargs)
