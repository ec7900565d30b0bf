"""The HTML report in a real browser (headless Chromium from Debian's ``chromium`` package, driven over
the DevTools protocol by tests/browser.py): the report of a ResNet and of a transformers decoder load
with no console error and no request outside the file, clicking a block zooms the treemap into it,
and the hostile corpus runs no script. Screenshots go to each test's temporary directory.

Without Chromium these tests skip and say how to install it; with NETBUDGET_REQUIRE_BROWSER=1 (as
``.ci/run`` sets) they fail instead, so that CI never passes without them.
"""

from __future__ import annotations

from browser import Browser
from reference_models import BasicBlock, ResNet, resnet18
from test_budgets_reports import entry_of, make_profile, result_for, row
from test_html_report import BIDI
from test_markdown_text import hostile_verdicts
from test_repeated_blocks import llama

from pytest_netbudget import profile, reports
from pytest_netbudget.html_report import html_report

#: The treemap's colours (assets/treemap.js): unchanged, and a block that is new.
UNCHANGED = "hsl(210, 12%, 78%)"
NEW = "hsl(25, 90%, 55%)"


def show(browser: Browser, verdicts, path):
    """Write the report of ``verdicts`` to ``path``, open it, and check that it loaded cleanly: no
    console error, no request but the file itself."""
    path.write_text(html_report(reports.Report(verdicts)), encoding="utf-8")
    browser.open(path)
    assert browser.console_errors() == []
    assert browser.requests() == [path.resolve().as_uri()]


def cells(browser: Browser, section: str = "#model-0") -> dict[str, str]:
    """The blocks the treemap shows at its first level: path -> colour."""
    return browser.evaluate(
        f"Object.fromEntries([...document.querySelectorAll('{section} .cell[data-depth=\"1\"]')]"
        ".map(g => [g.dataset.path, g.querySelector('rect').getAttribute('fill')]))"
    )


def crumbs(browser: Browser, section: str = "#model-0") -> str:
    return browser.evaluate(f"document.querySelector('{section} .crumbs').textContent")


