"""The study spec: one YAML file describes a whole ablation study, validated before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config import GATED_METHODS, METHODS, DatasetName, DeviceName, TrialConfig, format_validation_error
from trainables.methods import REGISTRY

OBJECTIVE_METRICS = ("acc_45", "acc_0", "acc_45_hard", "trainable_params", "sparsity", "final_loss", "mean_gate")


class SpecError(ValueError):
    """An invalid study spec; the message names the field path and the reason."""


def _each(values: list | None, ok, message: str) -> list | None:
    """A grid axis's values, unless one fails `ok` (then `message`)."""
    if values and not all(ok(v) for v in values):
        raise ValueError(message)
    return values


class Strict(BaseModel):
    # NaN/infinity pass `gt`/`ge` checks unnoticed and break a trial later (an angle's metric name, a rate)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FoundationSpec(Strict):
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1)
    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)
    weights: list[float] | None = None


class MethodSpec(Strict):
    """One method's own dimensions. Lists are grid axes; a method only takes the axes it uses."""

    seeds: list[int] | None = Field(None, min_length=1, description="overrides the study's seeds")
    gate_sharpness: list[float] | None = Field(None, min_length=1)
    sparsity_weight: list[float] | None = Field(None, min_length=1)
    lora_rank: list[int] | None = Field(None, min_length=1)
    lora_alpha: list[float] | None = Field(None, min_length=1)
    lr: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=0)

    @field_validator("seeds")
    @classmethod
    def _non_negative_seeds(cls, values: list[int] | None) -> list[int] | None:
        return _each(values, lambda v: v >= 0, "seeds must be >= 0")

    @field_validator("gate_sharpness")
    @classmethod
    def _positive_sharpness(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v > 0, "every gate sharpness s must be > 0")

    @field_validator("sparsity_weight")
    @classmethod
    def _non_negative_lambda(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v >= 0, "every sparsity weight lambda must be >= 0")

    @field_validator("lora_rank", "lora_alpha")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v > 0, "every value must be > 0")

    @field_validator("seeds", "gate_sharpness", "sparsity_weight", "lora_rank", "lora_alpha")
    @classmethod
    def _no_duplicates(cls, values: list | None) -> list | None:
        if values and len(set(values)) != len(values):
            raise ValueError("duplicate values")
        return values


class Objective(Strict):
    metric: str
    mode: Literal["max", "min"]

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in OBJECTIVE_METRICS:
            raise ValueError(f"unknown objective {value!r}; choose one of {', '.join(OBJECTIVE_METRICS)}")
        return value


class Range(Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError("low must be < high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchSpec(Strict):
    kind: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(20, gt=0, description="optuna: number of trials")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(metric="acc_45", mode="max")], min_length=1)
    ranges: dict[Literal["gate_sharpness", "sparsity_weight", "lora_rank"], Range] = Field(
        default_factory=lambda: {
            "gate_sharpness": Range(low=1, high=100, log=True),
            "sparsity_weight": Range(low=1e-5, high=1e-1, log=True),
            "lora_rank": Range(low=1, high=32, log=True),
        }
    )
    study_name: str | None = Field(None, description="optuna study name; default: the study's name + a timestamp")


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class StudySpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetName = "mnist5k"
    data_root: str | None = None
    angles: list[float] = Field(default_factory=lambda: [0.0, 45.0], min_length=1)
    target_angle: float = 45.0
    foundation: FoundationSpec = Field(default_factory=FoundationSpec)
    epochs: int = Field(5, ge=0, description="specialisation epochs (a method may override)")
    batch_size: int = Field(64, gt=0)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    search: SearchSpec = Field(default_factory=SearchSpec)
    device: DeviceName = "cpu"
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, gt=0)
    fuse: int = Field(
        1, ge=1, le=64, description="train up to this many same-shape grid trials together in one vectorised step"
    )
    reuse_actors: bool = Field(True, description="run several trials per worker process (fast start-up)")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial (a lost node, a crash)")
    max_trials: int = Field(2000, gt=0, description="a grid larger than this needs --yes")
    storage_path: str | None = Field(None, description="study folder; every node must see it (shared storage)")
    tracking_uri: str | None = Field(None, description="MLflow; default sqlite:///<study folder>/mlflow.db")
    experiment_name: str | None = None

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError("duplicate seeds")
        return _each(values, lambda v: v >= 0, "seeds must be >= 0")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, MethodSpec]) -> dict[str, MethodSpec]:
        for name, method in methods.items():
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
            used = set(REGISTRY[name].dimensions)
            for axis in ("gate_sharpness", "sparsity_weight", "lora_rank", "lora_alpha"):
                if getattr(method, axis) is not None and axis not in used:
                    raise ValueError(f"{name}.{axis}: method {name!r} does not use {axis}")
        return methods

    @model_validator(mode="after")
    def _trials_are_valid(self) -> StudySpec:
        if self.target_angle not in self.angles:
            raise ValueError(f"target_angle: {self.target_angle:g} is not one of angles {self.angles}")
        if self.fuse > 1 and self.search.kind != "grid":
            raise ValueError("fuse: fused trials need search kind grid (Optuna suggests one trial at a time)")
        # every trial config must pass the trial contract: check one per method now, not mid-study
        for name in self.methods:
            try:
                TrialConfig.model_validate(self.base_config() | {"method": name})
            except ValidationError as err:
                raise ValueError(format_validation_error(err)) from None
        return self

    @property
    def gated_methods(self) -> list[str]:
        return [m for m in self.methods if m in GATED_METHODS]

    def base_config(self) -> dict[str, Any]:
        """The trial config fields every trial of the study shares."""
        return {
            "dataset": self.dataset,
            "data_root": self.data_root,
            "angles": self.angles,
            "target_angle": self.target_angle,
            "hidden": self.foundation.hidden,
            "foundation_epochs": self.foundation.epochs,
            "foundation_lr": self.foundation.lr,
            "foundation_batch_size": self.foundation.batch_size,
            "foundation_weights": self.foundation.weights,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "device": self.device,
        }


def load_spec(path: Path | str) -> StudySpec:
    """Read and validate a spec file (`-` reads standard input); a problem is a `SpecError` naming the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(sys.stdin.read() if str(path) == "-" else path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: YAML syntax error: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read ({err})") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML syntax error: nested too deeply") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "spec") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected a mapping of study fields, got {type(raw).__name__}")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None
