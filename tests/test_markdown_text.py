"""Nothing from model code becomes live Markdown (SPEC §4): the report is a pull-request comment,
and names, layer paths, type names and error text come from the code under review.

A hostile corpus goes through every Markdown writer; the rendered structure must be what the
report meant: the same tables with the same rows and columns, no HTML tag but the report's own,
no link, no mention, every code fence closed where the report closes it.
"""

from __future__ import annotations

import re

import pytest
from test_budgets_reports import broken_result, entry, make_profile, result_for, row

from pytest_netbudget import markdown_text as md
from pytest_netbudget import reports

HOSTILE = [
    "a|b",
    "</code></summary><h1>x</h1>",
    "@everyone",
    "[x](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "two\nlines\n\n| c | d |",
    "``` fence ```` and `tick`",
    "*bold* _em_ ~~gone~~ $x^2$",
    "&amp; &lt;b&gt; \\| \\",
    "<!-- unclosed",
    "https://evil.example/x www.evil.example",
]
ERROR = "boom\n```\n</details><img src=x onerror=alert(1)>\n`````\n@everyone [x](javascript:alert(1))\n\n# heading"
#: The report's own HTML: everything else must be text.
OWN_TAGS = {"details", "summary", "code", "br"}


def outside_fences(text: str) -> tuple[list[str], list[list[str]]]:
    """The lines outside code fences, and the body of each fence (CommonMark's fence rule: a
    fence closes on a line of at least as many backticks and nothing else)."""
    outside, fences, fence, body = [], [], None, []
    for line in text.splitlines():
        if fence is None:
            opening = re.match(r"^(`{3,})([\w-]*)$", line)
            if opening:
                fence, body = opening.group(1), []
            else:
                outside.append(line)
        elif re.match(rf"^`{{{len(fence)},}}\s*$", line):
            fences.append(body)
            fence = None
        else:
            body.append(line)
    assert fence is None, "a code fence is left open"
    return outside, fences


def tables(lines: list[str]) -> list[list[str]]:
    """Runs of consecutive table lines (starting with '|')."""
    found, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def hostile_verdicts():
    profile = make_profile(
        *(row(name, name, 100 * (index + 1), 1000, 2000) for index, name in enumerate(HOSTILE)),
        uncounted={name: 2 for name in HOSTILE[:3]},
    )
    base = entry(
        {
            "totals": {"params": 1, "macs": 1},
            "layers": {name: {"type": "Old", "params": 1, "macs": 1, "flops": 1} for name in HOSTILE},
        }
    )
    grown = [result_for(profile, limits={"params": 10}, base=base, name=name) for name in HOSTILE]
    broken = [broken_result(f"broken {name}", f"{name}: {ERROR}") for name in HOSTILE]
    return grown + broken


