"""Shared fixtures: small, fast trial configs on the bundled data."""

from __future__ import annotations

import pytest

from trainables.config import parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.train import train_foundation

# One epoch per stage keeps trials to a fraction of a second while exercising every path.
FAST = {"foundation_epochs": 1, "epochs": 1, "device": "cpu"}


@pytest.fixture(scope="session")
def modes():
    return load_modes(parse_config(FAST), resolve_device("cpu"))


@pytest.fixture(scope="session")
def foundation(modes):
    return train_foundation(parse_config({**FAST, "seed": 0}), modes)
