"""The documentation stays true to the code.

docs/metrics.md's tables are generated from the code's own tables of user attrs (a changed
meaning or a new metric fails here until ``python -m hpsearch.review.docs`` is rerun), every
relative link in README.md and docs/*.md reaches an existing file and heading, and every
repository path the pages name exists (so the package map cannot drift from the layout).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO

from hpsearch.pruners import DECISION_ATTRS
from hpsearch.record import INCIDENT_ATTRS
from hpsearch.review import docs
from hpsearch.study.bound import BOUND_ATTRS
from hpsearch.trial.records import METRICS

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")  # may wrap a line, not a paragraph
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# A path in the repository as the pages write it: hpsearch/trial/records.py, conf/schedule/;
# not a pattern with a placeholder in capitals (conf/experiment/NAME.yaml).
REPO_PATH = re.compile(r"^(?:hpsearch|conf|benchmarks|tests|docs|\.ci)/[\w./-]*$")
PLACEHOLDER = re.compile(r"(?:^|/)[A-Z]+(?:\.\w+)?(?:/|$)")


def _table_rows(text: str, region: str) -> dict[str, str]:
    """name -> meaning of the table between a region's markers, as a reader sees it."""
    start, end = f"<!-- {region}:start -->", f"<!-- {region}:end -->"
    body = text[text.index(start) + len(start) : text.index(end)]
    rows = {}
    for line in body.strip().splitlines()[2:]:  # header and separator first
        match = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line)
        assert match, f"not a table row: {line!r}"
        rows[match.group(1)] = match.group(2).replace("\\|", "|")
    return rows


def test_metrics_page_matches_the_code() -> None:
    text = docs.METRICS_MD.read_text(encoding="utf-8")
    assert docs.render(text) == text, "docs/metrics.md is stale: run python -m hpsearch.review.docs"


@pytest.mark.parametrize(
    "region, attrs",
    [
        ("metrics", METRICS),
        ("incidents", INCIDENT_ATTRS),
        ("gate", DECISION_ATTRS),
        ("bound", BOUND_ATTRS),
    ],
)
def test_metrics_page_lists_every_attr_with_its_meaning(region: str, attrs: dict) -> None:
    rows = _table_rows(docs.METRICS_MD.read_text(encoding="utf-8"), region)
    assert list(rows) == list(attrs)
    assert rows == attrs


def test_render_rewrites_only_the_marked_regions() -> None:
    text = (
        "# Page\n\nhand-written | text\n\n<!-- x:start -->\n| stale | row |\n<!-- x:end -->\n"
        "\nafter\n"
    )
    tables = {"x": ("user attr", {"a": "one", "b": "mean ||z||"})}
    out = docs.render(text, tables)
    assert out == (
        "# Page\n\nhand-written | text\n\n<!-- x:start -->\n| user attr | meaning |\n"
        "|---|---|\n| `a` | one |\n| `b` | mean \\|\\|z\\|\\| |\n<!-- x:end -->\n"
        "\nafter\n"
    )
    assert docs.render(out, tables) == out


@pytest.mark.parametrize(
    "text",
    [
        "no markers",
        "<!-- x:start -->",
        "<!-- x:end -->\n<!-- x:start -->",
        "<!-- x:start --><!-- x:end --><!-- x:start --><!-- x:end -->",
    ],
)
def test_render_rejects_missing_or_misplaced_markers(text: str) -> None:
    with pytest.raises(ValueError, match="<!-- x:start -->"):
        docs.render(text, {"x": ("user attr", {"a": "one"})})


def test_cli_checks_and_rewrites_a_stale_page(tmp_path: Path, capsys) -> None:
    page = tmp_path / "metrics.md"
    current = docs.METRICS_MD.read_text(encoding="utf-8")
    stale = current.replace("| `energy` |", "| `energy_old` |")
    assert stale != current
    page.write_text(stale, encoding="utf-8")

    assert docs.main(["--check", "--path", str(page)]) == 1
    assert page.read_text(encoding="utf-8") == stale  # --check never writes
    assert "out of date" in capsys.readouterr().err
    assert docs.main(["--path", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == current
    assert docs.main(["--check", "--path", str(page)]) == 0
    assert docs.main(["--check", "--path", str(tmp_path / "missing.md")]) == 2
    assert "No such file" in capsys.readouterr().err


def _prose(text: str) -> str:
    """The text outside code blocks and code spans, where links are links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -N repeats."""
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_existing_files_and_headings(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(REPO) or not dest.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_paths_named_in_the_pages_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    words = " ".join(CODE_SPAN.findall(FENCE.sub("", text)) + FENCE.findall(text)).split()
    named = {
        w
        for w in (w.strip("'\"") for w in words)
        if REPO_PATH.match(w) and not PLACEHOLDER.search(w)
    }
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"{page.name} names paths that do not exist: {', '.join(missing)}"
