"""pytest-netbudget: keep neural networks inside their parameter, compute and memory budgets.

Public names are resolved lazily: pytest imports this package whenever the plugin
is installed, and that must not cost an ``import torch``.
"""

from __future__ import annotations

from pytest_netbudget.lazy import lazy_names

__version__ = "0.1.0"

_PUBLIC = {
    "profile": "pytest_netbudget.engine",
    "Profile": "pytest_netbudget.results",
    "LayerStats": "pytest_netbudget.results",
    "register_formula": "pytest_netbudget.formulas",
    "Cost": "pytest_netbudget.formulas",
    "OpCall": "pytest_netbudget.formulas",
    "OpStats": "pytest_netbudget.results",
    "StepSpec": "pytest_netbudget.results",
    "ServeSpec": "pytest_netbudget.results",
    "budget": "pytest_netbudget.marks",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
