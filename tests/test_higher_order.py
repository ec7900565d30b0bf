"""Higher-order ops: torch.cond, torch.while_loop, checkpoint and flex_attention, counted by hand."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import profile_both
from torch import nn
from torch.nn.attention.flex_attention import flex_attention
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from pytest_netbudget import profile
from pytest_netbudget.formulas import SOFTMAX_COST

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


class Branches(nn.Module):
    """torch.cond on the sign of the input's sum: Linear(4, 4) or the wider Linear(4, 8), summed."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = nn.Linear(4, 4)
        self.wide = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda x: self.narrow(x).sum(-1), lambda x: self.wide(x).sum(-1), (x,))


def test_cond_counts_the_more_expensive_branch():
    """The predicate: a sum (12) and a comparison (1); then the wide branch, whatever the
    predicate: 3*4*8 MACs, its bias (24) and the sum over its 3x8 output (24)."""
    model = Branches()
    for x in (torch.ones(3, 4), -torch.ones(3, 4)):  # each branch taken once
        p = profile_both(model, x)
        assert p.macs == 3 * 4 * 8
        assert p.flops == (12 + 1) + 2 * 96 + 24 + 24
        rows = {row.path: row for row in p.layers}
        assert (rows["wide"].macs, rows["narrow"].macs) == (96, 0)
        with torch.no_grad():
            expected = model.narrow(x).sum(-1) if x.sum() > 0 else model.wide(x).sum(-1)
        assert profile(model, x, device="cpu").layers[0].output_shapes == [list(expected.shape)]


class Loop(nn.Module):
    """torch.while_loop: Linear(4, 4) applied while a counter is below 3."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counter = torch.zeros((), dtype=torch.long, device=x.device)
        return torch.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, self.step(x)), (counter, x))[1]


def test_while_loop_counts_every_iteration():
    """Three bodies (counter + 1, 3*4*4 MACs, the bias 12) and four checks of the condition."""
    p = profile(Loop(), torch.randn(3, 4), device="cpu")
    assert p.macs == 3 * 48
    assert p.flops == 4 * 1 + 3 * (1 + 2 * 48 + 12)
    assert p.uncounted_ops == {}
    assert next(row for row in p.layers if row.path == "step").calls == 3


def test_while_loop_on_meta_says_why_it_cannot_run():
    with pytest.raises(ValueError, match="no value on meta: profile this model on cpu or cuda"):
        profile(Loop(), torch.randn(3, 4), device="meta")


class Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(checkpoint(self.inner, x, use_reentrant=False))


def test_checkpoint_forward_and_training_step():
    """Forward: 3*4*4 + 3*4*2 MACs. Step: the checkpointed block saves nothing and runs its
    forward again in the backward for the ReLU's output (48), then its weight gradient (48;
    the input needs none); head: weight and input gradients (2 x 24). FlopCounterMode agrees."""
    p = profile_both(Checkpointed(), torch.randn(3, 4))
    assert p.macs == 48 + 24
    model = Checkpointed()
    for device in ("cpu", "meta"):
        step = profile(model, torch.randn(3, 4), device=device, train=True, optimizer="none")
        rows = {row.path: row.figures["train_macs"] for row in step.layers}
        assert (rows["inner"] + rows["inner.0"], rows["head"]) == (48 + 48 + 48, 24 + 2 * 24)
        assert step.train_macs == 144 + 72
    # the recomputation in the backward ran on the step's copies: the model has no gradient
    assert all(param.grad is None for param in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(3, 4)).sum().backward()
    assert counter.get_total_flops() == 2 * (144 + 72)


class Flex(nn.Module):
    def __init__(self, score_mod=None) -> None:
        super().__init__()
        self.score_mod = score_mod

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return flex_attention(q, k, v, score_mod=self.score_mod)


def relative_position(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx)


def test_flex_attention_on_cpu():
    """Batch 1, 2 heads, length 8, head size 4: QK^T and AV 1*2*8*8*4 MACs each, softmax over
    the 128 scores. A score_mod adds its own work: the relative position is one subtraction
    per (query, key) pair (64; batch and heads are vmapped over) and one addition per score (128)."""
    qkv = tuple(torch.randn(1, 2, 8, 4) for _ in range(3))
    plain = profile(Flex(), qkv, device="cpu")
    assert plain.macs == 2 * (1 * 2 * 8 * 8 * 4)
    assert plain.uncounted_ops == {}
    assert plain.layers[0].ops["aten._safe_softmax"].flops == SOFTMAX_COST * 128
    modded = profile(Flex(relative_position), qkv, device="cpu")
    assert modded.macs == plain.macs
    assert modded.flops - plain.flops == 8 * 8 + 128
    assert modded.uncounted_ops == {}


def test_flex_attention_does_not_run_on_meta():
    """PyTorch's flex_attention refuses meta inputs before any op runs (a known limit)."""
    qkv = tuple(torch.randn(1, 2, 8, 4) for _ in range(3))
    with pytest.raises(ValueError, match="FlexAttention is only supported on"):
        profile(Flex(), qkv, device="meta")
