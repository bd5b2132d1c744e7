"""Named parts of a report and the documents that show them (analysis/report/parts.py)."""

from __future__ import annotations

import pytest

from analysis.report.parts import PartError, blocks, figures_of, fill, parts, relink, stale_blocks

REPORT = """# report

<!-- part: table -->

| a | b |
| --- | --- |
| 1 | 2 |

<!-- /part: table -->

text outside any part

<!-- part: figure -->
![front](figures/front.png)
<!-- /part: figure -->
"""

DOCUMENT = """# README

prose
<!-- recorded: paper#table -->
stale text
<!-- /recorded -->

more prose
<!-- recorded: paper#figure -->
<!-- /recorded -->
"""


def test_parts_are_the_marked_bodies_without_surrounding_blank_lines():
    found = parts(REPORT)
    assert found == {"table": "| a | b |\n| --- | --- |\n| 1 | 2 |\n", "figure": "![front](figures/front.png)\n"}
    assert figures_of(found["figure"]) == ["figures/front.png"]


def test_a_part_marked_twice_is_refused():
    with pytest.raises(PartError, match="'table' twice"):
        parts(REPORT + "<!-- part: table -->\nx\n<!-- /part: table -->\n")


def test_fill_replaces_every_block_and_keeps_the_prose():
    found = parts(REPORT)
    filled = fill(DOCUMENT, lambda study, part: relink(found[part], f"docs/results/{study}"))
    assert "stale text" not in filled
    assert "| 1 | 2 |" in filled and "prose\n" in filled and "more prose" in filled
    assert "![front](docs/results/paper/figures/front.png)" in filled
    assert [(b.study, b.part) for b in blocks(filled)] == [("paper", "table"), ("paper", "figure")]
    # filled once, nothing is stale; filling again changes nothing
    assert stale_blocks(filled, lambda study, part: relink(found[part], f"docs/results/{study}")) == []
    assert fill(filled, lambda study, part: relink(found[part], f"docs/results/{study}")) == filled


def test_stale_blocks_name_what_differs():
    found = parts(REPORT)
    stale = stale_blocks(DOCUMENT, lambda study, part: found[part])
    assert [(b.study, b.part) for b in stale] == [("paper", "table"), ("paper", "figure")]


def test_an_unclosed_block_is_refused_before_anything_is_replaced():
    with pytest.raises(PartError, match="2 `<!-- recorded: STUDY#PART -->` openings but 1 closed"):
        fill(DOCUMENT.replace("<!-- /recorded -->\n\nmore", "\nmore", 1), lambda study, part: "x\n")
