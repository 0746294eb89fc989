"""hpsearch.tables: one way to format a value, for the terminal and for markdown."""

from __future__ import annotations

import math

from hpsearch.tables import MISSING, fmt, markdown_table, text_table


def test_fmt_numbers_missing_and_words():
    assert fmt(0.123456, ".3f") == "0.123"
    assert fmt(4, "d") == "4"
    assert fmt(4.5, "d") == "4.5"  # an integer spec for a float falls back to .4g
    assert fmt(None) == MISSING
    assert fmt(True) == "True"  # a bool is not formatted as the number 1
    assert fmt(math.nan) == "nan" and fmt(math.inf) == "inf"
    assert fmt("lp_ft") == "lp_ft"


def test_text_table_right_aligns_columns():
    out = text_table([("trial", "acc"), ("7", "0.8123"), ("12", "0.7")])
    assert out.splitlines() == ["trial     acc", "    7  0.8123", "   12     0.7"]


def test_markdown_table_lines():
    assert markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
