"""A project's formulas for its own ops count in every run (issue 20, SPEC §2): ``formulas = [...]``
in ``[tool.netbudget]`` is imported for every selection, by every pytest-xdist worker, and by
``netbudget show`` / ``netbudget formulas``; an update that would record an uncounted op says so.

Figures by hand: the mixer is Linear(8, 8) on [4, 8] (8*8 + 8 = 72 params, 4*8*8 = 256 MACs), then
the project's op ``mix(x) = x @ x^T`` on [4, 8]: 4*4*8 = 128 MACs, which only its formula counts.
"""

from __future__ import annotations

import json
import sys

import pytest
from test_plugin import QUIET
from test_plugin_errors import assert_usage_error, output

from pytest_netbudget import cli

pytestmark = pytest.mark.usefixtures("preloaded")

MODELS = """
import torch
from torch import nn

if not hasattr(torch.ops.nbproject, "mix"):  # pytester imports this module once per run

    @torch.library.custom_op("nbproject::mix", mutates_args=())
    def mix(x: torch.Tensor) -> torch.Tensor:
        return x @ x.T

    @mix.register_fake
    def _(x):
        return x.new_empty(x.shape[0], x.shape[0])


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.ops.nbproject.mix(self.fc(x))
"""

FORMULAS = '''
from pytest_netbudget import Cost, register_formula


@register_formula("nbproject::mix")
def mix_cost(call):
    """MACs = n * n * d (x @ x^T)."""
    n, d = call["x"].shape
    return Cost(macs=n * n * d)
'''

TABLES = """
[tool.netbudget.models.mixer]
factory = "mymodels:Mixer"
input_shape = [4, 8]

[tool.netbudget.models.other_mixer]
factory = "mymodels:Mixer"
input_shape = [4, 8]
"""

# What a project whose formulas are in its installed package does: import them in tests/conftest.py.
CONFTEST = """
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the project's folder, as if installed
import myformulas  # noqa: E402, F401
"""

ALL_MACS = 256 + 128
LINEAR_MACS = 256


@pytest.fixture
def own_registry(monkeypatch):
    """The project registers a formula: keep it out of the registry other tests see, and let the
    next test import the project's modules afresh."""
    from pytest_netbudget.formulas import registry

    for name in ("_op_formulas", "_module_formulas", "_registered"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_shared_answers", ({}, {}, {}))
    yield
    for module in ("myformulas", "mymodels"):
        sys.modules.pop(module, None)


@pytest.fixture
def mixer_project(pytester, project, own_registry):
    """The mixer registered in pyproject.toml, its formula in myformulas.py, which only
    tests/conftest.py imports (as the project did before it had ``formulas``)."""

    def write(top: str = 'device = "cpu"') -> None:
        project(TABLES, top=top, models=MODELS)
        pytester.makepyfile(myformulas=FORMULAS)
        (pytester.path / "tests").mkdir(exist_ok=True)
        (pytester.path / "tests" / "conftest.py").write_text(CONFTEST, encoding="utf-8")

    return write


def report_macs(pytester) -> dict[str, int]:
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    return {name: entry["totals"]["macs"] for name, entry in report["models"].items()}


def test_a_node_id_selection_counts_the_projects_op(pytester, mixer_project):
    # Before: the rerun command the README gives did not load tests/conftest.py, so the op was
    # uncounted, and `formulas` was an unknown key.
    mixer_project(top='device = "cpu"\nformulas = ["myformulas"]')
    result = pytester.runpytest("--netbudget", "pyproject.toml::mixer", "--netbudget-report=r.json")
    result.assert_outcomes(passed=1)
    assert report_macs(pytester) == {"mixer": ALL_MACS}
    assert "uncounted" not in output(result)


def test_without_formulas_an_update_says_it_records_an_uncounted_op(pytester, mixer_project):
    mixer_project()
    result = pytester.runpytest("--netbudget", "pyproject.toml::mixer", "--netbudget-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "netbudget: WARNING: mixer's entry was written with ops that no formula counts (nbproject.mix x1): "
            "their work is not in its MACs and FLOPs. Register formulas for them in a module named in "
            "[tool.netbudget] formulas = [...] (so that every run loads it), then update the baseline again"
        ]
    )
    entry = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))["models"]["mixer"]
    assert entry["totals"]["macs"] == LINEAR_MACS


def test_every_xdist_worker_counts_the_projects_op(pytester, mixer_project):
    mixer_project(top='device = "cpu"\nformulas = ["myformulas"]')
    result = pytester.runpytest_subprocess(
        "--netbudget", "pyproject.toml", "-n", "2", "--netbudget-report=r.json", *QUIET
    )
    result.assert_outcomes(passed=2)
    assert report_macs(pytester) == {"mixer": ALL_MACS, "other_mixer": ALL_MACS}


def test_netbudget_show_and_formulas_load_the_projects_formulas(pytester, mixer_project, monkeypatch, capsys):
    mixer_project(top='device = "cpu"\nformulas = ["myformulas"]')
    monkeypatch.chdir(pytester.path)
    assert cli.main(["show", "mixer"]) == 0
    assert f"MACs: {ALL_MACS} ({ALL_MACS})" in capsys.readouterr().out
    assert cli.main(["show", "mymodels:Mixer", "--input-shape", "4,8"]) == 0
    assert f"MACs: {ALL_MACS} ({ALL_MACS})" in capsys.readouterr().out
    assert cli.main(["formulas", "--grep", "nbproject"]) == 0
    listed = capsys.readouterr().out
    assert " ".join(listed.split()) == "nbproject::mix user MACs = n * n * d (x @ x^T).", listed


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        pytest.param('formulas = "myformulas"', "must be a list of module names", id="not-a-list"),
        pytest.param('formulas = ["my-formulas"]', "must be a list of module names", id="not-a-module-name"),
        pytest.param(
            'formulas = ["no_such_formulas"]',
            "formulas: cannot import module 'no_such_formulas': ModuleNotFoundError",
            id="missing",
        ),
    ],
)
def test_a_bad_formulas_entry_is_a_usage_error(pytester, mixer_project, line, fragment):
    mixer_project(top=f'device = "cpu"\n{line}')
    result = pytester.runpytest("--netbudget")
    assert_usage_error(result, "pyproject.toml: [tool.netbudget] formulas", fragment)


def test_netbudget_show_names_a_formulas_module_that_fails(pytester, mixer_project, monkeypatch, capsys):
    mixer_project(top='device = "cpu"\nformulas = ["no_such_formulas"]')
    monkeypatch.chdir(pytester.path)
    assert cli.main(["show", "mixer"]) == 2
    assert "[tool.netbudget] formulas: cannot import module 'no_such_formulas'" in capsys.readouterr().err
