"""Tensors the engine moves to the profiled device besides parameters and buffers: plain tensor
attributes of modules, and tensors inside the inputs' objects (dataclasses, named tuples, plain
objects such as a key-value cache). The caller's objects and the model are left as they were."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import torch
from engine_helpers import profile_both
from torch import nn

from pytest_netbudget import profile


class MaskedMixer(nn.Module):
    """Mixes positions through a plain tensor attribute (not a registered buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)
        self.mix = torch.tril(torch.ones(5, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix @ self.proj(x)


def test_plain_tensor_attribute_moves_with_the_model():
    """[5, 4] @ [4, 4] then [5, 5] @ [5, 4]: 80 + 100 MACs, on cpu and on meta."""
    model = MaskedMixer()
    mix = model.mix
    p = profile_both(model, torch.randn(5, 4))
    assert p.macs == 5 * 4 * 4 + 5 * 5 * 4
    assert model.mix is mix and model.mix.device.type == "cpu"
    assert profile(model, torch.randn(5, 4), device="cpu", dtype="float16").macs == p.macs


@dataclasses.dataclass
class Batch:
    tokens: torch.Tensor
    scale: float


Pair = namedtuple("Pair", ["left", "right"])


class Cache:
    """A key-value cache as decoders keep one: the forward appends to it by reassigning."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.layers = [{"keys": keys}]


class Consumer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, batch: Batch, pair: Pair, cache: Cache) -> torch.Tensor:
        x = self.embed(batch.tokens) * batch.scale  # [2, 3, 4]
        cache.layers[0]["keys"] = torch.cat([cache.layers[0]["keys"], x], dim=1)  # [2, 5, 4]
        scores = x @ cache.layers[0]["keys"].transpose(1, 2)  # [2, 3, 5]
        return scores + pair.left @ pair.right


def test_tensors_inside_dataclasses_named_tuples_and_objects():
    """Scores 2*3*4*5 MACs; the pair 2*3*6*5; the embedding lookup is free. FLOPs: the scale
    (24), the add (30), 2*MACs."""
    batch = Batch(torch.randint(0, 10, (2, 3)), 0.5)
    pair = Pair(torch.randn(2, 3, 6), torch.randn(2, 6, 5))
    cache = Cache(torch.randn(2, 2, 4))
    p = profile_both(Consumer(), (batch, pair, cache))
    macs = 2 * 3 * 4 * 5 + 2 * 3 * 6 * 5
    assert p.macs == macs
    assert p.flops == 2 * macs + 24 + 30
    assert cache.layers[0]["keys"].shape == (2, 2, 4)  # the caller's cache did not grow
    assert batch.tokens.device.type == "cpu"
