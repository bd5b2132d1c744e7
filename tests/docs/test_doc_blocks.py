"""The documentation's blocks are tests (conftest.py at the root, tests/support/docs.py); these checks keep a block
from escaping them: a fence in a language sybil does not run, or a skip without its reason."""

from __future__ import annotations

import ast
import re

import pytest
from sybil import Document
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer

from tests.support.docs import DOCS, RUN_LANGUAGES, SHOWN_LANGUAGES
from tests.support.paths import ROOT

DOCUMENTS = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] if DOCS.should_parse(p))


def test_the_documents_are_the_readme_and_docs() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCUMENTS}
    assert {"README.md", "docs/paper.md"} <= names
    assert not DOCS.should_parse(ROOT / "docker" / "README.md")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fence_is_run_or_only_shown(path) -> None:
    document = Document(path.read_text(), str(path))
    fences = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE))(document)
    languages = [(region.lexemes["info"].strip().split() or [""])[0] for region in fences]
    assert languages, f"{path}: no fenced blocks found"
    unknown = sorted(set(languages) - set(RUN_LANGUAGES) - set(SHOWN_LANGUAGES))
    assert not unknown, f"{path}: fences in {unknown} are neither run nor marked as output (```text)"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_skipped_block_says_why(path) -> None:
    document = Document(path.read_text(), str(path))
    for region in DirectiveInHTMLCommentLexer("skip")(document):
        action, _, reason = region.lexemes["arguments"].partition(" ")
        assert action == "next", f'{path}: skip {action!r}: skip blocks one at a time (`skip: next "why"`)'
        assert isinstance(ast.literal_eval(reason.strip() or "None"), str) and len(reason) > 20, (
            f"{path}: `skip: next` without its reason (which test runs the same path, or why none can)"
        )
