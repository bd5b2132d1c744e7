"""BitFit (Ben Zaken et al. 2021): train every bias, freeze every weight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Method, register

if TYPE_CHECKING:  # the model is torch's: a method's record is read without it (planning)
    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    for layer in model.layers:
        layer.bias.requires_grad_(True)


METHOD = register(Method(
    "bitfit", install, default_lr=1e-2,
    peft_note="PEFT has no BitFit adapter type (trained biases are neither LoRA nor IA3 tensors)",
    trainable=lambda widths, config: sum(widths[1:]),  # a bias per unit of every layer
))  # fmt: skip
