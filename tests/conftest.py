"""Shared fixtures: small, fast trial configs on the bundled data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from study.cluster.head import ensure_auth_token
from trainables.config import parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import train_foundation

# Ray's token authentication stays on. This process's drivers join the session's warm cluster
# (tests/support/warm.py): Ray reads the mode and caches the token when first imported, so both are in
# place before any test module imports Ray (a fresh machine has no ~/.ray/auth_token yet).
os.environ["RAY_AUTH_MODE"] = "token"
ensure_auth_token()

# One epoch per stage keeps trials to a fraction of a second while exercising every path.
FAST = {"foundation_epochs": 1, "epochs": 1, "device": "cpu"}


@pytest.fixture(scope="session")
def modes():
    return load_modes(parse_config(FAST), resolve_device("cpu"))


@pytest.fixture(scope="session")
def foundation(modes):
    return train_foundation(parse_config({**FAST, "seed": 0}), modes)


SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """The session's warm Ray cluster stops with the session: passed, failed or Ctrl-C'd."""
    from tests.support import warm

    warm.stop()


@pytest.fixture(scope="session")
def warm_cluster():
    """The session's warm loopback Ray cluster (tests/support/warm.py), which in-process studies join."""
    from tests.support.warm import cluster

    return cluster()


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> Path:
    """The shipped smoke spec run once through `taugate run` on the warm cluster (SQLite MLflow, report);
    the documentation's tests (conftest.py at the root) read the same study (tests/support/smoke.py)."""
    from tests.support.smoke import smoke_study as finished

    return finished(tmp_path_factory)


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file() or not os.access(binary, os.X_OK):
            pytest.fail(
                f"{binary} is missing: install it with `apt-get install -y chromium chromium-driver` ({package})"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2400",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
