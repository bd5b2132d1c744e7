"""The study's modes: the angle it specialises to (target) and the one whose retention it reports.

Both are read from the results table, never assumed: the target from the `target_angle` config
column (one value per study), the retention angle from the accuracy columns the trials wrote
(`acc_<angle>`, see `trainables.config.accuracy_name`): the study's other evaluated angle, 0
when it has it. A table from before `target_angle` was recorded falls back to the trial
contract's default and says so. A reference table (the paper's) states its own angles; its
numbers are set beside ours only when they are the study's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from trainables.config import VALIDATION_PREFIX, TrialConfig, accuracy_name, angle_key

TARGET_COLUMN = "target_angle"
# The trial contract's defaults: what a table without `target_angle` is assumed to have run.
DEFAULT_TARGET: float = TrialConfig.model_fields["target_angle"].default
DEFAULT_ANGLES: tuple[float, ...] = tuple(TrialConfig.model_fields["angles"].default_factory())
PREFERRED_RETENTION = 0.0  # the unrotated digits: the "original" mode when a study evaluates it
_ACCURACY_COLUMN = re.compile(r"^acc_([0-9mp]+)(?:_(?:mean|std|n|ci95))?$")


def angle_of_key(key: str) -> float | None:
    """The angle a metric-name suffix names ("m30" -> -30.0, "22p5" -> 22.5), or None; only keys
    `angle_key` writes are accepted (it round-trips)."""
    try:
        angle = float(key.replace("m", "-").replace("p", "."))
    except ValueError:
        return None
    return angle if math.isfinite(angle) and angle_key(angle) == key else None


def degrees(angle: float) -> str:
    """ "30°", "22.5°", "-30°"."""
    return f"{angle:g}°"


def evaluated_angles(columns: Iterable[str]) -> list[float]:
    """The angles with a (test or validation) accuracy column, `acc_<angle>` or a seed statistic
    of it (`acc_30_mean`), in ascending order."""
    found = set()
    for column in columns:
        match = _ACCURACY_COLUMN.match(str(column).removeprefix(VALIDATION_PREFIX))
        if match and (angle := angle_of_key(match.group(1))) is not None:
            found.add(angle)
    return sorted(found)


@dataclass(frozen=True)
class StudyModes:
    """The study's target and retention angles, how they were found (`notes`, for the report's
    metadata) and, when the table holds several target angles (a modes study), every one of them
    (`targets`) and what the single-target sections analyse (`scope`): the trials of one primary
    target, the paper's 45 degrees when the study has it; the modes section covers all."""

    target: float
    retention: float
    notes: tuple[str, ...] = ()
    scope: str = ""
    targets: tuple[float, ...] = ()

    @property
    def several_targets(self) -> bool:
        return len(self.targets) > 1

    def analysed(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows the single-target sections read: the primary target's when there are several."""
        if not self.several_targets or TARGET_COLUMN not in table.columns:
            return table
        return table[pd.to_numeric(table[TARGET_COLUMN], errors="coerce") == self.target]

    @property
    def target_metric(self) -> str:
        return accuracy_name(self.target)

    @property
    def retention_metric(self) -> str:
        return accuracy_name(self.retention)

    @property
    def selection_metric(self) -> str:
        """What representatives are chosen by: the target mode's validation accuracy."""
        return accuracy_name(self.target, validation=True)

    @property
    def keys(self) -> tuple[str, str]:
        """(retention, target) as gate-statistics mode keys ("0", "30")."""
        return angle_key(self.retention), angle_key(self.target)

    @property
    def target_label(self) -> str:
        return f"target mode ({degrees(self.target)})"

    @property
    def retention_label(self) -> str:
        return f"original mode ({degrees(self.retention)})"

    def describe(self) -> str:
        """One line for the report: the angles and where they came from."""
        text = f"target {degrees(self.target)}, original {degrees(self.retention)}"
        return "; ".join([text, *self.notes])


def study_modes(table: pd.DataFrame) -> StudyModes:
    """The modes of a results table or of its seed statistics (see the module docstring)."""
    notes: list[str] = []
    scope = ""
    targets = _target_values(table)
    if len(targets) == 1:
        target = targets[0]
        notes.append(f"target from the results table's {TARGET_COLUMN} column")
    elif len(targets) > 1:
        target = DEFAULT_TARGET if DEFAULT_TARGET in targets else targets[0]
        listed = ", ".join(degrees(t) for t in targets)
        scope = (
            f"This is a modes study: its trials specialise to {len(targets)} target angles ({listed}). The modes "
            f"section covers every target; the single-target sections (paper table, fidelity, claims, fronts, "
            f"statistics, interpretability) analyse the {degrees(target)} trials only"
            + (" (the paper's target)." if target == DEFAULT_TARGET else " (the first target).")
        )
        notes.append(f"{len(targets)} target angles in the {TARGET_COLUMN} column; primary {degrees(target)}")
    else:
        target = DEFAULT_TARGET
        notes.append(
            f"assumed: the results table has no {TARGET_COLUMN} column (a study from before it was recorded), "
            f"so the target is the trial default {degrees(DEFAULT_TARGET)}"
        )
    others = [a for a in evaluated_angles(table.columns) if a != target]
    if others:
        retention = PREFERRED_RETENTION if PREFERRED_RETENTION in others else others[0]
        notes.append("original: the study's other evaluated angle" + (" (0° preferred)" if len(others) > 1 else ""))
    else:
        retention = next((a for a in (PREFERRED_RETENTION, *DEFAULT_ANGLES) if a != target), PREFERRED_RETENTION)
        notes.append(f"original: no accuracy of another angle in the table, so {degrees(retention)} is assumed")
    return StudyModes(float(target), float(retention), tuple(notes), scope, tuple(targets))


def _target_values(table: pd.DataFrame) -> list[float]:
    if TARGET_COLUMN not in table.columns:
        return []
    values = pd.to_numeric(table[TARGET_COLUMN], errors="coerce").dropna()
    return sorted({float(v) for v in values})
