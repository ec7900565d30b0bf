"""The profiling engine: one forward pass, counted at the operator level, per module.

Names are resolved lazily, like the package's own: ``engine.data`` (the plain result
types) is imported by the torch-free layers, and must not pull in torch through here.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {
    "LayerStats": "pytest_netbudget.engine.data",
    "OpStats": "pytest_netbudget.engine.data",
    "Profile": "pytest_netbudget.engine.data",
    "build_model": "pytest_netbudget.engine.run",
    "profile": "pytest_netbudget.engine.run",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pytest_netbudget.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
