"""Lazy public names of ``pytest_netbudget``: resolved on first use, so importing the package costs no torch."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable


def lazy_names(package: str, public: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` that import ``public[name]`` when ``name`` is first read."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in public:
            value = getattr(import_module(public[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *public])

    return __getattr__, __dir__
