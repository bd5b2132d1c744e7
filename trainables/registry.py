"""The method registry: what a method *is*, in one record per method.

A method's folder (`trainables/methods/<name>/`) builds its `Method` and `register`s it; everything
else (the trial contract, training, fused groups, studies and their search, the mode bank, PEFT
export) asks the registry instead of naming methods. Adding a method is writing one folder.

Reading the registry needs no torch: a study's driver plans (validates, expands, orders) its trials
from these records alone, and a built-in method's folder imports its torch modules (the gate, LoRA's
layer) inside the functions that build or export a model, which run on the trial's worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from trainables.errors import TauGateError


class MethodError(TauGateError, KeyError):
    """An unknown method name, or a second method under a registered name."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class SearchRange:
    """An Optuna search range of one of a method's dimensions (a study spec may override it)."""

    kind: Literal["float", "int"]
    low: float
    high: float
    log: bool = False
    optional: bool = False  # searched only when a spec's `search.ranges` names it (else the config's value)


# Protocol fields a method may set for itself (its own budget): a spec's per-method value or axis, or an
# optional range of its `search`; the study's values stay the other methods' protocol.
OWN_PROTOCOL_FIELDS = ("lr_scale", "epochs")


@dataclass(frozen=True)
class GateBanking:
    """How the mode bank stores a gate method: which of (tau, gamma) the method learns. The bank keeps
    both for every mode; one the method does not learn is stored at its neutral value (tau = -inf:
    the gate always open; gamma = 1)."""

    tau: bool
    gamma: bool


# The trainable scalars a method's `install` leaves, from the model's layer widths (inputs, *hidden, classes:
# `trainables.config.layer_widths`) and the trial's config, counted without building the model (without torch):
# what the study plan orders trials by (study.spec.plan.trainable_count); tests/study/test_light_driver.py
# checks each against `count_trainable` of the adapted model.
TrainableCount = Callable[[Sequence[int], Any], int]

# A PEFT exporter: (adapted model, adapter settings) -> (PEFT config fields, tensors named as in the
# model, e.g. "layers.0.lora_A.weight"); trainables.formats.peft adds PEFT's prefix and common fields.
PeftExport = Callable[[Any, Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class Method:
    name: str
    install: Callable[[Any, Any], None]  # (model: MLP, config: TrialConfig): make the method's tensors trainable
    default_lr: float  # specialisation learning rate when the config leaves `lr` unset
    dimensions: tuple[str, ...] = ()  # config fields beyond seed that change this method's result (grid axes)
    gated: bool = False  # learns a threshold tau: hard-gate metrics and the sparsity term apply
    fuse_fields: tuple[str, ...] = ()  # fields fused members must share beyond the model's shape
    search: Mapping[str, SearchRange] = field(default_factory=dict)  # Optuna's default ranges of its dimensions
    bank: GateBanking | None = None  # None: a bank refuses the method (it has no gate to switch)
    peft: PeftExport | None = None  # None: no PEFT counterpart
    peft_note: str = ""  # why it cannot be exported to PEFT, or what it exports as
    trainable: TrainableCount | None = None  # None: the plan builds the adapted model to count them


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method; a second method under a registered name is a `MethodError`."""
    if method.name in REGISTRY:
        raise MethodError(f"method {method.name!r} is already registered")
    for name, searched in method.search.items():
        if name not in method.dimensions and not (name in OWN_PROTOCOL_FIELDS and searched.optional):
            raise MethodError(f"method {method.name!r}: search range for {name!r}, which is not one of its dimensions"
                              f" (or an optional range of its budget: {', '.join(OWN_PROTOCOL_FIELDS)})")  # fmt: skip
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    get(name)
    del REGISTRY[name]


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise MethodError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def gated_methods() -> tuple[str, ...]:
    return tuple(name for name, method in REGISTRY.items() if method.gated)


def bank_methods() -> tuple[str, ...]:
    return tuple(name for name, method in REGISTRY.items() if method.bank is not None)
