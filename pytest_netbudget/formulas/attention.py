"""Fused attention kernels, counted as PyTorch's unfused path (the one taken on meta) counts them.

FlopCounterMode misses the kernels that eval-mode models take on CPU and CUDA (flash /
efficient SDPA, the ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` fast
paths); counting them as their unfused form makes cpu, cuda and meta agree.
"""

from __future__ import annotations

import math

import torch

from .elementwise import NORM_COST, REDUCTION_COST, SOFTMAX_COST
from .registry import Cost, OpCall, aten, numel, register


def _attention_extra(batch_heads: int, q_len: int, k_len: int, head_dim: int, masked: bool) -> int:
    """Elementwise FLOPs of attention as PyTorch's math path runs it (the path taken on meta):
    q and k scaled, softmax over the scores, and the mask added when there is one."""
    scores = batch_heads * q_len * k_len
    return batch_heads * (q_len + k_len) * head_dim + SOFTMAX_COST * scores + (scores if masked else 0)


def sdpa_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    batch_heads = math.prod(query.shape[:-2])
    q_len, k_len = query.shape[-2], key.shape[-2]
    return batch_heads * q_len * k_len * (query.shape[-1] + value.shape[-1])


def _sdpa_formula(call: OpCall) -> Cost:
    query, key, value = call["query"], call["key"], call["value"]
    macs = sdpa_macs(query, key, value)
    masked = bool(call["is_causal"]) or call.get("attn_mask") is not None or call.get("attn_bias") is not None
    extra = _attention_extra(math.prod(query.shape[:-2]), query.shape[-2], key.shape[-2], query.shape[-1], masked)
    return Cost(macs, 2 * macs + extra)


def _native_mha_formula(call: OpCall) -> Cost:
    """The ``nn.MultiheadAttention`` fast path: in-projection, QK^T, AV, out-projection in one kernel.

    Counted as the unfused path counts it (PyTorch's slow path, taken on meta): with
    ``need_weights`` the scores are formed explicitly, q alone is scaled and the weights
    are averaged over heads; without it, the attention runs as SDPA.
    """
    query, key = call["query"], call["key"]
    embed, heads = call["embed_dim"], call["num_head"]
    batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
    head_dim = embed // heads
    projections = (batch * q_len + 2 * batch * k_len) * embed * embed + batch * q_len * embed * embed
    scores = batch * heads * q_len * k_len
    macs = projections + 2 * scores * head_dim
    biases = batch * (q_len + 2 * k_len) * embed + batch * q_len * embed
    masked = call["mask"] is not None
    if call["need_weights"]:
        extra = batch * q_len * embed + SOFTMAX_COST * scores + (scores if masked else 0)
        if call["average_attn_weights"]:
            extra += REDUCTION_COST * scores
    else:
        extra = _attention_extra(batch * heads, q_len, k_len, head_dim, masked)
    return Cost(macs, 2 * macs + biases + extra)


def _transformer_encoder_layer_formula(call: OpCall) -> Cost:
    """The ``nn.TransformerEncoderLayer`` fast path: self-attention, two layer norms and the
    feed-forward block in one kernel, counted as the unfused layer counts them."""
    src = call["src"]
    embed, heads = call["embed_dim"], call["num_heads"]
    hidden = call["ffn_weight_1"].shape[0]
    tokens = numel(src) // embed
    batch = src.shape[0] if src.dim() == 3 else 1
    seq = tokens // batch
    scores = batch * heads * seq * seq
    macs = 4 * tokens * embed * embed + 2 * scores * (embed // heads) + 2 * tokens * embed * hidden
    extra = (
        tokens * 3 * embed  # in-projection bias
        + _attention_extra(batch * heads, seq, seq, embed // heads, call["mask"] is not None)
        + tokens * embed  # out-projection bias
        + 2 * tokens * embed  # two residual additions
        + 2 * NORM_COST * tokens * embed  # two layer norms
        + 2 * tokens * hidden  # first feed-forward bias and its activation
        + tokens * embed  # second feed-forward bias
    )
    return Cost(macs, 2 * macs + extra)


register(
    aten(
        """
        _scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
        _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
        _scaled_dot_product_fused_attention_overrideable
        """
    ),
    _sdpa_formula,
    family="attention",
    rule=(
        "MACs = B*H*Lq*Lk*(E + Ev) for QK^T and AV; FLOPs = 2*MACs + B*H*(Lq + Lk)*E (q and k scaled)"
        f" + {SOFTMAX_COST} per score (softmax) + 1 per score when masked or causal"
    ),
)
register(
    "aten::_native_multi_head_attention",
    _native_mha_formula,
    family="attention",
    rule=(
        "MACs = E*E per token for each of the q, k, v and out projections + B*H*Lq*Lk*E/H each for QK^T and AV;"
        f" FLOPs = 2*MACs + projection biases + {SOFTMAX_COST} per score (softmax) + scaling, mask and"
        " head-averaging as nn.MultiheadAttention's unfused path does"
    ),
)
register(
    "aten::_transformer_encoder_layer_fwd",
    _transformer_encoder_layer_formula,
    family="attention",
    rule=(
        "MACs = 4*T*E*E (attention projections) + 2*B*H*S*S*E/H (QK^T, AV) + 2*T*E*F (feed-forward);"
        f" FLOPs = 2*MACs + biases, attention scaling and softmax ({SOFTMAX_COST} per score), 2 residual adds,"
        f" 2 layer norms ({NORM_COST} per element), activation"
    ),
)
