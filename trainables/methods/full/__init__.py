"""Full fine-tuning: every tensor of the foundation is trained."""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.model import MLP
from trainables.registry import Method, register


def install(model: MLP, config: TrialConfig) -> None:
    model.requires_grad_(True)


METHOD = register(Method(
    "full", install, default_lr=1e-3,
    peft_note="full fine-tuning changes every weight: its result is a model, not an adapter",
))  # fmt: skip
