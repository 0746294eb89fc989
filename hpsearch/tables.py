"""Tables for people: one way to format a value, as a terminal table or as markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MISSING = "–"  # a value a trial did not record


def fmt(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec`` when it is a number; None as ``MISSING``; NaN and
    infinities and booleans as words; anything else as ``str``."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        try:
            return format(value, spec)
        except ValueError:  # an integer spec for a float, say
            return format(float(value), ".4g")
    return str(value)


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns for a terminal; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


NAMES_SHOWN = 10  # names a one-line message lists before "... and N more"
NAME_CHARS = 40  # characters of a name such a message shows


def short_name(name: str) -> str:
    """A name as a one-line message shows it: cut to NAME_CHARS characters."""
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def name_list(names: list[str]) -> str:
    """Names (of studies) for a one-line message: at most NAMES_SHOWN, each cut to NAME_CHARS,
    then how many more there are; ``(none)`` for none."""
    if not names:
        return "(none)"
    shown = ", ".join(short_name(n) for n in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")
