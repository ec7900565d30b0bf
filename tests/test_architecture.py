"""The code's shape (issue 9): torch-free lower layers, one metric table that drives every layer,
and per-op figures kept in the profile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from reference_models import SpecCNN

from pytest_netbudget import OpStats, budgets, config, metrics, profile
from pytest_netbudget.results import LayerStats, Profile, declared_metrics

TORCH_FREE = [
    "pytest_netbudget",
    "pytest_netbudget.units",
    "pytest_netbudget.files",
    "pytest_netbudget.markdown_text",
    "pytest_netbudget.metrics",
    "pytest_netbudget.devices",
    "pytest_netbudget.targets",
    "pytest_netbudget.results",
    "pytest_netbudget.layer_table",
    "pytest_netbudget.config",
    "pytest_netbudget.budgets",
    "pytest_netbudget.baseline",
    "pytest_netbudget.reports",
    "pytest_netbudget.repeated",
    "pytest_netbudget.module_tree",
    "pytest_netbudget.html_page",
    "pytest_netbudget.html_report",
    "pytest_netbudget.history",
    "pytest_netbudget.history_chart",
    "pytest_netbudget.session",
    "pytest_netbudget.plugin",
    "pytest_netbudget.marks",
]


def test_ci_runs_exactly_the_readmes_test_command():
    """.ci/run installs and then runs the README's test command, type check included, verbatim."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("Run the type check and the test suite", 1)[1].split("```bash\n", 1)[1]
    command = block.split("\n", 1)[0]
    assert "mypy && python -m pytest -q" in command
    ci = (root / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == command
    assert "-c constraints.txt" in command


@pytest.mark.parametrize("module", TORCH_FREE)
def test_lower_layers_import_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


def test_every_metric_has_a_budget_key_and_a_profile_attribute():
    assert config.MODEL_KEYS[-len(metrics.METRICS) :] == tuple(f"max_{name}" for name in metrics.NAMES)
    p = profile(SpecCNN(), input_shape=(1, 1, 28, 28), device="meta")
    assert set(p.totals) == set(metrics.NAMES)
    for name in metrics.NAMES:
        assert getattr(p, name) == p.totals[name]
    for name in metrics.PER_LAYER:
        if p.totals[name] is not None:  # the training step's figures exist only with train=True
            assert sum(getattr(row, name) for row in p.layers) == p.totals[name]
    assert (p.train_macs, p.train_flops, p.train_memory_mb, p.train) == (None, None, None, None)


def test_the_records_declare_every_metric_of_the_table_as_an_attribute():
    """A metric is a row in metrics.py plus a declared attribute on the records (typed, so that
    editors and the type checker know ``p.train_flops``): this names the one that is missing or extra."""
    assert declared_metrics(Profile) == metrics.NAMES, "Profile's metric attributes differ from metrics.METRICS"
    assert declared_metrics(LayerStats) == metrics.PER_LAYER, (
        "LayerStats' metric attributes differ from metrics.PER_LAYER"
    )
    assert Profile.macs.__doc__ == metrics.get("macs").description


def test_from_pytest_netbudget_the_records_load_without_torch():
    code = "import sys; from pytest_netbudget import Profile, LayerStats, OpStats; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


def test_the_words_that_cross_modules_are_enums_that_json_writes_as_their_strings():
    from pytest_netbudget.results import ChangeKind, MemoryPart, Phase, Status

    assert json.dumps({MemoryPart.OPTIMIZER_STATE: [Status.PASS, ChangeKind.RESIZED, Phase.BACKWARD]}) == (
        '{"optimizer_state": ["pass", "resized", "backward"]}'
    )
    assert (f"{Status.GREW}", str(Status.GREW), Status("grew")) == ("grew", "grew", Status.GREW)
    with pytest.raises(ValueError, match="'pased' is not a valid Status"):
        Status("pased")  # a typo is an error, where a plain string compared False


def test_a_new_metric_row_reaches_every_layer(monkeypatch):
    """One row in the table: config accepts its budget, judge() shows it, reports print it."""
    extra = metrics.Metric("widgets", "count", "a made-up figure", growth=True, headline=True)
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, extra))
    monkeypatch.setitem(metrics.BY_NAME, "widgets", extra)
    monkeypatch.setattr(metrics, "LIMIT_KEYS", (*metrics.LIMIT_KEYS, "max_widgets"))
    assert config.parse_limits({"max_widgets": "2k"}, config.Place("test:")) == {"widgets": 2000}
    p = Profile("Net", "cpu", "float32", [], {"params": 1, "widgets": 2500}, [])
    verdict = budgets.judge(budgets.Result("net", limits={"widgets": 2000}, profile=p))
    check = verdict.check_for("widgets")
    assert (check.actual, check.status) == (2500, "over")


