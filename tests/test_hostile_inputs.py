"""Smaller things the same hostile inputs hit (issue 20): each test pins one case that was wrong
before, from a project's configuration, a model, a formula, a git ref or the environment."""

from __future__ import annotations

import pytest
from test_plugin_errors import assert_usage_error, output

pytestmark = pytest.mark.usefixtures("preloaded")

TINY = """
[tool.netbudget.models.tiny]
factory = "mymodels:Tiny"
input_shape = [1, 10]
"""

CHECK = """
from torch import nn


def test_head(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10))
"""


# --- the job summary ------------------------------------------------------------------------------------


def test_the_job_summary_gets_every_netbudget_run_and_no_plain_run(pytester, project, monkeypatch, tmp_path):
    # Before: a plain `pytest` run whose tests used the fixture appended a report to the job summary.
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project(TINY)
    pytester.makepyfile(test_head=CHECK)
    pytester.runpytest().assert_outcomes(passed=1)
    assert not summary.exists()
    pytester.runpytest("--netbudget").assert_outcomes(passed=2)  # no --netbudget-report: still appended
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## netbudget\n\n**All 2 model(s) within budget**")


# --- git refs and where the baseline lives -------------------------------------------------------------


def test_an_empty_base_is_a_usage_error(pytester, project):
    # Before: `--netbudget-base=` (an empty CI variable) silently compared with nothing.
    project(TINY)
    result = pytester.runpytest("--netbudget", "--netbudget-base=")
    assert_usage_error(result, "--netbudget-base is empty: give a git revision such as origin/main")


def test_a_baseline_outside_the_repository_is_named_in_the_error(pytester, project, monkeypatch):
    # Before: the error named the baseline's folder, not the baseline.
    elsewhere = pytester.path.parent / f"{pytester.path.name}-elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(pytester.path.parent))
    project(TINY, top=f'device = "cpu"\nbaseline = "../{elsewhere.name}/base.json"')
    result = pytester.runpytest("--netbudget", "--netbudget-base=main")
    assert_usage_error(
        result, f"--netbudget-base=main: the baseline {elsewhere / 'base.json'} is not in a git repository"
    )


# --- numbers at the edges -------------------------------------------------------------------------------


def test_a_tiny_limit_prints_as_a_number_and_a_short_percentage(pytester, project):
    # Before: max_size_mb = 1e-300 printed as "0.000", with a 300-digit percentage.
    # By hand: Linear(10, 5) holds 55 float32 values, 220 B = 0.000210 MiB (stored to six decimals);
    # 0.00021 / 1e-300 = 2.1e296, as a percentage 2.1e298%.
    project(TINY + "max_size_mb = 1e-300\n")
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"^  size_mb\s+1e-300\s+0\.00021\s+\+0\.00021 \(\+2\.1e\+298%\)$"])
    result.stdout.re_match_lines([r"^tiny\s+over\s+size_mb 0\.00021 / 1e-300 \(2\.1e\+298%\)\s+new$"])
    assert max(len(line) for line in output(result).splitlines()) < 400


def test_a_tiny_count_limit_prints_as_a_number_and_a_short_percentage(pytester, project):
    # Before: max_params = 1e-300 printed as "0.000..." with some 300 zeros, on every line that shows it.
    # By hand: Linear(10, 5) has 55 params; 55 / 1e-300 = 5.5e301, as a percentage 5.5e+303%.
    project(TINY + "max_params = 1e-300\n")
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.md")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"^  params\s+1e-300\s+55\s+\+55 \(\+5\.5e\+303%\)$"])
    result.stdout.re_match_lines([r"^tiny\s+over\s+params 55 / 1e-300 \(5\.5e\+303%\)\s+new$"])
    result.stdout.fnmatch_lines(["*next: params is over max_params = 1e-300*"])
    assert max(len(line) for line in output(result).splitlines()) < 400
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "55 / 1e-300 (5.5e+303%)" in markdown
    assert max(len(line) for line in markdown.splitlines()) < 400


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        pytest.param("[1, 9223372036854775808]", "9223372036854775808 is past", id="one-size"),
        pytest.param("[4294967296, 4294967296]", "has 18446744073709551616 elements", id="elements"),
    ],
)
def test_an_input_shape_past_torchs_sizes_is_a_usage_error(pytester, project, shape, fragment):
    # Before: it passed validation, then torch failed with a C++ backtrace.
    project(f'[tool.netbudget.models.tiny]\nfactory = "mymodels:Tiny"\ninput_shape = {shape}\ndevice = "meta"\n')
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, "[tool.netbudget.models.tiny] input_shape:", fragment)


