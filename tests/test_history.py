"""``netbudget history`` on a real temporary git repository (SPEC §4): the committed baseline at every
commit that changed it, across a rename, a model added and removed, a commit whose file does not
parse, ``--since``, a shallow clone; written as github-action-benchmark data and as charts.

The repository's eight commits, oldest first (figures chosen, so each series is known by hand):
  1 add netbudget        cnn params 28,938 macs 2,838,080
  2 readme               (baseline untouched: not in the history)
  3 widen cnn            cnn params 30,000
  4 add lm               lm params 1,000 macs 5,000 appears
  5 break the baseline   the file is not JSON: skipped and listed
  6 fix <img ...>        cnn params 31,000 (a subject with markup)
  7 move the baseline    budget.json -> baselines/budget.json, same content: no new point
  8 drop lm              lm removed, cnn params 32,000
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pytest_netbudget import baseline, cli
from pytest_netbudget.history import TOOL, HistoryError, read_history, select
from pytest_netbudget.results import BaselineEntry

HOSTILE_SUBJECT = "fix <img src=x onerror=alert(1)> & @team"


def entry(params: int, macs: int) -> BaselineEntry:
    return BaselineEntry(totals={"params": params, "macs": macs})


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com", "GIT_COMMITTER_NAME": "Ada"}
    env.update(GIT_COMMITTER_EMAIL="ada@example.com", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    import os

    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    pyproject = repo / "pyproject.toml"
    cnn = (2_838_080,)

    def commit(subject: str, day: int, models: dict | None = None, raw: str | None = None, path: str = "budget.json"):
        pyproject.write_text(f'[tool.netbudget]\nbaseline = "{path}"\n', encoding="utf-8")
        if raw is not None or models is not None:
            target = repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(raw if raw is not None else baseline.dumps(models), encoding="utf-8")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", subject, date=f"2025-03-{day:02d}T12:00:00+00:00")

    commit("add netbudget", 1, {"cnn": entry(28_938, *cnn)})
    (repo / "README.md").write_text("readme\n", encoding="utf-8")
    commit("readme", 2)
    commit("widen cnn", 3, {"cnn": entry(30_000, *cnn)})
    commit("add lm", 4, {"cnn": entry(30_000, *cnn), "lm": entry(1_000, 5_000)})
    commit("break the baseline", 5, raw="{ not json")
    commit(HOSTILE_SUBJECT, 6, {"cnn": entry(31_000, *cnn), "lm": entry(1_000, 5_000)})
    git(repo, "mv", "budget.json", "baselines-budget.json")
    (repo / "baselines").mkdir()
    git(repo, "mv", "baselines-budget.json", "baselines/budget.json")
    commit("move the baseline", 7, path="baselines/budget.json")
    commit("drop lm", 8, {"cnn": entry(32_000, *cnn)}, path="baselines/budget.json")
    return repo


def test_history_reads_the_baseline_at_every_commit_that_changed_it(repo):
    history = read_history(repo / "baselines" / "budget.json")
    subjects = [commit.subject for commit in history.commits]
    assert subjects == ["add netbudget", "widen cnn", "add lm", HOSTILE_SUBJECT, "drop lm"]
    assert [commit.date for commit in history.commits] == [
        "2025-03-01",
        "2025-03-03",
        "2025-03-04",
        "2025-03-06",
        "2025-03-08",
    ]
    assert [commit.path for commit in history.commits] == ["budget.json"] * 4 + ["baselines/budget.json"]
    assert history.series("cnn", "params") == [28_938, 30_000, 30_000, 31_000, 32_000]
    assert history.series("lm", "params") == [None, None, 1_000, 1_000, None]  # added, then removed
    assert history.models == ["cnn", "lm"]
    [(broken, why)] = history.skipped
    assert broken.subject == "break the baseline" and "budget.json: not valid JSON" in why
    assert any("renamed the baseline to baselines/budget.json" in note for note in history.notes)
    assert select(history, [], ["params"]) == {"cnn": ["params"], "lm": ["params"]}


def test_since_keeps_the_commits_after_a_revision(repo):
    third = git(repo, "rev-list", "--max-count=1", "--grep=widen cnn", "HEAD")
    history = read_history(repo / "baselines" / "budget.json", since=third)
    assert [commit.subject for commit in history.commits] == ["add lm", HOSTILE_SUBJECT, "drop lm"]
    with pytest.raises(HistoryError, match="--since nope: no such commit"):
        read_history(repo / "baselines" / "budget.json", since="nope")


def test_a_shallow_clone_says_how_to_fetch_more(repo, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth=3", repo.as_uri(), str(clone))
    history = read_history(clone / "baselines" / "budget.json")
    assert [commit.subject for commit in history.commits] == [HOSTILE_SUBJECT, "drop lm"]  # within the depth
    [note] = [note for note in history.notes if "shallow" in note]
    assert f"history stops at {history.commits[0].short}" in note and "git fetch --unshallow" in note


def test_the_json_is_github_action_benchmark_data(repo, monkeypatch):
    """github-action-benchmark's data file: {lastUpdate, repoUrl, entries: {name: [{commit, date, tool,
    benches}]}}, each bench its custom input format: name, unit and value, optional range and extra,
    as its src/extract.ts (BenchmarkResult) and src/write.ts (DataJson) declare them."""
    monkeypatch.chdir(repo)
    assert cli.main(["history", "cnn", "--metric", "params", "--json", "out/data.json"]) == 0
    data = json.loads((repo / "out" / "data.json").read_text(encoding="utf-8"))
    assert set(data) == {"lastUpdate", "repoUrl", "entries"}
    [suite] = data["entries"].values()
    assert len(suite) == 5
    for point in suite:
        assert point["tool"] == TOOL == "customSmallerIsBetter"
        assert set(point["commit"]) >= {"author", "committer", "id", "message", "timestamp", "url"}
        for bench in point["benches"]:
            assert set(bench) <= {"name", "unit", "value", "range", "extra"}
            assert isinstance(bench["name"], str) and isinstance(bench["unit"], str)
            assert isinstance(bench["value"], (int, float))
    assert [point["benches"][0]["value"] for point in suite] == [28_938, 30_000, 30_000, 31_000, 32_000]
    assert suite[0]["benches"][0]["name"] == "cnn params"
    assert suite[0]["date"] == 1_740_830_400_000  # 2025-03-01T12:00:00Z in milliseconds
    assert data["lastUpdate"] == suite[-1]["date"]


def test_the_html_charts_each_model_and_keeps_commit_text_inert(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert cli.main(["history", "--html", "history.html"]) == 0
    page = (repo / "history.html").read_text(encoding="utf-8")
    assert page.count('<svg class="chart"') == 4  # cnn and lm, params and macs each
    assert page.count("<circle") == 5 + 5 + 2 + 2  # a point per commit where the model exists
    assert "<img" not in page and "fix &lt;img src=x onerror=alert(1)&gt; &amp; @team" in page
    assert "params: 32.0k now, +3.1k (+10.6%) since" in page  # 28,938 -> 32,000
    assert "removed in" in page and "added in" in page
    assert "<script" not in page
    err = capsys.readouterr().err
    assert "skipped" in err and "break the baseline" in err


def test_without_an_output_it_prints_the_change_of_each_series(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert cli.main(["history", "lm", "--metric", "macs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "5 commit(s) changed baselines/budget.json"
    assert out[1].startswith("lm macs: 5.00k at ") and out[1].endswith("(=, 2 commit(s))")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "gpt"], "no commit's baselines/budget.json has model(s) gpt (it has: cnn, lm)"),
        (["history", "--metric", "speed"], "unknown metric(s) speed"),
        (["history", "--since", "v9"], "--since v9: no such commit"),
    ],
)
def test_mistakes_are_usage_errors(repo, monkeypatch, capsys, args, message):
    monkeypatch.chdir(repo)
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_outside_a_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.netbudget]\n", encoding="utf-8")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert cli.main(["history"]) == 2
    assert "is not in a git repository" in capsys.readouterr().err


def test_the_history_chart_in_a_browser(repo, monkeypatch, browser, tmp_path):
    monkeypatch.chdir(repo)
    assert cli.main(["history", "--html", str(tmp_path / "history.html")]) == 0
    browser.open(tmp_path / "history.html")
    assert browser.console_errors() == [] and browser.dialogs() == []
    assert browser.requests() == [(tmp_path / "history.html").as_uri()]
    points = browser.evaluate(
        "[...document.querySelectorAll('svg.chart')[0].querySelectorAll('circle title')].map(t => t.textContent)"
    )
    assert points[0].endswith("add netbudget: 28.9k") and "(+1.1k (+3.7%))" in points[1]
    assert points[3].startswith(points[3][:7] + " 2025-03-06 " + HOSTILE_SUBJECT)  # the subject, as text
    browser.screenshot(tmp_path / "history.png")
