"""TauGate ablation without the threshold: a learned gain per hidden neuron (IA3-like; exported as PEFT IA3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainables.methods.taugate import hidden_units
from trainables.registry import GateBanking, Method, register

if TYPE_CHECKING:  # torch's, imported where a model is built or exported: the record is read without them
    import torch

    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    from trainables.methods.taugate.gate import install_gates

    install_gates(model, config, learn_tau=False, learn_gamma=True)


def peft_ia3(model: MLP, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT IA3: our gain multiplies a hidden unit after its ReLU, `a = gamma * relu(z)`, the input of the
    next Linear layer, so hidden layer i's gamma is the feed-forward IA3 vector of `layers.{i+1}` (IA3 on
    `layers.i` itself would scale z before the ReLU, which differs for negative gains); PEFT keeps it [1, width]."""
    from trainables.methods.taugate.gate import GatedReLU

    tensors = {}
    for index, activation in enumerate(model.activations):
        assert isinstance(activation, GatedReLU) and not activation.has_gate, "gain_only installs ungated gains"
        # MLP.trace feeds activation i into layers[i + 1]
        tensors[f"layers.{index + 1}.ia3_l"] = activation.gamma.reshape(1, -1)
    targets = [key.removesuffix(".ia3_l") for key in tensors]
    config = {
        "peft_type": "IA3",
        "target_modules": targets,
        "feedforward_modules": targets,  # scale each target's input, not its output
        "init_ia3_weights": True,
    }
    return config, tensors


METHOD = register(Method(
    "gain_only", install, default_lr=1e-2, bank=GateBanking(tau=False, gamma=True), peft=peft_ia3,
    peft_note="as PEFT IA3", trainable=hidden_units,
))  # fmt: skip
