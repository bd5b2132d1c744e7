"""The documentation's numbers and figures come from recorded runs of the shipped specs (`taugate readme`).

The README shows parts of recorded reports (docs/results/<spec>/report.md) between `<!-- recorded: SPEC#PART -->`
markers. The first test is the drift check of the repository itself: every block equals its recorded part, and
every recorded run's spec is the shipped spec as it is now. The others run `taugate readme` on a real finished
study (the session's smoke study, a copy) in a scratch project folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from analysis.report.parts import blocks, parts
from study.pipeline.recorded import RESULTS, drift
from tests.support.cli import taugate
from tests.support.paths import CONFIGS, ROOT


def test_the_readme_shows_the_recorded_runs_of_the_shipped_specs():
    assert drift(ROOT) == []
    shown = {(b.study, b.part) for b in blocks((ROOT / "README.md").read_text())}
    assert {study for study, _ in shown} >= {"paper", "sparsity", "modes", "modes-sparse"}
    for study in {study for study, _ in shown}:
        run = json.loads((ROOT / RESULTS / study / "run.json").read_text())
        assert run["spec"] == f"configs/{study}.yaml" and run["command"] == f"taugate run configs/{study}.yaml"


@pytest.fixture
def project(tmp_path: Path, smoke_study: Path) -> tuple[Path, Path]:
    """A scratch project folder (configs/, a README showing smoke parts) and a copy of the smoke study."""
    root = tmp_path / "project"
    shutil.copytree(CONFIGS, root / "configs")
    (root / "README.md").write_text(
        "# scratch\n\nThe table:\n<!-- recorded: smoke#results -->\n<!-- /recorded -->\n\n"
        "The claims:\n<!-- recorded: smoke#claims -->\nold numbers\n<!-- /recorded -->\n"
    )
    study = tmp_path / "smoke-copy"
    shutil.copytree(smoke_study, study)
    return root, study


def test_readme_records_the_study_and_rewrites_the_blocks(project):
    root, study = project
    result = taugate("readme", str(study), "--root", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "README.md: 2 block(s) rewritten" in result.stderr
    recorded = root / RESULTS / "smoke"
    report = (study / "report" / "report.md").read_text()
    assert (recorded / "report.md").read_text() == report  # the report as written by this version
    run = json.loads((recorded / "run.json").read_text())
    assert run["spec"] == "configs/smoke.yaml" and run["trials_planned"] == 8
    assert run["created"] == json.loads((study / "study.json").read_text())["created"]
    assert {"results", "claims", "fidelity-score"} <= set(run["parts"])
    readme = (root / "README.md").read_text()
    shown = {b.part: b.body for b in blocks(readme)}
    assert shown["results"] == "\n" + parts(report)["results"] + "\n"
    assert "old numbers" not in readme and "| Frozen (no adapt) |" in shown["results"]
    assert "**reproduced**" in shown["claims"] or "**not reproduced**" in shown["claims"]
    assert drift(root) == []
    again = taugate("readme", str(study), "--root", str(root))  # nothing changed: nothing rewritten
    assert again.returncode == 0 and "rewritten" not in again.stderr


def test_drift_names_a_hand_edited_block_and_a_changed_spec(project):
    root, study = project
    assert taugate("readme", str(study), "--root", str(root)).returncode == 0
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("| Frozen (no adapt) |", "| Frozen (hand-edited) |", 1))
    spec = yaml.safe_load((root / "configs" / "smoke.yaml").read_text())
    (root / "configs" / "smoke.yaml").write_text(yaml.safe_dump(spec | {"seeds": [0, 1, 2]}))
    problems = drift(root)
    assert any("README.md: the block smoke#results differs" in p for p in problems)
    assert any("configs/smoke.yaml changed since its recorded run" in p for p in problems)
    assert not any("smoke#claims" in p for p in problems)


def test_a_study_of_no_shipped_spec_or_a_missing_part_is_refused_and_nothing_is_written(project):
    root, study = project
    (root / "configs" / "smoke.yaml").unlink()  # the study's spec is no longer shipped
    before = (root / "README.md").read_text()
    refused = taugate("readme", str(study), "--root", str(root))
    assert refused.returncode == 2 and "is none of the shipped specs" in refused.stderr
    assert not (root / RESULTS).exists() and (root / "README.md").read_text() == before
    shutil.copyfile(CONFIGS / "smoke.yaml", root / "configs" / "smoke.yaml")
    (root / "README.md").write_text(before + "<!-- recorded: smoke#no-such-part -->\n<!-- /recorded -->\n")
    missing = taugate("readme", str(study), "--root", str(root))
    assert missing.returncode == 2 and "has no part 'no-such-part'" in missing.stderr
    assert "old numbers" in (root / "README.md").read_text()  # no block rewritten
