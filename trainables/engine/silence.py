"""Interventions on hidden units: silence chosen units and measure what the network loses.

Firing rates only describe which units a mode uses; a claim that some units *carry* a mode needs
them silenced (correlation is not attribution). Silencing is a forward hook on the
layer's activation module that zeroes the chosen units' outputs, the same as forcing their hard
gates shut, for a `GatedReLU` and a plain `nn.ReLU` alike. The model's tensors are never touched,
and every hook and gate setting is restored when the intervention ends, also on an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from trainables.methods.taugate.gate import hard_gates

Units = Mapping[int, Sequence[int]]  # hidden layer index -> unit indices in that layer


def _widths(model: nn.Module) -> list[int]:
    return [layer.out_features for layer in model.layers[:-1]]


def _checked_indices(model: nn.Module, units: Units) -> dict[int, torch.Tensor]:
    """The units as index tensors per layer, every layer and index checked against the model."""
    widths = _widths(model)
    checked = {}
    for layer, indices in units.items():
        if not 0 <= layer < len(widths):
            raise ValueError(f"layer {layer}: the model has hidden layers 0..{len(widths) - 1}")
        wanted = sorted(set(int(i) for i in indices))
        bad = [i for i in wanted if not 0 <= i < widths[layer]]
        if bad:
            raise ValueError(f"layer {layer}: units {bad} outside 0..{widths[layer] - 1}")
        if wanted:
            checked[layer] = torch.tensor(wanted, dtype=torch.long)
    return checked


@contextmanager
def silenced(model: nn.Module, units: Units) -> Iterator[nn.Module]:
    """Within the block, the chosen hidden units output 0 on every input (their gates shut).

    `units` maps a hidden layer's index to unit indices in it; an index outside the model is a
    `ValueError` before anything changes. The hooks are removed on leaving, also when the block
    raises, and the model's tensors are never modified.
    """
    indices = _checked_indices(model, units)
    handles = []
    try:
        for layer, index in indices.items():

            def zero_units(module: nn.Module, inputs: tuple, output: torch.Tensor, index=index) -> torch.Tensor:
                return output.index_fill(-1, index.to(output.device), 0.0)  # out of place: autograd-safe

            handles.append(model.activations[layer].register_forward_hook(zero_units))
        yield model
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def hard_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy with hard gates (the network TauGate's attributions describe) on digits `x`."""
    with hard_gates(model):
        return (model(x).argmax(1) == y).float().mean().item()


@torch.no_grad()
def silenced_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, silencings: Sequence[Units]) -> list[float]:
    """Hard-gated accuracy on `x` under each silencing, in one batched pass: the same numbers as
    `silenced` + `hard_accuracy` per silencing, without running the unsilenced first layer again for
    each (a mask per silencing is applied after every hidden activation; Linear layers take the
    extra leading dimension)."""
    if not silencings:
        return []
    widths = _widths(model)
    masks = torch.ones(len(silencings), sum(widths), dtype=x.dtype, device=x.device)
    offsets = [sum(widths[:layer]) for layer in range(len(widths))]
    for row, units in enumerate(silencings):
        for layer, index in _checked_indices(model, units).items():
            masks[row, offsets[layer] + index.to(x.device)] = 0.0
    with hard_gates(model):
        hidden = x
        for depth, (layer, activation) in enumerate(zip(model.layers[:-1], model.activations, strict=True)):
            out = activation(layer(hidden))
            mask = masks[:, offsets[depth] : offsets[depth] + widths[depth]].unsqueeze(1)  # (silencings, 1, width)
            hidden = out * mask if depth else out.unsqueeze(0) * mask  # the first layer runs once for all
        correct = model.layers[-1](hidden).argmax(-1) == y
    return correct.float().mean(1).tolist()
