"""The pull-request loop in real git repositories (SPEC §4): the committed baseline is the gate,
``--netbudget-base=REF`` shows the change against the base branch read with ``git show``, and
``--netbudget-check-baseline`` keeps main's baseline honest. The ``git`` binary is real.

Figures by hand (as in test_baseline_workflow.py): Linear(10, 5) on [1, 10] has 10*5 + 5 = 55
params and 50 MACs, Linear(10, 6) 66 params and 60 MACs: +11 params (+20.0%), +10 MACs.
FLOPs: 2 * MACs + bias = 105 -> 126. Conv2d(1, 2, 3) on [1, 1, 5, 5]: 20 params.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_baseline_workflow import BASELINE, TINY_AND_CONV, output, write

pytestmark = pytest.mark.usefixtures("preloaded")

HINT = "accept it with `pytest --netbudget --netbudget-update` and commit netbudget-baseline.json"


@pytest.fixture
def git(pytester, monkeypatch):
    """``git("commit", "-m", "x")`` in the pytester directory, as a committer with a name."""
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "Netbudget Test")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "test@example.com")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")

    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=pytester.path, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout

    run("init", "-q", "-b", "main")
    (pytester.path / ".gitignore").write_text("__pycache__/\n*.md\n*.json.tmp\n", encoding="utf-8")
    return run


def commit_all(git, message: str) -> None:
    git("add", "-A")
    git("commit", "-q", "-m", message)


def test_the_whole_story_grow_accept_merge(pytester, project, git):
    # main: two models and their committed baseline
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    commit_all(git, "models and their baseline")

    # a pull request widens tiny: the committed baseline (still main's) is the gate, so it fails
    git("checkout", "-q", "-b", "wider-tiny")
    write(pytester, project, width=6)
    commit_all(git, "wider tiny")
    failing = pytester.runpytest("--netbudget", "-v", "--netbudget-base=main", "--netbudget-report=pr.md")
    failing.assert_outcomes(passed=1, failed=1)
    failing.stdout.fnmatch_lines(["tiny grew more than max_increase allows over its baseline", f"  next: *{HINT}"])
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    assert "**1 grew past max_increase (of 2 model(s))**" in markdown
    assert f"- **next:** if the growth is intended, {HINT}" in markdown
    assert "Compared with netbudget-baseline.json at main; budgets and max_increase: the checked-out" in markdown

    # the author accepts the growth: update, commit the baseline, and the same code is green
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    assert git("status", "--porcelain").strip() == f"M {BASELINE}"
    commit_all(git, "accept the wider tiny")
    green = pytester.runpytest("--netbudget", "-v", "--netbudget-base=main", "--netbudget-report=pr.md")
    green.assert_outcomes(passed=2)
    assert green.ret == 0
    # ... and the comment still shows the growth against main, down to the layer
    green.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+\+11 \(\+20\.0%\)\s+pass$"])
    green.stdout.fnmatch_lines(
        [
            "netbudget: changes are against netbudget-baseline.json at main; "
            "budgets and max_increase: the checked-out netbudget-baseline.json"
        ]
    )
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    assert "**All 2 model(s) within budget**" in markdown
    tiny_row = next(line for line in markdown.splitlines() if line.startswith("| <code>tiny</code> |"))
    assert "66 / 100 (66%)<br>+11 (+20.0%)" in tiny_row
    assert "<details><summary><code>tiny</code>: changed</summary>" in markdown
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 | 105 -> 126 |" in markdown
    assert "<summary><code>conv</code>" not in markdown  # unchanged against main
    # against its own (updated) baseline nothing changed, and nothing is stale
    plain = pytester.runpytest("--netbudget", "-v")
    plain.stdout.re_match_lines([r"^tiny\s+params\s+66\s+100\s+66\.0%\s+=\s+pass$"])
    assert "out of date" not in plain.stdout.str()

    # merged back: main's CI checks that the committed baseline matches the code
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "merge wider-tiny", "wider-tiny")
    checked = pytester.runpytest("--netbudget", "-v", "--netbudget-check-baseline")
    checked.assert_outcomes(passed=2)
    assert checked.ret == 0
    assert "does not match" not in checked.stdout.str()

    # a second pull request shrinks tiny back to Linear(10, 4) (44 params, 40 MACs) and forgets the
    # baseline: nothing grew, so no budget fails, but the committed baseline (66) no longer matches.
    # What the Action runs on a pull request (--netbudget-check-baseline, its default) makes it red
    # there, with the finding and the command that fixes it at the top of the comment and summary.
    git("checkout", "-q", "-b", "smaller-tiny")
    write(pytester, project, width=4)
    commit_all(git, "smaller tiny, baseline forgotten")
    pr = ["--netbudget", "--netbudget-base=main", "--netbudget-check-baseline", "--netbudget-report=pr.md"]
    forgotten = pytester.runpytest(*pr, "--netbudget-report=pr.json")
    forgotten.assert_outcomes(passed=2)
    assert forgotten.ret == pytest.ExitCode.TESTS_FAILED  # red on the pull request
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    top = markdown.split("| model |")[0]
    assert "**All 2 model(s) within budget; the committed baseline does not match the code**" in top
    assert (
        "> ❌ **netbudget-baseline.json does not match this code:** tiny&#39;s params, trainable_params, "
        "macs, flops, size_mb, activations_mb, memory_access_mb, layers differ. Refresh it with "
        "`pytest --netbudget --netbudget-update` and commit netbudget-baseline.json "
        "(this fails the job: --netbudget-check-baseline)."
    ) in top
    assert json.loads((pytester.path / "pr.json").read_text(encoding="utf-8"))["stale_baseline"] == [
        "tiny's params, trainable_params, macs, flops, size_mb, activations_mb, memory_access_mb, layers differ"
    ]
    # the author runs that command and commits the file: green on the pull request, then on main
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    commit_all(git, "accept the smaller tiny")
    assert pytester.runpytest(*pr).ret == 0
    assert "does not match" not in (pytester.path / "pr.md").read_text(encoding="utf-8")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "merge smaller-tiny", "smaller-tiny")
    assert pytester.runpytest("--netbudget", "--netbudget-check-baseline").ret == 0  # main stays green


def test_check_baseline_fails_on_a_stale_baseline_and_says_how_to_refresh(pytester, project):
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    # tiny shrinks (no max_increase fails on that), conv is gone, a new model arrives
    toml = TINY_AND_CONV.split("[tool.netbudget.models.conv]")[0] + (
        '\n[tool.netbudget.models.extra]\nfactory = "mymodels:Tiny"\ninput_shape = [1, 10]\n'
    )
    write(pytester, project, width=4, toml=toml)
    warned = pytester.runpytest("--netbudget")
    assert warned.ret == 0  # without the check, stale is a note, not a failure
    warned.stdout.fnmatch_lines(
        [
            "netbudget: netbudget-baseline.json is out of date: extra has no entry; "
            "tiny's params, trainable_params, macs, flops, size_mb, activations_mb, memory_access_mb, layers differ; "
            "conv is no longer registered; refresh it with `pytest --netbudget --netbudget-update` "
            "and commit netbudget-baseline.json"
        ]
    )
    checked = pytester.runpytest("--netbudget", "--netbudget-check-baseline")
    checked.assert_outcomes(passed=2)
    assert checked.ret == pytest.ExitCode.TESTS_FAILED
    checked.stdout.fnmatch_lines(["netbudget: ERROR: netbudget-baseline.json does not match this run: extra has *"])
    # refreshed, the check passes
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    assert pytester.runpytest("--netbudget", "--netbudget-check-baseline").ret == 0


def test_without_a_baseline_file_one_note_says_how_to_write_it(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "netbudget: netbudget-baseline.json is out of date: there is no such file yet; write it with "
            "`pytest --netbudget --netbudget-update` and commit netbudget-baseline.json"
        ]
    )
    checked = pytester.runpytest("--netbudget", "--netbudget-check-baseline")
    assert checked.ret == pytest.ExitCode.TESTS_FAILED
    checked.stdout.fnmatch_lines(["netbudget: ERROR: netbudget-baseline.json does not match this run: there is no*"])


def test_check_baseline_with_update_is_a_usage_error(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-update", "--netbudget-check-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--netbudget-check-baseline checks the baseline file that --netbudget-update would rewrite" in output(result)


def test_base_without_a_baseline_at_ref_makes_every_model_new(pytester, project, git):
    # main has the models but no netbudget yet; the pull request introduces the baseline
    write(pytester, project)
    commit_all(git, "models")
    git("checkout", "-q", "-b", "add-netbudget")
    assert pytester.runpytest("--netbudget", "-v", "--netbudget-update").ret == 0
    commit_all(git, "netbudget baseline")
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-base=main", "--netbudget-report=r.md")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"^conv\s+params\s+20\s+100\s+20\.0%\s+new\s+pass$"])
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "netbudget-baseline.json at main (no baseline there: every model is new)" in markdown
    assert "<details><summary><code>tiny</code>: new model</summary>" in markdown


def test_base_reads_a_baseline_in_a_subdirectory_at_ref(pytester, project, git):
    (pytester.path / "budgets").mkdir()
    top = 'device = "cpu"\nmax_increase = "2%"\nbaseline = "budgets/base.json"'
    write(pytester, project, top=top)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    commit_all(git, "baseline in budgets/")
    base = git("rev-parse", "HEAD").strip()
    write(pytester, project, width=6, top=top)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0  # the working tree accepts it
    result = pytester.runpytest("--netbudget", f"--netbudget-base={base}", "--netbudget-report=r.json")
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["compared_with"].startswith(f"budgets/base.json at {base}; ")
    assert report["models"]["tiny"]["metrics"]["params"]["baseline"] == 66  # the gate: the working tree
    assert report["models"]["tiny"]["metrics"]["params"]["reference"] == 55  # the change: the commit


def test_bad_ref_is_a_usage_error(pytester, project, git):
    write(pytester, project)
    commit_all(git, "models")
    result = pytester.runpytest("--netbudget", "--netbudget-base=no-such-branch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = output(result)
    assert "--netbudget-base=no-such-branch: no such commit, branch or tag" in text
    assert "fetch-depth: 0" in text
    assert "Traceback" not in text


def test_base_outside_a_git_repository_is_a_usage_error(pytester, project, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(pytester.path.parent))
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-base=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = output(result)
    assert f"--netbudget-base=main: the baseline {pytester.path / BASELINE} is not in a git repository" in text
    assert "Traceback" not in text


def test_base_and_compare_together_are_a_usage_error(pytester, project):
    write(pytester, project)
    result = pytester.runpytest("--netbudget", "--netbudget-base=main", "--netbudget-compare=r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--netbudget-base and --netbudget-compare both name what to compare with" in output(result)
