"""The trial contract: one plain config dict in, one metrics dict out.

`TrialConfig` validates the config dict a trial receives (from the CLI, a Ray Tune
search space or a study spec); `TrialMetrics` is the dict it returns. Search, tracking
and analysis all read these names, so they are defined here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables import registry
from trainables.errors import TauGateError

DATASETS = ("mnist5k", "mnist")
# the foundation MLP's input and output widths: 28 x 28 pixels, 10 digit classes (trainables.model.MLP)
INPUT_WIDTH, CLASSES = 784, 10
# the digits' splits (trainables.data), here so that a study's driver reads them without torch
SPLIT_SEED = 20240601  # the train/test split is fixed: every trial evaluates on the same digits
VAL_SPLIT_SEED = 20240602  # so is the train/validation split: selections compare trials on the same digits
DEVICES = ("auto", "cpu", "cuda", "mps", "directml")


def layer_widths(hidden: list[int] | tuple[int, ...]) -> list[int]:
    """The foundation MLP's layer widths for these hidden widths: inputs, hidden..., classes."""
    return [INPUT_WIDTH, *hidden, CLASSES]


def one_of(choices: tuple[str, ...], what: str):
    """A validator for a name that must be one of `choices` (the message lists them)."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _registered(value: str) -> str:
    if value not in registry.REGISTRY:
        raise ValueError(f"unknown method {value!r}; choose one of {', '.join(registry.names())}")
    return value


MethodName = Annotated[str, AfterValidator(_registered)]  # a method of the registry (trainables.methods)

DatasetName = Annotated[str, one_of(DATASETS, "dataset")]
DeviceName = Annotated[str, one_of(DEVICES, "device")]


class ConfigError(TauGateError, ValueError):
    """Invalid trial input. The message names the offending field."""


def angle_key(angle: float) -> str:
    """Metric-name suffix of a rotation mode: 45 -> "45", -30 -> "m30", 22.5 -> "22p5"."""
    text = f"{angle:g}" if angle != int(angle) else str(int(angle))
    return text.replace("-", "m").replace(".", "p")


# Metric names. Test metrics are only reported; every choice made from results (a method's
# representative, an Optuna objective, a calibrated protocol, a lambda for a target sparsity)
# reads the validation metrics, carved from the training data (`val_` prefix).
VALIDATION_PREFIX = "val_"


def evaluated_angles(angles: list[float], eval_angles: list[float] | None) -> list[float]:
    """Every mode a trial is evaluated on: the foundation's `angles`, then the further `eval_angles`."""
    return [*angles, *(a for a in eval_angles or () if a not in angles)]


def accuracy_name(angle: float, hard: bool = False, validation: bool = False) -> str:
    """`acc_45`, `acc_45_hard`, `val_acc_45`, `val_acc_45_hard`."""
    name = f"acc_{angle_key(angle)}" + ("_hard" if hard else "")
    return VALIDATION_PREFIX + name if validation else name


def validation_name(metric: str) -> str:
    """The validation counterpart of a test metric name (`acc_45` -> `val_acc_45`)."""
    return metric if metric.startswith(VALIDATION_PREFIX) else VALIDATION_PREFIX + metric


# The specialisation protocol: study-level axes shared by every method (the paper leaves them
# open). A study grid multiplies every method by each of them; a calibration searches them.
PROTOCOL_FIELDS = ("foundation_epochs", "epochs", "lr_scale", "batch_size")
# "High activation" readings of the hidden units (the paper leaves the ratio undefined); each is
# reported under its own name and definition, none is chosen to match the paper's 0.28.
STRONG_ACTIVATION_LEVEL = 1.0  # strong_activation_ratio: hard-gated activation above this


