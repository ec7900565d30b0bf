"""Shared fixtures for the pytester suites: a temporary project with a few tiny models."""

from __future__ import annotations

import os

import pytest

#: Tiny models whose figures are known by hand (see each docstring).
MODELS = '''
import torch
from torch import nn

NUMBER = 3


class Tiny(nn.Module):
    """Linear(10, n_out): 10*n_out + n_out params; 10*n_out MACs on [1, 10] (55 and 50 for n_out=5)."""

    def __init__(self, n_out=5):
        super().__init__()
        self.fc = nn.Linear(10, n_out)

    def forward(self, x):
        return self.fc(x)


def conv():
    """Conv2d(1, 2, 3) on [1, 1, 5, 5]: 2*9 + 2 = 20 params, 2*3*3 outputs * 9 = 162 MACs."""
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())


def nested():
    """Sequential(Sequential(Linear(10, 4), ReLU), Linear(4, 2)): block 0 holds 44 params, 40 MACs."""
    return nn.Sequential(nn.Sequential(nn.Linear(10, 4), nn.ReLU()), nn.Linear(4, 2))


def two_layers():
    """Linear(10, 4) -> Linear(4, 2): 44 + 10 = 54 params, 40 + 8 = 48 MACs on [1, 10]."""
    return nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 2))
'''


@pytest.fixture(scope="session")
def preloaded() -> None:
    """Import torch, the engine and the installed pytest plugins in this process, once.

    ``pytester.runpytest`` drops the modules a run imported when it ends; torch imported
    inside a run would be imported again by the next one, which crashes the process (and
    re-importing every plugin makes each run slow). A warm-up profile loads torch's lazy parts.
    """
    import contextlib
    import importlib
    from importlib.metadata import entry_points

    import torch
    from _pytest.config import default_plugins

    from pytest_netbudget import profile

    for name in default_plugins:
        importlib.import_module(f"_pytest.{name}")
    for entry in entry_points(group="pytest11"):
        for module in (entry.value.split(":")[0], entry.value.split(".")[0]):
            with contextlib.suppress(Exception):  # a broken third-party plugin is not ours to test
                importlib.import_module(module)
    for module in ("hypothesis", "pytest_netbudget.marks", "pytest_netbudget.specs", "xml.etree.ElementTree"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    for device, dtype in (("cpu", None), ("meta", "float16")):
        profile(model, torch.zeros(1, 3, dtype=torch.long), device=device, dtype=dtype)


@pytest.fixture
def project(pytester: pytest.Pytester, preloaded: None):
    """``project(models_toml, top='device = "cpu"', models=MODELS)`` writes pyproject.toml and mymodels.py."""

    def write(models_toml: str = "", top: str = 'device = "cpu"', models: str = MODELS) -> None:
        pytester.makepyprojecttoml(f"[tool.netbudget]\n{top}\n\n{models_toml}\n")
        pytester.makepyfile(mymodels=models)

    return write


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (tests/browser.py), one for the whole run. Without it the test skips and says
    how to install it; with NETBUDGET_REQUIRE_BROWSER=1 (``.ci/run``) it fails instead."""
    from browser import Browser, find_chromium

    executable = find_chromium()
    if executable is None:
        why = (
            "headless Chromium is not installed, so the HTML pages are not checked in a browser: "
            "install it with `apt-get install -y chromium` (.ci/run does) or point CHROMIUM at one"
        )
        if os.environ.get("NETBUDGET_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    chromium = Browser(executable)
    yield chromium
    chromium.close()
