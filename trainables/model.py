"""The foundation network: an MLP (784-128-128-10 by default) with biases and ReLU.

Hidden activations are modules, so a method can swap them for gates (TauGate) and wrap the
Linear layers (LoRA) while the base tensors stay intact.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int = 784, hidden: list[int] | tuple[int, ...] = (128, 128), classes: int = 10):
        super().__init__()
        widths = [in_features, *hidden, classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.activations = nn.ModuleList(nn.ReLU() for _ in hidden)

    @property
    def hidden(self) -> list[int]:
        return [layer.out_features for layer in self.layers[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[0]

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the pre-activations `z` of every hidden layer (for gate statistics)."""
        pre_activations = []
        for layer, activation in zip(self.layers[:-1], self.activations, strict=True):
            z = layer(x)
            pre_activations.append(z)
            x = activation(z)
        return self.layers[-1](x), pre_activations
