"""Quantities as users write them ("30k", "2%", 0.2 MiB) and as reports print them.

Parsing and printing live side by side so that what the summary prints can be
pasted back into ``pyproject.toml`` and mean the same thing.
"""

from __future__ import annotations

import math
import re

SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MIB = 2**20

_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKMGT]?)\s*$")
_MEMORY = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([KMGT]i?B|[kK]B|B)?\s*$")
MEMORY_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
MEMORY_UNITS.update({"kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12})
_PERCENT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*%\s*$")


class QuantityError(ValueError):
    """A value that is not a quantity; the message says what was expected."""


class QuantityOverflow(QuantityError):
    """A well-written quantity too large for a float ("1e400"): never a budget of infinity."""


def parse_quantity(value: object) -> float:
    """Parse ``"30k"``, ``"1.5M"``, ``"1e6"``, ``12`` or ``0.2`` into a number.

    Suffixes are powers of 1000 (k, M, G, T); ``K`` is accepted for ``k``.
    """
    if isinstance(value, bool):
        raise QuantityError(f"expected a number or a quantity like '30k', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise QuantityError(f"expected a finite number, got {value!r}")
        return int(value) if float(value).is_integer() else value
    if not isinstance(value, str):
        raise QuantityError(f"expected a number or a quantity like '30k', got {value!r}")
    match = _QUANTITY.match(value)
    if not match:
        raise QuantityError(
            f"{value!r} is not a quantity: write a number with an optional suffix "
            "k, M, G or T (powers of 1000), e.g. '30k', '1.5M', '2G', 1e6"
        )
    number, suffix = match.groups()
    scaled = float(number) * SUFFIXES[suffix.replace("K", "k")]
    if not math.isfinite(scaled):
        raise QuantityOverflow(f"{value!r} is too large: expected a finite quantity")
    return int(scaled) if scaled.is_integer() else scaled


def parse_memory(value: object) -> int:
    """Bytes of ``"24GiB"``, ``"512 MiB"``, ``"80GB"`` (KiB/MiB/GiB/TiB are powers of 1024, kB/MB/GB/TB
    of 1000), or a plain number of MiB (as every ``*_mb`` figure), rounded down to whole bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuantityError(f"expected a memory size like '24GiB', got {value!r}")
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if not match:
            raise QuantityError(
                f"{value!r} is not a memory size: write a number and a unit, e.g. '24GiB', '512MiB', '80GB'"
            )
        number, unit = match.groups()
        scaled = float(number) * MEMORY_UNITS[unit or "MiB"]
    else:
        scaled = float(value) * MIB
    if not math.isfinite(scaled) or scaled <= 0:
        raise QuantityError(f"expected a positive, finite memory size, got {value!r}")
    return int(scaled)


def parse_percent(value: object) -> float | None:
    """Return the fraction for ``"2%"`` (0.02), or None when ``value`` is not a percentage;
    a percentage too large for a float raises ``QuantityOverflow``."""
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match:
            fraction = float(match.group(1)) / 100
            if not math.isfinite(fraction):
                raise QuantityOverflow(f"{value!r} is too large: expected a finite percentage")
            return fraction
    return None


def format_count(value: float | None, digits: int = 3) -> str:
    """Print a count with a 1000-based suffix: 28938 -> '28.9k', 1814073344 -> '1.81G'."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    for suffix in ("T", "G", "M", "k"):
        # Round first, then pick the suffix: 999,999 prints as 1.00M rather than 1000k.
        scaled = float(f"{magnitude / SUFFIXES[suffix]:.{digits}g}")
        if scaled >= 1:
            return f"{sign}{_significant(scaled, digits)}{suffix}"
    if float(magnitude).is_integer():
        return f"{sign}{int(magnitude)}"
    return f"{sign}{_significant(magnitude, digits)}"


def _significant(value: float, digits: int) -> str:
    """``value`` with ``digits`` significant digits, in exponent notation only below 1e-9 (a limit
    such as 1e-300: '1e-300', not 300 zeros; a tiny layer's latency keeps its decimals, 0.000000116)."""
    if 0 < value < 1e-9:
        return f"{value:.{digits}g}"
    decimals = digits - 1 - int(math.floor(math.log10(value))) if value > 0 else digits - 1
    return f"{value:.{max(decimals, 0)}f}"


def format_bytes(value: float | None) -> str:
    """Print a byte count in binary units: 1536 -> '1.50 KiB'."""
    if value is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)} B"


def format_mb(value: float | None, signed: bool = False) -> str:
    """Print a MiB figure with three decimals, as budgets are written: '0.110'; one too small
    for three decimals to six ('0.000023') or, smaller still, in exponent notation ('1e-300'),
    never as 0.000."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if 1e-6 <= abs(value) < 0.0005:  # the six decimals a baseline stores: '0.000023'
        return f"{value:{sign}.6f}".rstrip("0")
    if 0 < abs(value) < 1e-6:
        return f"{value:{sign}.3g}"
    return f"{value:{sign}.3f}"


def format_percent(fraction: float, decimals: int = 1, signed: bool = False) -> str:
    """A fraction as a percentage, '96.5%'; past 1,000,000% (a limit such as 1e-300) in exponent
    notation, '2.1e+298%', rather than hundreds of digits."""
    percent = fraction * 100
    sign = "+" if signed else ""
    if abs(percent) >= 1e6:
        return f"{percent:{sign}.2g}%"
    return f"{percent:{sign}.{decimals}f}%"


def format_ms(value: float | None) -> str:
    """Print milliseconds with three significant digits, never in exponent notation: '0.0123', '12.3', '1234'."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    sign = "-" if value < 0 else ""
    return sign + _significant(float(f"{abs(value):.3g}"), 3)


def format_change(old: float, new: float, is_mb: bool = False) -> str:
    """Print the change from ``old`` to ``new``: '+2.3k (+7.9%)', '-1.2M (-3.0%)' or '='."""
    delta = new - old
    if delta == 0:
        return "="
    amount = format_mb(delta, signed=True) if is_mb else ("+" if delta > 0 else "") + format_count(delta, digits=2)
    if old == 0:
        return f"{amount} (new)"
    return f"{amount} ({format_percent(delta / old, signed=True)})"
