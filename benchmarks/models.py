"""Benchmark models, each with a hand-derived expected parameter and MAC count.

Every model here is plain PyTorch written out in this file (or built from a
``transformers`` config with random weights: nothing is downloaded). Each entry
of :data:`MODELS` gives a builder, the inputs, and the *expected* figures derived
by hand from the architecture, which ``compare.py`` uses to judge every tool.

Counting convention (the one the spec and most papers use): a MAC is one
multiply-accumulate of a linear-algebra op (convolution, linear / matmul /
einsum, the two matmuls of attention QK^T and AV, the gate projections of an
RNN). Bias additions, normalisation, activations, softmax, pooling and
embedding look-ups are not MACs. Attention is counted over the full score
matrix, masked or not (as ``FlopCounterMode`` and every fused kernel's formula
count it). Parameters are unique tensors: a tied weight counts once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The CNN and the ResNets are the test suite's reference architectures: one definition
# serves both the figures the tests assert and the ones this benchmark measures.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_models import SpecCNN, ViT, resnet18, resnet50  # noqa: E402

# --------------------------------------------------------------------------------------
# 1. The spec's CNN (input 1x1x28x28)
# --------------------------------------------------------------------------------------


def conv_macs(c_in: int, c_out: int, kernel: int, out_h: int, out_w: int, groups: int = 1) -> int:
    """One MAC per kernel tap per input channel (of the group) per output element."""
    return c_out * out_h * out_w * (c_in // groups) * kernel * kernel


def conv_params(c_in: int, c_out: int, kernel: int, bias: bool) -> int:
    return c_out * c_in * kernel * kernel + (c_out if bias else 0)


def spec_cnn_expected() -> tuple[int, int]:
    # conv1: 1->16, 5x5, padding 2 keeps 28x28     -> 16*28*28*1*25  =   313,600
    # pool -> 14x14; conv2: 16->32 at 14x14         -> 32*14*14*16*25 = 2,508,800
    # pool -> 7x7; Linear(1568, 10)                 -> 1568*10        =    15,680
    macs = conv_macs(1, 16, 5, 28, 28) + conv_macs(16, 32, 5, 14, 14) + 1568 * 10
    params = conv_params(1, 16, 5, True) + conv_params(16, 32, 5, True) + 1568 * 10 + 10
    return params, macs  # 28,938 and 2,838,080 (the spec's reference figures)


# --------------------------------------------------------------------------------------
# 2. ResNet-18 / ResNet-50 (tests/reference_models.py): their expected figures
# --------------------------------------------------------------------------------------


def resnet_expected(bottleneck: bool, layers: list[int], size: int = 224, num_classes: int = 1000) -> tuple[int, int]:
    """Walk the architecture stage by stage: a conv costs c_out*h*w*c_in*k*k MACs, a BN
    has 2*c parameters (weight, bias; its running stats are buffers), fc is in*out MACs."""
    bn = 2  # parameters per BatchNorm channel
    side = size // 2  # stem conv 7x7 stride 2: 224 -> 112
    macs = conv_macs(3, 64, 7, side, side)
    params = conv_params(3, 64, 7, False) + bn * 64
    side //= 2  # max pool 3x3 stride 2: 112 -> 56
    inplanes = 64
    expansion = 4 if bottleneck else 1
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            out_side = side // stride
            out_planes = planes * expansion
            if bottleneck:
                # 1x1 reduce at the input resolution, 3x3 (carries the stride), 1x1 expand
                macs += conv_macs(inplanes, planes, 1, side, side)
                macs += conv_macs(planes, planes, 3, out_side, out_side)
                macs += conv_macs(planes, out_planes, 1, out_side, out_side)
                params += conv_params(inplanes, planes, 1, False) + conv_params(planes, planes, 3, False)
                params += conv_params(planes, out_planes, 1, False) + bn * (planes + planes + out_planes)
            else:
                # 3x3 (carries the stride), 3x3
                macs += conv_macs(inplanes, planes, 3, out_side, out_side)
                macs += conv_macs(planes, planes, 3, out_side, out_side)
                params += conv_params(inplanes, planes, 3, False) + conv_params(planes, planes, 3, False)
                params += bn * (planes + planes)
            if index == 0 and (stride != 1 or inplanes != out_planes):
                # projection shortcut: 1x1 conv with the block's stride, then BN
                macs += conv_macs(inplanes, out_planes, 1, out_side, out_side)
                params += conv_params(inplanes, out_planes, 1, False) + bn * out_planes
            inplanes, side = out_planes, out_side
    # global average pool (not MACs), then fc
    macs += inplanes * num_classes
    params += inplanes * num_classes + num_classes
    return params, macs


# --------------------------------------------------------------------------------------
# 3. ViT-B/16-shaped encoder on nn.MultiheadAttention (torchvision's layout)
# --------------------------------------------------------------------------------------


def vit_expected(
    image_size: int = 224,
    patch: int = 16,
    layers: int = 12,
    heads: int = 12,
    dim: int = 768,
    mlp_dim: int = 3072,
    num_classes: int = 1000,
) -> tuple[int, int]:
    """ViT-B/16 by hand. Patch embedding: a 16x16 stride-16 conv, i.e. one dim x (3*16*16)
    matmul per patch. Per encoder layer with N tokens and width D:
      q, k, v in-projection  3*N*D*D      QK^T  N*N*D (summed over heads: h*N*N*D/h)
      out-projection           N*D*D      AV    N*N*D
      MLP                  2*N*D*mlp
    The head is one Linear on the class token. With N=197, D=768, mlp=3072 this is
    12 * (12*N*D^2 + 2*N^2*D) + 196*768*768 + 768*1000 = 17,563,828,224 MACs,
    the 17.56 "GFLOPS" torchvision publishes for vit_b_16."""
    patches = (image_size // patch) ** 2
    tokens = patches + 1
    macs = patches * dim * 3 * patch * patch
    per_layer = 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * mlp_dim
    macs += layers * per_layer + dim * num_classes
    params = dim * 3 * patch * patch + dim  # conv_proj
    params += dim + tokens * dim  # class token, position embedding
    per_layer_params = (
        2 * dim  # ln_1
        + 3 * dim * dim
        + 3 * dim  # in_proj weight and bias
        + dim * dim
        + dim  # out_proj
        + 2 * dim  # ln_2
        + dim * mlp_dim
        + mlp_dim
        + mlp_dim * dim
        + dim  # MLP
    )
    params += layers * per_layer_params + 2 * dim + dim * num_classes + num_classes
    return params, macs


# --------------------------------------------------------------------------------------
# 4. Functional attention: F.scaled_dot_product_attention and torch.einsum in forward
# --------------------------------------------------------------------------------------


class FunctionalBlock(nn.Module):
    """A transformer block with no nn.Linear / nn.MultiheadAttention: every projection is
    an einsum on a raw parameter and attention is F.scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.w_qkv = nn.Parameter(torch.randn(3 * dim, dim) * dim**-0.5)
        self.w_out = nn.Parameter(torch.randn(dim, dim) * dim**-0.5)
        self.w_up = nn.Parameter(torch.randn(mlp_ratio * dim, dim) * dim**-0.5)
        self.w_down = nn.Parameter(torch.randn(dim, mlp_ratio * dim) * (mlp_ratio * dim) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        y = F.layer_norm(x, (dim,))
        qkv = torch.einsum("btd,ed->bte", y, self.w_qkv)
        q, k, v = qkv.view(batch, seq, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v)
        attn = attn.transpose(1, 2).reshape(batch, seq, dim)
        x = x + torch.einsum("btd,ed->bte", attn, self.w_out)
        y = F.gelu(torch.einsum("btd,ed->bte", F.layer_norm(x, (dim,)), self.w_up))
        return x + torch.einsum("btf,df->btd", y, self.w_down)


class FunctionalAttentionNet(nn.Module):
    def __init__(self, dim: int = 512, heads: int = 8, depth: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([FunctionalBlock(dim, heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def functional_expected(dim: int = 512, depth: int = 4, seq: int = 256, mlp_ratio: int = 4) -> tuple[int, int]:
    # per block: qkv einsum T*D*3D, attention QK^T + AV 2*T*T*D, out einsum T*D*D,
    # MLP up and down 2*T*D*(4D). No biases, layer norms have no affine parameters.
    per_block = 4 * seq * dim * dim + 2 * seq * seq * dim + 2 * seq * dim * mlp_ratio * dim
    params = depth * (4 * dim * dim + 2 * mlp_ratio * dim * dim)
    return params, depth * per_block


# --------------------------------------------------------------------------------------
# 5. Two-layer bidirectional LSTM
# --------------------------------------------------------------------------------------


class BiLSTM(nn.Module):
    def __init__(self, inputs: int = 256, hidden: int = 512, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def lstm_expected(
    inputs: int = 256, hidden: int = 512, layers: int = 2, seq: int = 100, classes: int = 10
) -> tuple[int, int]:
    """Per step and direction a layer projects its input and its previous hidden state onto
    the four gates: 4H*(I + H) MACs (the gate biases b_ih + b_hh are additions). The second
    layer's input is the concatenated 2H outputs of both directions."""
    macs = params = 0
    layer_in = inputs
    for _ in range(layers):
        for _direction in range(2):
            macs += seq * 4 * hidden * (layer_in + hidden)
            params += 4 * hidden * (layer_in + hidden) + 2 * 4 * hidden
        layer_in = 2 * hidden
    macs += 2 * hidden * classes  # head on the last step only
    params += 2 * hidden * classes + classes
    return params, macs


# --------------------------------------------------------------------------------------
# 6. transformers models, random init from their configs (no download)
# --------------------------------------------------------------------------------------


def gpt2_small() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config())


def gpt2_expected(seq: int = 128) -> tuple[int, int]:
    """GPT2Config(): 12 layers, D=768, 12 heads, MLP 4D, vocab 50257, 1024 positions.
    Per layer: c_attn T*D*3D, QK^T + AV 2*T*T*D, c_proj T*D*D, MLP 2*T*D*4D.
    The LM head (tied to the token embedding: its weight counts once) is T*D*V."""
    layers, dim, vocab, positions = 12, 768, 50257, 1024
    per_layer = 4 * seq * dim * dim + 2 * seq * seq * dim + 8 * seq * dim * dim
    macs = layers * per_layer + seq * dim * vocab
    per_layer_params = 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + 2 * dim
    per_layer_params += dim * 4 * dim + 4 * dim + 4 * dim * dim + dim
    params = vocab * dim + positions * dim + layers * per_layer_params + 2 * dim  # + final ln_f
    return params, macs  # 124,439,808 params


def bert_base() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig())


def bert_expected(seq: int = 128) -> tuple[int, int]:
    """BertConfig(): 12 layers, D=768, 12 heads, intermediate 3072, vocab 30522,
    512 positions, 2 token types. Per layer: q, k, v, o projections 4*T*D*D, QK^T + AV
    2*T*T*D, feed-forward 2*T*D*3072. The pooler is one D x D Linear on the first token."""
    layers, dim, inter, vocab, positions, types = 12, 768, 3072, 30522, 512, 2
    macs = layers * (4 * seq * dim * dim + 2 * seq * seq * dim + 2 * seq * dim * inter) + dim * dim
    embeddings = (vocab + positions + types) * dim + 2 * dim
    per_layer = 4 * (dim * dim + dim) + 2 * dim + (dim * inter + inter) + (inter * dim + dim) + 2 * dim
    params = embeddings + layers * per_layer + dim * dim + dim
    return params, macs  # 109,482,240 params


def llama_7b_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
        max_position_embeddings=2048,
    )


def llama_7b() -> nn.Module:
    """Build under ``with torch.device("meta")``: no weight is allocated."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(llama_7b_config())


def llama_expected(seq: int = 2048) -> tuple[int, int]:
    """Llama-2-7B shape: per layer q, k, v, o 4*T*D*D, QK^T + AV 2*T*T*D (full matrix,
    causal mask or not), SwiGLU MLP gate, up and down 3*T*D*I; the untied LM head T*D*V.
    Parameters: embedding V*D, per layer 4*D*D + 3*D*I + 2*D (two RMSNorms), final
    norm D and the LM head D*V: 6,738,415,616."""
    layers, dim, inter, vocab = 32, 4096, 11008, 32000
    macs = layers * (4 * seq * dim * dim + 2 * seq * seq * dim + 3 * seq * dim * inter) + seq * dim * vocab
    params = vocab * dim + layers * (4 * dim * dim + 3 * dim * inter + 2 * dim) + dim + dim * vocab
    return params, macs


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass
class BenchModel:
    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[str], tuple]  # device -> positional inputs
    expected: Callable[[], tuple[int, int]]  # -> (params, macs), hand-derived
    input_res: tuple[int, ...]  # ptflops' input_res (without the batch dimension)
    transformers: bool = False
    meta_only: bool = False
    notes: list[str] = field(default_factory=list)


def _float_input(*shape: int) -> Callable[[str], tuple]:
    def make(device: str) -> tuple:
        generator = torch.Generator().manual_seed(0)
        if device == "meta":
            return (torch.empty(shape, device="meta"),)
        return (torch.randn(shape, generator=generator),)

    return make


def _token_input(seq: int, vocab: int) -> Callable[[str], tuple]:
    def make(device: str) -> tuple:
        generator = torch.Generator().manual_seed(0)
        if device == "meta":
            return (torch.empty((1, seq), dtype=torch.long, device="meta"),)
        return (torch.randint(0, vocab, (1, seq), generator=generator),)

    return make


MODELS: dict[str, BenchModel] = {
    model.name: model
    for model in [
        BenchModel("cnn", SpecCNN, _float_input(1, 1, 28, 28), spec_cnn_expected, (1, 28, 28)),
        BenchModel(
            "resnet18",
            resnet18,
            _float_input(1, 3, 224, 224),
            lambda: resnet_expected(False, [2, 2, 2, 2]),
            (3, 224, 224),
        ),
        BenchModel(
            "resnet50",
            resnet50,
            _float_input(1, 3, 224, 224),
            lambda: resnet_expected(True, [3, 4, 6, 3]),
            (3, 224, 224),
        ),
        BenchModel("vit_b16_mha", ViT, _float_input(1, 3, 224, 224), vit_expected, (3, 224, 224)),
        BenchModel("sdpa_einsum", FunctionalAttentionNet, _float_input(1, 256, 512), functional_expected, (256, 512)),
        BenchModel("bilstm", BiLSTM, _float_input(1, 100, 256), lstm_expected, (100, 256)),
        BenchModel("gpt2_small", gpt2_small, _token_input(128, 50257), gpt2_expected, (128,), transformers=True),
        BenchModel("bert_base", bert_base, _token_input(128, 30522), bert_expected, (128,), transformers=True),
        BenchModel(
            "llama_7b_meta",
            llama_7b,
            _token_input(2048, 32000),
            llama_expected,
            (2048,),
            transformers=True,
            meta_only=True,
        ),
    ]
}


def check_expected() -> None:
    """The hand-derived parameter counts agree with the built models (weights excluded
    from the MAC check, which is what the tools are for)."""
    for name, bench in MODELS.items():
        if bench.meta_only:
            with torch.device("meta"):
                model = bench.build()
        else:
            model = bench.build()
        unique = {id(p): p.numel() for p in model.parameters()}
        params, macs = bench.expected()
        status = "ok" if sum(unique.values()) == params else f"MISMATCH (model has {sum(unique.values()):,})"
        print(f"{name:15s} params {params:>15,} {status:10s} macs {macs:>20,}  ({math.log10(macs):.1f})")


if __name__ == "__main__":
    check_expected()
