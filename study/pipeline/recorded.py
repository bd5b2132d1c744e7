"""The documentation's measured numbers and figures, from the recorded runs of the shipped specs.

`record(study_dir, root)` keeps a finished study of a shipped spec (`configs/<name>.yaml`) as that spec's last
recorded run, `docs/results/<name>/`: its `report.md`, the figures the report's parts link to, `spec.yaml` (the
spec as run) and `run.json` (when it ran, at which commit, the command). `sync(root)` then rewrites every
`<!-- recorded: <name>#<part> -->` block of README.md and docs/*.md with that part of the recorded report
(`analysis.report.parts`), so a number or figure the README shows is the report's, never hand-copied.
`taugate readme STUDY...` does both; `drift(root)` lists what disagrees (a block that is not its part, a recorded
spec that is not the shipped one any more), which the test suite requires to be nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from analysis.report.parts import PartError, figures_of, fill, parts, relink, stale_blocks
from study.folder.metadata import load_study
from study.spec.loader import parse_spec
from study.spec.study_spec import StudySpec

RESULTS = Path("docs") / "results"
RUN_FILE, REPORT_FILE, SPEC_FILE = "run.json", "report.md", "spec.yaml"


def canonical(spec: StudySpec) -> str:
    """The spec as a study folder writes it (`spec.yaml`): equal for equal specs whatever their YAML's layout."""
    return yaml.safe_dump(spec.dump(), sort_keys=False)


def shipped_spec(spec: StudySpec, root: Path) -> Path:
    """The shipped spec (`configs/*.yaml` under `root`) that `spec` is, or a `PartError` naming the study's spec."""
    wanted = canonical(spec)
    for path in sorted((root / "configs").glob("*.yaml")):
        if canonical(parse_spec(yaml.safe_load(path.read_text()), source=str(path))) == wanted:
            return path
    raise PartError(f"the study's spec ({spec.name}) is none of the shipped specs in {root / 'configs'}: only a run of "
                    "a shipped spec, unchanged, can be recorded for the documentation")  # fmt: skip


def record(study_dir: Path, root: Path) -> Path:
    """Keep `study_dir` (finished, with its current `report/report.md`) as its shipped spec's recorded run."""
    spec, study = load_study(study_dir)
    spec_file = shipped_spec(spec, root)
    report = (study_dir / "report" / REPORT_FILE).read_text(encoding="utf-8")
    found = parts(report)
    if not found:
        raise PartError(
            f"{study_dir / 'report' / REPORT_FILE} marks no part: write it with this version (`taugate report`)"
        )
    out = root / RESULTS / spec_file.stem
    if out.exists():
        shutil.rmtree(out)
    (out / "figures").mkdir(parents=True)
    for figure in sorted({f for body in found.values() for f in figures_of(body)}):
        shutil.copyfile(study_dir / "report" / figure, out / figure)
    (out / REPORT_FILE).write_text(report, encoding="utf-8")
    (out / SPEC_FILE).write_text(canonical(spec), encoding="utf-8")
    metadata = json.loads((study_dir / "report" / "metadata.json").read_text())
    run: dict[str, Any] = {
        "spec": spec_file.relative_to(root).as_posix(),
        "command": f"taugate run {spec_file.relative_to(root).as_posix()}",
        "study": study["name"],
        "created": study["created"],
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": study.get("environment", {}).get("git_commit"),
        "machine": study.get("environment", {}).get("machine"),
        "trials_planned": study["trials_planned"],
        "wall_seconds": metadata.get("wall time (s)"),
        "parts": sorted(found),
    }
    (out / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    return out


def documents(root: Path) -> list[Path]:
    """README.md and every markdown file under docs/ except the recorded runs themselves."""
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file() and RESULTS not in p.relative_to(root).parents]


def part_reader(root: Path, document: Path):
    """`part_of(study, part)` for `document`: the recorded part, its figure links relative to the document."""
    cache: dict[str, dict[str, str]] = {}

    def part_of(study: str, part: str) -> str:
        if study not in cache:
            report = root / RESULTS / study / REPORT_FILE
            if not report.is_file():
                raise PartError(f"{document.name} shows {study}#{part} but {report} does not exist: record a run of "
                                f"configs/{study}.yaml (`taugate readme STUDY`)")  # fmt: skip
            cache[study] = parts(report.read_text(encoding="utf-8"))
        if part not in cache[study]:
            raise PartError(f"{document.name} shows {study}#{part} but the recorded report of {study} has no part "
                            f"{part!r} (it has: {', '.join(sorted(cache[study])) or 'none'})")  # fmt: skip
        folder = os.path.relpath(root / RESULTS / study, document.parent)
        return relink(cache[study][part], Path(folder).as_posix())

    return part_of


def sync(root: Path) -> dict[Path, int]:
    """Rewrite every recorded block of the documentation; returns the number of blocks changed per document."""
    changed: dict[Path, int] = {}
    for document in documents(root):
        text = document.read_text(encoding="utf-8")
        part_of = part_reader(root, document)
        stale = stale_blocks(text, part_of)
        if stale:
            document.write_text(fill(text, part_of), encoding="utf-8")
            changed[document] = len(stale)
    return changed


def drift(root: Path) -> list[str]:
    """Every disagreement between the documentation and the recorded runs, and between a record and its spec."""
    problems: list[str] = []
    for document in documents(root):
        part_of = part_reader(root, document)
        try:
            stale = stale_blocks(document.read_text(encoding="utf-8"), part_of)
        except PartError as error:
            problems.append(str(error))
            continue
        problems += [f"{document.name}: the block {b.study}#{b.part} differs from the recorded report "
                     "(`taugate readme` rewrites it)" for b in stale]  # fmt: skip
    for run_file in sorted((root / RESULTS).glob(f"*/{RUN_FILE}")):
        run = json.loads(run_file.read_text())
        shipped = root / run["spec"]
        recorded = (run_file.parent / SPEC_FILE).read_text(encoding="utf-8")
        if not shipped.is_file():
            problems.append(f"{run_file}: its spec {run['spec']} is no longer shipped")
        elif canonical(parse_spec(yaml.safe_load(shipped.read_text()), source=str(shipped))) != recorded:
            problems.append(f"{run['spec']} changed since its recorded run ({run['created']}): rerun it and record it "
                            f"(`{run['command']} --output DIR`, then `taugate readme DIR`)")  # fmt: skip
    return problems
