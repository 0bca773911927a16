"""Metric thresholds: `">= 0.9"`-style conditions, parsed and checked in one place.

Used by the settings (validation.thresholds, validation.holdout.thresholds are checked at load) and by
validate-model (registered metrics and holdout scores against them). A value that is NaN or infinite never
meets a condition.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

THRESHOLD_RE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(\.\d*)?([eE][-+]?\d+)?)\s*$")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
SHAPE = "must look like '>= 0.9' (one of >=, >, <=, <, ==)"


@dataclass(frozen=True)
class Threshold:
    op: str
    bound: float

    def met_by(self, value: float) -> bool:
        return math.isfinite(value) and OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


def parse(condition: object, metric: str = "the metric") -> Threshold:
    """The Threshold of a condition such as `">= 0.9"`; ValueError (naming `metric`) for anything else."""
    match = THRESHOLD_RE.match(condition) if isinstance(condition, str) else None
    if match is None:
        raise ValueError(f"threshold for {metric!r} {SHAPE}")
    return Threshold(match.group(1), float(match.group(2)))


def check_conditions(thresholds: Mapping[str, object]) -> None:
    """ValueError for the first condition of `thresholds` (metric -> condition) that is not one (a settings
    validator: pydantic turns it into the one-line ConfigError naming the key)."""
    for metric, condition in thresholds.items():
        parse(condition, metric)
