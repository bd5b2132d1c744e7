"""Named parts of a report, so that another document (the README) shows them verbatim, never hand-copied.

`report.md` marks a part as

    <!-- part: NAME -->
    ...
    <!-- /part: NAME -->

and a document shows the part NAME of the recorded run of the shipped spec STUDY between

    <!-- recorded: STUDY#NAME -->
    ...
    <!-- /recorded -->

`fill` replaces every such block's body with the part (figure links rewritten to the recorded run's folder);
`stale_blocks` lists the blocks whose body differs from what `fill` would write. A part marked in a template
but not rendered by a study (a section the study has no data for) is simply absent from its report.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from trainables.errors import TauGateError

PART = re.compile(r"<!-- part: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /part: (?P=name) -->", re.S)
BLOCK = re.compile(
    r"(?P<open><!-- recorded: (?P<study>[\w.-]+)#(?P<part>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /recorded -->)",
    re.S,
)
FIGURE_LINK = re.compile(r"\]\(figures/")


class PartError(TauGateError, ValueError):
    """A document names a part its recorded report does not have, or a block is malformed."""


@dataclass(frozen=True)
class Block:
    """One `<!-- recorded: STUDY#PART -->` block of a document."""

    study: str
    part: str
    body: str


def parts(markdown: str) -> dict[str, str]:
    """Every part of a report's markdown by name, its body stripped of surrounding blank lines."""
    found: dict[str, str] = {}
    for match in PART.finditer(markdown):
        name = match["name"]
        if name in found:
            raise PartError(f"the report marks the part {name!r} twice")
        found[name] = match["body"].strip("\n") + "\n"
    return found


def blocks(document: str) -> list[Block]:
    """Every recorded block of a document, in order."""
    opened = document.count("<!-- recorded: ")
    found = [Block(m["study"], m["part"], m["body"]) for m in BLOCK.finditer(document)]
    if len(found) != opened:
        raise PartError(f"{opened} `<!-- recorded: STUDY#PART -->` openings but {len(found)} closed blocks: each needs "
                        "its own `<!-- /recorded -->`")  # fmt: skip
    return found


def relink(body: str, folder: str) -> str:
    """The part with its figure links (`](figures/x.png)`) pointing into `folder` (the recorded run's, as the
    document reaches it)."""
    return FIGURE_LINK.sub(f"]({folder.rstrip('/')}/figures/", body)


def figures_of(body: str) -> list[str]:
    """The figure files (`figures/x.png`) a part links to."""
    return re.findall(r"\]\((figures/[^)\s]+)\)", body)


def fill(document: str, part_of: Callable[[str, str], str]) -> str:
    """`document` with every recorded block's body replaced by `part_of(study, part)`."""
    blocks(document)  # refuses unclosed blocks before anything is replaced
    return BLOCK.sub(lambda m: m["open"] + "\n" + part_of(m["study"], m["part"]) + "\n" + m["close"], document)


def stale_blocks(document: str, part_of: Callable[[str, str], str]) -> list[Block]:
    """The blocks whose body is not what `fill` writes."""
    return [b for b in blocks(document) if b.body != "\n" + part_of(b.study, b.part) + "\n"]
