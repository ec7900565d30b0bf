"""Baselines know the settings a model was profiled with (issue 20, SPEC §4): each entry records its
inputs (each tensor's shape and dtype) and its training and serving steps' settings beside its
environment; a figure that changed together with them is reported as that, with what to do, not as
plain growth; the gate's verdict stays; a baseline written before these fields still works. The
serving step's case is in test_serving_budgets.py (it needs a decoder).

Figures by hand:
- Linear(10, 5) on [1, 10]: 55 params, 50 MACs, 2*50 + 5 = 105 FLOPs; on [2, 10] twice the MACs and
  FLOPs (100, 210), the same 55 params.
- Conv2d(1, 2, 3) + ReLU on [1, 1, 5, 5]: 162 MACs a sample. A training step of it at ``batch`` rows
  is its forward (162 * batch MACs) and its weights' gradient (162 * batch; the input needs none):
  train_macs 648 at batch 2, 1,296 at batch 4.
- Embedding(10, 3) on 4 int64 indices moves 4*8 bytes of indices, 4*3*4 of rows read and as many
  written: 128 bytes; with int32 indices 4*4 + 48 + 48 = 112 bytes (memory_access_mb, which shrank:
  no growth, a stale baseline).
"""

from __future__ import annotations

import json

import pytest
import torch
from test_baseline_environment import assert_reports_name, edit_baseline
from test_baseline_workflow import read_baseline

from pytest_netbudget.results import BaselineEntry, RecordError

pytestmark = pytest.mark.usefixtures("preloaded")

MODELS = """
from torch import nn


def tiny():
    return nn.Linear(10, 5)


def conv():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())


def embed():
    return nn.Embedding(10, 3)
"""

TOML = """
[tool.netbudget.models.tiny]
factory = "mymodels:tiny"
input_shape = {shape}

[tool.netbudget.models.conv]
factory = "mymodels:conv"
input_shape = [1, 1, 5, 5]
train = {{ optimizer = "sgd", batch = {batch} }}

[tool.netbudget.models.embed]
factory = "mymodels:embed"
inputs = [{{ shape = [1, 4], dtype = "{index_dtype}", high = 10 }}]
"""

TOP = 'device = "cpu"\nmax_increase = "2%"'


def write(project, shape="[1, 10]", batch=2, index_dtype="int64", top=TOP) -> None:
    project(TOML.format(shape=shape, batch=batch, index_dtype=index_dtype), top=top, models=MODELS)


def test_each_entry_records_its_inputs_and_step_settings(pytester, project):
    # Before: an entry recorded its environment only: a new input shape or step read as growth.
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entries = read_baseline(pytester)["models"]
    assert entries["tiny"]["settings"] == {"inputs": [{"shape": [1, 10], "dtype": "float32"}]}
    assert entries["embed"]["settings"] == {"inputs": [{"shape": [1, 4], "dtype": "int64"}]}
    assert entries["conv"]["settings"] == {
        "inputs": [{"shape": [1, 1, 5, 5], "dtype": "float32"}],
        "train": {"optimizer": "sgd", "batch": 2, "autocast": None},
    }
    assert (entries["tiny"]["totals"]["macs"], entries["conv"]["totals"]["train_macs"]) == (50, 648)


def test_a_grown_figure_that_came_with_a_new_input_shape_is_reported_as_that(pytester, project):
    # Before: "macs grew +50 (+100.0%)" and nothing said the input had doubled. The verdict stays:
    # 50 -> 100 MACs is past max_increase = 2%, so tiny fails, and says why and what to do.
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(project, shape="[2, 10]")
    result = pytester.runpytest(
        "--netbudget", "--netbudget-report=r.json", "--netbudget-report=r.md", "--netbudget-report=r.html"
    )
    result.assert_outcomes(passed=2, failed=1)
    change = "input_shape [1, 10] -> [2, 10]"
    result.stdout.fnmatch_lines(
        [
            "tiny grew more than max_increase allows over its baseline",
            f"  its settings changed since its baseline entry: {change}",
            "*",
            "  macs  * 100  * 50  * +50 (+100.0%) * grew +50 (+100.0%), more than the allowed 2%",
            "*",
            f"  next: its figures changed with its settings ({change}), not necessarily with the model: if the "
            "change is intended, accept its figures with `pytest --netbudget --netbudget-update` and commit "
            "netbudget-baseline.json; else profile it with the settings of its baseline entry",
        ]
    )
    result.stdout.fnmatch_lines([f"tiny: its figures changed with its settings ({change}) since its baseline entry"])
    assert_reports_name(pytester, change, "input_shape &#91;1, 10&#93; -&#62; &#91;2, 10&#93;", "settings")
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["tiny"]["settings"] == {"inputs": [{"shape": [2, 10], "dtype": "float32"}]}
    html = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert "<strong>settings changed</strong> since its baseline entry: input_shape [1, 10] -&gt; [2, 10]" in html
    # accepted as the README says: the new entry records the new shape, and the next run passes
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    assert read_baseline(pytester)["models"]["tiny"]["settings"]["inputs"] == [{"shape": [2, 10], "dtype": "float32"}]
    assert pytester.runpytest("--netbudget", "--netbudget-check-baseline").ret == 0


