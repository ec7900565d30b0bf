"""The example project, run as a user runs it: `pytest --netbudget` in its directory."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


def copy_example(tmp_path: Path) -> Path:
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return project


def run_netbudget(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--netbudget", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_example_passes_with_its_summary_table(tmp_path):
    result = run_netbudget(copy_example(tmp_path), "-v")  # -v: every metric; the default is a line per model
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "netbudget summary" in out
    assert "5 model(s) profiled, all within budget" in out
    # The spec's CNN: 28,938 params against a 30k budget, 2,838,080 MACs against 3M.
    assert "28.9k   30.0k   96.5%" in out
    assert "2.84M   3.00M   94.6%" in out
    # Its AdamW step at batch 32: 3 x 32 x 2,838,080 MACs less conv1's input gradient, which autograd
    # skips (32 x 313,600): 262,420,480.
    assert "mnist_cnn: Training step (adamw, batch 32): MACs 262,420,480 (262M)" in out
    assert re.search(r"train_flops +529M +600M +88\.2%", out)
    # Its forward's traffic, bytes read + written per op (float32): conv1 4,800 + 50,176; ReLU 2 x 50,176;
    # pool 50,176 + 12,544 values + 25,088 int64 indices; conv2 63,872 + 25,088; ReLU 2 x 25,088;
    # pool 25,088 + 6,272 + 12,544; Linear 69,032 + 40. 495,248 bytes = 0.472 MiB, against 0.6.
    # The text classifier's estimated latency on the Jetson Orin against 0.3 ms.
    assert re.search(r"memory_access_mb +0\.472 +0\.600 +78\.7%", out)
    assert re.search(r"latency_ms +0\.136 +0\.300 +45\.3%", out)
    for name in ("mnist_cnn", "text_classifier", "lstm_tagger", "tiny_decoder"):
        assert name in out
    # The decoder served at context 2,048 for batch 4 in float16 (4 layers, d 256, 8 heads of 32, 2 kv
    # heads, ff 704, vocab 8,000). KV: 2 * 4 layers * 2 kv heads * 32 * 2,048 * 4 * 2 bytes = 8 MiB.
    # Decode, per sequence: 4 * (256 * (256 + 2 * 2 * 32 + 256) + 3 * 256 * 704 + 2 * 8 * 32 * 2,049)
    # + 256 * 8,000 = 9,062,400 MACs; x 4 = 36,249,600.
    assert re.search(r"kv_cache_mb +8\.000 +10\.000 +80\.0%", out)
    assert "decode (1 token x 4): MACs 36,249,600 (36.2M)" in out
    # One more token costs 4 KiB of cache (2 * 4 layers * 2 * 32 * 4 * 2 bytes) and 4 KiB of the keys and
    # values the decoder repeats for its 8 query heads (2 * 8 * 32 * 4 * 2 bytes, one layer at a time), so
    # from 25.509 MiB at 2,048 tokens: 2,048 + (64 MiB - 26,747,752 bytes) // 8 KiB = 6,974 tokens fit.
    assert re.search(r"serve_memory_mb +25\.509 +32\.000 +79\.7%", out)
    assert "  fits 64.00 MiB: up to 6,974 tokens of context at batch 4 (+8.00 KiB a token there)" in out
    # The check from a test is named after its node id, and the committed baseline has its entry.
    assert "\ntests/test_models.py::test_cnn_for_100_classes_fits_the_phone_budget  params" in out
    assert "out of date" not in out


def test_example_writes_the_html_report_of_its_readme(tmp_path, browser):
    """The README's second command: the report holds every model's module tree (the spec's CNN:
    28,938 params, 2,838,080 MACs) and opens in a browser with no error and no request."""
    project = copy_example(tmp_path)
    result = run_netbudget(project, "--netbudget-report=netbudget.html")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "report written to netbudget.html" in result.stdout
    page = project / "netbudget.html"
    browser.open(page)
    assert browser.console_errors() == [] and browser.requests() == [page.as_uri()]
    trees = browser.evaluate("JSON.parse(document.getElementById('netbudget-data').textContent).models")
    assert len(trees) == 5  # four registered models (the decoder among them) and the check from a test
    first = browser.evaluate("document.querySelector('section h2 code').textContent")
    assert first == "lstm_tagger"  # registered models first, by name
    figures = {model["id"]: dict(zip(model["metrics"], model["tree"]["v"])) for model in trees}
    sections = browser.evaluate(
        "[...document.querySelectorAll('section')].map(s => [s.id, s.querySelector('h2 code').textContent])"
    )
    mnist = figures[dict((name, anchor) for anchor, name in sections)["mnist_cnn"]]
    assert (mnist["params"], mnist["macs"]) == (28_938, 2_838_080)


def test_example_fails_when_a_budget_is_cut(tmp_path):
    project = copy_example(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('max_params = "30k"', 'max_params = "25k"'))
    result = run_netbudget(project, "-k", "mnist_cnn")
    assert result.returncode == 1
    # 28,938 - 25,000 = 3,938 over, 15.8% of the budget.
    assert "mnist_cnn exceeds its budget" in result.stdout
    assert "+3.9k (+15.8%)" in result.stdout
    assert "largest layers by params: out (Linear) 15.7k, conv2.0 (Conv2d) 12.8k" in result.stdout


def test_a_report_written_before_typed_records_still_compares(tmp_path):
    """``--netbudget-compare`` reads a JSON report of schema 1, written by pytest-netbudget at 4f8be09
    for this example (its models' ``verdict`` records dropped to keep the file small: the comparison
    never read them). Every model of that time finds its entry there: its row shows a change (``=``
    where the figures are the same); the decoder added since is the one new model."""
    project = copy_example(tmp_path)
    shutil.copy(Path(__file__).parent / "data" / "example-report-4f8be09.json", project / "old.json")
    result = run_netbudget(project, "--netbudget-compare=old.json", "--netbudget-report=r.md")
    assert result.returncode == 0, result.stdout + result.stderr
    markdown = (project / "r.md").read_text(encoding="utf-8")
    assert "Compared with the report old.json; budgets and max_increase: the checked-out" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| <code>")]
    older = [row for row in rows if "tiny_decoder" not in row]
    assert len(rows) == 5 and len(older) == 4
    assert all("<br>" in row for row in older)  # a change against the old report's figures
    assert "<br>=" in rows[0]  # lstm_tagger: as it was
    assert markdown.count("new model") == 1 and "<code>tiny_decoder</code>: new model" in markdown
