from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.assessment import UnparseableValue, parse_bounds, parse_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("32.5", 32.5),
        ("32.5dB", 32.5),
        (" 4.2 ", 4.2),
        ("-3", -3.0),
        ("0.31", 0.31),
        ("5 dB", 5.0),
        ("1e3", 1000.0),
        ("80%", 80.0),
    ],
)
def test_actual_values_parse_with_or_without_a_unit(text: str, value: float) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("[3.5, 5.5]", (3.5, 5.5)),
        ("(3.5,5.5)", (3.5, 5.5)),
        ("3.5~5.5", (3.5, 5.5)),
        ("3.5 ~ 5.5 dB", (3.5, 5.5)),
        ("3.5-5.5", (3.5, 5.5)),
        ("-5--1", (-5.0, -1.0)),
        (">=25", (25.0, None)),
        (">25", (25.0, None)),
        ("≥25dB", (25.0, None)),
        ("<=0.6", (None, 0.6)),
        ("<0.6", (None, 0.6)),
        ("40", (40.0, 40.0)),
    ],
)
def test_expected_ranges_give_their_bounds(
    text: str, bounds: tuple[float | None, float | None]
) -> None:
    assert parse_bounds(text) == bounds


@pytest.mark.parametrize("text", ["N/A", "", "abc", "nan", "inf", "[5, 3]", ">=", "3..5", "1e999"])
def test_strings_that_are_no_number_are_refused_not_guessed(text: str) -> None:
    with pytest.raises(UnparseableValue):
        parse_bounds(text)
    with pytest.raises(UnparseableValue):
        parse_value(text)


@given(st.text(max_size=30))
def test_any_string_gives_a_finite_number_or_a_clean_refusal(text: str) -> None:
    for parse in (parse_value, parse_bounds):
        try:
            result = parse(text)
        except UnparseableValue:
            continue
        numbers = result if isinstance(result, tuple) else (result,)
        assert all(n is None or math.isfinite(n) for n in numbers)
