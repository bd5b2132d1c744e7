"""The session's one finished smoke study: the shipped smoke spec run once through `taugate run` on the warm
cluster (SQLite MLflow, report). The `smoke_study` fixture of tests/conftest.py and the documentation's
sandbox (conftest.py at the repository root, whose items do not see tests/conftest.py's fixtures) share it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import SMOKE

_study: Path | None = None


def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished smoke study's folder, run on first call."""
    global _study
    if _study is None:
        from tests.support.cli import taugate

        study_dir = tmp_path_factory.mktemp("smoke") / "study"
        result = taugate("run", str(SMOKE), "--output", str(study_dir))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "8/8 trials finished" in result.stderr
        _study = study_dir
    return _study
