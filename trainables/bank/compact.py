"""Compact per-mode subnetworks: a mode's hard-gated network without the units it never opens.

Units whose hard-gated activation is zero on every one of the mode's training digits are dropped and
the mode's gamma is folded into the next layer's weights, so the mode becomes a smaller dense MLP
(plain Linear layers and a threshold per kept unit), saved as safetensors + JSON beside its bank.

`compact(model, train_x, keep=f)` forces a unit budget instead: per hidden layer only the ceil(f * width)
units that fire on the most training digits are kept (ties: the lower unit index), the rest dropped even
where they fire; `check_compact` then counts what that costs on test digits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables import files
from trainables.bank.layout import (
    COMPACT_INDEX,
    COMPACT_TENSORS,
    FORMAT,
    FORMAT_VERSION,
    BankError,
    field_of,
    json_default,
    read_json,
    read_tensors,
)
from trainables.bank.mixed import BankedMLP
from trainables.methods.taugate.gate import gated, hard_gates, step_or_sigmoid


class Threshold(nn.Module):
    """A kept unit's hard gate after compaction: a = 1[z > threshold] * relu(z) (JumpReLU), threshold =
    max(tau, 0), the gate with gamma folded into the next layer's weights."""

    def __init__(self, threshold: torch.Tensor):
        super().__init__()
        self.register_buffer("threshold", threshold)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return gated(z, None, step_or_sigmoid(z, self.threshold, None, hard=True))


