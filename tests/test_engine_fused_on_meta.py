"""On meta, attention takes the kernel CPU takes, so activations agree across devices."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend

from pytest_netbudget import profile
from pytest_netbudget.engine.fused_on_meta import cpu_takes_flash


class Attention(nn.Module):
    def forward(self, query, key, value, mask=None):
        if mask is None:
            return F.scaled_dot_product_attention(query, key, value, is_causal=True)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


def q(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


CASES = {
    "4d": ((q(1, 2, 8, 16), q(1, 2, 8, 16), q(1, 2, 8, 16)), {}),
    "value head size differs": ((q(1, 2, 8, 16), q(1, 2, 8, 16), q(1, 2, 8, 32)), {}),
    "3d": ((q(2, 8, 16), q(2, 8, 16), q(2, 8, 16)), {}),
    "dropout": ((q(1, 2, 8, 16), q(1, 2, 8, 16), q(1, 2, 8, 16)), {"dropout_p": 0.1}),
    "float64": ((q(1, 2, 8, 16, dtype=torch.float64),) * 3, {}),
    "bfloat16": ((q(1, 2, 8, 16, dtype=torch.bfloat16),) * 3, {}),
    "grouped-query": ((q(1, 4, 8, 16), q(1, 2, 8, 16), q(1, 2, 8, 16)), {"enable_gqa": True}),
    "grouped-query, one key head": ((q(1, 4, 1, 16), q(1, 1, 9, 16), q(1, 1, 9, 16)), {"enable_gqa": True}),
    "grouped-query, equal heads": ((q(1, 2, 8, 16),) * 3, {"enable_gqa": True}),
}


@pytest.mark.parametrize("case", CASES)
def test_the_flash_rule_agrees_with_cpus_own_choice(case):
    (query, key, value), kwargs = CASES[case]
    chosen = SDPBackend(torch._fused_sdp_choice(query, key, value, **kwargs))
    expected = chosen == SDPBackend.FLASH_ATTENTION
    assert cpu_takes_flash(query, key, value, kwargs.get("dropout_p", 0.0), kwargs.get("enable_gqa", False)) is expected


def test_grouped_query_attention_figures_equal_on_cpu_and_meta():
    """transformers' sdpa path passes enable_gqa=True for every GQA model (Llama, Mistral, Qwen2), and
    CPU takes its flash kernel then: output 2*4*16*8 floats + logsumexp 2*4*16 floats = 4096 + 512
    bytes, where the math path would also hold the 2*4*16*16 scores and repeat the keys and values."""

    class Grouped(nn.Module):
        def forward(self, query, key, value):
            return F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)

    query, key = q(2, 4, 16, 8), q(2, 2, 16, 8)
    for device in ("cpu", "meta"):
        p = profile(Grouped(), (query, key, key), device=device)
        assert p.activations_mb * 2**20 == 4096 + 512, device


def test_causal_attention_on_meta_holds_no_score_matrix():
    # On CPU the flash kernel writes the output (1*2*128*16 floats) and its logsumexp
    # (1*2*128 floats): 16384 + 1024 bytes. The math path would also hold the
    # 1*2*128*128 score matrix (131072 bytes) and its softmax.
    query = q(1, 2, 128, 16)
    for device in ("cpu", "meta"):
        p = profile(Attention(), (query, query, query), device=device)
        assert p.activations_mb * 2**20 == 16384 + 1024, device


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_attention_figures_equal_on_cpu_and_meta(mask_dtype, dtype):
    query = q(2, 4, 32, 16, dtype=dtype)
    mask = torch.tril(torch.ones(32, 32)).to(mask_dtype)
    cpu = profile(Attention(), (query, query, query, mask), device="cpu")
    meta = profile(Attention(), (query, query, query, mask), device="meta")
    assert (cpu.macs, cpu.flops, cpu.activations_mb) == (meta.macs, meta.flops, meta.activations_mb)
    # MACs: B*H*L*S*(E + Ev) = 2*4*32*32*(16 + 16)
    assert meta.macs == 2 * 4 * 32 * 32 * 32


def test_unfused_shapes_still_run_the_math_path_on_meta():
    query, key, value = q(1, 2, 8, 16), q(1, 2, 8, 16), q(1, 2, 8, 32)
    cpu = profile(Attention(), (query, key, value), device="cpu")
    meta = profile(Attention(), (query, key, value), device="meta")
    assert (cpu.macs, cpu.flops, cpu.activations_mb) == (meta.macs, meta.flops, meta.activations_mb)
    assert meta.macs == 1 * 2 * 8 * 8 * (16 + 32)
