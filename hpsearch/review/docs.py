"""The metric reference in ``docs/metrics.md``, generated from the tables the code writes by.

    python -m hpsearch.review.docs            # rewrite the generated tables in docs/metrics.md
    python -m hpsearch.review.docs --check    # exit 1 when they differ from the code

Each table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and is rendered from
one mapping of name -> meaning (``TABLES``): the trial user attrs (``METRICS``), the ones only
some trials write (``INCIDENT_ATTRS``: a failure's reason, a missed checkpoint), the energy
pruner's gate decision (``DECISION_ATTRS``) and the bound's study user attrs (``BOUND_ATTRS``).
The text around the tables is written by hand and left as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpsearch.pruners import DECISION_ATTRS
from hpsearch.record import INCIDENT_ATTRS
from hpsearch.study.bound import BOUND_ATTRS
from hpsearch.trial.records import METRICS

METRICS_MD = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

# region name -> (header of the name column, name -> meaning)
TABLES: dict[str, tuple[str, Mapping[str, str]]] = {
    "metrics": ("trial user attr", METRICS),
    "incidents": ("trial user attr", INCIDENT_ATTRS),
    "gate": ("trial user attr", DECISION_ATTRS),
    "bound": ("study user attr", BOUND_ATTRS),
}


def markdown_table(name_header: str, rows: Mapping[str, str]) -> str:
    """A two-column markdown table, names as code; ``|`` in a meaning is escaped."""
    lines = [f"| {name_header} | meaning |", "|---|---|"]
    for name, meaning in rows.items():
        cell = meaning.replace("|", "\\|")  # a bare | would end the cell
        lines.append(f"| `{name}` | {cell} |")
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def render(text: str, tables: Mapping[str, tuple[str, Mapping[str, str]]] = TABLES) -> str:
    """``text`` with every named region replaced by its rendered table.

    Raises ValueError when a region's markers are missing, repeated or out of order.
    """
    for name, (header, rows) in tables.items():
        start, end = _markers(name)
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ValueError(f"needs exactly one {start} followed by one {end}")
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
        block = f"{start}\n{markdown_table(header, rows)}\n{end}"
        text = pattern.sub(lambda _, block=block: block, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpsearch.review.docs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--path", type=Path, default=METRICS_MD, help="the page to update")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare: exit 1 when the page's tables are out of date",
    )
    args = parser.parse_args(argv)
    try:
        text = args.path.read_text(encoding="utf-8")
        expected = render(text)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else err
        print(f"hpsearch.review.docs: error: {args.path}: {reason}", file=sys.stderr)
        return 2
    if expected == text:
        return 0
    if args.check:
        print(f"{args.path} is out of date: run python -m hpsearch.review.docs", file=sys.stderr)
        return 1
    args.path.write_text(expected, encoding="utf-8")
    print(f"updated {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
