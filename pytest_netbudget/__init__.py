"""pytest-netbudget: keep neural networks inside their parameter, compute and memory budgets.

Public names are resolved lazily: pytest imports this package whenever the plugin
is installed, and that must not cost an ``import torch``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "profile": "pytest_netbudget.engine",
    "Profile": "pytest_netbudget.engine",
    "LayerStats": "pytest_netbudget.engine",
    "register_formula": "pytest_netbudget.formulas",
    "Cost": "pytest_netbudget.formulas",
    "OpCall": "pytest_netbudget.formulas",
    "OpStats": "pytest_netbudget.engine",
    "budget": "pytest_netbudget.marks",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pytest_netbudget' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
