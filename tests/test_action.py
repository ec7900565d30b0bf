"""The GitHub Action (action.yml) and the example workflows: valid against GitHub's published
schemas (check-jsonschema's vendored copies, offline), and the action's own shell steps run here
on a pull request in real git repositories, with the ``GITHUB_*`` files in a temp directory.

Figures by hand: Linear(10, 5) on [1, 10] has 55 params, Linear(10, 6) 66, Linear(10, 7) 77.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_baseline_workflow import write

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
EXAMPLES = sorted((ROOT / "examples" / "github").glob("*.yml"))


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_action_and_example_workflows_match_githubs_schemas(tmp_path):
    assert EXAMPLES, "examples/github/ holds the example workflows"
    action = check_jsonschema("vendor.github-actions", ROOT / "action.yml")
    assert action.returncode == 0, action.stdout + action.stderr
    workflows = check_jsonschema("vendor.github-workflows", *EXAMPLES)
    assert workflows.returncode == 0, workflows.stdout + workflows.stderr
    # and the check can fail: a composite step without its shell is rejected
    broken = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    del broken["runs"]["steps"][0]["shell"]
    (tmp_path / "action.yml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert check_jsonschema("vendor.github-actions", tmp_path / "action.yml").returncode != 0


def test_the_action_installs_nothing_and_reuses_kept_actions():
    steps = ACTION["runs"]["steps"]
    assert ACTION["runs"]["using"] == "composite"
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert not re.search(r"\bpip\b|\bcurl\b|\bwget\b|\bconda\b|\buv\b", scripts)
    used = [step["uses"] for step in steps if "uses" in step]
    # the upload comes first: the comment links to the artifact
    assert used == ["actions/upload-artifact@v4", "marocchino/sticky-pull-request-comment@v2.9.4"]
    comment = next(step for step in steps if "sticky" in step.get("uses", ""))
    assert comment["continue-on-error"] is True  # a fork's read-only token must not fail the budgets job
    assert "pull_request" in comment["if"]
    assert set(ACTION["outputs"]) == {"status", "report", "html", "changed"}


EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def evaluate(text: str, context: dict[str, str]) -> str:
    """The ``${{ name }}`` expressions the action's env and inputs use: plain context lookups (a step's
    output that was never set is '', as on GitHub)."""
    return EXPRESSION.sub(
        lambda match: (
            context.get(match.group(1), "") if match.group(1).startswith("steps.") else context[match.group(1)]
        ),
        str(text),
    )


#: The one kind of ``if`` condition the shell steps depend on: an output of an earlier step that is set.
SET_OUTPUT = re.compile(r"(steps\.[\w-]+\.outputs\.[\w-]+) != ''")


#: What the steps that use other actions output on GitHub (the upload's link to its artifact).
USES_OUTPUTS = {"upload": {"artifact-url": "https://github.com/o/r/actions/runs/1/artifacts/2"}}


def step_named(name: str) -> dict:
    return next(step for step in ACTION["runs"]["steps"] if step["name"].startswith(name))


def run_action(workspace: Path, runner_temp: Path, inputs: dict[str, str], github: dict[str, str]) -> dict:
    """Run every shell step of action.yml in order, as the runner does (bash -e -o pipefail, the step's
    env and working directory, GITHUB_OUTPUT per step); return the steps' outputs and exit codes. A
    step that uses another action outputs what USES_OUTPUTS says."""
    context = {f"github.{name}": value for name, value in github.items()}
    for name, spec in ACTION["inputs"].items():
        context[f"inputs.{name}"] = inputs.get(name, evaluate(spec.get("default", ""), context))
    summary = runner_temp / "step_summary.md"
    codes = {}
    for index, step in enumerate(ACTION["runs"]["steps"]):
        if any(not context.get(name) for name in SET_OUTPUT.findall(step.get("if", ""))):
            continue  # skipped on GitHub too
        if "run" not in step:
            for key, value in USES_OUTPUTS.get(step.get("id", ""), {}).items():
                context[f"steps.{step['id']}.outputs.{key}"] = value
            continue
        output = runner_temp / f"output-{index}"
        output.write_text("", encoding="utf-8")
        env = {**os.environ, "RUNNER_TEMP": str(runner_temp), "GITHUB_OUTPUT": str(output)}
        env["GITHUB_STEP_SUMMARY"] = str(summary)
        env.update({name: evaluate(value, context) for name, value in step.get("env", {}).items()})
        directory = workspace / evaluate(step.get("working-directory", "."), context)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        codes[step.get("id", step["name"])] = (done.returncode, done.stdout + done.stderr)
        for line in output.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            context[f"steps.{step.get('id')}.outputs.{key}"] = value
    return {"context": context, "codes": codes, "summary": summary}


@pytest.fixture
def pull_request(pytester, project, monkeypatch, tmp_path_factory):
    """An origin repository (main with a baseline, a branch that widens tiny to 66 params and accepts
    it) and the branch cloned as actions/checkout does: one commit deep, without main."""
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "Netbudget Test")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "test@example.com")

    def git(*args: str, cwd: Path = pytester.path) -> None:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

    git("init", "-q", "-b", "main")
    (pytester.path / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    write(pytester, project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    git("add", "-A")
    git("commit", "-q", "-m", "models and baseline")
    git("checkout", "-q", "-b", "wider")
    write(pytester, project, width=6)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    git("commit", "-q", "-am", "wider tiny, accepted")
    workspace = tmp_path_factory.mktemp("workspace")
    git("clone", "-q", "--depth=1", "--single-branch", "--branch=wider", pytester.path.as_uri(), str(workspace))
    return workspace


def test_the_actions_steps_on_a_pull_request(pull_request, tmp_path, preloaded):
    workspace, temp = pull_request, tmp_path
    github = {"base_ref": "main", "token": "unused", "event_name": "pull_request"}
    inputs = {"python": sys.executable, "pytest-args": "-p no:cacheprovider", "comment-when": "changed"}
    ran = run_action(workspace, temp, inputs, github)
    code, log = ran["codes"]["run"]
    assert code == 0, log
    context = ran["context"]
    # the base branch was fetched for git show, and the run was green (the growth is accepted)
    assert context["steps.run.outputs.status"] == "pass", log
    assert "2 passed" in log
    report = json.loads(Path(context["steps.run.outputs.report"]).read_text(encoding="utf-8"))
    assert report["models"]["tiny"]["metrics"]["params"]["reference"] == 55  # origin/main's
    assert report["models"]["tiny"]["metrics"]["params"]["baseline"] == 66  # the pull request's
    assert report["compared_with"].startswith("netbudget-baseline.json at origin/main;")
    # the comment is the Markdown report, and the job summary got it too
    comment_step = step_named("Upsert the pull-request comment")
    comment = Path(evaluate(comment_step["with"]["path"], context)).read_text(encoding="utf-8")
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 | 105 -> 126 |" in comment
    assert evaluate(comment_step["with"]["only_update"], context) == "false"  # it changed: post
    # the HTML report is uploaded beside the JSON, and the comment and the job summary link to it
    upload_step = step_named("Upload the JSON and HTML reports")
    uploaded = evaluate(upload_step["with"]["path"], context).split()
    assert uploaded == [context["steps.run.outputs.report"], context["steps.run.outputs.html"]]
    assert "treemap.js" not in Path(uploaded[1]).read_text(encoding="utf-8")  # inline, not a link
    assert "<code>tiny</code>" in Path(uploaded[1]).read_text(encoding="utf-8")
    link = comment.rstrip().splitlines()[-1]
    assert link.startswith("📊 [The HTML report](https://github.com/o/r/actions/runs/1/artifacts/2): ")
    assert link.endswith("(the artifact netbudget-report; open netbudget.html from it).")
    summary = ran["summary"].read_text(encoding="utf-8")
    assert comment.rstrip().replace(link, "").rstrip() in summary and summary.rstrip().endswith(link)
    assert context["steps.run.outputs.changed"] == "true"
    assert ran["codes"]["Fail when a model failed"][0] == 0  # the last step passes a green run


def test_the_last_step_fails_the_job_unless_the_run_passed(tmp_path):
    last = ACTION["runs"]["steps"][-1]
    for status, code, expected in (("pass", "0", 0), ("fail", "1", 1), ("error", "4", 1)):
        env = {**os.environ, "NETBUDGET_STATUS": status, "NETBUDGET_EXIT_CODE": code}
        assert last["env"] == {
            "NETBUDGET_STATUS": "${{ steps.run.outputs.status }}",
            "NETBUDGET_EXIT_CODE": "${{ steps.run.outputs.exit-code }}",
        }
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", last["run"]], env=env, capture_output=True, text=True)
        assert done.returncode == expected
        if expected:
            assert f"::error title=netbudget::pytest --netbudget: {status} (exit code {code})" in done.stdout


def test_the_action_reports_a_run_that_could_not_start(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.netbudget]\nmax_increase = 'lots'\n", encoding="utf-8")
    inputs = {"python": sys.executable, "pytest-args": "-p no:cacheprovider"}
    ran = run_action(tmp_path, tmp_path, inputs, {"base_ref": "", "token": "unused", "event_name": "push"})
    assert ran["context"]["steps.run.outputs.status"] == "error"
    assert ran["context"]["steps.run.outputs.exit-code"] == "4"  # pytest's usage error
    fallback = "**pytest --netbudget stopped with exit code 4 before writing a report**: see the job log."
    assert fallback in (tmp_path / "netbudget" / "netbudget.md").read_text(encoding="utf-8")
    assert fallback in ran["summary"].read_text(encoding="utf-8")
    assert ran["context"]["steps.run.outputs.changed"] == "true"  # no report: its error is news
    assert ran["codes"]["Fail when a model failed"][0] == 1


def test_comment_when_changed_on_an_unchanged_branch_only_updates_a_comment(pull_request, tmp_path, preloaded):
    """``comment-when: changed`` on main against main: nothing changed, so the sticky action only
    updates a comment already there (its ``only_update``) and posts none. (On the branch that grew,
    test_the_actions_steps_on_a_pull_request, it posts.)"""
    subprocess.run(["git", "fetch", "-q", "origin", "main:main"], cwd=pull_request, check=True, capture_output=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=pull_request, check=True, capture_output=True)
    github = {"base_ref": "main", "token": "unused", "event_name": "pull_request"}
    inputs = {"python": sys.executable, "pytest-args": "-p no:cacheprovider", "comment-when": "changed"}
    ran = run_action(pull_request, tmp_path, inputs, github)
    context = ran["context"]
    assert ran["codes"]["run"][0] == 0, ran["codes"]["run"][1]
    assert context["steps.run.outputs.changed"] == "false"
    assert evaluate(step_named("Upsert the pull-request comment")["with"]["only_update"], context) == "true"


def test_comment_when_must_be_always_or_changed(tmp_path):
    inputs = {"python": sys.executable, "comment-when": "sometimes"}
    ran = run_action(tmp_path, tmp_path, inputs, {"base_ref": "", "token": "unused", "event_name": "push"})
    code, log = ran["codes"]["run"]
    assert code == 2 and "comment-when must be always or changed, not 'sometimes'" in log