class CompactMLP(nn.Module):
    """A mode's hard-gated network without the hidden units it never opens: plain Linear layers of the
    kept widths, a `Threshold` per hidden layer, and `kept.<layer>` (the kept units' dense positions)."""

    def __init__(self, in_features: int, kept: Sequence[torch.Tensor], classes: int):
        super().__init__()
        widths = [in_features, *(len(k) for k in kept), classes]
        self.layers = nn.ModuleList(
            torch.nn.utils.skip_init(nn.Linear, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.activations = nn.ModuleList(Threshold(torch.zeros(len(k))) for k in kept)
        for layer, units in enumerate(kept):
            self.register_buffer(f"kept_{layer}", torch.as_tensor(units, dtype=torch.int64))

    @property
    def kept(self) -> list[torch.Tensor]:
        return [getattr(self, f"kept_{layer}") for layer in range(len(self.activations))]

    @property
    def widths(self) -> list[int]:
        return [layer.out_features for layer in self.layers[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, activation in zip(self.layers[:-1], self.activations, strict=True):
            x = activation(layer(x))
        return self.layers[-1](x)


@torch.no_grad()
def firing_counts(model: BankedMLP, x: torch.Tensor, chunk: int = 8192) -> list[torch.Tensor]:
    """Per hidden layer, a [width] int64: on how many of the digits `x` the unit's hard-gated activation
    gamma * 1[z > tau] * relu(z) is non-zero (the unit fires), under the model's active mode."""
    with hard_gates(model):
        counts = [torch.zeros(len(g.tau[0]), dtype=torch.int64, device=x.device) for g in model.gates]
        for start in range(0, len(x), chunk):
            _, activations = model.trace(x[start : start + chunk])
            counts = [seen + (a != 0).sum(0) for seen, a in zip(counts, activations, strict=True)]
        return counts


def open_units(model: BankedMLP, x: torch.Tensor, chunk: int = 8192) -> list[torch.Tensor]:
    """Per hidden layer, a [width] bool: the unit's hard-gated activation gamma * 1[z > tau] * relu(z) is
    non-zero on at least one of the digits `x`, under the model's active mode."""
    return [count > 0 for count in firing_counts(model, x, chunk)]


def kept_units(counts: Sequence[torch.Tensor], keep: float | None = None) -> list[torch.Tensor]:
    """Per hidden layer, the kept units' positions (ascending) from their firing counts: every unit that
    fires at least once (`keep` None), or the ceil(keep * width) units that fire most often, ties broken
    by the lower unit index (`keep` in (0, 1]), whether or not the others ever fire."""
    if keep is None:
        return [torch.nonzero(count > 0).flatten().cpu() for count in counts]
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    kept = []
    for count in counts:
        width = len(count)
        size = min(width, max(1, math.ceil(keep * width - 1e-9)))  # 1e-9: 0.3 * 10 is 3, not 4
        order = torch.sort(-count.cpu(), stable=True).indices  # most firing first, equal counts by index
        kept.append(order[:size].sort().values)
    return kept


@torch.no_grad()
def compact(model: BankedMLP, train_x: torch.Tensor, keep: float | None = None) -> CompactMLP:
    """The active mode's compact subnetwork: hidden units whose hard-gated activation is zero on every
    training digit `train_x` are dropped; gamma folds into the next layer (W_next[:, kept] * gamma[kept]);
    each kept unit keeps its threshold. On a digit where no dropped unit would have fired the result is
    the dense hard-gated model's up to the rounding of the fold (`check_compact` counts both).

    `keep` (a fraction in (0, 1]) forces a unit budget: per hidden layer the ceil(keep * width) units that
    fire on the most training digits are kept (ties: the lower index) and the others dropped even where
    they fire (`kept_units`); None keeps exactly the units that ever fire."""
    row = model.active
    kept = kept_units(firing_counts(model, train_x), keep)
    linears = list(model.layers)
    net = CompactMLP(linears[0].in_features, kept, linears[-1].out_features)
    previous: torch.Tensor | None = None  # the kept units feeding this layer (None: every input)
    scale: torch.Tensor | None = None  # their gamma, folded into this layer's columns
    for layer, (dense, small) in enumerate(zip(linears, net.layers, strict=True)):
        rows = kept[layer] if layer < len(kept) else torch.arange(dense.out_features)
        weight = dense.weight.detach().cpu()[rows]
        if previous is not None:
            weight = weight[:, previous] * scale
        small.weight.copy_(weight)
        small.bias.copy_(dense.bias.detach().cpu()[rows])
        if layer < len(kept):
            gate = model.gates[layer]
            net.activations[layer].threshold.copy_(gate.tau[row].cpu()[rows].clamp(min=0))
            previous, scale = rows, gate.gamma[row].cpu()[rows]
    return net.eval()


@dataclass
class Cost:
    """What one forward pass of one digit costs. parameters: every stored number the network needs for
    the mode (the dense one: the foundation plus that mode's tau and gamma; the compact one: its
    Linear layers plus one threshold per kept unit). macs: multiply-adds of the Linear layers, plus the
    dense model's gamma multiply per hidden unit (gate comparisons are not counted in either)."""

    parameters: int
    macs: int


def dense_cost(in_features: int, hidden: Sequence[int], classes: int) -> Cost:
    widths = [in_features, *hidden, classes]
    linear = [(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return Cost(
        parameters=sum(a * b + b for a, b in linear) + 2 * sum(hidden), macs=sum(a * b for a, b in linear) + sum(hidden)
    )


def compact_cost(net: CompactMLP) -> Cost:
    linear = [(layer.in_features, layer.out_features) for layer in net.layers]
    return Cost(parameters=sum(a * b + b for a, b in linear) + sum(net.widths), macs=sum(a * b for a, b in linear))


@dataclass
class CompactReport:
    """A compact subnetwork against its dense hard-gated mode, on the digits checked (test digits)."""

    mode: str
    units: list[int]  # dense widths
    kept: list[int]  # kept widths
    dense: Cost
    compact: Cost
    digits: int  # digits checked
    dropped_fired: int  # digits on which at least one dropped unit fired (hard-gated activation non-zero)
    differ: int  # digits whose compact prediction differs from the dense hard-gated one
    differ_dropped_fired: int  # of those, digits on which a dropped unit fired: the reason they differ
    differ_unexplained: int  # of those, digits on which none did (the fold's rounding at a near tie)
    max_logit_gap: float  # largest |compact - dense| logit over digits where no dropped unit fired
    accuracy_dense: float | None = None
    accuracy_compact: float | None = None

    @property
    def parameter_ratio(self) -> float:
        return self.compact.parameters / self.dense.parameters

    @property
    def mac_ratio(self) -> float:
        return self.compact.macs / self.dense.macs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"parameter_ratio": self.parameter_ratio, "mac_ratio": self.mac_ratio}


@torch.no_grad()
def check_compact(model: BankedMLP, net: CompactMLP, x: torch.Tensor, y: torch.Tensor | None = None) -> CompactReport:
    """Compare the compact subnetwork with the model's active mode (hard gates) on digits `x`: how many
    predictions differ, and whether a dropped unit fired on each digit that differs."""
    with hard_gates(model):
        dense_logits, activations = model.trace(x)
    net = net.to(x.device)
    compact_logits = net(x)
    fired = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for activation, units in zip(activations, net.kept, strict=True):
        dropped = torch.ones(activation.shape[1], dtype=torch.bool, device=x.device)
        dropped[units.to(x.device)] = False
        fired |= (activation[:, dropped] != 0).any(1)
    differ = dense_logits.argmax(1) != compact_logits.argmax(1)
    quiet = ~fired
    gap = (compact_logits[quiet] - dense_logits[quiet]).abs().max().item() if quiet.any() else 0.0

    def accuracy(logits: torch.Tensor) -> float | None:
        return None if y is None else (logits.argmax(1) == y).float().mean().item()

    units = [len(g.tau[0]) for g in model.gates]
    return CompactReport(
        mode=model.mode, units=units, kept=net.widths,
        dense=dense_cost(model.layers[0].in_features, units, model.layers[-1].out_features),
        compact=compact_cost(net), digits=len(x), dropped_fired=int(fired.sum()), differ=int(differ.sum()),
        differ_dropped_fired=int((differ & fired).sum()), differ_unexplained=int((differ & quiet).sum()),
        max_logit_gap=gap, accuracy_dense=accuracy(dense_logits), accuracy_compact=accuracy(compact_logits),
    )  # fmt: skip


LATENCY_BATCHES = (1, 256)


@torch.inference_mode()
def measure_latency(
    dense: nn.Module, net: CompactMLP, x: torch.Tensor, batches: Sequence[int] = LATENCY_BATCHES,
    seconds: float = 0.01, repeats: int = 3,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Seconds per forward pass of the dense hard-gated model and of the compact subnetwork on the first
    `batch` digits of `x`, per batch size: the best of `repeats` rounds in which the two take turns, each
    round about `seconds` of calls (a short, in-process reading: benchmarks/bank_switching.py measures
    longer). Returns {"batch_<n>": {"dense_seconds", "compact_seconds", "ratio"}} (ratio: compact / dense)."""
    out = {}
    for batch in batches:
        digits = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:batch]
        models = {"dense": dense, "compact": net}
        for model in models.values():  # warm-up, and the number of calls a round makes
            model(digits)
        started = time.perf_counter()
        dense(digits)
        loops = max(1, min(1000, int(seconds / max(time.perf_counter() - started, 1e-7))))
        best = {name: float("inf") for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                started = time.perf_counter()
                for _ in range(loops):
                    model(digits)
                best[name] = min(best[name], (time.perf_counter() - started) / loops)
        out[f"batch_{batch}"] = {"dense_seconds": best["dense"], "compact_seconds": best["compact"],
                                 "ratio": best["compact"] / best["dense"]}  # fmt: skip
    return out


def save_compact(net: CompactMLP, folder: Path, info: dict[str, Any] | None = None) -> Path:
    """`compact.safetensors` (Linear weights, thresholds, kept positions) and `compact.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files.write_tensors(folder / COMPACT_TENSORS, net.state_dict())
    index = {
        "format": FORMAT + "-compact", "format_version": FORMAT_VERSION,
        "in_features": net.layers[0].in_features, "classes": net.layers[-1].out_features,
        "kept": [units.tolist() for units in net.kept], **(info or {}),
    }  # fmt: skip
    files.write_json(folder / COMPACT_INDEX, index, indent=2, default=json_default)
    return folder


def load_compact(folder: Path) -> CompactMLP:
    folder = Path(folder)
    index_path = folder / COMPACT_INDEX
    index = read_json(index_path)
    kept = field_of(index, "kept", list, index_path)
    try:
        net = CompactMLP(int(index["in_features"]), [torch.tensor(k, dtype=torch.int64) for k in kept],
                         int(index["classes"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise BankError(f"{index_path}: invalid compact index ({err})") from None
    tensors = read_tensors(folder / COMPACT_TENSORS)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise BankError(f"{folder / COMPACT_TENSORS}: does not fit {index_path} ({err})") from None
    return net.eval()
