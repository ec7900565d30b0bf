"""Four models a team might ship: an MNIST CNN, a small transformer classifier, an LSTM tagger, and
a small Llama-style decoder served with a key-value cache."""

from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    """Two conv blocks and a linear head: 28,938 parameters, 2,838,080 MACs on a 28x28 image."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return self.out(x.flatten(1))


class TextClassifier(nn.Module):
    """Token embedding, learned positions, a transformer encoder and a linear head on the mean token."""

    def __init__(
        self,
        vocab_size: int = 8000,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        max_len: int = 256,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(1, max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[:, : tokens.shape[1]]
        return self.head(self.encoder(x).mean(dim=1))


class LSTMTagger(nn.Module):
    """A bidirectional LSTM over word embeddings with a tag classifier on every token."""

    def __init__(self, vocab_size: int = 5000, embed_dim: int = 64, hidden: int = 128, tags: int = 17) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.tagger = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        features, _ = self.lstm(self.embed(tokens))
        return self.tagger(features)


def tagger_inputs() -> torch.Tensor:
    """A batch of 4 sentences of 32 token ids, as the tagger sees them in serving."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 5000, (4, 32), generator=generator)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: each head's two halves rotated by the position's angles."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class Attention(nn.Module):
    """Grouped-query attention: ``kv_heads`` key and value heads shared by ``heads`` query heads. Its cache
    is the keys and values of every token so far, [batch, kv_heads, tokens, head_dim] each."""

    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: tuple | None) -> tuple:
        batch, tokens, _ = x.shape
        q = self.q_proj(x).view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        groups = self.heads // self.kv_heads
        out = nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), is_causal=past is None
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1)), (k, v)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, heads, kv_heads)
        self.mlp_norm = RMSNorm(dim)
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: tuple | None) -> tuple:
        attended, cache = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + attended
        y = self.mlp_norm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(y)) * self.up_proj(y)), cache


class TinyDecoder(nn.Module):
    """A Llama-style decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP, untied LM
    head), called as transformers' causal LMs are: ``model(input_ids, past_key_values=..., use_cache=True)``
    returns ``(logits, cache)``, the cache a tuple of per-layer (keys, values)."""

    def __init__(
        self,
        vocab_size: int = 8000,
        dim: int = 256,
        layers: int = 4,
        heads: int = 8,
        kv_heads: int = 2,
        hidden: int = 704,
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(Block(dim, heads, kv_heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        head_dim = dim // heads
        self.register_buffer("inv_freq", 10000 ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def forward(self, input_ids: torch.Tensor, past_key_values: tuple | None = None, use_cache: bool = False):
        start = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        angles = torch.outer(positions.float(), self.inv_freq.float())
        x = self.embed_tokens(input_ids)
        cos, sin = (
            torch.cat((angles, angles), dim=-1).cos().to(x.dtype),
            torch.cat((angles, angles), dim=-1).sin().to(x.dtype),
        )
        cache = []
        for index, layer in enumerate(self.layers):
            x, kept = layer(x, cos, sin, past_key_values[index] if past_key_values is not None else None)
            cache.append(kept)
        logits = self.lm_head(self.norm(x))
        return (logits, tuple(cache)) if use_cache else logits