def test_a_hostile_corpus_leaves_the_report_structure_intact():
    # Before: a name "a|b" split its table row, "</code></summary><h1>x</h1>" closed the section's
    # summary and rendered a heading, the error's ``` closed its fence and let the <img> through,
    # and @everyone notified the whole organisation.
    verdicts = hostile_verdicts()
    removed = [f"gone {name}" for name in HOSTILE]
    text = reports.markdown(
        reports.Report(verdicts, removed, compared_with="main <b>", conflicts=[f"{HOSTILE[1]} differs"])
    )
    outside, fences = outside_fences(text)

    model_table, *layer_tables = tables(outside)
    columns = model_table[0].count("|")
    assert all(line.count("|") == columns for line in model_table)
    assert len(model_table) == 2 + len(verdicts) + len(removed)  # header, rule, one row each
    assert len(layer_tables) == len(HOSTILE)  # one per grown model, none from the corpus
    for layers in layer_tables:
        assert all(line.count("|") == layers[0].count("|") for line in layers)
        assert len(layers) == 2 + len(HOSTILE)  # header, rule, one row per changed layer (10: the limit)

    prose = "\n".join(outside)
    tags = {match.lower() for match in re.findall(r"</?\s*([A-Za-z][\w-]*)", prose)}
    assert tags <= OWN_TAGS, tags - OWN_TAGS
    assert "<!--" not in prose
    assert prose.count("<details") == prose.count("</details>") == len(verdicts)
    assert prose.count("<summary>") == prose.count("</summary>") == len(verdicts)
    assert re.search(r"\]\s*\(", prose) is None  # no inline link
    assert "javascript:alert" not in prose or "[" not in prose
    assert re.search(r"(?i)://|www\.", prose) is None  # nothing GFM autolinks
    assert "@everyone" not in text  # an @ is followed by a zero-width space everywhere
    assert "~~" not in prose and "$x" not in prose and "*bold*" not in prose

    # Every error is in a fence of its own, whole: the fence did not end inside it.
    error_fences = [body for body in fences if "</details><img src=x onerror=alert(1)>" in body]
    assert len(error_fences) == len(HOSTILE)
    for body in error_fences:
        assert body[-3:] == ["@\u200beveryone [x](javascript:alert(1))", "", "# heading"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a|b", "a&#124;b"),
        ("<h1>", "&#60;h1&#62;"),
        ("x & y", "x &#38; y"),
        ("\"'", "&#34;&#39;"),
        ("two\nlines", "two&#10;lines"),
        ("[x](javascript:y)", "&#91;x&#93;(javascript:y)"),
        ("https://evil.example", "https&#58;//evil.example"),  # no autolink
        ("see WWW.evil.example", "see WWW&#46;evil.example"),
        ("tests/test_x.py::test_a", "tests/test_x.py::test_a"),
        ("*b* `c` ~d~ $e$", "&#42;b&#42; &#96;c&#96; &#126;d&#126; &#36;e&#36;"),
        ("_em_ mnist_cnn", "&#95;em&#95; mnist_cnn"),  # inside a word _ cannot emphasise: kept
        ("@team", "@\u200bteam"),
        ("\\|", "&#92;&#124;"),
    ],
)
def test_inline_turns_markup_into_character_references(text, shown):
    assert md.inline(text) == shown


def test_a_fence_is_longer_than_any_backtick_run_inside():
    assert md.fence(["plain"]) == ["```", "plain", "```"]
    assert md.fence(["a ``` b", "`````"], "text") == ["``````text", "a ``` b", "`````", "``````"]
    assert md.fence(["hi @all"])[1] == "hi @\u200ball"


def test_mermaid_labels_keep_only_plain_characters():
    assert md.mermaid_label('a"b\n%%{init}%%') == "a_b___{init}__"  # no %%{: no directive
    assert md.mermaid_label("encoder.layers (0)") == "encoder.layers (0)"
    assert md.mermaid_label("model.layers.{0..31} ×32") == "model.layers.{0..31} ×32"


def test_the_error_fence_outlasts_the_error_text():
    text = reports.markdown(reports.Report([broken_result("b", "x\n```\n````\ny")]))
    outside, fences = outside_fences(text)
    assert ["x", "```", "````", "y"] in fences


def test_uncounted_ops_are_listed_in_the_markdown_of_a_passing_unchanged_model():
    # Before: only a strict failure mentioned them; a passing model's uncounted ops were in no comment.
    profile = make_profile(row("fc", "Linear", 55, 50, 105), uncounted={"mylib::fused": 3, "aten::weird": 1})
    base = entry(
        {
            "totals": {name: figure for name, figure in profile.totals.items() if figure is not None},
            "layers": {"fc": {"type": "Linear", "params": 55, "macs": 50, "flops": 105}},
        }
    )
    verdict = result_for(profile, base=base, name="net")
    assert verdict.passed and not verdict.changed
    text = reports.markdown(reports.Report([verdict]))
    assert "<details><summary><code>net</code>: uncounted ops</summary>" in text
    assert (
        "- **uncounted ops** (no formula, not in MACs/FLOPs): <code>aten::weird</code> ×1, <code>mylib::fused</code> ×3"
        in text
    )
