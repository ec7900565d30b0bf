"""The profiling engine: one forward pass (or training step), counted at the operator level, per module.

It imports torch; the records it produces live in :mod:`pytest_netbudget.results`, which does not.
"""

from __future__ import annotations

from .run import build_model, profile

__all__ = ["build_model", "profile"]
