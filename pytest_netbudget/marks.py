"""``budget(...)``: the ``netbudget`` marker with its limits checked when the test module is imported."""

from __future__ import annotations

from typing import Any

import pytest

from .config import ConfigError, Place, parse_limits


def budget(**limits: Any) -> pytest.MarkDecorator:
    """``@budget(max_params="12M", max_macs="2G")`` is ``@pytest.mark.netbudget(...)`` with its
    keys and quantities validated now, so a misspelt limit fails at import with a suggestion."""
    try:
        parse_limits(limits, Place("budget():"))
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return pytest.mark.netbudget(**limits)
