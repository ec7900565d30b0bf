"""The profiling engine: one forward pass, counted at the operator level, per module.

Names are resolved lazily, like the package's own: ``engine.data`` (the plain result
types) is imported by the torch-free layers, and must not pull in torch through here.
"""

from __future__ import annotations

from pytest_netbudget.lazy import lazy_names

_PUBLIC = {
    "LayerStats": "pytest_netbudget.engine.data",
    "OpStats": "pytest_netbudget.engine.data",
    "Profile": "pytest_netbudget.engine.data",
    "build_model": "pytest_netbudget.engine.run",
    "profile": "pytest_netbudget.engine.run",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
