"""pytest plugin entry point (filled in by the plugin work; torch is never imported here at load)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netbudget", "model budgets (pytest-netbudget)")
    group.addoption("--netbudget", action="store_true", default=False, help="profile every model registered in pyproject.toml")
