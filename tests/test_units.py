"""Quantities as users write them in budgets and as reports print them (pytest_netbudget.units)."""

from __future__ import annotations

import re

import pytest

from pytest_netbudget import units
from pytest_netbudget.units import QuantityError, format_change, format_count, parse_percent, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30k", 30_000),
        ("30K", 30_000),
        ("1.5M", 1_500_000),
        ("2G", 2_000_000_000),
        ("2.5T", 2_500_000_000_000),
        ("1e6", 1_000_000),
        ("0.5k", 500),
        (" 5 k ", 5_000),
        ("12", 12),
        (12, 12),
        (0.2, 0.2),
        (1e6, 1_000_000),
        ("0.110", 0.11),
    ],
)
def test_parse_quantity(text, value):
    parsed = parse_quantity(text)
    assert parsed == value
    if float(value).is_integer():
        assert isinstance(parsed, int)  # "30k" is the integer 30000, not 30000.0


@pytest.mark.parametrize(
    "text", ["12 apples", True, False, "", "k", "M", "1..2", "3kk", "30%", None, [1], float("inf"), "1e400", "1e300T"]
)
def test_parse_quantity_rejects(text):
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_quantity_error_is_a_value_error_that_says_what_was_expected():
    with pytest.raises(ValueError, match=r"'12 apples' is not a quantity.*k, M, G or T"):
        parse_quantity("12 apples")


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("2%", 0.02), ("0.5 %", 0.005), ("100%", 1.0), (" 10% ", 0.1)],
)
def test_parse_percent(text, fraction):
    assert parse_percent(text) == pytest.approx(fraction)


@pytest.mark.parametrize("value", ["12", 2, 0.02, "%", "two%", None])
def test_parse_percent_returns_none_for_non_percentages(value):
    assert parse_percent(value) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (28_938, "28.9k"),
        (1_814_073_344, "1.81G"),
        (3_628_146_688, "3.63G"),
        (2_838_080, "2.84M"),
        (0, "0"),
        (999, "999"),
        (1_000, "1.00k"),
        (12_000_000_000_000, "12.0T"),
        (-2_300, "-2.30k"),
        (None, "-"),
    ],
)
def test_format_count(value, text):
    assert format_count(value) == text


def test_format_count_rounds_up_into_the_next_suffix():
    assert format_count(999_999) == "1.00M"


def test_format_count_round_trips_through_parse_quantity():
    """What the summary prints can be pasted back into pyproject.toml (3 significant digits)."""
    for value in (28_938, 2_838_080, 1_814_073_344, 11_689_512, 512):
        assert parse_quantity(format_count(value)) == pytest.approx(value, rel=5e-3)


@pytest.mark.parametrize(
    ("old", "new", "is_mb", "text"),
    [
        (100, 100, False, "="),
        (0, 5, False, "+5 (new)"),
        (100, 150, False, "+50 (+50.0%)"),
        (1_000, 900, False, "-100 (-10.0%)"),
        (0.2, 0.25, True, "+0.050 (+25.0%)"),
        (0.25, 0.2, True, "-0.050 (-20.0%)"),
    ],
)
def test_format_change(old, new, is_mb, text):
    assert format_change(old, new, is_mb) == text


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        # the spec prints '+2.3k (+7.9%)' and '+3.9k (+15.8%)'; three significant digits ('+2.30k') also read right
        (28_938, 31_238, r"\+2\.30?k \(\+7\.9%\)"),
        (25_000, 28_938, r"\+3\.9\d?k \(\+15\.8%\)"),
        (2_000_000, 1_976_000, r"-24(\.0)?k \(-1\.2%\)"),
    ],
)
def test_format_change_large_amounts(old, new, pattern):
    assert re.fullmatch(pattern, format_change(old, new))


def test_format_bytes_and_mb():
    assert units.format_bytes(1536) == "1.50 KiB"
    assert units.format_bytes(40) == "40 B"
    assert units.format_bytes(3 * 2**20) == "3.00 MiB"
    assert units.format_mb(28_938 * 4 / 2**20) == "0.110"
    assert units.format_mb(None) == "-"
    assert units.MIB == 2**20