def test_the_command_line_and_profile_refuse_such_shapes_too(capsys):
    import torch

    from pytest_netbudget import cli, profile

    with pytest.raises(SystemExit):
        cli.main(["show", "mymodule:Net", "--input-shape", "1,9223372036854775808"])
    assert "every size must be below 2**63" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"input_shape \[4294967296, 4294967296\] has 18446744073709551616 elements"):
        profile(torch.nn.Linear(2, 2), input_shape=(2**32, 2**32), device="meta")


def test_a_training_batch_past_torchs_sizes_is_a_usage_error(pytester, project):
    # Before: it passed validation, then torch's repeat() failed with a C++ backtrace of 54 frames.
    project(TINY + "train = { batch = 9223372036854775808 }\n")
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, "[tool.netbudget.models.tiny] train.batch:", "9223372036854775808 is past")


@pytest.mark.parametrize(
    ("serve", "fragment"),
    [
        pytest.param("context = 9223372036854775808", "size 9223372036854775808 is past", id="context"),
        pytest.param("context = 4294967296, batch = 4294967296", "has 18446744073709551616 elements", id="tokens"),
    ],
)
def test_a_serving_step_past_torchs_sizes_is_a_usage_error(pytester, project, serve, fragment):
    # Before: torch's new_empty() or repeat() failed with a C++ backtrace (or its storage size overflowed).
    project(TINY + f"serve = {{ {serve} }}\n")
    result = pytester.runpytest("--netbudget")
    assert_usage_error(
        result, "[tool.netbudget.models.tiny] serve.context: the prefill's tokens [batch, context]:", fragment
    )


def test_a_training_batch_that_makes_an_input_too_large_says_so():
    # Before: "Storage size calculation overflowed" from torch. By hand: [1, 2**32] repeated to 2**32 rows
    # is [4294967296, 4294967296], 2**64 = 18446744073709551616 elements.
    import torch

    from pytest_netbudget import StepSpec, profile

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.w

    with pytest.raises(ValueError, match=r"train batch 4294967296: input \[4294967296, 4294967296\] has 1844674407"):
        profile(Scale(), input_shape=(1, 2**32), device="meta", train=StepSpec(batch=2**32))


def test_profile_with_an_integer_dtype_says_which_dtypes_it_takes():
    # Before: torch.int8 reached torch, which failed with a message about the model's weights.
    import torch

    from pytest_netbudget import profile

    with pytest.raises(ValueError, match=r"dtype torch\.int8: profile\(\) casts the model to a floating dtype"):
        profile(torch.nn.Linear(2, 2), input_shape=(1, 2), dtype=torch.int8)


def test_a_formulas_numpy_numbers_count_as_python_numbers():
    # Before: Cost(macs=np.int64(7)) was rejected as "not finite", and np.float64 leaked into the totals.
    import numpy as np
    import torch

    from pytest_netbudget import Cost, profile

    class Block(torch.nn.Module):
        def forward(self, x):
            return x * 2

    def numpy_cost(module, inputs, output):
        return Cost(macs=np.int64(7), flops=np.float64(15.5))

    p = profile(torch.nn.Sequential(Block()), input_shape=(1, 4), formulas={Block: numpy_cost})
    assert (p.macs, p.flops) == (7, 15.5)
    assert type(p.macs) is int and type(p.flops) is float
    with pytest.raises(Exception, match=r"costs are finite and not negative"):
        profile(
            torch.nn.Sequential(Block()),
            input_shape=(1, 4),
            formulas={Block: lambda module, inputs, output: Cost(macs=np.int64(-1))},
        )


