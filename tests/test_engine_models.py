"""Whole models that take paths the op-family cases do not: in-place metadata ops (channels-last
convolutions, recurrent layers on meta, packed sequences). Every figure is derived by hand; every
model profiles with no uncounted op on cpu and on meta, so ``strict = true`` passes them."""

from __future__ import annotations

import torch
from engine_helpers import profile_both
from reference_models import ConvNeXtBlock, PackedGRUTagger
from torch import nn

from pytest_netbudget.formulas import ELEMENTWISE_COST, NORM_COST, RNN_CELL_COST


def test_convnext_block_channels_last():
    """Depthwise 7x7 on 8 channels of 14x14, then a 4x MLP per position; model and input channels-last."""
    model = ConvNeXtBlock(dim=8).to(memory_format=torch.channels_last)
    x = torch.randn(1, 8, 14, 14).contiguous(memory_format=torch.channels_last)
    p = profile_both(model, x)
    positions = 14 * 14
    dwconv = 8 * positions * 7 * 7  # one 7x7 window per output element
    mlp = positions * 8 * 32 + positions * 32 * 8
    assert p.macs == dwconv + mlp
    biases = 8 * positions + 32 * positions + 8 * positions
    norm = NORM_COST * 8 * positions
    gelu = ELEMENTWISE_COST * 32 * positions
    scale_and_residual = 2 * 8 * positions
    assert p.flops == 2 * p.macs + biases + norm + gelu + scale_and_residual
    assert p.params == (8 * 49 + 8) + 2 * 8 + (8 * 32 + 32) + (32 * 8 + 8) + 8


def test_packed_gru_tagger():
    """Two sequences of lengths 3 and 2: the packed GRU runs 5 steps x rows, not the padded 6."""
    model = PackedGRUTagger(vocab=20, embed=4, hidden=6, classes=3)
    tokens = torch.randint(0, 20, (2, 3))
    p = profile_both(model, (tokens, [3, 2]))
    rows = 3 + 2
    gru_macs = rows * 3 * 6 * (4 + 6)  # input and recurrent projections of 3 gates
    head_macs = 2 * 3 * 6 * 3  # the padded output, every position
    assert p.macs == gru_macs + head_macs
    gru_flops = 2 * gru_macs + rows * (2 * 3 * 6 + RNN_CELL_COST["gru"] * 6)
    assert p.flops == gru_flops + 2 * head_macs + 2 * 3 * 3


def test_recurrent_layers_batch_first():
    """GRU and RNN with batch_first: on meta they run step by step and transpose in place."""
    for model, gates in ((nn.GRU(4, 6, batch_first=True), 3), (nn.RNN(4, 6, batch_first=True), 1)):
        p = profile_both(model, torch.randn(2, 3, 4))
        assert p.macs == 2 * 3 * gates * 6 * (4 + 6)


def test_in_place_metadata_ops_are_free():
    """unsqueeze_, squeeze_, t_, transpose_, as_strided_ change a tensor's metadata only."""

    class InPlaceViews(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.clone()
            y.unsqueeze_(0).squeeze_(0).t_().transpose_(0, 1)
            return y.as_strided_((2, 2), (1, 1))

    p = profile_both(InPlaceViews(), torch.randn(3, 4))
    assert (p.macs, p.flops) == (0, 0)
