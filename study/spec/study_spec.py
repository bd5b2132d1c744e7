"""The study spec: one YAML file describes a whole ablation study, validated before anything runs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from study.spec.axes import DIMENSION_AXES, FoundationSpec, MethodSpec, ProtocolSpec, Resources
from study.spec.calibration_spec import CalibrateSpec
from study.spec.fields import Strict, _each
from study.spec.scheduler_spec import SchedulerSpec, check_scheduler
from study.spec.search_space import PLAIN_OBJECTIVES, Objective, SearchSpec
from trainables import registry
from trainables.config import (
    DatasetName,
    DeviceName,
    TrialConfig,
    accuracy_name,
    evaluated_angles,
    format_validation_error,
    validation_name,
)
from trainables.registry import OWN_PROTOCOL_FIELDS


class StudySpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetName = "mnist5k"
    data_root: str | None = None
    angles: list[float] = Field(
        default_factory=lambda: [0.0, 45.0], min_length=1, description="the foundation's mixture of rotation modes"
    )
    eval_angles: list[float] | None = Field(
        None, min_length=1, description="further modes every trial is evaluated on (the foundation never saw them)"
    )
    target_angle: float | list[float] = Field(
        45.0, description="the mode specialised to; a list makes it an axis (one foundation per seed serves all)"
    )
    foundation: FoundationSpec = Field(default_factory=FoundationSpec)
    # the protocol defaults are the calibrated ones (trainables.config.TrialConfig)
    epochs: int = Field(3, ge=0, description="specialisation epochs (a method may override)")
    lr_scale: float = Field(0.2, gt=0, description="multiplies every method's specialisation lr")
    batch_size: int = Field(64, gt=0)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="validation digits carved from each mode's training set")
    calibrate: CalibrateSpec | None = None
    search: SearchSpec = Field(default_factory=SearchSpec)
    device: DeviceName = "cpu"
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, gt=0)
    fuse: int = Field(
        1, ge=1, le=64, description="train up to this many same-shape grid trials together in one vectorised step"
    )
    reuse_actors: bool = Field(True, description="run several trials per worker process (fast start-up)")
    scheduler: SchedulerSpec = Field(
        default_factory=SchedulerSpec, description="early stopping (study.spec.scheduler_spec)"
    )
    checkpoint_after_s: float | None = Field(
        30.0, ge=0, description="a trial running longer than this saves a Tune checkpoint each epoch (null: never)"
    )
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
            if name not in registry.REGISTRY:
                raise ValueError(f"unknown method {name!r}; choose from {', '.join(registry.names())}")
            used = set(registry.get(name).dimensions)
            for index, grid in enumerate(method.grids()):
                where = name if index == 0 else f"{name}.also.{index - 1}"
                for axis in DIMENSION_AXES:
                    if getattr(grid, axis) is not None and axis not in used:
                        raise ValueError(f"{where}.{axis}: method {name!r} does not use {axis}")
        return methods

    @field_validator("target_angle")
    @classmethod
    def _target_list(cls, value: float | list[float]) -> float | list[float]:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list of target angles; give at least one")
            if len(set(value)) != len(value):
                raise ValueError("duplicate target angles")
        return value

    @field_validator("eval_angles")
    @classmethod
    def _unique_eval_angles(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("duplicate angles")
        return values

    @model_validator(mode="after")
    def _trials_are_valid(self) -> StudySpec:
        evaluated = self.evaluated_angles
        for index, target in enumerate(self.target_angles):
            if target not in evaluated:
                where = f"target_angle.{index}" if isinstance(self.target_angle, list) else "target_angle"
                raise ValueError(
                    f"{where}: {target:g} is not an evaluated angle ({', '.join(f'{a:g}' for a in evaluated)}: "
                    "angles, then eval_angles); add it to eval_angles to specialise to a mode the foundation never saw"
                )
        if len(self.target_angles) > 1:
            if self.search.kind != "grid":
                raise ValueError(
                    "target_angle: several target angles need search kind grid (an objective reads one mode)"
                )
            if self.calibrate is not None:
                raise ValueError("calibrate: a calibration against a reference table needs one target_angle")
        self._protocol_given_once()
        self._objectives_exist()
        self._optuna_takes_every_method_field()
        if self.fuse > 1 and self.search.kind != "grid":
            raise ValueError("fuse: fused trials need search kind grid (Optuna suggests one trial at a time)")
        check_scheduler(self)
        # every trial config must pass the trial contract: check one per method now, not mid-study
        for name in self.methods:
            try:
                TrialConfig.model_validate(self.base_config() | {"method": name})
            except ValidationError as err:
                raise ValueError(format_validation_error(err)) from None
        return self

    def _protocol_given_once(self) -> None:
        """A swept protocol axis replaces the study's single value: giving both is refused."""
        swept = self.protocol.axes()
        single = self._single_protocol()
        for axis in swept:
            where, _, given = single[axis]
            if given:
                raise ValueError(f"protocol.{axis}: also given as `{where}`; give it once")
        for axis in OWN_PROTOCOL_FIELDS:
            if axis not in swept:
                continue
            for name, method in self.methods.items():
                if any(getattr(grid, axis) is not None for grid in method.grids()):
                    raise ValueError(f"methods.{name}.{axis}: the protocol sweeps {axis} for every method; give "
                                     "it once")  # fmt: skip
        if swept and self.search.kind != "grid":
            raise ValueError("protocol: protocol axes need search kind grid")

    def _optuna_takes_every_method_field(self) -> None:
        """An Optuna search draws s, lambda and the LoRA rank from `search.ranges` and evaluates every
        configuration on the study's seeds: per-method axis lists and seeds would be ignored, so
        they are refused (a method's fixed `lr` and `epochs` are honoured)."""
        if self.search.kind != "optuna":
            return
        instead = {"seeds": "the study's seeds", "lora_alpha": "the default lora_alpha (not searched)"}
        for name, method in self.methods.items():
            if method.also:
                raise ValueError(f"methods.{name}.also: further grids are grid axes (search kind grid); an Optuna "
                                 "search draws one configuration at a time from search.ranges")  # fmt: skip
            for field in OWN_PROTOCOL_FIELDS:
                if len(getattr(method, field) or ()) > 1:
                    raise ValueError(
                        f"methods.{name}.{field}: an Optuna search takes one fixed value, or a range "
                        f"in search.ranges.{field}; a list of values is a grid axis (search kind grid)"
                    )
            for field in ("seeds", *DIMENSION_AXES):
                if getattr(method, field) is not None:
                    uses = instead.get(field, f"search.ranges ({field} is searched)")
                    raise ValueError(f"methods.{name}.{field}: an Optuna search uses {uses}; per-method lists are "
                                     "grid axes (search kind grid)")  # fmt: skip

    def _objectives_exist(self) -> None:
        """Each objective names a validation metric every trial of the study reports."""
        if self.search.objectives is None:
            self.search.objectives = [
                Objective(metric=accuracy_name(self.target_angles[0], validation=True), mode="max")
            ]
        ungated = [m for m in self.methods if m not in registry.gated_methods()]
        accuracies = {accuracy_name(a, validation=True) for a in self.evaluated_angles}
        hard = {accuracy_name(a, hard=True, validation=True) for a in self.evaluated_angles}
        for index, objective in enumerate(self.search.objectives):
            metric, where = objective.metric, f"search.objectives.{index}.metric"
            if metric in PLAIN_OBJECTIVES or metric in accuracies:
                continue
            if metric in hard:
                if ungated and self.search.kind == "optuna":
                    raise ValueError(f"{where}: {metric} exists only for gated methods, not {', '.join(ungated)}")
                continue
            if validation_name(metric) in accuracies | hard | set(PLAIN_OBJECTIVES):
                raise ValueError(f"{where}: {metric!r} is a test metric; objectives select, so they read "
                                 f"validation: use {validation_name(metric)}")  # fmt: skip
            choices = ", ".join([*sorted(accuracies | hard), *PLAIN_OBJECTIVES])
            raise ValueError(f"{where}: unknown objective {metric!r}; choose one of {choices}")

    def _single_protocol(self) -> dict[str, tuple[str, Any, bool]]:
        """Each protocol field's single value: (where the spec holds it, the value, whether the spec
        gave it explicitly). A swept axis replaces it."""
        foundation_given = "epochs" in self.foundation.model_fields_set
        return {
            "foundation_epochs": ("foundation.epochs", self.foundation.epochs, foundation_given),
            "epochs": ("epochs", self.epochs, "epochs" in self.model_fields_set),
            "lr_scale": ("lr_scale", self.lr_scale, "lr_scale" in self.model_fields_set),
            "batch_size": ("batch_size", self.batch_size, "batch_size" in self.model_fields_set),
        }

    def dump(self, exclude_none: bool = False) -> dict[str, Any]:
        """The spec as plain data that loads back to an equal spec: every field (unset optional ones
        left out with `exclude_none`), except the single values of swept protocol axes (the sweep
        replaces them; giving both is refused)."""
        exclude: dict[str, Any] = {}
        for axis in self.protocol.axes():
            *parent, name = self._single_protocol()[axis][0].split(".")
            if parent:
                exclude.setdefault(parent[0], set()).add(name)
            else:
                exclude[name] = True
        return self.model_dump(mode="json", exclude=exclude, exclude_none=exclude_none)

    def protocol_values(self) -> dict[str, list]:
        """Every protocol field's values: the swept ones, and the study's single value for the rest."""
        single = {axis: [value] for axis, (_, value, _) in self._single_protocol().items()}
        return single | self.protocol.axes()

    @property
    def target_angles(self) -> list[float]:
        """The target modes: the axis when `target_angle` is a list, else the one target."""
        return list(self.target_angle) if isinstance(self.target_angle, list) else [self.target_angle]

    @property
    def evaluated_angles(self) -> list[float]:
        return evaluated_angles(self.angles, self.eval_angles)

    @property
    def gated_methods(self) -> list[str]:
        return [m for m in self.methods if m in registry.gated_methods()]

    def base_config(self) -> dict[str, Any]:
        """The trial config fields every trial of the study shares."""
        return {
            "dataset": self.dataset,
            "data_root": self.data_root,
            "angles": self.angles,
            "eval_angles": self.eval_angles,
            # an axis of target angles is in each variant instead
            "target_angle": self.target_angles[0],
            "hidden": self.foundation.hidden,
            "foundation_epochs": self.foundation.epochs,
            "foundation_lr": self.foundation.lr,
            "foundation_batch_size": self.foundation.batch_size,
            "foundation_weights": self.foundation.weights,
            "epochs": self.epochs,
            "lr_scale": self.lr_scale,
            "batch_size": self.batch_size,
            "val_fraction": self.val_fraction,
            "device": self.device,
        }
