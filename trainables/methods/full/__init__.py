"""Full fine-tuning: every tensor of the foundation is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Method, register

if TYPE_CHECKING:  # the model is torch's: a method's record is read without it (planning)
    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    model.requires_grad_(True)


METHOD = register(Method(
    "full", install, default_lr=1e-3,
    peft_note="full fine-tuning changes every weight: its result is a model, not an adapter",
    trainable=lambda widths, config: sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True)),
))  # fmt: skip
