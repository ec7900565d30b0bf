"""The HTML report without a browser (SPEC §4): one self-contained file whose structure the hostile
corpus of the Markdown tests cannot change, the module tree the treemap draws (figures by hand),
repeated blocks told once, and the ways to get one (pytest, ``netbudget merge --html``).
The browser's view of it is tests/test_html_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace
from html.parser import HTMLParser

from test_budgets_reports import NET, broken_result, entry_of, make_profile, result_for, row
from test_markdown_text import ERROR, HOSTILE, hostile_verdicts

from pytest_netbudget import cli, reports
from pytest_netbudget.html_report import html_report
from pytest_netbudget.results import Fits, MemoryPart, Phase, ServePart, ServeStep, TrainStep

#: Every element the report itself writes; anything else would have come from model text.
OWN_TAGS = {
    "html", "head", "meta", "link", "title", "style", "body", "script", "h1", "h2", "h3", "p", "a", "code",
    "span", "br", "pre", "ul", "li", "table", "tr", "th", "td", "section", "div", "label", "select", "nav",
    "svg", "rect", "strong",
}  # fmt: skip
#: Model text the HTML must also neutralise: a right-to-left override would reorder what follows it.
BIDI = "evil\u202eexe.txt"


class Page(HTMLParser):
    """The elements of a page, the text of each <code>, and the raw content of each <script>."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.codes: list[str] = []
        self.scripts: list[str] = []
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("code", "script"):
            self._open.append(tag)
            (self.codes if tag == "code" else self.scripts).append("")

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            (self.codes if self._open[-1] == "code" else self.scripts)[-1] += data

    def count(self, tag: str, **attrs: str) -> int:
        return sum(name == tag and all(seen.get(k) == v for k, v in attrs.items()) for name, seen in self.tags)


