"""Numbers out of the free-form strings clouds use for assessment values and expected ranges.

MetaStudio documents `expected` and `actual` only as strings; what we have seen and accept:
"32.5", "32.5dB", "-3", "[3.5, 5.5]", "(3.5,5.5)", "3.5~5.5", "3.5-5.5", ">=25", ">25", "<=0.6",
"≥25", "≤0.6". A string that matches none of these is an error the caller counts, not a guess.
"""

from __future__ import annotations

import functools
import math
import re

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_UNIT = r"\s*(?:[A-Za-z%/]+)?"
_VALUE = re.compile(rf"^\s*({_NUMBER}){_UNIT}\s*$")
_INTERVAL = re.compile(rf"^\s*[\[(]\s*({_NUMBER}){_UNIT}\s*,\s*({_NUMBER}){_UNIT}\s*[\])]\s*$")
_RANGE = re.compile(rf"^\s*({_NUMBER}){_UNIT}\s*(?:~|\uff5e|-|\u2013|to)\s*({_NUMBER}){_UNIT}\s*$")
_BOUND = re.compile(rf"^\s*(>=|=>|≥|>|<=|=<|≤|<)\s*({_NUMBER}){_UNIT}\s*$")


class UnparseableValue(ValueError):
    """The string is present but is not a number or range we understand."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnparseableValue(text)
    return value


# Ranges and values repeat across jobs and polls: the same few strings are parsed again and
# again (5 % of a poll's CPU at 10,000 jobs). Bounded, and only successes are kept.
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def parse_value(text: str) -> float:
    """A single measured value, unit suffix allowed ("32.5dB")."""
    match = _VALUE.match(text)
    if not match:
        raise UnparseableValue(text)
    return _finite(match.group(1))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def parse_bounds(text: str) -> tuple[float | None, float | None]:
    """(min, max) of an expected range; an open side is None. A lone number is both bounds."""
    if match := _INTERVAL.match(text) or _RANGE.match(text):
        low, high = _finite(match.group(1)), _finite(match.group(2))
        if low > high:
            raise UnparseableValue(text)
        return low, high
    if match := _BOUND.match(text):
        op, value = match.group(1), _finite(match.group(2))
        return (value, None) if op in {">=", "=>", "≥", ">"} else (None, value)
    value = parse_value(text)
    return value, value
