"""The foundation network: an MLP (784-128-128-10 by default) with biases and ReLU.

Hidden activations are modules, so a method can swap them for gates (TauGate) and wrap the
Linear layers (LoRA) while the base tensors stay intact.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import CLASSES, INPUT_WIDTH


class FirstLayerCache:
    """Layer 1's output on an evaluation set, computed once and reused while the layer is frozen.

    A trial evaluates its model 10-20 times (every mode, test and validation, soft and hard gates,
    gate statistics, each epoch's validation), always on the same few digit tensors; with a frozen
    first layer (TauGate, BitFit's weight aside, the frozen baseline) `x @ W1.T + b1` is the same
    every time and is ~80% of the forward's multiply-adds. An entry is reused only for the very same
    input tensor (identity and version) and a layer whose weight and bias equal the entry's copies
    exactly, so a hit returns what `layer(x)` would, bit for bit. Bounded: the `size` most recent
    entries are kept (inputs are held weakly)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.entries: list[tuple[weakref.ref, int, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []

    def output(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self.product(x, layer.weight, layer.bias)

    def product(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """`F.linear(x, weight, bias)`, from the cache when an entry has this input and equal tensors."""
        for index, (ref, version, w, b, z) in enumerate(self.entries):
            if ref() is x and version == x._version and w.shape == weight.shape and torch.equal(w, weight) \
                    and _same_bias(b, bias):  # fmt: skip
                self.entries.append(self.entries.pop(index))
                return z
        z = F.linear(x, weight, bias)
        self.entries.append((weakref.ref(x), x._version, weight.detach().clone(), _detached(bias), z))
        del self.entries[: -self.size]
        return z


def _same_bias(cached: torch.Tensor | None, bias: torch.Tensor | None) -> bool:
    return cached is None and bias is None or cached is not None and bias is not None and torch.equal(cached, bias)


def _detached(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.detach().clone()


_cache = FirstLayerCache()
_active = False


@contextlib.contextmanager
def first_layer_cache() -> Iterator[None]:
    """Within this block, without autograd, an MLP whose first layer is a frozen `nn.Linear` with a
    bias reads that layer's output from the process's `FirstLayerCache` (evaluation, not training)."""
    global _active
    before, _active = _active, True
    try:
        yield
    finally:
        _active = before


def frozen_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A frozen first layer's product on `x`, through the process's cache: what `F.linear` gives, bit
    for bit, computed once for an input and equal tensors (fused training's frozen prefix uses it)."""
    return _cache.product(x, weight, bias)


def _first_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if (_active and type(layer) is nn.Linear and layer.bias is not None and not torch.is_grad_enabled()
            and not layer.weight.requires_grad and not layer.bias.requires_grad):  # fmt: skip
        return _cache.output(layer, x)
    return layer(x)


class MLP(nn.Module):
    def __init__(
        self, in_features: int = INPUT_WIDTH, hidden: list[int] | tuple[int, ...] = (128, 128), classes: int = CLASSES
    ):
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
        for index, (layer, activation) in enumerate(zip(self.layers[:-1], self.activations, strict=True)):
            z = _first_layer(layer, x) if index == 0 else layer(x)
            pre_activations.append(z)
            x = activation(z)
        return self.layers[-1](x), pre_activations
