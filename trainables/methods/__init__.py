"""Adaptation methods: a registry from name to how the method turns a frozen foundation
into a trainable model. Each method lives in its own file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.methods import bitfit, frozen, full, gain_only, lora, taugate, threshold_only
from trainables.model import MLP


@dataclass(frozen=True)
class Method:
    name: str
    install: Callable[[MLP, TrialConfig], None]  # makes the method's tensors trainable, in place
    default_lr: float  # specialisation learning rate when the config leaves `lr` unset
    dimensions: tuple[str, ...]  # config fields beyond seed that change this method's result


REGISTRY: dict[str, Method] = {
    module.NAME: Method(module.NAME, module.install, module.DEFAULT_LR, module.DIMENSIONS)
    for module in (frozen, bitfit, taugate, gain_only, threshold_only, lora, full)
}


def adapt(foundation: MLP, config: TrialConfig) -> MLP:
    """A copy of the foundation with every tensor frozen except the method's own."""
    model = copy.deepcopy(foundation)
    model.requires_grad_(False)
    torch.manual_seed(config.seed)  # adapter initialisation (LoRA's A) depends on the seed only
    REGISTRY[config.method].install(model, config)
    # a method's new tensors (tau, gamma, LoRA's A and B) are made on the CPU: move them to the base's device
    return model.to(next(foundation.parameters()).device)


def count_trainable(model: nn.Module) -> int:
    """The number of trainable scalars: the figure the paper's table reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def specialisation_lr(config: TrialConfig) -> float:
    """The configured lr (the method's default when unset) times the protocol's `lr_scale`."""
    return (config.lr if config.lr is not None else REGISTRY[config.method].default_lr) * config.lr_scale