def data_of(text: str) -> dict:
    found = re.search(r'<script type="application/json" id="netbudget-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def tree_paths(node: dict) -> list[str]:
    return [node["p"], *(path for child in node.get("c", []) for path in tree_paths(child))]


def grown_net():
    """NET's parts with the encoder widened: enc.0 and enc.1 80 -> 100 params (800 -> 1,000 MACs,
    1,600 -> 2,000 FLOPs), head unchanged (50 / 500 / 1,000), a ReLU with 30 FLOPs removed, and the
    model's own forward newly doing 7 FLOPs."""
    old = make_profile(
        row("enc.0", "Linear", 80, 800, 1600),
        row("enc.1", "Linear", 80, 800, 1600),
        row("head", "Linear", 50, 500, 1000),
        row("gone", "ReLU", 0, 0, 30),
    )
    new = make_profile(
        row("enc.0", "Linear", 100, 1000, 2000),
        row("enc.1", "Linear", 100, 1000, 2000),
        row("head", "Linear", 50, 500, 1000),
        own=row("", "Net", flops=7),
    )
    return result_for(new, base=entry_of(old), name="net")


def test_the_treemap_tree_sums_each_block_and_its_change():
    tree = data_of(html_report(reports.Report([grown_net()])))["models"][0]
    assert tree["metrics"] == ["params", "macs", "flops"]
    assert tree["compared"] is True
    root = tree["tree"]
    # now: 100 + 100 + 50 params, 1,000 + 1,000 + 500 MACs, 2,000 + 2,000 + 1,000 + 7 FLOPs;
    # before: 80 + 80 + 50, 800 + 800 + 500, 1,600 + 1,600 + 1,000 + 30 (the removed ReLU)
    assert (root["v"], root["o"]) == ([250, 2500, 5007], [210, 2100, 4230])
    assert root["d"][0] == "+40 (+19.0%)"
    children = {child["n"]: child for child in root["c"]}
    assert list(children) == ["(own)", "enc", "head"]  # the model's own work first; the ReLU is gone
    assert (children["(own)"]["v"], children["(own)"]["o"]) == ([0, 0, 7], [0, 0, 0])
    enc = children["enc"]
    assert (enc["p"], enc["t"], enc["v"], enc["o"]) == ("enc", "", [200, 2000, 4000], [160, 1600, 3200])
    assert enc["s"] == ["200", "2.00k", "4.00k"] and enc["d"][0] == "+40 (+25.0%)"
    assert [(child["p"], child["t"], child["v"][0]) for child in enc["c"]] == [
        ("enc.0", "Linear", 100),
        ("enc.1", "Linear", 100),
    ]
    assert children["head"]["d"] == ["=", "=", "="]


def test_the_layer_diff_tells_a_repeated_block_once():
    page = html_report(reports.Report([grown_net()]))
    rows = re.findall(r"<tr><td><code>([^<]*)</code>( ×\d+)?</td>.*?</tr>", page)
    assert ("enc.{0,1}", " ×2") in rows
    assert "80 -&gt; 100 each, +40 in all" in page  # per layer, then all repeats: 2 x 20
    assert "1.60k -&gt; 2.00k each, +800 in all" in page


def test_a_hostile_corpus_stays_text_in_the_html():
    verdicts = hostile_verdicts()
    verdicts.append(result_for(make_profile(row(BIDI, BIDI, 5, 5, 5)), name=BIDI))
    removed = [f"gone {name}" for name in HOSTILE]
    text = html_report(reports.Report(verdicts, removed, compared_with="main <b>", conflicts=[f"{HOSTILE[1]} x"]))
    page = Page(text)

    assert {tag for tag, _ in page.tags} <= OWN_TAGS
    assert not [attrs for _, attrs in page.tags if any(name.startswith("on") for name in attrs)]  # no handler
    assert page.count("section") == len(verdicts)
    assert page.count("script") == 2  # the data and the report's own script
    summary = text[text.index("<table>") : text.index("</table>")]
    assert summary.count("<tr>") == 1 + len(verdicts) + len(removed)
    for name in HOSTILE:  # every name shown whole, as text
        assert name in page.codes
        assert f"gone {name}" in page.codes
    assert "evil<U+202E>exe.txt" in page.codes and BIDI not in text
    errors = [block for block in re.findall(r"<pre>(.*?)</pre>", text, re.S)]
    assert len(errors) == len(HOSTILE) and all("&lt;/details&gt;&lt;img src=x" in block for block in errors)
    assert ERROR not in text

    data, script = page.scripts
    assert "<" not in data and json.loads(data) == data_of(text)  # nothing in the data can close its element
    paths = {path for model in json.loads(data)["models"] for path in tree_paths(model["tree"])}
    assert set(HOSTILE) <= paths  # and the treemap gets the names as they are (a dot nests a module)
    # ...but a bidirectional control, which the script would set live as a label's text, as its code point
    assert "evil<U+202E>exe.txt" in paths and not any("\u202e" in path for path in paths)

    policy = next(attrs["content"] for tag, attrs in page.tags if attrs.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none';") and "unsafe" not in policy
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy  # only this script may run, and nothing may load


def test_the_page_asks_for_nothing_outside_itself():
    text = html_report(reports.Report([grown_net(), result_for(NET, name="plain")]))
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?(?:#|data:))""", text)  # links only to its own anchors
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    assert len(text.encode()) < 40_000  # inline CSS and JS stay small


def test_an_error_and_a_new_model():
    text = html_report(reports.Report([broken_result("broken", "boom <b>"), result_for(NET, name="fresh")]))
    assert "<pre>boom &lt;b&gt;</pre>" in text
    fresh = data_of(text)["models"][0]
    assert fresh["compared"] is False  # no baseline: the treemap says so instead of colouring changes
    assert [child["p"] for child in fresh["tree"]["c"]] == ["conv", "out", "norm", "act"]


def test_netbudget_merge_writes_the_html_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.json").write_text(reports.to_json(reports.Report([grown_net()])), encoding="utf-8")
    (tmp_path / "two.json").write_text(reports.to_json(reports.Report([result_for(NET, name="b")])), encoding="utf-8")
    assert cli.main(["merge", "one.json", "two.json", "--html", "merged.html"]) == 0
    merged = (tmp_path / "merged.html").read_text(encoding="utf-8")
    assert [model["tree"]["v"][0] for model in data_of(merged)["models"]] == [28_900, 250]  # b, then net
    assert "enc.{0,1}" in merged


def test_pytest_writes_the_html_report_beside_the_others(pytester, project):
    """Tiny is Linear(10, 5) on [1, 10]: 55 params, then 66 when widened to 6 (tests/conftest.py)."""
    from test_baseline_workflow import write

    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(pytester, project, width=6)
    result = pytester.runpytest("--netbudget", "--netbudget-report=out/r.html", "--netbudget-report=out/r.md")
    assert result.ret == 1  # 55 -> 66 params is more than max_increase = 2%
    text = (pytester.path / "out" / "r.html").read_text(encoding="utf-8")
    trees = {model["tree"]["c"][0]["p"]: model["tree"] for model in data_of(text)["models"]}
    assert trees["fc"]["v"][0] == 66 and trees["fc"]["o"][0] == 55
    assert "55 -&gt; 66" in text
    result.stdout.fnmatch_lines(["*report written to out/r.html*"])


def test_the_serving_and_training_memory_are_stacked_bars():
    """A serving step of 1.5 MiB of weights, 0.5 of KV cache and 0.25 of decode activations:
    2.250 MiB, the bar's 1,000 units split 666.67 / 222.22 / 111.11; and a training step."""
    serving = ServeStep(
        context=2048, batch=1, kv_dtype=None, weights="int8", group_size=None, keep=[],
        memory_mb={ServePart.WEIGHTS: 1.5, ServePart.KV_CACHE: 0.5, ServePart.ACTIVATIONS: 0.25},
        fits=Fits(memory_mb=8.0, context=13_000, per_token_mb=0.000244),
    )  # fmt: skip
    training = TrainStep(
        "adamw",
        32,
        None,
        {MemoryPart.PARAMS: 1.0, MemoryPart.GRADS: 1.0, MemoryPart.OPTIMIZER_STATE: 2.0},
        Phase.BACKWARD,
        0.5,
    )
    profile = replace(NET, serve=serving, train=training)
    text = html_report(reports.Report([result_for(profile)]))
    assert "Serving step (context 2,048, batch 1): weights, KV cache and decode activations: 2.250 MiB" in text
    widths = re.findall(r'<rect x="([\d.]+)" y="0" width="([\d.]+)" height="26"', text)
    assert widths[3:] == [("0.00", "666.67"), ("666.67", "222.22"), ("888.89", "111.11")]
    assert "</svg>kv cache 0.500 MiB (22.2%)</li>" in text
    assert "fits 8.00 MiB: up to 13,000 tokens of context at batch 1" in text  # the serving step's fits line
    assert "Training step (adamw): memory at its peak, in the backward: 4.000 MiB" in text
    assert widths[:3] == [("0.00", "250.00"), ("250.00", "250.00"), ("500.00", "500.00")]
    assert "</svg>optimizer state 2.000 MiB (50.0%)</li>" in text


# --- what the Markdown says above its table and in a model's section (issue 20) ------------------


def test_the_html_says_the_stale_baseline_and_the_models_not_run_above_its_table():
    # Before: the Markdown put both at the top (tests/test_pull_request_flow.py, test_one_result_each.py);
    # the HTML report said neither, and its headline alone read as a green run.
    report = reports.Report(
        [grown_net()],
        stale_baseline=["tiny's params differ", f"{HOSTILE[4]} has no entry"],
        baseline_checked=True,
        not_run=["conv", HOSTILE[1]],
    )
    text = html_report(report)
    top = text[: text.index("<table>")]
    assert (
        '<p class="grew"><strong>netbudget-baseline.json does not match this code:</strong> tiny&#x27;s params '
        "differ; &lt;img src=x onerror=alert(1)&gt; has no entry. Refresh it with `pytest --netbudget "
        "--netbudget-update` and commit netbudget-baseline.json (this fails the job: --netbudget-check-baseline).</p>"
    ) in top
    assert (
        '<p class="note"><strong>not run:</strong> <code>conv</code>, <code>&lt;/code&gt;&lt;/summary&gt;&lt;h1&gt;'
        "x&lt;/h1&gt;</code>: registered in pyproject.toml, not profiled (this run was not given "
        "<code>--netbudget</code>)</p>"
    ) in top
    assert {tag for tag, _ in Page(text).tags} <= OWN_TAGS
    # a stale baseline that does not fail the run is a note, as the Markdown's ⚠️
    warned = html_report(replace(report, baseline_checked=False, not_run=[]))
    assert '<p class="note"><strong>netbudget-baseline.json does not match this code:</strong>' in warned
    assert "not run:" not in warned and "this fails the job" not in warned


def test_the_html_says_a_changed_environment_and_a_changed_target_in_the_models_section():
    # Before: the terminal, Markdown and JSON said both (test_baseline_environment.py, test_targets.py);
    # the HTML showed the growth alone.
    verdict = replace(
        grown_net(),
        environment_change=["torch 2.12.0 -> 2.13.0", f"device {HOSTILE[4]} -> cpu"],
        estimate_change="a100 (table 1) -> a100 (table <b>2</b>)",
    )
    text = html_report(reports.Report([verdict]))
    section = text[text.index('<section class="model" id="model-0">') :]
    assert (
        '<p class="note"><strong>environment changed</strong> since its baseline entry: torch 2.12.0 -&gt; 2.13.0, '
        "device &lt;img src=x onerror=alert(1)&gt; -&gt; cpu (its figures changed with it)</p>"
    ) in section
    assert (
        '<p class="note"><strong>estimated latency not compared</strong>: its target changed, a100 (table 1) -&gt; '
        "a100 (table &lt;b&gt;2&lt;/b&gt;) (another target or table, not growth; <code>pytest --netbudget "
        "--netbudget-update</code> records the new estimate)</p>"
    ) in section
    assert {tag for tag, _ in Page(text).tags} <= OWN_TAGS
    plain = html_report(reports.Report([grown_net()]))
    assert "environment changed" not in plain and "not compared" not in plain


def test_a_failing_model_in_the_html_says_why_as_the_markdown_does(pytester, project):
    """As test_baseline_environment's torch upgrade: the baseline says tiny had 50 params on torch
    2.12.0; Linear(10, 5) has 55, +10%, past max_increase = 2%. The HTML says the environment changed,
    the metrics against budget and baseline, and what to do."""
    import torch
    from test_baseline_environment import fewer_params_on_an_older_torch

    fewer_params_on_an_older_torch(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-report=r.html").ret == 1
    text = (pytester.path / "r.html").read_text(encoding="utf-8")
    change = f"torch 2.12.0 -&gt; {torch.__version__}"
    assert f"<strong>environment changed</strong> since its baseline entry: {change}" in text
    problems = re.search(r'<pre class="problems">(.*?)</pre>', text, re.S).group(1).splitlines()
    assert problems[:2] == [
        "tiny grew more than max_increase allows over its baseline",
        f"  its environment changed since its baseline entry: {change}",
    ]
    assert re.match(r"  params +100 +55 +50 +\+5 \(\+10\.0%\) +grew \+5 \(\+10\.0%\), more than", problems[3])
    assert f"<li>next: its figures changed with its environment ({change}), so the change may be" in text