def test_a_training_step_inside_inference_mode_says_so():
    # Before: torch blamed requires_grad, which says nothing about the cause.
    import torch

    from pytest_netbudget import profile

    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"torch\.inference_mode\(\)"):
        profile(torch.nn.Linear(2, 2), input_shape=(1, 2), train=True)


def test_netbudget_show_says_why_a_factory_exited(tmp_path, monkeypatch, capsys):
    # Before: a factory calling sys.exit(3) made `netbudget show` exit 3 without a word.
    from pytest_netbudget import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    (tmp_path / "exitingmodels.py").write_text("import sys\n\ndef net():\n    sys.exit(3)\n", encoding="utf-8")
    assert cli.main(["show", "exitingmodels:net", "--input-shape", "1,2"]) == 1
    assert "factory exitingmodels:net raised while building the model: SystemExit: 3" in capsys.readouterr().err


# --- the Markdown report as a pull-request comment ------------------------------------------------------

NAMED_CHECK = """
from torch import nn


def test_named(netbudget):
    netbudget.check(nn.Linear(10, 5), input_shape=(1, 10), name={name!r})
"""


def test_bidi_controls_from_model_code_are_shown_not_obeyed(pytester, project):
    # Before: U+202E (right-to-left override) in a name reordered the rest of the comment's line.
    project()
    name = "safe\u202egnp.exe\u2066x\u2069"
    pytester.makepyfile(test_named=NAMED_CHECK.format(name=name))
    pytester.runpytest("--netbudget-report=r.md").assert_outcomes(passed=1)
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert not any(chr(code) in markdown for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
    assert "<code>safe&#60;U+202E&#62;gnp.exe&#60;U+2066&#62;x&#60;U+2069&#62;</code>" in markdown


def test_bidi_controls_are_shown_by_code_point_in_the_terminal_too(pytester, project):
    # Before: the failure, the summary and the layer table printed the name's controls live, so a
    # CI log viewer reordered the rest of the line.
    project()
    name = "safe\u202egnp.exe\u2066x\u2069"
    pytester.makepyfile(test_named=NAMED_CHECK.format(name=name).replace("name=", "max_params=50, name="))
    result = pytester.runpytest("--netbudget", "-v", "--netbudget-layers=1")
    result.assert_outcomes(failed=1)  # Linear(10, 5): 55 params, over 50
    out = result.stdout.str()
    assert not any(chr(code) in out for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
    assert out.count("safe<U+202E>gnp.exe<U+2066>x<U+2069>") >= 3  # the failure, the summary, the table's title


def test_a_comment_past_githubs_limit_is_cut_with_a_note(pytester, project):
    # Before: a 100 kB check name made a 303 kB comment, which GitHub refuses (65,536 characters).
    project()
    pytester.makepyfile(test_named=NAMED_CHECK.format(name="n" * 100_000))
    pytester.runpytest("--netbudget-report=r.md", "--netbudget-report=r.json").assert_outcomes(passed=1)
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert len(markdown) <= 65_536 - 1_000  # room for the line the Action appends (its link)
    assert markdown.startswith("## netbudget\n\n**All 1 model(s) within budget**")
    assert markdown.rstrip().endswith(
        "*This report was cut at GitHub's limit of 65,536 characters for a comment: the full report is in "
        "the JSON report (the job's artifact).*"
    )
    assert "n" * 100_000 in (pytester.path / "r.json").read_text(encoding="utf-8")


def test_a_cut_comment_closes_the_blocks_it_cuts_through():
    from pytest_netbudget.reports import CUT_NOTE, fit_comment

    lines = ["## netbudget", "<details><summary>x</summary>", "````", *(f"line {i}" for i in range(100)), "````"]
    text = fit_comment(lines, limit=len(CUT_NOTE) + 120)
    assert len(text) <= len(CUT_NOTE) + 120
    body = text.removesuffix(CUT_NOTE).splitlines()
    assert body[:4] == ["## netbudget", "<details><summary>x</summary>", "````", "line 0"]
    assert body[-2:] == ["````", "</details>"]  # the code block, then the section, closed
    assert fit_comment(lines[:3], limit=1000) == "\n".join(lines[:3])  # short enough: as it is
