"""Repeated blocks told once in every report (SPEC §4): a change to every decoder layer reads as one
row, ``model.layers.{0..31}.mlp.up_proj`` ×32, with its per-layer and total figures; the pies split
where the model branches, one slice per group of repeated blocks; the comment's headline names the
largest change. The 32-layer decoder is a transformers Llama with random weights on meta."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_budgets_reports import entry_of, result_for

from pytest_netbudget import profile, reports
from pytest_netbudget.budgets import LayerChange
from pytest_netbudget.repeated import group_changes, group_repeated, index_set
from pytest_netbudget.results import ChangeKind, LayerEntry, ServeSpec


@pytest.mark.parametrize(
    ("indices", "shown"),
    [([0, 1, 2, 3], "{0..3}"), ([0, 1], "{0,1}"), ([5], "{5}"), ([0, 1, 2, 7, 9, 10, 11], "{0..2,7,9..11}")],
)
def test_index_sets(indices, shown):
    assert index_set(indices) == shown


def paths(items, key=lambda item: 1):
    return [(group.path, group.count) for group in group_repeated(items, str, key)]


def test_paths_that_differ_only_in_indices_merge():
    layers = [f"model.layers.{i}.mlp.{name}" for i in range(32) for name in ("up_proj", "down_proj")]
    assert paths([*layers, "lm_head"], key=lambda path: path.rsplit(".", 1)[-1]) == [
        ("model.layers.{0..31}.mlp.up_proj", 32),
        ("model.layers.{0..31}.mlp.down_proj", 32),
        ("lm_head", 1),
    ]


def test_lists_of_lists_merge_when_they_are_a_full_product():
    experts = [f"layers.{i}.experts.{j}.w1" for i in range(4) for j in range(8)]
    assert paths(experts) == [("layers.{0..3}.experts.{0..7}.w1", 32)]
    ragged = [path for path in experts if path != "layers.2.experts.3.w1"]
    assert paths(ragged) == [("layers.{0,1,3}.experts.{0..7}.w1", 24), ("layers.2.experts.{0..2,4..7}.w1", 7)]


def test_only_equal_changes_merge():
    def resized(path, old, new):
        return LayerChange(
            path,
            "Linear",
            ChangeKind.RESIZED,
            LayerEntry("Linear", {"params": old}),
            LayerEntry("Linear", {"params": new}),
        )

    changes = [resized("h.0.fc", 10, 20), resized("h.1.fc", 10, 20), resized("h.2.fc", 10, 30), resized("h.3.x", 1, 2)]
    groups = group_changes(changes)
    assert [(group.path, group.count) for group in groups] == [("h.{0,1}.fc", 2), ("h.2.fc", 1), ("h.3.x", 1)]
    assert reports.figure_change(groups[0], "params") == "10 -> 20 each, +20 in all"
    assert reports.figure_change(groups[1], "params") == "10 -> 30"
    # ranked by share: 2 x 10 params outranks one layer's 20 when a block weighs its repeats
    ranked = group_changes([resized("big", 10, 25), *changes[:2]], share=lambda change: change.delta("params"))
    assert [group.path for group in ranked] == ["h.{0,1}.fc", "big"]


def llama(layers: int, intermediate: int, serve_context: int | None = None):
    """A tiny Llama on 16 tokens: vocab 128, hidden 32, 4 heads of 8 (2 key-value heads), an
    ``intermediate`` wide MLP; with ``serve_context``, a serving step at that context too."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.LlamaForCausalLM(config).eval()
    serve = ServeSpec(context=serve_context, batch=1) if serve_context else None
    return profile(model, inputs={"input_ids": torch.zeros(1, 16, dtype=torch.long)}, device="meta", serve=serve)


def decoder_comment() -> str:
    """The comment on a pull request that widens the MLP of a 32-layer decoder from 64 to 96."""
    grown = result_for(llama(32, 96), base=entry_of(llama(32, 64)), name="llama")
    return reports.markdown(reports.Report([grown], compared_with="netbudget-baseline.json at origin/main"))


def test_the_comment_on_a_32_layer_decoder_whose_mlp_grew_in_every_layer():
    """By hand: gate, up and down projections are 32x64 = 2,048 weights each, 32x96 = 3,072 after
    (no bias): +1,024 per projection per layer, +32,768 over 32 layers. On 16 tokens each does 16
    times its weights in MACs: 32,768 -> 49,152, +524,288 over 32 layers.
    The model: embeddings 128x32 = 4,096, an untied head 4,096, a final norm 32, and per layer
    attention 32x32 + 2 x 32x16 + 32x32 = 3,072, two norms 64 and the MLP 6,144 (9,216 after):
    305,184 params before, 403,488 after, +98,304 = +32.2%, the largest change (MACs +29.6%)."""
    comment = decoder_comment()
    lines = comment.splitlines()
    assert lines[2] == (
        "**All 1 model(s) within budget** · largest change: <code>llama</code> params +32.2% (305k -> 403k)"
    )
    rows = [line for line in lines if line.startswith("| <code>model.layers")]
    # memory traffic of a projection, 4-byte floats: its input, weights and output,
    # (16x64 + 64x32 + 16x32) x 4 = 14,336 bytes = 0.014 MiB before, (16x96 + 96x32 + 16x32) x 4 = 20,480 after
    assert rows[:3] == [
        f"| <code>model.layers.{{0..31}}.mlp.{name}</code> ×32 (Linear) | resized | 2.05k -> 3.07k each, +32.8k in all"
        " | 32.8k -> 49.2k each, +524k in all | 65.5k -> 98.3k each, +1.05M in all | 0.014 -> 0.020 each, +0.187 in all |"
        for name in ("down_proj", "gate_proj", "up_proj")
    ]
    assert len(rows) == 5  # and the MLP's own product and its activation, each once: 5 rows, not 160
    # the pies split where the model branches (model, lm_head) and open model to show its layers,
    # one slice for all 32: 32 x 12,352 = 395,264 params
    params_pie = comment[comment.index("pie showData title Params by block") :].splitlines()[1:5]
    assert params_pie == [
        '    "model.embed_tokens" : 4096',
        '    "model.layers.{0..31} ×32" : 395264',
        '    "model.norm" : 32',
        '    "lm_head" : 4096',
    ]
    assert comment.count('"model.layers.{0..31} ×32"') == 2  # in the MACs pie too
