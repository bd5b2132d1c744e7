"""The study spec: one YAML file describes a whole ablation study, validated before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.schedulers import SchedulerSpec, check_scheduler
from trainables.config import (
    GATED_METHODS,
    METHODS,
    PROTOCOL_FIELDS,
    DatasetName,
    DeviceName,
    TrialConfig,
    accuracy_name,
    evaluated_angles,
    format_validation_error,
    validation_name,
)
from trainables.methods import REGISTRY

# Objectives select, so they read validation metrics (plus the accuracy-free ones); test metrics
# are only reported. `val_acc_<angle>[_hard]` names are checked against the study's angles.
PLAIN_OBJECTIVES = ("trainable_params", "val_sparsity", "final_loss")


class SpecError(ValueError):
    """An invalid study spec; the message names the field path and the reason."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (plain YAML keeps the last one silently)."""


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth. Keys merged in
    with `<<` may still be overridden: that is what a merge is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if earlier is not key_node:
                mark, was = key_node.start_mark, earlier.start_mark
                raise DuplicateKeyError(
                    None, None, f"duplicate key {key!r} at line {mark.line + 1}, column {mark.column + 1} "
                    f"(first given at line {was.line + 1}); give each key once", mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def _each(values: list | None, ok, message: str) -> list | None:
    """A grid axis's values, unless one fails `ok` (then `message`)."""
    if values and not all(ok(v) for v in values):
        raise ValueError(message)
    return values


# Integers go to torch (tensor sizes, seeds), JSON and the pandas results table, all 64-bit signed:
# torch.manual_seed takes up to 2**64 - 1, but a seed of 2**63 or more turns the table's seed column
# into uint64, or float64 beside a missing value, where neighbouring seeds merge.
INT_LIMIT = 2**63


def _within_int64(values: Any) -> bool:
    items = values if isinstance(values, list) else [values]
    return all(-INT_LIMIT <= v < INT_LIMIT for v in items if isinstance(v, int) and not isinstance(v, bool))


class Strict(BaseModel):
    # NaN/infinity pass `gt`/`ge` checks unnoticed and break a trial later (an angle's metric name, a rate)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, value: Any) -> Any:
        if not _within_int64(value):
            raise ValueError("must be < 2**63 (a 64-bit signed integer: torch, JSON tables and pandas hold no more)")
        return value


class FoundationSpec(Strict):
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1)
    epochs: int = Field(4, ge=0)
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


class ProtocolSpec(Strict):
    """The specialisation protocol as study-level axes: every method's trials multiply by each
    (the paper leaves the protocol open, so a study may search it). An absent axis keeps the
    study's single value (`foundation.epochs`, `epochs`, lr x 1, `batch_size`)."""

    foundation_epochs: list[int] | None = Field(None, min_length=1)
    epochs: list[int] | None = Field(None, min_length=1)
    lr_scale: list[float] | None = Field(None, min_length=1, description="multiplies each method's lr")
    batch_size: list[int] | None = Field(None, min_length=1)

    @field_validator("foundation_epochs", "epochs")
    @classmethod
    def _non_negative(cls, values: list[int] | None) -> list[int] | None:
        return _each(values, lambda v: v >= 0, "epochs must be >= 0")

    @field_validator("lr_scale", "batch_size")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v > 0, "every value must be > 0")

    @field_validator(*PROTOCOL_FIELDS)
    @classmethod
    def _no_duplicates(cls, values: list | None) -> list | None:
        if values and len(set(values)) != len(values):
            raise ValueError("duplicate values")
        return values

    def axes(self) -> dict[str, list]:
        """The swept protocol fields and their values, in PROTOCOL_FIELDS order."""
        return {name: getattr(self, name) for name in PROTOCOL_FIELDS if getattr(self, name) is not None}


class NextStudy(Strict):
    """What the spec generated by a calibration changes: the study that runs with the chosen protocol."""

    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seeds: list[int] | None = Field(None, min_length=1)
    methods: dict[str, MethodSpec] = Field(default_factory=dict, description="added to (or replacing) the methods")