def test_a_grown_figure_that_came_with_a_new_training_batch_is_reported_as_that(pytester, project):
    # train_macs 648 -> 1,296 (+100%) with train.batch 2 -> 4: past max_increase, and said to be the batch's
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(project, batch=4)
    result = pytester.runpytest("--netbudget", "--netbudget-report=r.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "conv grew more than max_increase allows over its baseline",
            "  its settings changed since its baseline entry: train batch 2 -> 4",
            "*",
            "  train_macs  * 1.30k  * 648  * +648 (+100.0%) * grew +648 (+100.0%), more than the allowed 2%",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["models"]["conv"]["environment_change"] == ["train batch 2 -> 4"]
    assert report["models"]["conv"]["totals"]["train_macs"] == 1296


def test_a_stale_baseline_names_the_input_dtype_that_changed(pytester, project):
    # int64 -> int32 indices: memory_access_mb 128 -> 112 bytes, a shrink, so no failure, but a baseline
    # that no longer matches; the check says it came with the input's dtype
    write(project, top='device = "cpu"')
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    assert round(read_baseline(pytester)["models"]["embed"]["totals"]["memory_access_mb"] * 2**20) == 128
    write(project, index_dtype="int32", top='device = "cpu"')
    result = pytester.runpytest("--netbudget", "--netbudget-check-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "netbudget: ERROR: netbudget-baseline.json does not match this run: embed's memory_access_mb, layers "
            "differ (with its settings: input dtype int64 -> int32); refresh it with *"
        ]
    )


def test_a_change_of_both_environment_and_settings_names_both(pytester, project):
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    edit_baseline(pytester, lambda models: models["tiny"]["environment"].update(torch="2.12.0"))
    write(project, shape="[2, 10]")
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(passed=2, failed=1)
    change = f"torch 2.12.0 -> {torch.__version__}, input_shape [1, 10] -> [2, 10]"
    result.stdout.fnmatch_lines(
        [
            f"  its environment and settings changed since its baseline entry: {change}",
            f"  next: its figures changed with its environment and settings ({change}), not necessarily with the "
            "model: if the change is intended, accept its figures with `pytest --netbudget --netbudget-update` "
            "and commit netbudget-baseline.json; else profile it with the environment and settings of its "
            "baseline entry",
        ]
    )


def test_a_baseline_written_before_settings_still_compares(pytester, project):
    # An entry of the version before (an environment, no settings): it loads, and a grown figure is
    # plain growth, as it was, since nothing says what the settings were then.
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0

    def forget(models):
        for entry in models.values():
            del entry["settings"]

    edit_baseline(pytester, forget)
    assert pytester.runpytest("--netbudget", "--netbudget-check-baseline").ret == 0
    write(project, shape="[2, 10]")
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["tiny grew more than max_increase allows over its baseline"])
    assert "changed since its baseline entry" not in result.stdout.str()


ENTRY = {"origin": "pyproject.toml", "totals": {"params": 55}, "layers": {}}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ([], "m.settings: expected an object with 'inputs', got []"),
        ({"inputs": "x"}, 'm.settings.inputs: expected a list of inputs, got "x"'),
        ({"inputs": [{"shape": [1, -2], "dtype": "float32"}]}, "m.settings.inputs[0].shape: expected a list of sizes"),
        ({"inputs": [{"shape": [1], "dtype": 3}]}, "m.settings.inputs[0].dtype: expected a string, got 3"),
        ({"inputs": [], "train": 5}, "m.settings.train: expected an object, got 5"),
        ({"inputs": [], "serve": {"context": {"a": 1}}}, "m.settings.serve.context: expected text, a whole number"),
        ({"inputs": [], "serve": {"keep": [1]}}, "m.settings.serve.keep: expected text, a whole number"),
        ({"inputs": [], "train": {"batch": True}}, "m.settings.train.batch: expected text, a whole number"),
    ],
)
def test_a_hand_edited_settings_record_is_an_error_that_names_its_path(settings, problem):
    with pytest.raises(RecordError) as raised:
        BaselineEntry.from_dict({**ENTRY, "settings": settings}, "m")
    assert str(raised.value).startswith(problem)


CHECK = """
import torch
from torch import nn


def test_embed(netbudget):
    netbudget.check(nn.Embedding(10, 3), inputs=torch.zeros({rows}, 4, dtype=torch.{index_dtype}), name="embed")
"""


def test_a_check_from_a_test_records_the_tensors_it_was_given(pytester):
    # The inputs are the check's own tensors. 4 * rows int64 indices, read 8 bytes each, and 4 * rows
    # rows of 3 floats read and written: 128 bytes for one row of 4, 256 for two (+100%, past 2%).
    pytester.makepyprojecttoml('[tool.netbudget]\ndevice = "cpu"\nmax_increase = "2%"\n')
    pytester.makepyfile(test_embed=CHECK.format(rows=1, index_dtype="int64"))
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    entry = read_baseline(pytester)["models"]["embed"]
    assert entry["settings"] == {"inputs": [{"shape": [1, 4], "dtype": "int64"}]}
    assert round(entry["totals"]["memory_access_mb"] * 2**20) == 128
    pytester.makepyfile(test_embed=CHECK.format(rows=2, index_dtype="int64"))
    result = pytester.runpytest("--netbudget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "embed grew more than max_increase allows over its baseline",
            "  its settings changed since its baseline entry: input_shape [1, 4] -> [2, 4]",
        ]
    )


def test_a_new_dtype_is_named_once_not_again_as_the_float_inputs_that_follow_it(pytester, project):
    # Before: "dtype float32 -> bfloat16, input dtype float32 -> bfloat16": the float inputs are made
    # at the model's dtype, so theirs is the same change. Linear(10, 5) at bfloat16: 55 params of 2
    # bytes instead of 4, a shrink (no failure), so the run's JSON report says what came with it.
    write(project)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    write(project, top=TOP + '\ndtype = "bfloat16"')
    assert pytester.runpytest("--netbudget", "--netbudget-report=r.json").ret == 0
    models = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["models"]
    assert models["tiny"]["environment_change"] == ["dtype float32 -> bfloat16"]
    assert models["embed"]["environment_change"] == ["dtype float32 -> bfloat16"]  # int64 indices, as before