# --- per-op figures ------------------------------------------------------------------------------------------

# The spec's CNN on [1, 1, 28, 28], by hand:
#   conv1: 16 * 28*28 outputs * 25 taps = 313,600 MACs; FLOPs 2 * MACs + 12,544 bias adds = 639,744
#   conv2: 32 * 14*14 outputs * 16*25 taps = 2,508,800 MACs; FLOPs 5,017,600 + 6,272 = 5,023,872
#   relu: one FLOP per element (12,544 and 6,272); pool 2x2: 4 per output (3,136 * 4 and 1,568 * 4)
#   out: addmm 1568 * 10 = 15,680 MACs; FLOPs 31,360 + 10 bias = 31,370
#   free, listed with their calls: the flatten's view, the linear layer's weight transposed (t)
CNN_OPS = {
    "aten.addmm": OpStats(1, 15_680, 31_370),
    "aten.t": OpStats(1, 0, 0),
    "aten.view": OpStats(1, 0, 0),
    "aten.convolution": OpStats(2, 313_600 + 2_508_800, 639_744 + 5_023_872),
    "aten.max_pool2d_with_indices": OpStats(2, 0, 12_544 + 6_272),
    "aten.relu": OpStats(2, 0, 12_544 + 6_272),
}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_per_op_figures_of_the_spec_cnn(device):
    p = profile(SpecCNN(), input_shape=(1, 1, 28, 28), device=device)
    assert p.ops == CNN_OPS
    by_path = {row.path: row.ops for row in p.layers}
    assert by_path["conv1.0"] == {"aten.convolution": OpStats(1, 313_600, 639_744)}
    assert by_path["conv2.2"] == {"aten.max_pool2d_with_indices": OpStats(1, 0, 6_272)}
    assert by_path[""] == {"aten.view": OpStats(1, 0, 0)}  # flatten is a view: free, and listed
    for row in p.layers:
        assert sum(stats.macs for stats in row.ops.values()) == row.macs
        assert sum(stats.flops for stats in row.ops.values()) == row.flops


def test_ops_survive_json_and_fold_in_rollup():
    p = profile(SpecCNN(), input_shape=(1, 1, 28, 28), device="meta")
    again = Profile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    conv1 = next(row for row in p.rollup(1) if row.path == "conv1")
    assert conv1.ops == {
        "aten.convolution": OpStats(1, 313_600, 639_744),
        "aten.max_pool2d_with_indices": OpStats(1, 0, 12_544),
        "aten.relu": OpStats(1, 0, 12_544),
    }


def test_module_formula_is_an_op_of_its_module():
    from torch import nn

    from pytest_netbudget import Cost

    class Opaque(nn.Module):
        def forward(self, x):
            return x * 2

    formulas = {Opaque: lambda module, inputs, output: Cost(macs=7)}
    p = profile(nn.Sequential(Opaque()), input_shape=(1, 3), device="cpu", formulas=formulas)
    assert p.ops == {"module:Opaque": OpStats(1, 7, 14)}
