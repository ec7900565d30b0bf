"""Serving budgets as a team uses them: a ``serve`` table in pyproject.toml, its budgets and baseline, a pull
request in a real git repository that doubles the key-value heads, config mistakes, and the command line.

Figures by hand: a transformers Llama with 2 layers, hidden 32, 4 heads of 8, ``kv_heads`` key-value heads,
served at context 64 for batch 2 in float32 caches 2 * 2 layers * kv_heads * 8 * 64 * 2 * 4 bytes:
16,384 bytes (0.015625 MiB) with one key-value head, 32,768 (0.03125 MiB) with two.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from test_baseline_workflow import BASELINE
from test_pull_request_flow import commit_all, git  # noqa: F401  (git is a fixture)

from pytest_netbudget import cli

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("preloaded", "decoder_loaded")

DECODER = """
import warnings

import transformers


def decoder(kv_heads=1):
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=128,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.LlamaForCausalLM(config)
"""

SERVED = """
[tool.netbudget.models.decoder]
factory = "mymodels:decoder"
kwargs = {{ kv_heads = {kv_heads} }}
inputs = [{{ shape = [1, 8], dtype = "int64", high = 64 }}]
device = "meta"
serve = {{ context = 64, batch = 2{extra} }}
max_kv_cache_mb = {budget}
"""


@pytest.fixture(scope="module")
def decoder_loaded() -> None:
    """Serve the decoder once in this process before any pytester run: a run drops the modules it
    imported when it ends, and transformers' lazily imported parts (the Llama model, its attention and
    cache code) must stay loaded for the tests that use them after."""
    import torch

    from pytest_netbudget import ServeSpec, profile

    namespace: dict = {}
    exec(DECODER, namespace)
    profile(namespace["decoder"](), torch.zeros(1, 8, dtype=torch.long), device="cpu", serve=ServeSpec(8, fits="1MiB"))


def served(kv_heads: int = 1, extra: str = "", budget: float = 0.02) -> str:
    return SERVED.format(kv_heads=kv_heads, extra=extra, budget=budget)


def test_a_pull_request_that_doubles_the_key_value_heads_fails_and_names_the_projections(pytester, project, git):  # noqa: F811
    project(served(kv_heads=1, budget=1), top='max_increase = "2%"', models=DECODER)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entry = json.loads((pytester.path / BASELINE).read_text(encoding="utf-8"))["models"]["decoder"]
    assert entry["totals"]["kv_cache_mb"] == round(16384 / 2**20, 6)  # the baseline keeps MiB to six decimals
    assert entry["layers"]["model.layers.0.self_attn"]["kv_cache_mb"] == round(8192 / 2**20, 6)
    commit_all(git, "a decoder and its baseline")

    git("checkout", "-q", "-b", "more-kv-heads")
    project(served(kv_heads=2, budget=1), top='max_increase = "2%"', models=DECODER)
    commit_all(git, "two key-value heads")
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-base=main", "--netbudget-report=pr.md")
    assert result.ret == 1
    text = result.stdout.str()
    assert "decoder grew more than max_increase allows over its baseline" in text
    # 0.015625 -> 0.03125 MiB: +100% over the baseline, within its 1 MiB budget
    result.stdout.re_match_lines(
        [
            r"^\s+kv_cache_mb\s+1\.000\s+0\.031\s+0\.016\s+\+0\.016 \(\+100\.0%\)\s+grew \+0\.016 \(\+100\.0%\), more than the allowed 2%"
        ]
    )
    # ... and the attention layers that hold the cache say how much each grew
    result.stdout.re_match_lines(
        [r"^\s+model\.layers\.\{0,1\}\.self_attn ×2 \(LlamaAttention\)\s+resized.*0\.008 -> 0\.016 each"]
    )
    # the layer diff names the key and value projections: 32 x 8 -> 32 x 16 weights each
    for projection in ("k_proj", "v_proj"):  # both layers' projections, grouped as one line
        result.stdout.re_match_lines(
            [rf"^\s+model\.layers\.\{{0,1\}}\.self_attn\.{projection} ×2 \(Linear\)\s+resized\s+256 -> 512 each"]
        )
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    assert "largest change: <code>decoder</code> kv_cache_mb +100" in markdown
    for projection in ("k_proj", "v_proj"):
        assert (
            f"<code>model.layers.{{0,1}}.self_attn.{projection}</code> ×2 (Linear) | resized | 256 -> 512 each"
            in markdown
        )


def test_a_kv_cache_that_grew_with_a_longer_context_is_reported_as_that(pytester, project):
    # Before: context = 64 made 128 read as plain growth, "kv_cache_mb grew +100%", the context unsaid.
    # The cache is 16,384 bytes at context 64 and 32,768 at 128 (the module's figures by hand): past
    # max_increase = 2%, so the model still fails, and says that its serve settings changed with it.
    project(served(budget=1), top='max_increase = "2%"', models=DECODER)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entry = json.loads((pytester.path / BASELINE).read_text(encoding="utf-8"))["models"]["decoder"]
    assert entry["settings"] == {
        "inputs": [{"shape": [1, 8], "dtype": "int64"}],
        "serve": {"context": 64, "batch": 2, "kv_dtype": None, "weights": None, "group_size": None, "keep": []},
    }
    project(served(budget=1).replace("context = 64", "context = 128"), top='max_increase = "2%"', models=DECODER)
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "decoder grew more than max_increase allows over its baseline",
            "  its settings changed since its baseline entry: serve context 64 -> 128",
            "*",
            "  kv_cache_mb * 0.031 * 0.016 * +0.016 (+100.0%) * grew +0.016 (+100.0%), more than the allowed 2%",
        ]
    )
    result.stdout.fnmatch_lines(["  next: its figures changed with its settings (serve context 64 -> 128), *"])
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["decoder"]["environment_change"] == ["serve context 64 -> 128"]


def test_serve_figures_are_budgets_and_the_fits_line_shows(pytester, project):
    import torch

    from pytest_netbudget import ServeSpec, profile

    project(served(extra=', fits = "1MiB"'), models=DECODER)
    result = pytester.runpytest("--netbudget")
    assert result.ret == 0, result.stdout.str()
    # Weights: embedding and LM head 64 x 32 each, per layer q and o 32 x 32, k and v 8 x 32, gate, up and
    # down 48 x 32, two norms of 32; the final norm: 18,592 float32 parameters, and the rotary
    # embedding's two buffers of 4 floats: 74,400 bytes. One more token: 2 * 2 layers * 1 * 8 * batch 2
    # * 4 bytes = 256 bytes of cache (the sdpa decode step's own activations do not grow with it).
    namespace: dict = {}
    exec(DECODER, namespace)  # the same model, profiled here for its decode step's activations
    p = profile(namespace["decoder"](), torch.zeros(1, 8, dtype=torch.long), device="meta", serve=ServeSpec(64, 2))
    assert round(p.weights_mb * 2**20) == 74_400
    fits = (2**20 - 74_400 - round(p.serve.memory_mb["activations"] * 2**20)) // 256
    result.stdout.fnmatch_lines(
        [f"decoder: fits 1.00 MiB: up to {fits:,} tokens of context at batch 2 (+256 B a token there)"]
    )


def every_serve_budget(kv_heads: int, limits: dict) -> str:
    """The decoder served with fits = 1 MiB and a max_ budget on every serving figure."""
    others = "".join(f"max_{name} = {json.dumps(limit)}\n" for name, limit in limits.items() if name != "kv_cache_mb")
    return served(kv_heads=kv_heads, extra=', fits = "1MiB"', budget=limits["kv_cache_mb"]) + others


SERVE_METRICS = (
    "kv_cache_mb",
    "prefill_macs",
    "prefill_flops",
    "decode_macs",
    "decode_flops",
    "weights_mb",
    "serve_memory_mb",
)


def test_every_serving_figure_is_a_budget_a_baseline_entry_a_report_figure_and_grows(pytester, project):
    """Each of the seven serving figures: its max_ budget fails the item when exceeded, the baseline keeps it
    (per layer where the layer diff compares it), the JSON report has it and the serving step's settings and
    fits line, the Markdown report shows the serving block, and max_increase catches its growth.

    By hand, one key-value head, context 64, batch 2, float32 (d 32, 4 heads of 8, ff 48, vocab 64, 2 layers):
    KV 2 * 2 * 1 * 8 * 64 * 2 * 4 = 16,384 bytes; prefill 2 * 64 * (2 * (32 * (2 * 32 + 2 * 8) + 3 * 32 * 48)
    + 32 * 64) + 2 layers * 2 * batch 2 * 4 * 8 * 64**2 = 3,145,728 MACs; decode 2 * (2 * (32 * (32 + 2 * 8
    + 32) + 3 * 32 * 48 + 2 * 4 * 8 * 65) + 32 * 64) = 49,408 MACs, of which each attention layer's own
    2 * 2 * 4 * 8 * 65 = 8,320; weights 18,592 float32 parameters and 8 buffer floats: 74,400 bytes. FLOPs
    are at least twice the MACs, so budgets of 1M and 50k are exceeded by any count."""
    generous = {"kv_cache_mb": 1, "prefill_macs": "1G", "prefill_flops": "2G", "decode_macs": "1M"}
    generous.update({"decode_flops": "2M", "weights_mb": 1, "serve_memory_mb": 2})
    project(every_serve_budget(1, generous), top='max_increase = "2%"', models=DECODER)
    result = pytester.runpytest(
        "--netbudget", "--netbudget-update", "--netbudget-report=r.json", "--netbudget-report=r.md"
    )
    assert result.ret == 0, result.stdout.str()
    mib = 2**20
    by_hand = {
        "kv_cache_mb": 16_384 / mib,
        "prefill_macs": 3_145_728,
        "decode_macs": 49_408,
        "weights_mb": 74_400 / mib,
    }
    entry = json.loads((pytester.path / BASELINE).read_text(encoding="utf-8"))["models"]["decoder"]
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["models"]["decoder"]
    for name, figure in by_hand.items():
        assert entry["totals"][name] == round(figure, 6), name
        assert report["totals"][name] == round(figure, 6), name
    assert entry["totals"]["prefill_flops"] >= 2 * 3_145_728 and entry["totals"]["decode_flops"] >= 2 * 49_408
    parts = report["serve"]["memory_mb"]
    assert set(parts) == {"weights", "kv_cache", "activations"}
    assert report["totals"]["serve_memory_mb"] == pytest.approx(sum(parts.values()), abs=1e-6)
    assert entry["totals"]["serve_memory_mb"] == report["totals"]["serve_memory_mb"]
    assert (report["serve"]["context"], report["serve"]["batch"], report["serve"]["fits"]["memory_mb"]) == (64, 2, 1.0)
    for layer in range(2):
        attention = entry["layers"][f"model.layers.{layer}.self_attn"]
        assert (attention["kv_cache_mb"], attention["decode_macs"]) == (round(8_192 / mib, 6), 8_320)
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "Serving step (context 64, batch 2, kv cache as held; weights own dtype):" in markdown
    assert "fits 1.00 MiB: up to " in markdown
    # Run again, unchanged: the comment has no section for the model, but the fits line is the question a
    # served model's comment answers ("does it still fit?"), so it shows under the table.
    unchanged = pytester.runpytest("--netbudget", "--netbudget-report=same.md")
    assert unchanged.ret == 0
    same = (pytester.path / "same.md").read_text(encoding="utf-8")
    assert "<details" not in same
    assert re.search(r"^- <code>decoder</code>: fits 1\.00 MiB: up to [\d,]+ tokens of context at batch 2 ", same, re.M)

    # Two key-value heads: the cache doubles, and the k and v projections, so every serving figure grows.
    project(every_serve_budget(2, generous), top='max_increase = "2%"', models=DECODER)
    grew = pytester.runpytest("--netbudget")
    assert grew.ret == 1
    for name in SERVE_METRICS:
        grew.stdout.re_match_lines([rf"^\s+{name}\s.*grew \+\S+ \(\+[\d.]+%\), more than the allowed 2%$"])

    tight = {"kv_cache_mb": 0.01, "prefill_macs": "3M", "prefill_flops": "1M", "decode_macs": "40k"}
    tight.update({"decode_flops": "50k", "weights_mb": 0.05, "serve_memory_mb": 0.05})
    project(every_serve_budget(1, tight), models=DECODER)
    over = pytester.runpytest("--netbudget")
    assert over.ret == 1
    over.stdout.fnmatch_lines(["*decoder exceeds its budget*"])
    for name, limit in tight.items():
        shown = f"{limit:.3f}" if isinstance(limit, float) else limit.replace("k", ".0k").replace("M", ".00M")
        over.stdout.re_match_lines([rf"^\s+{name}\s+{re.escape(shown)}\s+\S+\s.*\+"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "serve = { contxt = 64 }",
            "[[]tool.netbudget.models.decoder[]] serve.contxt: unknown key; did you mean 'context'?",
        ),
        ("serve = { batch = 2 }", "*serve.context: missing: the tokens already in the cache, e.g. context = 8192"),
        ('serve = { context = 64, weights = "int5" }', "*serve.weights: unknown dtype 'int5'*"),
        ('serve = { context = 64, fits = "lots" }', "*serve.fits: 'lots' is not a memory size*"),
        ("serve = 64", "*serve: must be a table like { context = 8192, batch = 4 }, got 64"),
        ("max_decode_macs = 100", "*max_decode_macs: budgets a serving step, but the model has none*"),
    ],
)
def test_a_bad_serve_table_is_a_usage_error_naming_file_table_and_key(pytester, project, table, message):
    toml = '[tool.netbudget.models.decoder]\nfactory = "mymodels:decoder"\ninput_shape = [1, 8]\n' + table
    project(toml, models=DECODER)
    result = pytester.runpytest("--netbudget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pyproject.toml: {message}" if not message.startswith("*") else message])


def test_a_model_that_cannot_be_served_fails_its_own_item(pytester, project):
    models = "from torch import nn\n\n\nclass Plain(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    toml = '[tool.netbudget.models.plain]\nfactory = "mymodels:Plain"\ninput_shape = [1, 8]\nserve = { context = 16 }\n'
    project(toml, models=models)
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*serving step: Plain.forward takes no cache argument*"])


CHECKED = """
import torch
from mymodels import decoder
from pytest_netbudget import ServeSpec


