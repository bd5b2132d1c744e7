"""Reference tables: what a study's numbers are compared with (the paper's table, or a user's).

A reference is a small YAML file: its name, the baseline method that differences are taken
from (the paper's: frozen), and per method a label, optionally its trainable parameter count
and the configuration settings the row stands for (LoRA at rank 8), and its cells
`{metric: {mean, std}}`. The paper's own table ships as `references/paper.yaml` and goes
through the same loader as a user's file, so there is one source for its numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.table.results import SYMBOLS, format_value, is_accuracy, is_metric, is_missing
from analysis.table.study_modes import DEFAULT_TARGET, PREFERRED_RETENTION, StudyModes, degrees
from trainables.config import VALIDATION_PREFIX
from trainables.errors import TauGateError

REFERENCES = Path(__file__).parents[1] / "references"  # analysis/references: the package data


class ReferenceError(TauGateError, ValueError):
    """An unreadable or invalid reference file. The message names the offending field."""


class Cell(BaseModel):
    """One number of the reference: a seed mean and, when the source gives it, the seed std."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float | None = Field(None, ge=0)

    @field_validator("mean")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ReferenceMethod(BaseModel):
    """One row of the reference table."""

    model_config = ConfigDict(extra="forbid")

    label: str
    trainable_params: int | None = Field(None, ge=0)
    settings: dict[str, Any] = Field(default_factory=dict, description="config values the row stands for")
    cells: dict[str, Cell] = Field(default_factory=dict)

    @field_validator("cells")
    @classmethod
    def _metric_names(cls, cells: dict[str, Cell]) -> dict[str, Cell]:
        for metric in cells:
            if metric.startswith(VALIDATION_PREFIX) or not is_metric(metric):
                raise ValueError(f"{metric!r} is not a test metric name (e.g. acc_45, high_activation_ratio)")
        return cells


class Reference(BaseModel):
    """A reference table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = ""
    baseline: str
    # the modes its accuracies are for: its cells apply to a study with the same target and original angles
    target_angle: float = DEFAULT_TARGET
    retention_angle: float = PREFERRED_RETENTION
    methods: dict[str, ReferenceMethod] = Field(min_length=1)

    @model_validator(mode="after")
    def _baseline_is_a_method(self) -> Reference:
        if self.baseline not in self.methods:
            raise ValueError(f"baseline: {self.baseline!r} is not one of methods ({', '.join(self.methods)})")
        return self

    def accuracy_metrics(self) -> list[str]:
        """The accuracy metrics the reference has, in first-seen order (acc_0, acc_45 for the paper)."""
        names = [m for row in self.methods.values() for m in row.cells if is_accuracy(m)]
        return list(dict.fromkeys(names))

    def cell(self, method: str, metric: str) -> Cell | None:
        row = self.methods.get(method)
        return row.cells.get(metric) if row else None

    def label_for(self, method: str, ours: Mapping[str, Any] | None = None) -> str:
        """The row's label, or, when our representative `ours` (its config values) differs from
        the settings the row stands for, both: "LoRA (ours r=4; paper r=8)"."""
        row = self.methods[method]
        if ours is None:
            return row.label
        differing = [k for k, v in row.settings.items() if k in ours and not _same(ours[k], v)]
        if not differing:
            return row.label
        name = re.sub(r"\s*\(.*\)$", "", row.label) or row.label

        def knobs(values: Mapping[str, Any]) -> str:
            return " ".join(f"{SYMBOLS.get(k, k)}={'none' if is_missing(values[k]) else format_value(values[k])}"
                            for k in differing)  # fmt: skip

        return f"{name} (ours {knobs(ours)}; {self.name} {knobs(row.settings)})"

    def settings(self) -> dict[str, dict[str, Any]]:
        """The settings each method's row stands for (for `analysis.aggregate.stats.representatives`)."""
        return {method: row.settings for method, row in self.methods.items() if row.settings}


def _same(ours: Any, theirs: Any) -> bool:
    try:
        return float(ours) == float(theirs)
    except (TypeError, ValueError):
        return str(ours) == str(theirs)


def load_reference(name_or_path: str | Path) -> Reference:
    """A shipped reference by name ("paper") or a YAML file by path; `ReferenceError` naming
    the field when the file is invalid."""
    path = Path(name_or_path)
    if not path.suffix and (REFERENCES / f"{name_or_path}.yaml").is_file():
        path = REFERENCES / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in REFERENCES.glob("*.yaml")))
        raise ReferenceError(f"reference {str(name_or_path)!r}: no such file, and not a shipped one ({shipped})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ReferenceError(f"reference {path}: not valid YAML ({err})") from err
    try:
        return Reference.model_validate(raw)
    except ValidationError as err:
        raise ReferenceError(f"reference {path}: {_problems(err)}") from err


def _problems(err: ValidationError) -> str:
    """`methods.taugate.cells.acc_45.mean: Input should be a valid number`, one per problem."""
    problems = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "file"
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {'unknown field' if problem['type'] == 'extra_forbidden' else message}")
    return "; ".join(problems)


PAPER = load_reference("paper")


def reference_mismatch(reference: Reference, modes: StudyModes, brief: bool = False) -> str:
    """Empty when the reference's angles are the study's; else why its numbers do not apply
    (`brief`: just the angles, for a table cell)."""
    if (reference.target_angle, reference.retention_angle) == (modes.target, modes.retention):
        return ""
    if brief:
        return (
            f"the reference {reference.name} is at {degrees(reference.target_angle)} (original "
            f"{degrees(reference.retention_angle)}); this study targets {degrees(modes.target)} "
            f"(original {degrees(modes.retention)})"
        )
    return (
        f"The reference {reference.name} reports the target mode at {degrees(reference.target_angle)} and the "
        f"original mode at {degrees(reference.retention_angle)}; this study targets {degrees(modes.target)} "
        f"(original mode {degrees(modes.retention)}), so the reference's numbers are not set beside ours and "
        f"its claims are not checked. Pareto fronts, sensitivity, statistics, significance and interpretability "
        f"are at this study's angles."
    )
