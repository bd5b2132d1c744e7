"""Frozen: the foundation as it is, no trainable tensors (the paper's 'no adapt' row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Method, register

if TYPE_CHECKING:  # the model is torch's: a method's record is read without it (planning)
    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    """Nothing to train."""


METHOD = register(Method(
    "frozen", install, default_lr=1e-3, peft_note="a frozen foundation has no adapter tensors to export",
    trainable=lambda widths, config: 0,
))  # fmt: skip
