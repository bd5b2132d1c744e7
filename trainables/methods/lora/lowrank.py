"""LoRA (Hu et al. 2021) on every Linear layer: y = W x + b + (alpha / r) * B A x.

A is Kaiming-uniform, B starts at zero (the adapted model starts at the foundation's
function), and LoRA adds no bias: r * (in + out) trainable scalars per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Linear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def low_rank_update(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: torch.Tensor | float, linear: Linear = F.linear
) -> torch.Tensor:
    """LoRA's delta (alpha / r) * B A x, written once: `linear` is the product (`F.linear` for one
    trial, a batched product for a fused group, whose tensors carry a leading member dimension)."""
    return linear(linear(x, a), b) * scaling


class LoRALinear(nn.Module):
    """Wraps a frozen Linear layer (kept intact as `base`) with a low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + low_rank_update(x, self.lora_A, self.lora_B, self.scaling)
