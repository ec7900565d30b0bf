"""Outputs on meta for ops whose meta kernel refuses inputs that CPU runs, is missing, or gives
other outputs than CPU's kernel.

PyTorch's meta kernel of ``_grouped_mm`` applies the CUDA kernel's checks (bfloat16
only, 16-byte strides), so a float32 mixture-of-experts layer that runs on CPU fails on
meta; ``quantized::linear_dynamic`` has no meta kernel at all. On meta only the output's
shape and dtype matter: these functions give them, give no output where CPU's kernel gives
none (``nn.MultiheadAttention``'s fast path without its weights), and give oneDNN's LSTM the
workspace and the two bias gradients CPU's kernel allocates (PyTorch's meta kernel leaves the
one empty and gives the other twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .recurrent_on_meta import onednn_rnn_layer_backward_on_meta, onednn_rnn_layer_on_meta


def _grouped_mm(
    mat_a: torch.Tensor,
    mat_b: torch.Tensor,
    offs: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """2-D by 2-D: one [M, N] per group; 2-D by 3-D: [M, N]; 3-D by 2-D: [M, N]; 3-D by 3-D: [G, M, N]."""
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        if offs is None:
            raise ValueError("grouped mm of two 2-D operands needs offs (where each group ends)")
        shape = [offs.shape[0], mat_a.shape[0], mat_b.shape[1]]
    elif mat_a.dim() == 3 and mat_b.dim() == 3:
        shape = [mat_a.shape[0], mat_a.shape[1], mat_b.shape[-1]]
    else:
        shape = [mat_a.shape[-2], mat_b.shape[-1]]
    return torch.empty(shape, dtype=out_dtype or mat_a.dtype, device="meta")


def _linear_dynamic(x: torch.Tensor, packed: torch.ScriptObject, reduce_range: bool = False) -> torch.Tensor:
    """A dynamically quantized linear layer: float in, float out; its width from the packed weight."""
    out_features = torch.ops.quantized.linear_unpack(packed)[0].shape[0]
    return torch.empty([*x.shape[:-1], out_features], dtype=x.dtype, device="meta")


def _native_multi_head_attention(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fast path's output, and its attention weights only when asked for: CPU's kernel returns
    none (an undefined tensor) without ``need_weights``, PyTorch's meta kernel an empty one."""
    output, weights = torch.ops.aten._native_multi_head_attention.default(*args, **kwargs)
    need_weights = args[10] if len(args) > 10 else kwargs.get("need_weights", True)
    return output, weights if need_weights else None


#: aten overload -> a function of the op's arguments that returns its meta output.
META_KERNELS: dict[Any, Callable[..., Any]] = {}
if hasattr(torch.ops.aten, "_grouped_mm"):
    META_KERNELS[torch.ops.aten._grouped_mm.default] = _grouped_mm
if hasattr(torch.ops.aten, "mkldnn_rnn_layer"):
    META_KERNELS[torch.ops.aten.mkldnn_rnn_layer.default] = onednn_rnn_layer_on_meta
    META_KERNELS[torch.ops.aten.mkldnn_rnn_layer_backward.default] = onednn_rnn_layer_backward_on_meta
if hasattr(torch.ops.aten, "_native_multi_head_attention"):
    META_KERNELS[torch.ops.aten._native_multi_head_attention.default] = _native_multi_head_attention
if hasattr(torch.ops.quantized, "linear_dynamic"):
    META_KERNELS[torch.ops.quantized.linear_dynamic.default] = _linear_dynamic


def run_on_meta(func: Any, args: tuple, kwargs: dict) -> Any:
    """The op's output; on meta through our kernel where PyTorch's refuses what CPU runs."""
    kernel = META_KERNELS.get(func)
    if kernel is not None and args and getattr(args[0], "is_meta", False):
        return kernel(*args, **kwargs)
    return func(*args, **kwargs)
