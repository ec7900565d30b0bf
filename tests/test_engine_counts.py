"""Exact figures of the profiling engine, each derived by hand in the test.

Every expected number is written as the arithmetic that produces it, with the
convention it follows (spec §1, "Counting conventions"), never copied from the
engine's output. Each case runs on ``cpu`` and on ``meta`` and must give the same
figures on both: the two devices take different kernels (oneDNN / flash / fast
paths on CPU, PyTorch's unfused reference paths on meta), so agreement means the
fused paths are counted as their unfused equivalents.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import reference_models
import torch
import torch.nn.functional as F
from engine_helpers import Call, Case, flop_counter_total, profile_both, r, rs
from reference_models import FunctionalAttention, LSTMModel, SpecCNN, TiedLM, ViTBlock
from torch import nn

from pytest_netbudget import profile
from pytest_netbudget.formulas import (
    ELEMENTWISE_COST,
    INTERPOLATION_COST,
    NORM_COST,
    REDUCTION_COST,
    RNN_CELL_COST,
    SOFTMAX_COST,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN", "ignore:enable_nested_tensor is True"
)

MIB = 2**20


def test_documented_per_element_costs():
    """The per-element costs the README documents; every FLOP figure below is built on them."""
    assert (ELEMENTWISE_COST, SOFTMAX_COST, NORM_COST, REDUCTION_COST) == (1, 3, 5, 1)
    assert INTERPOLATION_COST["upsample_bilinear2d"] == 4
    assert RNN_CELL_COST == {"lstm": 13, "gru": 10, "rnn": 2}


# --- the spec's reference table -------------------------------------------------------------------------


def test_spec_cnn_reference_figures():
    model = SpecCNN()
    p = profile_both(model, input_shape=(1, 1, 28, 28))
    params = (16 * 1 * 5 * 5 + 16) + (32 * 16 * 5 * 5 + 32) + (1568 * 10 + 10)  # conv1, conv2, out
    assert params == 28_938
    assert p.params == p.trainable_params == params
    assert p.buffers == 0
    # conv: output elements x (in_channels x kernel window); linear: in x out
    macs = 16 * 28 * 28 * (1 * 5 * 5) + 32 * 14 * 14 * (16 * 5 * 5) + 1568 * 10
    assert macs == 2_838_080
    assert p.macs == macs
    # 2*MACs + conv biases (1/out element) + ReLU (1/element) + max pool (out elements x 2x2 window) + linear bias
    conv1_out, conv2_out = 16 * 28 * 28, 32 * 14 * 14
    extra = (conv1_out + conv1_out + 16 * 14 * 14 * 4) + (conv2_out + conv2_out + 32 * 7 * 7 * 4) + 10
    assert p.flops == 2 * macs + extra == 5_732_618
    assert round(p.size_mb, 3) == 0.110
    assert p.size_mb == params * 4 / MIB
    # peak live intermediates: the conv1 output and the ReLU output are alive together (4 bytes each)
    assert p.activations_mb == 2 * conv1_out * 4 / MIB
    assert 2 * p.macs == 5_676_160


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return reference_models.resnet18()


def test_resnet18_reference_figures(resnet18):
    p = profile_both(resnet18, input_shape=(1, 3, 224, 224))
    # parameters: convs (no bias), BatchNorm weight+bias (2 per channel), fc
    stem = 3 * 64 * 7 * 7 + 2 * 64
    layer1 = 4 * (64 * 64 * 9 + 2 * 64)
    layer2 = 64 * 128 * 9 + 3 * 128 * 128 * 9 + 64 * 128 + 5 * 2 * 128  # 4 convs 3x3, 1x1 downsample, 5 BNs
    layer3 = 128 * 256 * 9 + 3 * 256 * 256 * 9 + 128 * 256 + 5 * 2 * 256
    layer4 = 256 * 512 * 9 + 3 * 512 * 512 * 9 + 256 * 512 + 5 * 2 * 512
    fc = 512 * 1000 + 1000
    params = stem + layer1 + layer2 + layer3 + layer4 + fc
    assert params == 11_689_512
    assert p.params == p.trainable_params == params
    # buffers: running_mean + running_var per BN channel, num_batches_tracked (int64) per BN
    bn_channels = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    bn_count = 1 + 4 + 5 + 5 + 5
    assert p.buffers == 2 * bn_channels + bn_count
    assert p.size_mb == ((params + 2 * bn_channels) * 4 + bn_count * 8) / MIB
    assert round(p.size_mb, 2) == 44.63

    # MACs: output elements x (in_channels x kernel window) per conv
    def conv(c_out: int, side: int, c_in: int, k: int) -> int:
        return c_out * side * side * c_in * k * k

    macs = (
        conv(64, 112, 3, 7)
        + 4 * conv(64, 56, 64, 3)
        + conv(128, 28, 64, 3) + 3 * conv(128, 28, 128, 3) + conv(128, 28, 64, 1)
        + conv(256, 14, 128, 3) + 3 * conv(256, 14, 256, 3) + conv(256, 14, 128, 1)
        + conv(512, 7, 256, 3) + 3 * conv(512, 7, 512, 3) + conv(512, 7, 256, 1)
        + 512 * 1000
    )  # fmt: skip
    assert macs == 1_814_073_344
    assert p.macs == macs
    assert 2 * p.macs == 3_628_146_688
    # FLOPs beyond 2*MACs: stem BN (5) + ReLU (1); max pool 3x3 window; per basic block BN+ReLU (6), BN (5),
    # residual add (1), ReLU (1) = 13 per output element, +5 for the downsample BN; global average pool
    # (1 per input element); fc bias.
    s112, s56, s28, s14, s7 = (64 * 112 * 112, 64 * 56 * 56, 128 * 28 * 28, 256 * 14 * 14, 512 * 7 * 7)
    extra = 6 * s112 + 9 * s56 + 2 * 13 * s56 + (13 + 5 + 13) * (s28 + s14 + s7) + s7 + 1000
    assert p.flops == 2 * macs + extra


def test_reference_models_match_flop_counter_mode(resnet18):
    """2*MACs is FlopCounterMode's total wherever it sees every matmul-like op."""
    cnn = SpecCNN()
    cnn_input = torch.randn(1, 1, 28, 28)
    assert 2 * profile(cnn, cnn_input, device="cpu").macs == flop_counter_total(cnn, cnn_input) == 5_676_160
    image = torch.randn(1, 3, 224, 224)
    assert 2 * profile(resnet18, image, device="cpu").macs == flop_counter_total(resnet18, image) == 3_628_146_688


