"""Calibration: the protocol the paper leaves open, chosen on the baselines, and the study it leads to.

A spec with a `calibrate:` block and a protocol grid is a calibration study: when it has run, the
protocol whose *validation* fidelity to the reference table is best over the fitted methods (every
reference method but the held-out ones, `analysis.reproduction.fidelity.choose_protocol`) is chosen, and
`<study>/calibrated.yaml` is written: the same study with that protocol fixed, changed as the
block's `next:` says (the paper's five seeds, TauGate's lambda sweep). `taugate run` on it is the
second of the two commands; its report shows the held-out methods as out-of-sample predictions.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from study.commands import shell_command
from study.folder.filenames import STUDY_FILE
from study.spec.loader import parse_spec
from study.spec.plan import protocols
from study.spec.study_spec import StudySpec

CALIBRATED_SPEC = "calibrated.yaml"


def report_settings(spec: StudySpec) -> dict[str, Any] | None:
    """The `calibration` argument of `analysis.report.document.write_report` (None without a block)."""
    if spec.calibrate is None:
        return None
    block = spec.calibrate
    return {"reference": block.reference, "held_out": list(block.held_out),
            "sparsity_target": block.sparsity_target, "sparsity_tolerance": block.sparsity_tolerance}  # fmt: skip


def calibrated_spec(spec: StudySpec, protocol: dict[str, Any]) -> StudySpec:
    """`spec` with the chosen protocol as its single values and the `next:` changes applied."""
    raw = spec.dump()
    nxt = spec.calibrate.next if spec.calibrate else None
    raw.pop("protocol", None)
    raw["foundation"]["epochs"] = int(protocol["foundation_epochs"])
    raw["epochs"] = int(protocol["epochs"])
    raw["lr_scale"] = float(protocol["lr_scale"])
    raw["batch_size"] = int(protocol["batch_size"])
    raw["name"] = (nxt.name if nxt and nxt.name else None) or f"{spec.name}-calibrated"
    if nxt and nxt.seeds:
        raw["seeds"] = list(nxt.seeds)
    if nxt:
        added = {name: method.model_dump(mode="json", exclude_none=True) for name, method in nxt.methods.items()}
        raw["methods"] |= added
    raw["calibrate"].pop("next", None)
    raw.pop("experiment_name", None)  # the next study is its own MLflow experiment
    raw.pop("storage_path", None)
    return parse_spec(raw, source=CALIBRATED_SPEC)


def calibrate_study(study_dir: Path, spec: StudySpec) -> tuple[dict[str, Any], Path] | None:
    """Choose the protocol of a finished calibration study and write `calibrated.yaml` beside it;
    None when the spec calibrates nothing (no block or a single protocol) or nothing finished."""
    if spec.calibrate is None or len(protocols(spec)) < 2:
        return None
    from analysis.aggregate.stats import seed_statistics
    from analysis.reproduction.fidelity import choose_protocol
    from analysis.table.load import load_tune

    df = load_tune(study_dir)
    if df.empty:
        return None
    choice = choose_protocol(seed_statistics(df), spec.calibrate.reference, held_out=spec.calibrate.held_out)
    if choice.protocol is None:
        return None
    protocol = {name: _plain(value) for name, value in choice.protocol.items()}
    path = Path(study_dir).resolve() / CALIBRATED_SPEC
    command = next_command(path, study_dir, spec)
    body = yaml.safe_dump(calibrated_spec(spec, protocol).dump(exclude_none=True), sort_keys=False)
    header = (f"# Written by the calibration study {spec.name}: the protocol chosen on validation fidelity to the\n"
              f"# reference ({spec.calibrate.reference}) over {', '.join(choice.fitted)}; held out: "
              f"{', '.join(spec.calibrate.held_out) or 'none'}.\n# Run it with: {command}\n")  # fmt: skip
    path.write_text(header + body)
    return protocol, path


def next_command(path: Path, study_dir: Path, spec: StudySpec, tracking_uri: str | None = None) -> str:
    """`taugate run` on the calibrated spec, as the `next:` line prints it: it runs pasted anywhere. The
    spec's absolute path; `--address` of the cluster this driver joined (the study's Ray connection is kept
    after a study on a cluster, a local Ray is gone by now); `--tracking-uri` when the calibration logged
    elsewhere than its own SQLite store and the calibrated spec does not name that store itself."""
    from study.tracking.mlflow_store import absolute_sqlite, tracking_options

    words = ["taugate", "run", str(Path(path).resolve())]
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        words += ["--address", ray.get_runtime_context().gcs_address]
    recorded = None  # the store `taugate run --tracking-uri` (or the spec) named, kept in study.json
    with contextlib.suppress(OSError, ValueError, AttributeError):
        recorded = json.loads((Path(study_dir) / STUDY_FILE).read_text()).get("tracking_uri")
    tracking = tracking_options(study_dir, tracking_uri, recorded)
    if tracking and tracking[1] != absolute_sqlite(spec.tracking_uri):  # the calibrated spec names no other store
        words += tracking
    return shell_command(*words)


def _plain(value: Any) -> Any:
    """numpy scalars from the statistics table as plain numbers (YAML and JSON safe)."""
    return value.item() if hasattr(value, "item") else value
