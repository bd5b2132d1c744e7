"""Adaptation methods: one folder per method, each registering a `Method` (trainables.registry).

`adapt` turns a frozen foundation into a method's trainable model; `count_trainable` counts what the
paper's table reports. Importing them registers the methods without importing torch (a study's driver
plans from the records); torch comes with the first model built.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from trainables.registry import REGISTRY, Method, get, register

if TYPE_CHECKING:
    from torch import nn

    from trainables.config import TrialConfig
    from trainables.model import MLP

# isort: off
# the built-in methods, registered in the order reports and messages list them
from trainables.methods import frozen, bitfit, taugate, gain_only, threshold_only, lora, full  # noqa: F401, E402
# isort: on


__all__ = ["REGISTRY", "Method", "adapt", "count_trainable", "get", "register", "specialisation_lr"]


def adapt(foundation: MLP, config: TrialConfig) -> MLP:
    """A copy of the foundation with every tensor frozen except the method's own."""
    import torch

    model = copy.deepcopy(foundation)
    model.requires_grad_(False)
    torch.manual_seed(config.seed)  # adapter initialisation (LoRA's A) depends on the seed only
    get(config.method).install(model, config)
    # a method's new tensors (tau, gamma, LoRA's A and B) are made on the CPU: move them to the base's device
    return model.to(next(foundation.parameters()).device)


def count_trainable(model: nn.Module) -> int:
    """The number of trainable scalars: the figure the paper's table reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def specialisation_lr(config: TrialConfig) -> float:
    """The configured lr (the method's default when unset) times the protocol's `lr_scale`."""
    return (config.lr if config.lr is not None else get(config.method).default_lr) * config.lr_scale