# --- one hand-derived case per op family -------------------------------------------------------------


LINEAR_ALGEBRA = [
    # convolutions: MACs = output elements x (in_channels / groups) x kernel window; bias: +1 FLOP per output element
    Case(
        "conv1d",
        lambda: nn.Conv1d(3, 8, 3, padding=1),
        r(2, 3, 10),
        macs=(2 * 8 * 10) * (3 * 3),
        flops=2 * (2 * 8 * 10) * (3 * 3) + 2 * 8 * 10,
        params=8 * 3 * 3 + 8,
    ),
    Case(
        "conv2d",
        lambda: nn.Conv2d(3, 5, 3, stride=2),
        r(1, 3, 9, 9),
        macs=(5 * 4 * 4) * (3 * 3 * 3),  # (9 - 3) // 2 + 1 = 4
        flops=2 * (5 * 4 * 4) * (3 * 3 * 3) + 5 * 4 * 4,
        params=5 * 3 * 9 + 5,
    ),
    Case(
        "conv3d",
        lambda: nn.Conv3d(2, 4, 3),
        r(1, 2, 5, 5, 5),
        macs=(4 * 3 * 3 * 3) * (2 * 3 * 3 * 3),
        flops=2 * (4 * 3 * 3 * 3) * (2 * 27) + 4 * 27,
        params=4 * 2 * 27 + 4,
    ),
    Case(
        "conv2d-grouped",
        lambda: nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False),
        r(1, 8, 6, 6),
        macs=(16 * 6 * 6) * ((8 // 4) * 3 * 3),
        flops=2 * (16 * 6 * 6) * (2 * 9),
        params=16 * 2 * 9,
    ),
    Case(
        "conv2d-depthwise",
        lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8),
        r(1, 8, 6, 6),
        macs=(8 * 6 * 6) * (1 * 3 * 3),
        flops=2 * (8 * 36) * 9 + 8 * 36,
        params=8 * 9 + 8,
    ),
    Case(
        # transposed: every input element is scattered through the whole kernel of every output channel;
        # output side (5 - 1) * 2 - 2 * 1 + 3 + 1 = 10
        "conv-transpose2d",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
        r(1, 4, 5, 5),
        macs=(4 * 5 * 5) * (6 * 3 * 3),
        flops=2 * (4 * 25) * (6 * 9) + 6 * 10 * 10,
        params=4 * 6 * 9 + 6,
    ),
    # linear: MACs = rows x in x out; the bias (addmm) adds one FLOP per output element
    Case("linear", lambda: nn.Linear(6, 4), r(3, 6), macs=3 * 6 * 4, flops=2 * 3 * 6 * 4 + 3 * 4, params=6 * 4 + 4),
    Case("linear-no-bias", lambda: nn.Linear(6, 4, bias=False), r(3, 6), macs=3 * 6 * 4, flops=2 * 72, params=24),
    Case(
        "linear-3d-input",
        lambda: nn.Linear(6, 4),
        r(2, 3, 6),
        macs=2 * 3 * 6 * 4,
        flops=2 * (2 * 3 * 6 * 4) + 2 * 3 * 4,
        params=28,
    ),
    Case(
        "linear-3d-input-no-bias",
        lambda: nn.Linear(6, 4, bias=False),
        r(2, 3, 6),
        macs=2 * 3 * 6 * 4,
        flops=2 * 144,
        params=24,
    ),
    # functional calls in a module's own forward
    Case(
        "F.linear",
        lambda: Call(lambda m, x: F.linear(x, m.w, m.b), w=torch.randn(8, 6), b=torch.randn(8)),
        r(2, 3, 6),
        macs=2 * 3 * 6 * 8,
        flops=2 * (2 * 3 * 6 * 8) + 2 * 3 * 8,
        params=8 * 6 + 8,
    ),
    Case(
        "F.linear-no-bias",
        lambda: Call(lambda m, x: F.linear(x, m.w), w=torch.randn(8, 6)),
        r(2, 3, 6),
        macs=2 * 3 * 6 * 8,
        flops=2 * (2 * 3 * 6 * 8),
        params=48,
    ),
    Case("matmul-operator", lambda: Call(lambda m, a, b: a @ b), rs((2, 3, 6), (2, 6, 5)), 2 * 3 * 6 * 5, 2 * 180),
    Case("torch.matmul", lambda: Call(lambda m, a, b: torch.matmul(a, b)), rs((2, 3, 6), (2, 6, 5)), 180, 360),
    Case(
        "matmul-3d-by-parameter",
        lambda: Call(lambda m, a: a @ m.w, w=torch.randn(6, 5)),
        r(2, 3, 6),
        macs=2 * 3 * 6 * 5,
        flops=2 * 180,
        params=30,
    ),
    Case(
        "einsum-batched",
        lambda: Call(lambda m, a, b: torch.einsum("bij,bjk->bik", a, b)),
        rs((2, 3, 6), (2, 6, 5)),
        macs=2 * 3 * 6 * 5,  # product of every index size: b i j k
        flops=360,
    ),
    Case(
        "einsum-attention-scores",
        lambda: Call(lambda m, q, k: torch.einsum("bhld,bhsd->bhls", q, k)),
        rs((1, 2, 3, 4), (1, 2, 5, 4)),
        macs=1 * 2 * 3 * 5 * 4,
        flops=2 * 120,
    ),
    Case("mm", lambda: Call(lambda m, a, b: torch.mm(a, b)), rs((3, 6), (6, 5)), macs=3 * 6 * 5, flops=2 * 90),
    Case(
        "addmm",
        lambda: Call(lambda m, c, a, b: torch.addmm(c, a, b)),
        rs((3, 5), (3, 6), (6, 5)),
        macs=3 * 6 * 5,
        flops=2 * 90 + 3 * 5,
    ),
    Case("bmm", lambda: Call(lambda m, a, b: torch.bmm(a, b)), rs((2, 3, 6), (2, 6, 5)), macs=2 * 3 * 6 * 5, flops=360),
    Case(
        "baddbmm",
        lambda: Call(lambda m, c, a, b: torch.baddbmm(c, a, b)),
        rs((2, 3, 5), (2, 3, 6), (2, 6, 5)),
        macs=2 * 3 * 6 * 5,
        flops=2 * 180 + 2 * 3 * 5,  # the added tensor: one FLOP per output element
    ),
]