class CalibrateSpec(Strict):
    """Calibrate the protocol on a reference table with the baselines only; the held-out methods
    are predictions. With a protocol grid the protocol whose validation fidelity is best is chosen
    and `<study>/calibrated.yaml` is written; a held-out gated method's lambda is chosen by its
    validation high-activation ratio alone (closest to `sparsity_target`)."""

    reference: str = Field("paper", min_length=1, description="'paper' (built in) or a reference-table YAML file")
    held_out: list[str] = Field(default_factory=lambda: ["taugate"], description="methods predicted, never fitted")
    sparsity_target: float | None = Field(None, gt=0, lt=1)
    sparsity_tolerance: float = Field(0.05, gt=0, lt=1)
    next: NextStudy | None = None

    @field_validator("held_out")
    @classmethod
    def _known_methods(cls, values: list[str]) -> list[str]:
        return _each(values, lambda v: v in METHODS, f"held_out: every entry must be one of {', '.join(METHODS)}")

    @field_validator("reference")
    @classmethod
    def _readable_reference(cls, value: str) -> str:
        from analysis.reference import ReferenceError, load_reference

        try:
            load_reference(value)
        except ReferenceError as err:
            raise ValueError(str(err)) from None
        # a user's file is kept by absolute path: a resumed or reported study may run elsewhere
        return str(Path(value).resolve()) if Path(value).is_file() else value


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
    objectives: list[Objective] | None = Field(
        None, min_length=1, description="default: validation accuracy on the target mode, maximised"
    )
    ranges: dict[Literal["gate_sharpness", "sparsity_weight", "lora_rank"], Range] = Field(
        default_factory=lambda: {
            "gate_sharpness": Range(low=1, high=100, log=True),
            "sparsity_weight": Range(low=1e-5, high=1e-1, log=True),
            "lora_rank": Range(low=1, high=32, log=True),
        }
    )
    study_name: str | None = Field(None, description="optuna study name; default: the study's name + a timestamp")

    @field_validator("ranges")
    @classmethod
    def _ranges_the_trials_accept(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        # each suggested value must pass the trial contract: s > 0, lambda >= 0, an integer rank >= 1
        lowest = {"gate_sharpness": (lambda low: low > 0, "low must be > 0 (gate sharpness s > 0)"),
                  "sparsity_weight": (lambda low: low >= 0, "low must be >= 0 (sparsity weight lambda >= 0)"),
                  "lora_rank": (lambda low: low >= 1, "low must be >= 1 (a LoRA rank is an integer >= 1)")}  # fmt: skip
        for axis, r in ranges.items():
            ok, message = lowest[axis]
            if not ok(r.low):
                raise ValueError(f"{axis}: {message}")
        return ranges


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


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
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="early stopping (study.schedulers)")
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
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
            used = set(REGISTRY[name].dimensions)
            for axis in ("gate_sharpness", "sparsity_weight", "lora_rank", "lora_alpha"):
                if getattr(method, axis) is not None and axis not in used:
                    raise ValueError(f"{name}.{axis}: method {name!r} does not use {axis}")
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
        if "epochs" in swept:
            for name, method in self.methods.items():
                if method.epochs is not None:
                    raise ValueError(f"methods.{name}.epochs: the protocol sweeps epochs for every method")
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
            for field in ("seeds", "gate_sharpness", "sparsity_weight", "lora_rank", "lora_alpha"):
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
        ungated = [m for m in self.methods if m not in GATED_METHODS]
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
        return [m for m in self.methods if m in GATED_METHODS]

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


def load_spec(path: Path | str) -> StudySpec:
    """Read and validate a spec file (`-` reads standard input); a problem is a `SpecError` naming the field."""
    path = Path(path)
    try:
        raw = yaml.load(sys.stdin.read() if str(path) == "-" else path.read_text(), Loader=SpecLoader)  # noqa: S506
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except DuplicateKeyError as err:
        raise SpecError(f"{path}: {err.problem}") from None
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
