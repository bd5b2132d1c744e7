"""The spec's grid blocks: the foundation, each method's own axes, the protocol axes, resources."""

from __future__ import annotations

from pydantic import Field, field_validator

from study.spec.fields import Strict, _each
from trainables.config import PROTOCOL_FIELDS
from trainables.registry import OWN_PROTOCOL_FIELDS

# A method's own grid axes (the ones its registry entry names as dimensions, plus its own protocol fields,
# `trainables.registry.OWN_PROTOCOL_FIELDS`).
METHOD_AXES = ("seeds", "gate_sharpness", "sparsity_weight", "tau_lr_multiplier", "sparsity_target", "lora_rank",
               "lora_alpha", "lr_scale", "epochs")  # fmt: skip
DIMENSION_AXES = ("gate_sharpness", "sparsity_weight", "tau_lr_multiplier", "sparsity_target", "lora_rank",
                  "lora_alpha")  # fmt: skip


class FoundationSpec(Strict):
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1)
    epochs: int = Field(4, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)
    weights: list[float] | None = None


class MethodSpec(Strict):
    """One method's own dimensions. Lists are grid axes; a method only takes the axes it uses.

    `lr_scale` and `epochs` are the method's own budget: given here, they replace the study's protocol
    for this method only (TauGate's thresholds move as far as its lr x steps allow, so its budget is
    studied on its own while the baselines keep the calibrated protocol); a list makes each an axis."""

    seeds: list[int] | None = Field(None, min_length=1, description="overrides the study's seeds")
    gate_sharpness: list[float] | None = Field(None, min_length=1)
    sparsity_weight: list[float] | None = Field(None, min_length=1)
    tau_lr_multiplier: list[float] | None = Field(None, min_length=1, description="tau's lr x this (gamma keeps it)")
    sparsity_target: list[float] | None = Field(
        None, min_length=1, description="requested high-activation ratios, each met by dual ascent on lambda"
    )
    lora_rank: list[int] | None = Field(None, min_length=1)
    lora_alpha: list[float] | None = Field(None, min_length=1)
    lr: float | None = Field(None, gt=0)
    lr_scale: float | list[float] | None = Field(None, description="the method's own lr multiplier (an axis if a list)")
    epochs: int | list[int] | None = Field(None, description="the method's own epochs (an axis if a list)")
    also: list[MethodSpec] | None = Field(
        None,
        description="further grids of the same method, each with its own axes (e.g. TauGate's lambda sweep under "
        "one budget and its sparsity targets under another); a field a grid leaves out is the method's default",
    )

    @field_validator("lr_scale", "epochs")
    @classmethod
    def _budget_axis(cls, value: float | list[float] | None, info) -> list | None:
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("an empty list; give at least one value")
        if info.field_name == "epochs":
            _each(values, lambda v: v >= 0, "epochs must be >= 0")
        else:
            _each(values, lambda v: v > 0, "every lr_scale must be > 0")
        return values

    @field_validator("seeds")
    @classmethod
    def _non_negative_seeds(cls, values: list[int] | None) -> list[int] | None:
        return _each(values, lambda v: v >= 0, "seeds must be >= 0")

    @field_validator("gate_sharpness", "tau_lr_multiplier")
    @classmethod
    def _positive_gate_axis(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v > 0, "every value must be > 0")

    @field_validator("sparsity_weight")
    @classmethod
    def _non_negative_lambda(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v >= 0, "every sparsity weight lambda must be >= 0")

    @field_validator("sparsity_target")
    @classmethod
    def _ratios(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: 0 < v < 1, "every sparsity target is a ratio in (0, 1)")

    @field_validator("lora_rank", "lora_alpha")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        return _each(values, lambda v: v > 0, "every value must be > 0")

    @field_validator(*METHOD_AXES)
    @classmethod
    def _no_duplicates(cls, values: list | None) -> list | None:
        if values and len(set(values)) != len(values):
            raise ValueError("duplicate values")
        return values

    @field_validator("also")
    @classmethod
    def _flat(cls, grids: list[MethodSpec] | None) -> list[MethodSpec] | None:
        if any(grid.also for grid in grids or ()):
            raise ValueError("a grid under `also` cannot have its own `also`: list every grid once")
        return grids

    def grids(self) -> list[MethodSpec]:
        """The method's grids: its own axes, then each of `also`."""
        return [self, *(self.also or ())]

    def budget(self) -> dict[str, list]:
        """The method's own protocol fields (`OWN_PROTOCOL_FIELDS`) it sets, each as a list of values."""
        return {name: getattr(self, name) for name in OWN_PROTOCOL_FIELDS if getattr(self, name) is not None}


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


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
