"""Frozen: the foundation as it is, no trainable tensors (the paper's 'no adapt' row)."""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.model import MLP
from trainables.registry import Method, register


def install(model: MLP, config: TrialConfig) -> None:
    """Nothing to train."""


METHOD = register(Method(
    "frozen", install, default_lr=1e-3, peft_note="a frozen foundation has no adapter tensors to export",
))  # fmt: skip
