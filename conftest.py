"""The documentation's code blocks are tests: sybil collects README.md and docs/*.md (pyproject's testpaths name
them), and every python, bash and yaml block runs in a sandbox of small finished studies, or is skipped with
its reason (tests/support/docs.py). The rest of the suite's fixtures are in tests/conftest.py."""

from __future__ import annotations

import sys

import pytest

from tests.support.docs import DOCS, SANDBOX_FIXTURE, sandbox

pytest_collect_file = DOCS.pytest()


@pytest.fixture(scope="session", name=SANDBOX_FIXTURE)
def docs_sandbox(tmp_path_factory: pytest.TempPathFactory):
    return sandbox(tmp_path_factory)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """The session's warm Ray cluster stops with the session, also when only the documentation ran."""
    if "tests.support.warm" in sys.modules:
        sys.modules["tests.support.warm"].stop()