def _sdpa(**options: Any) -> Callable[[], nn.Module]:
    return lambda: Call(lambda m, q, k, v, *mask: F.scaled_dot_product_attention(q, k, v, *mask, **options))


def sdpa_flops(b: int, h: int, q_len: int, k_len: int, e: int, ev: int, masked: bool) -> int:
    """2*MACs + q and k scaled (one FLOP per element) + softmax over the scores (+ the mask added)."""
    macs = b * h * q_len * k_len * (e + ev)
    scores = b * h * q_len * k_len
    return 2 * macs + b * h * (q_len + k_len) * e + SOFTMAX_COST * scores + (scores if masked else 0)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention as self-attention (query is key is value): the CPU fast path in eval."""

    def __init__(self, need_weights: bool, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        attn_mask = masks[0] if masks else None
        return self.mha(x, x, x, need_weights=self.need_weights, attn_mask=attn_mask)[0]


# MultiheadAttention / encoder layer: batch 2, length 6, embed 16, 4 heads of 4; 12 tokens
B, L, E, H = 2, 6, 16, 4
HD = E // H
TOKENS = B * L
SCORES = B * H * L * L
MHA_MACS = TOKENS * E * 3 * E + TOKENS * E * E + SCORES * (HD + HD)  # in-proj, out-proj, QK^T, AV
MHA_PARAMS = 3 * E * E + 3 * E + E * E + E
MHA_BIASES = TOKENS * 3 * E + TOKENS * E


def rnn_case(
    kind: str,
    build: Callable[[], nn.Module],
    inputs: Callable[[], Any],
    layers: list[tuple[int, int]],
    hidden: int,
    tokens: int,
    directions: int,
    params: int,
    flop_counter: bool,
) -> Case:
    """``layers``: (input size, recurrent size) per layer. Per token, per layer, per direction:
    MACs = gates*H x (I + H); FLOPs = 2*MACs + two bias vectors + the cell's elementwise work."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    macs = sum(tokens * directions * gates * hidden * (i + rec) for i, rec in layers)
    per_layer_extra = tokens * directions * (2 * gates * hidden + RNN_CELL_COST[kind] * hidden)
    return Case(kind, build, inputs, macs, 2 * macs + len(layers) * per_layer_extra, params, flop_counter)


