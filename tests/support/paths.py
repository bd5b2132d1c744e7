"""Where the repository's files are, for tests at any depth of tests/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository
CONFIGS = ROOT / "configs"  # the shipped study specs
SMOKE = CONFIGS / "smoke.yaml"
