"""What measuring one model yields: each tool's figures, times and error, and the notes.

Plain records shared by ``measure.py`` (fills them), ``diagnose.py`` (explains them)
and ``report.py`` (prints them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

TOLERANCE = 0.01  # a figure more than 1% from the hand-derived one is marked


@dataclass
class Outcome:
    params: int | None = None
    macs: int | None = None
    error: str | None = None
    detail: str = ""  # the first line of the error message
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # each run / the bare forward run just before it

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


@dataclass
class ModelResult:
    name: str
    expected_params: int
    expected_macs: int
    outcomes: dict[str, Outcome]
    notes: list[str] = field(default_factory=list)


def deviation(value: int | None, expected: int) -> float | None:
    """(value - expected) / expected; None when there is nothing to compare."""
    if value is None or expected == 0:
        return None
    return (value - expected) / expected