def test_decoder_serves_within_budget(netbudget):
    p = netbudget.check(decoder(), torch.zeros(1, 8, dtype=torch.long), device="meta",
                        serve={"context": 64, "batch": 2}, max_kv_cache_mb=0.02)
    assert round(p.kv_cache_mb * 2**20) == 16_384


def test_decoder_serves_a_spec(netbudget):
    netbudget.check(decoder(), torch.zeros(1, 8, dtype=torch.long), device="meta",
                    serve=ServeSpec(context=64, batch=4), max_kv_cache_mb=0.02, name="four")


def test_a_serving_budget_without_a_serving_step(netbudget):
    netbudget.check(decoder(), torch.zeros(1, 8, dtype=torch.long), device="meta", max_decode_macs="1M")
"""


def test_a_check_from_a_test_takes_a_serving_step(pytester, project):
    """At batch 2 the cache is 16,384 bytes (0.0156 MiB, within 0.02); at batch 4 twice that, over it.
    A serving budget without a serving step is that check's error, never a pass unmeasured."""
    project("", models=DECODER)
    pytester.makepyfile(test_checked=CHECKED)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*four exceeds its budget*", "*kv_cache_mb*0.020*0.031*"])
    result.stdout.fnmatch_lines(
        [
            '*max_decode_macs: budgets a serving step, but the model has none: pass serve={"context": 2048}, or a ServeSpec*'
        ]
    )