OTHER_FAMILIES = [
    # scaled-dot-product attention: MACs = B*H*L*S*(E + Ev)
    Case(
        "sdpa",
        _sdpa(),
        rs((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6)),
        macs=2 * 3 * 5 * 7 * (8 + 6),
        flops=sdpa_flops(2, 3, 5, 7, 8, 6, masked=False),
    ),
    Case(
        "sdpa-float-mask",
        _sdpa(),
        rs((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6), (5, 7)),
        macs=2 * 3 * 5 * 7 * 14,
        flops=sdpa_flops(2, 3, 5, 7, 8, 6, masked=True),
    ),
    Case(
        "sdpa-bool-mask",
        _sdpa(),
        lambda: (*rs((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6))(), torch.ones(5, 7, dtype=torch.bool).tril()),
        macs=2 * 3 * 5 * 7 * 14,
        flops=sdpa_flops(2, 3, 5, 7, 8, 6, masked=True),
    ),
    Case(
        "sdpa-square",  # equal head dims: the CPU flash kernel
        _sdpa(),
        rs((2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8)),
        macs=2 * 3 * 6 * 6 * (8 + 8),
        flops=sdpa_flops(2, 3, 6, 6, 8, 8, masked=False),
        flop_counter=False,
    ),
    Case(
        "sdpa-causal",
        _sdpa(is_causal=True),
        rs((2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8)),
        macs=2 * 3 * 6 * 6 * 16,
        flops=sdpa_flops(2, 3, 6, 6, 8, 8, masked=True),
        flop_counter=False,
    ),
    # nn.MultiheadAttention: fast path on CPU, the unfused F.multi_head_attention_forward on meta
    Case(
        "mha-no-weights",
        lambda: SelfAttention(need_weights=False),
        r(B, L, E),
        macs=MHA_MACS,
        # biases + q, k scaled + softmax (attention runs as SDPA)
        flops=2 * MHA_MACS + MHA_BIASES + B * H * (L + L) * HD + SOFTMAX_COST * SCORES,
        params=MHA_PARAMS,
        flop_counter=False,
    ),
    Case(
        "mha-need-weights",
        lambda: SelfAttention(need_weights=True),
        r(B, L, E),
        macs=MHA_MACS,
        # biases + q alone scaled + softmax + weights averaged over heads (one FLOP per score)
        flops=2 * MHA_MACS + MHA_BIASES + TOKENS * E + SOFTMAX_COST * SCORES + REDUCTION_COST * SCORES,
        params=MHA_PARAMS,
        flop_counter=False,
    ),
    Case(
        "mha-float-mask",
        lambda: SelfAttention(need_weights=False),
        lambda: (torch.randn(B, L, E), torch.randn(L, L)),
        macs=MHA_MACS,
        flops=2 * MHA_MACS + MHA_BIASES + B * H * 2 * L * HD + SOFTMAX_COST * SCORES + SCORES,  # + mask added
        params=MHA_PARAMS,
        flop_counter=False,
    ),
    Case(
        "transformer-encoder-layer",
        lambda: nn.TransformerEncoderLayer(E, H, dim_feedforward=32, batch_first=True),
        r(B, L, E),
        macs=MHA_MACS + TOKENS * E * 32 + TOKENS * 32 * E,  # attention, then the two feed-forward linears
        flops=(
            2 * (MHA_MACS + 2 * TOKENS * E * 32)
            + MHA_BIASES
            + B * H * 2 * L * HD
            + SOFTMAX_COST * SCORES  # attention as above
            + 2 * TOKENS * E  # two residual additions
            + 2 * NORM_COST * TOKENS * E  # two layer norms
            + TOKENS * 32
            + ELEMENTWISE_COST * TOKENS * 32
            + TOKENS * E  # ff bias, ReLU, ff bias
        ),
        params=MHA_PARAMS + (E * 32 + 32) + (32 * E + E) + 2 * (2 * E),
        flop_counter=False,
    ),
    # recurrent layers
    rnn_case(
        "lstm",
        lambda: nn.LSTM(8, 12, num_layers=2, batch_first=True, bidirectional=True),
        r(3, 5, 8),
        layers=[(8, 12), (2 * 12, 12)],  # layer 2 reads both directions of layer 1
        hidden=12,
        tokens=3 * 5,
        directions=2,
        params=2 * (4 * 12 * (8 + 12) + 2 * 4 * 12) + 2 * (4 * 12 * (24 + 12) + 2 * 4 * 12),
        flop_counter=False,  # the whole-sequence oneDNN kernel on CPU
    ),
    rnn_case(
        "gru",
        lambda: nn.GRU(8, 12, num_layers=2, bidirectional=True),
        r(5, 3, 8),
        layers=[(8, 12), (24, 12)],
        hidden=12,
        tokens=5 * 3,
        directions=2,
        params=2 * (3 * 12 * (8 + 12) + 2 * 3 * 12) + 2 * (3 * 12 * (24 + 12) + 2 * 3 * 12),
        flop_counter=True,
    ),
    rnn_case(
        "rnn",
        lambda: nn.RNN(8, 12, num_layers=2),
        r(5, 3, 8),
        layers=[(8, 12), (12, 12)],
        hidden=12,
        tokens=15,
        directions=1,
        params=(12 * (8 + 12) + 2 * 12) + (12 * (12 + 12) + 2 * 12),
        flop_counter=True,
    ),
    # LSTM with a projection: recurrent input is the projected size 4, plus the H -> 4 projection per token
    Case(
        "lstm-proj",
        lambda: nn.LSTM(8, 12, proj_size=4),
        r(5, 3, 8),
        macs=15 * (4 * 12 * (8 + 4) + 12 * 4),
        flops=2 * 15 * (48 * 12 + 48) + 15 * (2 * 48 + RNN_CELL_COST["lstm"] * 12),
        params=48 * 8 + 48 * 4 + 2 * 48 + 4 * 12,
    ),
    # embeddings: a lookup, no arithmetic
    Case("embedding", lambda: nn.Embedding(10, 4), lambda: torch.tensor([[1, 2, 3]]), macs=0, flops=0, params=10 * 4),
    # normalisation: NORM_COST per element
    Case(
        "batchnorm2d",
        lambda: nn.BatchNorm2d(4),
        r(2, 4, 3, 3),
        macs=0,
        flops=NORM_COST * 2 * 4 * 3 * 3,
        params=2 * 4,
    ),
    Case("layernorm", lambda: nn.LayerNorm(8), r(2, 3, 8), macs=0, flops=NORM_COST * 2 * 3 * 8, params=2 * 8),
    # pooling: output elements x window
    Case("maxpool2d", lambda: nn.MaxPool2d(2), r(1, 3, 8, 8), macs=0, flops=(3 * 4 * 4) * (2 * 2)),
    Case(
        "maxpool2d-k3-s2-p1",
        lambda: nn.MaxPool2d(3, 2, 1),
        r(1, 2, 9, 9),
        macs=0,
        flops=(2 * 5 * 5) * (3 * 3),  # (9 + 2 - 3) // 2 + 1 = 5
    ),
    Case("maxpool1d", lambda: nn.MaxPool1d(2), r(1, 3, 8), macs=0, flops=(3 * 4) * 2),
    Case("avgpool2d", lambda: nn.AvgPool2d(3, 2, 1), r(1, 2, 9, 9), macs=0, flops=(2 * 5 * 5) * 9),
    Case("avgpool2d-rect", lambda: nn.AvgPool2d((2, 3)), r(1, 2, 8, 9), macs=0, flops=(2 * 4 * 3) * (2 * 3)),
    # adaptive average pooling: one FLOP per input element (a reduction)
    Case("adaptive-avgpool2d-1", lambda: nn.AdaptiveAvgPool2d(1), r(1, 3, 8, 8), macs=0, flops=REDUCTION_COST * 3 * 64),
    Case(
        "adaptive-avgpool2d-2x2",
        lambda: nn.AdaptiveAvgPool2d((2, 2)),
        r(1, 3, 8, 8),
        macs=0,
        flops=(3 * 2 * 2) * (4 * 4),  # non-overlapping 4x4 windows: = every input element once
    ),
    # activations, softmax
    Case("relu", lambda: nn.ReLU(), r(2, 3, 5), macs=0, flops=ELEMENTWISE_COST * 30),
    Case("gelu", lambda: nn.GELU(), r(2, 3, 5), macs=0, flops=ELEMENTWISE_COST * 30),
    Case("softmax", lambda: nn.Softmax(dim=-1), r(2, 5, 7), macs=0, flops=SOFTMAX_COST * 2 * 5 * 7),
    Case("F.softmax", lambda: Call(lambda m, x: F.softmax(x, dim=1)), r(2, 5, 7), macs=0, flops=3 * 70),
    # interpolation: one FLOP per neighbour sampled per output element; nearest copies
    Case(
        "interpolate-bilinear",
        lambda: Call(lambda m, x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
        r(1, 3, 4, 4),
        macs=0,
        flops=4 * (3 * 8 * 8),
    ),
    Case(
        "interpolate-nearest",
        lambda: Call(lambda m, x: F.interpolate(x, scale_factor=2, mode="nearest")),
        r(1, 3, 4, 4),
        macs=0,
        flops=0,
    ),
]


@pytest.mark.parametrize("case", LINEAR_ALGEBRA + OTHER_FAMILIES, ids=lambda case: case.id)
def test_op_family(case: Case):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "enable_nested_tensor" notices
        model = case.build()
    p = profile_both(model, case.inputs())
    assert p.macs == case.macs
    assert p.flops == case.flops
    assert p.params == case.params


@pytest.mark.parametrize(
    "case",
    [case for case in LINEAR_ALGEBRA + OTHER_FAMILIES if case.flop_counter and case.macs],
    ids=lambda case: case.id,
)
def test_macs_match_flop_counter_mode_on_cpu(case: Case):
    torch.manual_seed(0)
    model = case.build()
    inputs = case.inputs()
    assert 2 * profile(model, inputs, device="cpu").macs == flop_counter_total(model, inputs, "cpu") == 2 * case.macs


FUSED_ON_CPU = [case for case in OTHER_FAMILIES if not case.flop_counter]


@pytest.mark.parametrize("case", FUSED_ON_CPU, ids=lambda case: case.id)
def test_fused_cpu_kernels_match_flop_counter_mode_on_meta(case: Case):
    """On meta the models take PyTorch's unfused paths, which FlopCounterMode sees in full."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = case.build()
    inputs = case.inputs()
    assert 2 * profile(model, inputs, device="meta").macs == flop_counter_total(model, inputs, "meta") == 2 * case.macs


@pytest.mark.parametrize("case", FUSED_ON_CPU, ids=lambda case: case.id)
def test_flop_counter_mode_misses_fused_cpu_kernels(case: Case):
    """The gap netbudget fills: on CPU, FlopCounterMode does not see inside the fused kernels."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = case.build()
    inputs = case.inputs()
    assert flop_counter_total(model, inputs, "cpu") < 2 * profile(model, inputs, device="cpu").macs == 2 * case.macs


# --- the attention / recurrent / embedding reference models ------------------------------------------------


def test_vit_block():
    model = ViTBlock(dim=E, heads=H, hidden=32)
    x = torch.randn(B, L, E)
    p = profile_both(model, x)
    mlp_macs = TOKENS * E * 32 + TOKENS * 32 * E
    assert p.macs == MHA_MACS + mlp_macs
    mha_flops = 2 * MHA_MACS + MHA_BIASES + B * H * 2 * L * HD + SOFTMAX_COST * SCORES
    mlp_flops = 2 * mlp_macs + TOKENS * 32 + TOKENS * 32 + TOKENS * E  # bias, GELU, bias
    norms = 2 * NORM_COST * TOKENS * E
    residuals = 2 * TOKENS * E  # the block's own forward: x + attn, x + mlp
    assert p.flops == mha_flops + mlp_flops + norms + residuals
    assert p.params == 2 * 2 * E + MHA_PARAMS + (E * 32 + 32) + (32 * E + E)
    root = p.layers[0]
    assert root.path == "" and root.flops == residuals and root.macs == 0
    assert 2 * profile(model, x, device="meta").macs == flop_counter_total(model, x, "meta")
    assert flop_counter_total(model, x, "cpu") < 2 * p.macs


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_multihead_attention_charges_its_out_projection_to_itself(device, train_mode):
    """The README's known limit: nn.MultiheadAttention never calls its out_proj module (it hands the
    weights to F.multi_head_attention_forward, or to its fused fast path in eval mode), so out_proj's
    row holds its E*E + E = 272 params and 0 MACs, and the attention row every MAC, out-projection
    included (MHA_MACS by hand), in both modes and on both devices."""
    model = SelfAttention(need_weights=False).train(train_mode)
    p = profile(model, input_shape=(B, L, E), device=device)
    rows = {layer.path: layer for layer in p.layers}
    assert (rows["mha.out_proj"].params, rows["mha.out_proj"].macs) == (E * E + E, 0)
    assert rows["mha"].macs == p.macs == MHA_MACS


def test_functional_attention_in_own_forward():
    """`@`, torch.matmul, einsum, SDPA and F.linear in the root module's own forward: all on its own row."""
    model = FunctionalAttention(dim=16, heads=2)
    x = torch.randn(2, 6, 16)
    p = profile_both(model, x)
    tokens = 2 * 6
    projections = 4 * tokens * 16 * 16  # q (@), k (matmul), v (einsum), out (F.linear)
    attention = 2 * 2 * 6 * 6 * (8 + 8)  # B*H*L*S*(E + Ev), heads of 8
    assert p.macs == projections + attention
    assert p.flops == 2 * projections + sdpa_flops(2, 2, 6, 6, 8, 8, masked=False)
    assert p.params == 4 * 16 * 16
    assert [row.path for row in p.layers] == [""]
    assert p.layers[0].macs == p.macs
    assert 2 * profile(model, x, device="meta").macs == flop_counter_total(model, x, "meta")
    assert flop_counter_total(model, x, "cpu") < 2 * p.macs  # the CPU flash kernel is not seen


def test_lstm_model():
    model = LSTMModel(vocab=50, embed=8, hidden=12, classes=5)
    tokens = torch.randint(0, 50, (3, 5))
    p = profile_both(model, tokens)
    n = 3 * 5
    lstm_macs = 2 * n * 4 * 12 * (8 + 12) + 2 * n * 4 * 12 * (24 + 12)
    head_macs = n * 24 * 5
    assert p.macs == lstm_macs + head_macs
    cell = 4 * n * (2 * 4 * 12 + RNN_CELL_COST["lstm"] * 12)  # 2 layers x 2 directions
    assert p.flops == 2 * (lstm_macs + head_macs) + cell + n * 5
    assert p.params == 50 * 8 + 5760 + (24 * 5 + 5)  # embedding, LSTM (as in the lstm case), head
    embed_row = next(row for row in p.layers if row.path == "embed")
    assert (embed_row.macs, embed_row.flops, embed_row.params) == (0, 0, 50 * 8)
    assert 2 * profile(model, tokens, device="meta").macs == flop_counter_total(model, tokens, "meta")
    assert flop_counter_total(model, tokens, "cpu") < 2 * p.macs


def test_tied_lm():
    model = TiedLM(vocab=100, dim=16)
    tokens = torch.randint(0, 100, (2, 5))
    p = profile_both(model, tokens)
    assert p.params == 100 * 16 + 2 * 16  # the shared matrix once, plus the LayerNorm
    assert p.macs == 2 * 5 * 16 * 100
    assert p.flops == 2 * p.macs + NORM_COST * 2 * 5 * 16
    assert 2 * p.macs == flop_counter_total(model, tokens, "cpu")
