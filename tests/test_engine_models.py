"""Whole models that take paths the op-family cases do not: in-place metadata ops (channels-last
convolutions, recurrent layers on meta, packed sequences). Every figure is derived by hand; every
model profiles with no uncounted op on cpu and on meta, so ``strict = true`` passes them."""

from __future__ import annotations

import pytest
import reference_models
import torch
import torch.nn.functional as F
from engine_helpers import Call, profile_both
from reference_models import ConvNeXtBlock, PackedGRUTagger
from torch import nn

from pytest_netbudget import profile
from pytest_netbudget.formulas import ELEMENTWISE_COST, NORM_COST, RNN_CELL_COST, SOFTMAX_COST


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
    """GRU and RNN with batch_first: they transpose their output in place, on meta as on cpu."""
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


class PaddedEncoder(nn.Module):
    """Two encoder layers over a batch of sequences of lengths 6 and 4, padded to 6."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)  # nested-tensor path on by default

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, src_key_padding_mask=padding)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_transformer_encoder_with_padding_mask_counts_the_padded_batch():
    """Batch 2 x length 6 = 12 tokens of width 16, 4 heads of 4, feed-forward 32, per layer:
    q/k/v and out projections 12*16*(48 + 16), QK^T and AV 2*4*6*6*4 each, feed-forward
    2*12*16*32. FLOPs: 2*MACs, biases, q and k scaled, softmax and the mask added per score,
    two residual adds, two layer norms, the ReLU."""
    model = PaddedEncoder()
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    p = profile_both(model, (torch.randn(2, 6, 16), padding))
    tokens, scores = 12, 2 * 4 * 6 * 6
    macs = tokens * 16 * (48 + 16) + 2 * scores * 4 + 2 * tokens * 16 * 32
    assert p.macs == 2 * macs
    extra = (
        tokens * (48 + 16)  # projection biases
        + 2 * 4 * (6 + 6) * 4  # q and k scaled
        + (SOFTMAX_COST + 1) * scores  # softmax, the mask added
        + 2 * tokens * 16  # residual adds
        + 2 * NORM_COST * tokens * 16
        + tokens * 32 + ELEMENTWISE_COST * tokens * 32 + tokens * 16  # feed-forward biases and the ReLU
    )  # fmt: skip
    assert p.flops == 2 * (2 * macs + extra)
    assert model.encoder.use_nested_tensor  # switched off while profiling only


REFERENCE_ZOO = {
    "spec-cnn": (reference_models.SpecCNN, lambda: torch.randn(1, 1, 28, 28)),
    "resnet18": (reference_models.resnet18, lambda: torch.randn(2, 3, 16, 16)),
    "vit-block": (reference_models.ViTBlock, lambda: torch.randn(2, 6, 16)),
    "vit-block-weights": (lambda: reference_models.ViTBlock(need_weights=True), lambda: torch.randn(2, 6, 16)),
    "functional-attention": (reference_models.FunctionalAttention, lambda: torch.randn(2, 6, 16)),
    "causal-block": (lambda: reference_models.CausalBlock(dim=16, heads=2), lambda: torch.randn(2, 6, 16)),
    "lstm": (reference_models.LSTMModel, lambda: torch.randint(0, 50, (3, 5))),
    "tied-lm": (reference_models.TiedLM, lambda: torch.randint(0, 100, (2, 5))),
    "decoder": (
        lambda: reference_models.Decoder(vocab=100, dim=32, layers=2, heads=4, hidden=64),
        lambda: torch.randint(0, 100, (1, 8)),
    ),
    "convnext-block": (ConvNeXtBlock, lambda: torch.randn(1, 8, 14, 14)),
    "packed-gru": (PackedGRUTagger, lambda: (torch.randint(0, 20, (2, 3)), [3, 2])),
}


@pytest.mark.parametrize("name", list(REFERENCE_ZOO))
def test_reference_zoo_has_no_uncounted_op(name: str):
    """strict = true passes every reference model: forward and training step, cpu and meta."""
    build, inputs = REFERENCE_ZOO[name]
    torch.manual_seed(0)
    model = build()
    for device in ("cpu", "meta"):
        p = profile(model, inputs(), device=device, train=True, optimizer="sgd")
        assert p.uncounted_ops == {}, (device, p.uncounted_ops)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_nested_tensor_input_is_recorded_by_its_padded_shape_and_counted_per_sequence():
    """Sequences of lengths 3 and 5 of width 4: shapes as the padded [2, 5, 4]. Linear runs its
    nested kernel whole (no dense decomposition exists for it) and is counted sequence by sequence:
    (3 + 5) rows x 4 x 2 = 64 MACs, its bias 8 x 2 FLOPs; the ReLU counts its 8 x 2 real elements."""
    nested = torch.nested.nested_tensor([torch.randn(3, 4), torch.randn(5, 4)])
    p = profile(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), (nested,), device="cpu")
    rows = {row.path: row for row in p.layers}
    assert rows["0"].input_shapes == [[2, 5, 4]] and rows["0"].output_shapes == [[2, 5, 2]]
    assert p.uncounted_ops == {}
    assert p.macs == 8 * 4 * 2
    assert p.flops == 2 * 64 + 8 * 2 + ELEMENTWISE_COST * 8 * 2


def jagged(*lengths: int, width: tuple[int, ...] = (16,)) -> torch.Tensor:
    return torch.nested.nested_tensor([torch.randn(length, *width) for length in lengths], layout=torch.jagged)


def test_linear_on_a_jagged_nested_tensor():
    """A jagged tensor (``layout=torch.jagged``) of sequences of 3 and 5 rows of 16 through
    Linear(16, 8): (3 + 5) x 16 x 8 = 1,024 MACs, 2,048 FLOPs + 64 for the bias, on cpu and meta;
    its shape is recorded as the padded [2, 5, 16]. (It crashed: "operator prim::layout does not exist".)"""
    for device in ("cpu", "meta"):
        p = profile(nn.Linear(16, 8), jagged(3, 5), device=device)
        assert (p.macs, p.flops, p.uncounted_ops) == (1024, 2048 + 64, {}), device
        assert p.inputs == [[2, 5, 16]] and p.layers[0].output_shapes == [[2, 5, 8]]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_attention_on_jagged_sequences_counts_each_sequence_by_its_length():
    """PyTorch's own expected figure (test_flop_counter's nested attention): 8 heads of 64 over
    sequences of 32, 64, 96 and 128 tokens, QK^T and AV per sequence, 2 * 8 * 64 * (32^2 + 64^2 +
    96^2 + 128^2) = 31,457,280 MACs, not the padded 4 x 128^2 (CPU runs PyTorch's math path, which
    multiplies strided nested tensors)."""

    def heads() -> torch.Tensor:
        return jagged(32, 64, 96, 128, width=(8, 64)).transpose(1, 2)

    attention = Call(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v))
    p = profile(attention, (heads(), heads(), heads()), device="cpu")
    assert p.macs == 2 * 8 * 64 * (32**2 + 64**2 + 96**2 + 128**2) == 31_457_280
    assert p.uncounted_ops == {}
