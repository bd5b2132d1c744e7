"""The spec's grid blocks: the foundation, each method's own axes, the protocol axes, resources."""

from __future__ import annotations

from pydantic import Field, field_validator

from study.spec.fields import Strict, _each
from trainables.config import PROTOCOL_FIELDS


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