class TrialConfig(BaseModel):
    """Everything one trial needs. Defaults reproduce the paper's setting on the bundled data.

    The protocol defaults (foundation 4 epochs; 3 specialisation epochs at 0.2x each method's
    default lr) are the one `configs/calibrate.yaml` chose on the baselines' validation fidelity
    to the paper's table (README, "Calibration"): the foundation is epoch-limited (the paper's
    accuracies, ~0.83-0.89, are far below a converged MNIST MLP) and specialisation is mild.
    """

    model_config = ConfigDict(extra="forbid")

    method: MethodName = "taugate"
    seed: int = Field(0, ge=0, lt=2**63)  # int64: the results table and JSON consumers hold no more

    # TauGate knobs (used by gated methods: taugate, threshold_only)
    gate_sharpness: float = Field(10.0, gt=0, description="s in sigmoid(s * (z - tau))")
    sparsity_weight: float = Field(0.0, ge=0, description="lambda in the loss term lambda * mean(g)")
    gate_init_margin: float = Field(
        4.0, gt=0, description="tau starts at -margin/s, so gates start open (g >= sigmoid(margin))"
    )
    # TauGate's own budget beyond the protocol's lr and epochs (trainables.methods.taugate.control)
    tau_lr_multiplier: float = Field(
        1.0, gt=0, description="tau's learning rate is the specialisation lr times this (gamma keeps the lr)"
    )
    sparsity_target: float | None = Field(
        None, gt=0, lt=1,
        description="a requested high-activation ratio: lambda is adapted by damped dual ascent (starting at "
        "sparsity_weight) so the ratio of gates on (z > tau) settles at this; None: lambda stays fixed",
    )  # fmt: skip
    sparsity_dual_step: float = Field(
        0.01, gt=0, description="dual ascent's integral gain: its sum += step * (batch ratio - sparsity_target)"
    )
    sparsity_dual_damping: float = Field(
        100.0, ge=0, description="dual ascent's damping: lambda = sum + damping * (batch ratio - sparsity_target)"
    )
    # LoRA knobs
    lora_rank: int = Field(8, gt=0)
    lora_alpha: float = Field(8.0, gt=0)

    # data
    dataset: DatasetName = "mnist5k"
    data_root: str | None = None
    download: bool = False
    test_fraction: float = Field(0.2, gt=0, lt=1, description="mnist5k stratified test split")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="validation split carved (stratified) from each mode's training digits"
    )
    angles: list[float] = Field(
        default_factory=lambda: [0.0, 45.0], min_length=1, description="the foundation's mixture of rotation modes"
    )
    eval_angles: list[float] | None = Field(
        None, min_length=1,
        description="further modes every trial is evaluated on (angles the foundation never saw); "
        "the evaluated modes are `angles` then these",
    )  # fmt: skip
    target_angle: float = Field(45.0, description="the mode specialised to: one of the evaluated modes")
    foundation_weights: list[float] | None = Field(
        None, description="mixture weights over `angles` for the foundation; default uniform"
    )

    # model
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1)

    # foundation stage
    foundation_epochs: int = Field(4, ge=0)
    foundation_lr: float = Field(1e-3, gt=0)
    foundation_batch_size: int = Field(64, gt=0)

    # specialisation stage (lr None = the method's default, see trainables.methods)
    epochs: int = Field(3, ge=0)
    lr: float | None = Field(None, gt=0)
    lr_scale: float = Field(0.2, gt=0, description="multiplies the specialisation lr (the method's default or `lr`)")
    batch_size: int = Field(64, gt=0)

    device: DeviceName = "auto"

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, value: list[int]) -> list[int]:
        if any(width <= 0 for width in value):
            raise ValueError("every hidden width must be > 0")
        return value

    @model_validator(mode="after")
    def _consistent_modes(self) -> TrialConfig:
        if len(set(self.angles)) != len(self.angles):
            raise ValueError("angles: duplicate angle")
        if self.eval_angles is not None and len(set(self.eval_angles)) != len(self.eval_angles):
            raise ValueError("eval_angles: duplicate angle")
        if self.target_angle not in self.evaluated_angles:
            raise ValueError(
                f"target_angle: {self.target_angle:g} is not an evaluated angle "
                f"({', '.join(f'{a:g}' for a in self.evaluated_angles)}: angles, then eval_angles)"
            )
        if self.foundation_weights is not None:
            if len(self.foundation_weights) != len(self.angles):
                raise ValueError("foundation_weights: needs one weight per angle")
            if any(w < 0 for w in self.foundation_weights) or sum(self.foundation_weights) <= 0:
                raise ValueError("foundation_weights: weights must be >= 0 with a positive sum")
        return self

    @property
    def gated(self) -> bool:
        return registry.get(self.method).gated

    @property
    def evaluated_angles(self) -> list[float]:
        return evaluated_angles(self.angles, self.eval_angles)

    def foundation_key(self) -> dict[str, Any]:
        """The settings that determine a foundation: trials sharing them share one foundation."""
        names = (
            "seed", "dataset", "data_root", "test_fraction", "val_fraction", "angles", "foundation_weights",
            "hidden", "foundation_epochs", "foundation_lr", "foundation_batch_size",
        )  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def foundation_id(self) -> str:
        """The foundation's id (its file name in a study's `foundations/`): a hash of `foundation_key`."""
        canonical = json.dumps(self.foundation_key(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# A study's ledger entry, `STUDY/trials/<key>/config.json` (study.folder.storage.record_of), is the trial's
# config under "config" beside the study's bookkeeping: these fields. `parse_config` reads such an entry
# as the config it wraps; the bookkeeping is dropped, and a field of neither kind is still refused.
LEDGER_FIELDS = (
    "variant",  # the grid point or Optuna suggestion that made the trial
    "run_name",  # its MLflow / Tune name
    "columns",  # its row of the results table
    "started_at", "ended_at", "worker_pid",  # when and where it ran
    "fused_with",  # how many trials were trained stacked with it
)  # fmt: skip


def trial_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The trial config fields of `raw`: `raw` itself, or the "config" of a study's ledger entry (its
    LEDGER_FIELDS dropped). A ledger entry with any other field is a `ConfigError` naming it."""
    if not isinstance(raw.get("config"), dict):
        return raw
    unknown = [name for name in raw if name != "config" and name not in LEDGER_FIELDS]
    if unknown:
        raise ConfigError(
            "; ".join(f"{name}: unknown field" for name in unknown)
            + f" (a study's trial record holds `config` and the bookkeeping fields {', '.join(LEDGER_FIELDS)})"
        )
    return raw["config"]


def parse_config(raw: dict[str, Any]) -> TrialConfig:
    """Validate a config dict, or a study's ledger entry (`trials/<key>/config.json`, see `trial_fields`);
    raise `ConfigError` whose message names each bad field."""
    fields = trial_fields(raw)
    try:
        return TrialConfig.model_validate(fields)
    except ValidationError as err:
        message = format_validation_error(err)
        if fields is not raw:  # where the field sits in the ledger entry
            message = "; ".join(f"config.{problem}" for problem in message.split("; "))
        raise ConfigError(message) from None


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


_ACC_NAME = re.compile(r"^(val_)?acc_[0-9mp]+(_hard)?$")


class TrialMetrics(BaseModel):
    """The metrics dict a trial returns. `acc_<angle>` (and `acc_<angle>_hard` for gated
    methods) are extra fields, one per evaluated mode; every value is finite."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "diverged", "stopped"]  # stopped: by a study's early-stopping scheduler
    method: str
    seed: int
    trainable_params: int
    train_seconds: float
    final_loss: float | None = None
    high_activation_ratio: float | None = None  # hard gate on (z > tau), gated methods, target test digits
    val_high_activation_ratio: float | None = None  # the same on the target mode's validation digits
    active_ratio: float | None = None  # hard-gated activation non-zero (ReLU and gate on), every method
    val_active_ratio: float | None = None  # the same on the target mode's validation digits
    strong_activation_ratio: float | None = None  # hard-gated activation > STRONG_ACTIVATION_LEVEL
    mean_gate: float | None = None  # mean soft gate
    tau_displacement: float | None = None  # mean over gated units of tau - its initial value (> 0: closing)
    tau_step_budget: float | None = None  # tau's learning rate x optimiser steps: how far Adam can move tau
    sparsity_weight_final: float | None = None  # lambda at the end (sparsity_weight unless a target adapts it)
    diverged_at_step: int | None = None
    stopped_at_epoch: int | None = None  # the last epoch a stopped trial trained

    @model_validator(mode="after")
    def _accuracy_names_and_finite(self) -> TrialMetrics:
        for name, value in (self.model_extra or {}).items():
            if not _ACC_NAME.match(name):
                raise ValueError(f"unexpected metric {name!r}")
            if not isinstance(value, float | int) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The plain dict: fields that do not apply (None) are left out, never NaN."""
        return {k: v for k, v in self.model_dump().items() if v is not None}