def test_a_resnet_report_zooms_into_the_block_that_grew(browser, tmp_path):
    """ResNet-18 as the baseline; the change gives layer1 a third BasicBlock (64 -> 64 channels:
    two 3x3 convolutions of 64*64*9 = 36,864 weights and two BatchNorms of 128 params: 73,984)."""
    base = profile(resnet18(), input_shape=(1, 3, 224, 224), device="meta")
    grown = profile(ResNet(BasicBlock, [3, 2, 2, 2]), input_shape=(1, 3, 224, 224), device="meta")
    verdict = result_for(grown, base=entry_of(base), name="resnet")
    show(browser, [verdict], tmp_path / "resnet.html")
    browser.screenshot(tmp_path / "resnet.png")

    top = cells(browser)
    assert set(top) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}  # params; no ReLU or pool
    assert top["layer2"] == top["fc"] == UNCHANGED
    assert top["layer1"].startswith("hsl(0,")  # grew: 147,968 -> 221,952 params (+50%)
    assert crumbs(browser) == "resnet"  # the zoom path starts at the model

    browser.click('#model-0 .cell[data-path="layer1"]')
    inside = cells(browser)
    assert inside == {"layer1.0": UNCHANGED, "layer1.1": UNCHANGED, "layer1.2": NEW}
    assert crumbs(browser) == "resnet / layer1"
    where = browser.evaluate("document.querySelector('#model-0 .where').textContent")
    assert where == "layer1: params 222k, +74k (+50.0%)"  # 147,968 + 73,984 = 221,952
    browser.screenshot(tmp_path / "resnet-layer1.png", full_page=False)

    browser.click("#model-0 .crumbs button")  # back to the whole model
    assert set(cells(browser)) == set(top)
    browser.click('#model-0 .cell[data-path="layer4"]')
    browser.evaluate("document.querySelector('#model-0 .cell').focus()")
    browser.page(
        "Input.dispatchKeyEvent", {"type": "keyDown", "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}
    )
    assert crumbs(browser) == "resnet"  # Escape zooms out
    assert browser.console_errors() == []


def test_a_transformers_decoder_report_shows_every_layer_grown(browser, tmp_path):
    """A tiny Llama (4 layers, random weights, nothing downloaded) whose MLP widens from 64 to 96 in
    every layer: gate, up and down projections each 32*64 = 2,048 -> 32*96 = 3,072 weights."""
    verdict = result_for(llama(4, 96, serve_context=64), base=entry_of(llama(4, 64, serve_context=64)), name="llama")
    show(browser, [verdict], tmp_path / "llama.html")

    assert set(cells(browser)) == {"model", "lm_head"}
    assert cells(browser)["lm_head"] == UNCHANGED
    browser.click('#model-0 .cell[data-path="model"]')
    assert set(cells(browser)) == {"model.embed_tokens", "model.layers", "model.norm"}
    browser.click('#model-0 .cell[data-path="model.layers"]')
    layers = cells(browser)
    assert list(layers) == [f"model.layers.{index}" for index in range(4)]
    assert all(colour.startswith("hsl(0,") for colour in layers.values())  # every layer grew
    assert crumbs(browser) == "llama / model / layers"
    browser.click('#model-0 .cell[data-path="model.layers.0"]')
    assert set(cells(browser)) == {
        "model.layers.0.self_attn",
        "model.layers.0.mlp",
        "model.layers.0.input_layernorm",
        "model.layers.0.post_attention_layernorm",
    }
    assert cells(browser)["model.layers.0.self_attn"] == UNCHANGED
    # the layer diff says it once per projection, for all four layers
    rows = browser.evaluate(
        "[...document.querySelectorAll('#model-0 table tr td:first-child')].map(td => td.textContent)"
    )
    assert "model.layers.{0..3}.mlp.up_proj ×4" in rows

    def pick(metric: str) -> None:
        browser.evaluate(
            "(() => { const s = document.querySelector('#model-0 select.metric');"
            f" s.value = String([...s.options].findIndex(o => o.textContent === '{metric}'));"
            " s.dispatchEvent(new Event('change')); })()"
        )

    pick("macs")
    where = browser.evaluate("document.querySelector('#model-0 .where').textContent")
    assert where.startswith("model.layers.0 (LlamaDecoderLayer): macs ")
    browser.screenshot(tmp_path / "llama.png")
    # the KV cache as the area: only attention holds it, unchanged by the wider MLP; per layer keys and
    # values of 64 tokens x 2 heads x 8, float32: 2 x 64 x 16 x 4 = 8,192 bytes = 0.008 MiB
    pick("kv_cache_mb")
    assert cells(browser) == {"model.layers.0.self_attn": UNCHANGED}
    where = browser.evaluate("document.querySelector('#model-0 .where').textContent")
    assert where == "model.layers.0 (LlamaDecoderLayer): kv_cache_mb 0.008, ="
    assert browser.console_errors() == []


def test_the_hostile_corpus_runs_nothing_in_the_browser(browser, tmp_path):
    verdicts = hostile_verdicts()
    verdicts.append(result_for(make_profile(row(BIDI, BIDI, 5, 5, 5)), name=BIDI))
    show(browser, verdicts, tmp_path / "hostile.html")
    browser.screenshot(tmp_path / "hostile.png")
    assert browser.dialogs() == []  # no alert() ran
    counts = browser.evaluate(
        "['h1', 'img', 'iframe', 'object', 'embed', 'a[href^=\"javascript\"]', 'section']"
        ".map(s => document.querySelectorAll(s).length)"
    )
    assert counts == [1, 0, 0, 0, 0, 0, len(verdicts)]
    labels = browser.evaluate(
        "[...document.querySelectorAll('.cell[data-depth=\"1\"] title')].map(t => t.textContent.split('\\n')[0])"
    )
    assert any(label.startswith("a|b (a|b)") for label in labels)  # the name, as text
    assert any("<img src=x onerror=alert(1)>" in label for label in labels)
