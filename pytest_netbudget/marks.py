"""``budget(...)``: the ``netbudget`` marker with its limits checked when the test module is imported."""

from __future__ import annotations

from typing import Any

import pytest

from .config import ConfigError, Place, parse_check


def budget(**limits: Any) -> pytest.MarkDecorator:
    """``@budget(max_params="12M", max_macs="2G")`` is ``@pytest.mark.netbudget(...)`` with its
    keys and quantities validated now, so a misspelt limit fails at import with a suggestion.
    ``max_increase``, ``strict``, ``train``, ``serve`` and ``target`` are taken too, as by
    ``netbudget.check()`` (a target's name is looked up when the test runs, with the project's own)."""
    try:
        parse_check(limits, Place("budget():"))
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return pytest.mark.netbudget(**limits)
