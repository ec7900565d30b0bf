"""Real architectures from ``transformers``, built from tiny configs with random weights (nothing
is downloaded): every one profiles with no uncounted op and identical figures on cpu and meta; a
mixture-of-experts layer and a decode step with a key-value cache are derived by hand."""

from __future__ import annotations

import warnings

import pytest
import torch
from engine_helpers import profile_both

from pytest_netbudget import profile

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

TOKENS = 8
VOCAB, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 64, 32, 48, 4, 2


def decoder_config(name: str, **extra):
    config = getattr(transformers, name)(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=extra.pop("layers", 1),
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=32,
        **extra,
    )
    return config


def build(model_class: str, config) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, model_class)(config).eval()


def ids(length: int = TOKENS) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(0))


def attention_macs(tokens: int, keys: int) -> int:
    """q and o projections (hidden x hidden), k and v (hidden x kv heads * head size), then
    QK^T and AV per head."""
    head = HIDDEN // HEADS
    projections = tokens * HIDDEN * (2 * HIDDEN + 2 * KV_HEADS * head)
    return projections + 2 * HEADS * tokens * keys * head


def test_mixture_of_experts_counts_the_routed_experts():
    """Mixtral: 4 experts, top 2. Each token goes through 2 experts of 3 hidden x intermediate
    matrices (gate, up, down), run as _grouped_mm; the router is hidden x experts per token."""
    model = build("MixtralForCausalLM", decoder_config("MixtralConfig", num_local_experts=4, num_experts_per_tok=2))
    p = profile_both(model, {"input_ids": ids()})
    experts = TOKENS * 2 * 3 * HIDDEN * INTERMEDIATE
    router = TOKENS * HIDDEN * 4
    lm_head = TOKENS * HIDDEN * VOCAB
    assert p.macs == attention_macs(TOKENS, TOKENS) + router + experts + lm_head
    grouped = sum(row.ops["aten._grouped_mm"].macs for row in p.layers if "aten._grouped_mm" in row.ops)
    assert grouped == experts


def test_decode_step_with_a_cache_on_meta():
    """Llama, 2 layers: one new token attends to 8 cached and itself; the caller's cache keeps 8."""
    model = build("LlamaForCausalLM", decoder_config("LlamaConfig", layers=2))
    prompt = ids()
    with torch.no_grad():
        cache = model(prompt, use_cache=True).past_key_values
    step = {"input_ids": prompt[:, -1:], "past_key_values": cache}
    p = profile_both(model, step)
    mlp = 3 * HIDDEN * INTERMEDIATE
    assert p.macs == 2 * (attention_macs(1, TOKENS + 1) + mlp) + HIDDEN * VOCAB
    assert cache.get_seq_length() == TOKENS


ZOO = {
    "gpt2": (
        "GPT2LMHeadModel",
        lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=1, n_head=HEADS, n_positions=32),
        lambda: {"input_ids": ids()},
    ),
    "bert": (
        "BertModel",
        lambda: transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=1,
            num_attention_heads=HEADS,
            max_position_embeddings=32,
        ),
        lambda: {"input_ids": ids()},
    ),
    "t5": (
        "T5ForConditionalGeneration",
        lambda: transformers.T5Config(
            vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=INTERMEDIATE, num_layers=1, num_heads=HEADS
        ),
        lambda: {"input_ids": ids(), "decoder_input_ids": ids()},
    ),
    "mamba": (
        "MambaForCausalLM",
        lambda: transformers.MambaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, state_size=4, num_hidden_layers=1),
        lambda: {"input_ids": ids()},
    ),
    "swin": (
        "SwinModel",
        lambda: transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2
        ),
        lambda: {"pixel_values": torch.randn(1, 3, 32, 32)},
    ),
    "vit": (
        "ViTModel",
        lambda: transformers.ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
        ),
        lambda: {"pixel_values": torch.randn(1, 3, 16, 16)},
    ),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_architecture_profiles_completely_on_cpu_and_meta(name: str):
    model_class, config, inputs = ZOO[name]
    p = profile_both(build(model_class, config()), inputs())
    assert p.macs > 0


def qwen2_vl() -> torch.nn.Module:
    """Qwen2-VL with a one-layer text model and a one-block vision tower (patches of 2, merged 2x2)."""
    config = transformers.Qwen2VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=1,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=64,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
            bos_token_id=0,
            eos_token_id=1,
        ),
        vision_config=dict(
            depth=1, embed_dim=16, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=2, spatial_merge_size=2
        ),
        image_token_id=60,
        video_token_id=61,
        vision_start_token_id=62,
        vision_end_token_id=63,
    )
    return build("Qwen2VLForConditionalGeneration", config)


def test_qwen2_vl_prefill_leaves_the_generation_state_as_it_was():
    """A prefill with an image (a 4x4 grid of patches, merged into 4 image tokens) works out the
    multimodal RoPE offsets and stores them on the model (``model.model.rope_deltas``), which a
    generation in progress reads at every decode step. The profile leaves the user's value in
    place, and a second profile gives the figures of the first. (Qwen2-VL with images runs on cpu
    only: its vision tower reads the grid's values.)"""
    model = qwen2_vl()
    tokens = torch.tensor([[5, 6, 62, 60, 60, 60, 60, 63, 7, 8]])
    inputs = {
        "input_ids": tokens,
        "pixel_values": torch.randn(16, 3 * 2 * 2 * 2),  # 16 patches of channels x 2 frames x 2 x 2
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
        "mm_token_type_ids": (tokens == 60).long(),
    }
    in_progress = model.model.rope_deltas = torch.tensor([[7]])
    first = profile(model, inputs, device="cpu")
    assert model.model.rope_deltas is in_progress and torch.equal(in_progress, torch.tensor([[7]]))
    second = profile(model, inputs, device="cpu")
    assert second.totals == first.totals and first.uncounted_ops == {}