def test_show_profiles_a_serving_step_from_the_command_line(pytester, project, monkeypatch, capsys):
    project(served(), models=DECODER)
    command = [
        sys.executable,
        "-m",
        "pytest_netbudget",
        "show",
        "decoder",
        "--serve",
        "context=128,batch=4,weights=int8",
    ]
    done = subprocess.run(command, cwd=pytester.path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    # the command line's context and batch over the table's: 2 * 2 * 1 * 8 * 128 * 4 * 4 bytes = 64 KiB (0.0625 MiB)
    assert "Serving step (context 128, batch 4, kv cache as held; weights int8):" in done.stdout
    assert "memory: " in done.stdout and "kv cache 0.062" in done.stdout
    assert "KV cache  Decode MACs" in done.stdout
    monkeypatch.chdir(pytester.path)  # a misspelt key is a usage error before anything is imported
    assert cli.main(["show", "decoder", "--serve", "context=128,bach=4"]) == 2
    # ... the command line's, not pyproject.toml's, whose serve table is right
    err = capsys.readouterr().err
    assert "netbudget show decoder: serve.bach: unknown key; did you mean 'batch'?" in err
    assert "(a command-line option, over [tool.netbudget.models.decoder] in " in err
    assert cli.main(["show", "decoder", "--serve", "context=abc"]) == 2
    assert "netbudget show decoder: serve.context: must be a positive integer, got 'abc'" in capsys.readouterr().err
    # a mistake in the file is still the file's
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("batch = 2", "bach = 2"), encoding="utf-8")
    assert cli.main(["show", "decoder", "--serve", "context=128"]) == 2
    assert "pyproject.toml: [tool.netbudget.models.decoder] serve.bach: unknown key" in capsys.readouterr().err
