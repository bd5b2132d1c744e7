"""Fused trials: K same-shape trials trained together in one vectorised step (HFTA, MLSys 2021).

Small-model trials are dominated by per-step framework overhead (Python, autograd, the
optimiser), not arithmetic. `run_fused` trains K trials of one method and model shape at once:
every tensor of the adapted models is stacked with a leading K dimension (frozen weights too,
so members may come from different foundations, i.e. different seeds), the forward pass is
batched (`baddbmm`), and one Adam updates the stacked tensors. The loss is the sum over
members of each member's own mean loss, so each member's gradient is exactly its own; Adam
is elementwise, so the stacked Adam equals K separate Adams (the learning rate may differ
per member).

Each member keeps everything it would have alone: its own adapted model (`adapt` is called
per member, so LoRA's seeded initialisation is the same), its own batch order (a generator
seeded by its seed), its own gate sharpness, sparsity weight, gate margin, LoRA alpha and
learning rate, and its own per-epoch divergence check: a diverging member is reported
`diverged` and cannot touch the others (no tensor mixes members in the backward pass).
After training, each member's tensors are copied back into its own model, which is
evaluated with the ordinary trial code, so its metrics dict has `run_trial`'s keys.

Frozen-prefix caching (`cache_prefix=True`): every method that freezes the first layer's
weight sees the same `W1 x` for a digit in every epoch, so layer 1's frozen part is computed
once per training set and foundation, and training gathers cached rows, adding the trained
bias (BitFit) and LoRA's low-rank term on `x` on top. It applies to every method but `full`.

Exactness: on CPU every product is formed as `nn.Linear` and its autograd backward form it,
so the fused trajectory equals the lone one bit for bit in our tests, except BitFit with the
cache (its bias is added after the product: ~1 ulp per step) and loss *values* (the batch
mean sums in another order: ~1e-7 on `final_loss`). tests/trainables/engine/test_fused.py checks 1e-5.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables import registry
from trainables.config import ConfigError, TrialConfig, parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import FitResult, fit, train, train_foundation
from trainables.engine.resume import EpochHook, Progress
from trainables.engine.trial import EpochEvaluation, FoundationProvider, trial_metrics
from trainables.methods import adapt, specialisation_lr
from trainables.methods.lora.lowrank import LoRALinear, low_rank_update
from trainables.methods.taugate.gate import GatedReLU, gated, mean_gate, step_or_sigmoid
from trainables.model import MLP, frozen_product

# Config fields every member of one fused run must share (the shape of the work), plus the method's
# own `fuse_fields` (LoRA's rank). Members may differ in everything else: seed (hence foundation), lr,
# gate_sharpness, sparsity_weight, gate_init_margin, lora_alpha and the foundation_* settings.
FUSE_FIELDS = (
    "method", "dataset", "data_root", "download", "test_fraction", "val_fraction", "angles", "eval_angles",
    "target_angle", "hidden", "epochs", "batch_size", "device",
)  # fmt: skip


def _fuse_fields(config: TrialConfig) -> tuple[str, ...]:
    return FUSE_FIELDS + registry.get(config.method).fuse_fields


def fuse_key(config: TrialConfig) -> tuple:
    """Configs with equal keys can be trained in one fused run (a study groups trials by it)."""
    return tuple((name, _hashable(getattr(config, name))) for name in _fuse_fields(config))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def check_fusable(configs: Sequence[TrialConfig]) -> None:
    """Raise `ConfigError` naming the first field on which the configs cannot be fused."""
    if not configs:
        raise ConfigError("fuse: no configs to fuse")
    first = configs[0]
    for index, config in enumerate(configs[1:], start=1):
        for name in _fuse_fields(first):
            if getattr(config, name) != getattr(first, name):
                raise ConfigError(
                    f"{name}: fused trials must share it (member 0 has {getattr(first, name)!r}, "
                    f"member {index} has {getattr(config, name)!r})"
                )


# ------------------------------------------------------------------------------------------
# the stacked model


class _BatchedLinear(torch.autograd.Function):
    """`h @ weight.T + bias` per member (h: (K, B, in), weight: (K, out, in), bias: (K, out) or None).

    The backward forms each gradient with the same product, in the same operand layout, as
    autograd's `addmm`/`mm` backward forms it for `nn.Linear` (grad_W = grad.T @ h, grad_h =
    grad @ W), so a member's gradients are the ones it gets alone, bit for bit on our CPU
    (autograd's own `bmm` backward forms grad_W.T = h.T @ grad, which rounds differently).
    With `per_member`, grad_W is one `mm` per member: MKL's batched kernel rounds differently
    from `mm` for some shapes (10x128 from a batch of 64), which matters when the foundation's
    own weights train (`full`, whose errors grow fast); LoRA's small matrices use one `bmm`.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, per_member):
        ctx.save_for_backward(h, weight)
        ctx.per_member = per_member
        if bias is None:
            return torch.bmm(h, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        need_h, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_h = torch.bmm(grad, weight) if need_h else None
        grad_weight = None
        if need_weight and ctx.per_member:
            grad_weight = torch.stack([g.t().mm(x) for g, x in zip(grad, h, strict=True)])
        elif need_weight:
            grad_weight = torch.bmm(grad.transpose(1, 2), h)
        grad_bias = grad.sum(1) if need_bias else None
        return grad_h, grad_weight, grad_bias, None


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _BatchedLinear.apply(h, weight, bias, bias is not None and weight.requires_grad)


@dataclass
class _Layer:
    weight: torch.Tensor  # (K, out, in)
    bias: torch.Tensor  # (K, out)
    lora_a: torch.Tensor | None = None  # (K, r, in)
    lora_b: torch.Tensor | None = None  # (K, out, r)
    scaling: torch.Tensor | None = None  # (K, 1, 1)


@dataclass
class _Gate:
    gamma: torch.Tensor  # (K, 1, width)
    tau: torch.Tensor | None = None  # (K, 1, width); None for a gain-only gate
    sharpness: torch.Tensor | None = None  # (K, 1, 1)


class FusedMLP:
    """K adapted MLPs (same method and shape) as stacked tensors with a leading K dimension.

    `trainable` lists the stacked leaves the optimiser updates; `write_back()` copies them
    into the members' own models. After `cache_prefix(x)`, `forward` reads layer 1's frozen
    part from the cache instead of multiplying by W1.
    """

    def __init__(self, models: Sequence[MLP]):
        self.models = list(models)
        self.size = len(self.models)
        self.trainable: list[torch.Tensor] = []
        self._pairs: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # stacked leaf, member params
        self.layers = [self._layer(index) for index in range(len(self.models[0].layers))]
        self.gates = [self._gate(index) for index in range(len(self.models[0].activations))]
        self.prefix: torch.Tensor | None = None  # (G * n, width1): one block of rows per distinct foundation
        self.prefix_offset: torch.Tensor | None = None  # (K, 1): first row of each member's block
        self.prefix_has_bias = False

    def _stack(self, tensors: list[torch.Tensor], broadcast: bool = False) -> torch.Tensor:
        """(K, *shape), or with `broadcast` (K, 1, *shape): ready to broadcast over a batch, so a
        training step needs no view ops on it (a gate's tensors, used several times a step)."""
        stacked = torch.stack([t.detach() for t in tensors])
        if broadcast:
            stacked = stacked.unsqueeze(1).contiguous()
        learn = {bool(t.requires_grad) for t in tensors}
        if len(learn) != 1:
            raise ValueError("fused members must train the same tensors")
        if learn == {True}:
            stacked.requires_grad_(True)
            self.trainable.append(stacked)
            self._pairs.append((stacked, list(tensors)))
        return stacked

    def _layer(self, index: int) -> _Layer:
        members = [model.layers[index] for model in self.models]
        if all(isinstance(m, LoRALinear) for m in members):
            bases = [m.base for m in members]
            layer = _Layer(self._stack([b.weight for b in bases]), self._stack([b.bias for b in bases]))
            layer.lora_a = self._stack([m.lora_A for m in members])
            layer.lora_b = self._stack([m.lora_B for m in members])
            scaling = [m.scaling for m in members]
            layer.scaling = torch.tensor(scaling, dtype=layer.weight.dtype, device=layer.weight.device).view(-1, 1, 1)
            return layer
        if all(type(m) is nn.Linear for m in members):
            return _Layer(self._stack([m.weight for m in members]), self._stack([m.bias for m in members]))
        raise ValueError(f"layer {index}: fused trials support nn.Linear or LoRALinear layers, one kind per layer")

    def _gate(self, index: int) -> _Gate | None:
        members = [model.activations[index] for model in self.models]
        if all(type(m) is nn.ReLU for m in members):
            return None
        if not all(isinstance(m, GatedReLU) for m in members) or len({m.has_gate for m in members}) != 1:
            raise ValueError(f"activation {index}: fused trials support ReLU or GatedReLU, one kind per layer")
        gate = _Gate(gamma=self._stack([m.gamma for m in members], broadcast=True))
        if members[0].has_gate:
            gate.tau = self._stack([m.tau for m in members], broadcast=True)
            sharpness = [m.sharpness for m in members]
            gate.sharpness = torch.tensor(sharpness, dtype=gate.gamma.dtype, device=gate.gamma.device).view(-1, 1, 1)
        return gate

    @property
    def gated(self) -> bool:
        return any(g is not None and g.tau is not None for g in self.gates)

    def prefix_cacheable(self) -> bool:
        return not self.layers[0].weight.requires_grad

    @torch.no_grad()
    def cache_prefix(self, x: torch.Tensor) -> None:
        """Compute layer 1's frozen part on every row of `x` once per distinct foundation.

        With a frozen bias the cache holds `x @ W1.T + b1` formed as `nn.Linear` forms it (so a
        cached row equals the one computed on a batch, bit for bit on our CPU); with a trained
        bias (BitFit) it holds `x @ W1.T` and the bias is added per step (~1 ulp apart)."""
        if not self.prefix_cacheable():
            raise ValueError("the first layer's weight is trained, so its output cannot be cached")
        layer = self.layers[0]
        self.prefix_has_bias = not layer.bias.requires_grad
        blocks: list[torch.Tensor] = []  # one per distinct foundation: the cache hands equal tensors one output
        owner: list[int] = []
        for k in range(self.size):
            z = frozen_product(x, layer.weight[k], layer.bias[k] if self.prefix_has_bias else None)
            match = next((g for g, block in enumerate(blocks) if block is z), None)
            if match is None:
                blocks.append(z)
                match = len(blocks) - 1
            owner.append(match)
        self.prefix = torch.cat(blocks)
        self.prefix_offset = (torch.tensor(owner, device=x.device) * len(x)).view(-1, 1)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each member's logits on its own batch `x[index[k]]` (K, B, classes), and the soft gates."""
        soft: list[torch.Tensor] = []
        size, batch = index.shape
        cached = self.prefix is not None
        inputs = None
        if not cached or self.layers[0].lora_a is not None:  # index_select: a plain gather, faster than x[index]
            inputs = x.index_select(0, index.reshape(-1)).view(size, batch, -1)
        for position, layer in enumerate(self.layers):
            if position == 0 and cached:
                z = self.prefix.index_select(0, (index + self.prefix_offset).reshape(-1)).view(size, batch, -1)
                if not self.prefix_has_bias:
                    z = z + layer.bias.unsqueeze(1)
            else:
                z = _linear(inputs, layer.weight, layer.bias)
            if layer.lora_a is not None:  # as LoRALinear, with the batched product
                z = z + low_rank_update(inputs, layer.lora_a, layer.lora_b, layer.scaling, _linear)
            if position == len(self.gates):
                return z, soft
            inputs = self._activate(self.gates[position], z, soft)
        raise AssertionError("an MLP has one more layer than activations")

    @staticmethod
    def _activate(gate: _Gate | None, z: torch.Tensor, soft: list[torch.Tensor]) -> torch.Tensor:
        # GatedReLU's gate on the stacked tensors
        if gate is None:
            return torch.relu(z)
        g = None if gate.tau is None else step_or_sigmoid(z, gate.tau, gate.sharpness, hard=False)
        if g is not None:
            soft.append(g)
        return gated(z, gate.gamma, g)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every trained stacked tensor into the members' own models."""
        for stacked, params in self._pairs:
            for k, param in enumerate(params):
                param.copy_(stacked[k].view_as(param))


# ------------------------------------------------------------------------------------------
# training


def fit_fused(
    models: Sequence[MLP], x: torch.Tensor, y: torch.Tensor, *,
    epochs: int, lrs: Sequence[float], batch_size: int, seeds: Sequence[int],
    sparsity_weights: Sequence[float] | None = None, cache_prefix: bool = True, hook: EpochHook | None = None,
) -> list[FitResult]:  # fmt: skip
    """`trainables.engine.fit.fit` for K adapted models (one method and shape) at once, in place.

    Member k gets what `fit(models[k], x, y, lr=lrs[k], seed=seeds[k],
    sparsity_weight=sparsity_weights[k], ...)` gives it: its batch order, its loss, its
    per-epoch divergence check (a diverged member is reported and left out; the others go on).
    `hook` is told every epoch's member losses (None for a diverged member) after the members'
    models got their tensors back, and may resume training from a saved state.
    """
    size = len(models)
    weights = list(sparsity_weights) if sparsity_weights is not None else [0.0] * size
    if size == 0 or not (len(lrs) == len(seeds) == len(weights) == size):
        raise ValueError("fit_fused: one lr, seed and sparsity weight per model")
    if epochs == 0 or not any(p.requires_grad for p in models[0].parameters()):
        # nothing to train: fit's own path (the loss of the model as it is)
        return [fit(model, x, y, epochs=0, lr=1.0, batch_size=batch_size, seed=0) for model in models]

    fused = FusedMLP(models)
    if cache_prefix and fused.prefix_cacheable():
        fused.cache_prefix(x)
    trainee = _Group(fused, x, y, weights)
    return train(trainee, len(y), x.device, epochs=epochs, lrs=lrs, batch_size=batch_size, seeds=seeds, hook=hook)


class _Group:
    """A fused group as a trainee (trainables.engine.fit.train): each member's mean batch loss on its own
    rows, plus its lambda * mean(g); the members' models get their tensors back when training pauses."""

    def __init__(self, fused: FusedMLP, x: torch.Tensor, y: torch.Tensor, weights: list[float]) -> None:
        self.fused, self.x, self.y = fused, x, y
        self.members, self.params = fused.size, fused.trainable
        self.sparsity = None
        if fused.gated and any(w > 0 for w in weights):  # a member with weight 0 adds exactly 0, as fit adds nothing
            self.sparsity = torch.tensor(weights, dtype=x.dtype, device=x.device)

    def losses(self, index: torch.Tensor) -> torch.Tensor:
        size, batch = index.shape
        logits, soft = self.fused.forward(self.x, index)
        targets = self.y.index_select(0, index.reshape(-1))
        loss = F.cross_entropy(logits.reshape(size * batch, -1), targets, reduction="none").view(size, batch).mean(1)
        if self.sparsity is not None:
            loss = loss + self.sparsity * mean_gate(soft, size)
        return loss

    def pause(self) -> None:
        self.fused.write_back()
        for model in self.fused.models:
            model.eval()

    def resume(self) -> None:
        """Fused training reads the stacked tensors, never the members' modules: nothing to switch."""


# ------------------------------------------------------------------------------------------
# trials


def run_fused(
    raw_configs: Sequence[dict[str, Any] | TrialConfig],
    foundation: FoundationProvider | None = None,
    artifact_dirs: Sequence[Path | str | None] | None = None,
    *,
    cache_prefix: bool = True,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """`run_trial` for K configs with one `fuse_key` (same method and shape), trained together.

    `foundation(config, modes)` supplies each member's foundation (called once per member, in
    order; members of one seed may get the same object). Returns one metrics dict per config,
    in order, equal to `run_trial(config, foundation)` within float32 rounding, except
    `train_seconds`: the fused specialisation time divided by K (each member's share).
    `artifact_dirs` (one folder or None per config) gets each member's adapter and gate
    statistics, as `run_trial(..., artifact_dir=)` writes them. Raises `ConfigError` for
    invalid input or configs that cannot be fused. `progress` gets one `EpochRecord` per member
    after every epoch (see `run_trial`).
    """
    configs = [c if isinstance(c, TrialConfig) else parse_config(c) for c in raw_configs]
    check_fusable(configs)
    if artifact_dirs is not None and len(artifact_dirs) != len(configs):
        raise ConfigError("artifact_dirs: one entry (or None) per config")
    first = configs[0]
    device = resolve_device(first.device)
    modes = load_modes(first, device)
    bases = [(foundation or train_foundation)(config, modes) for config in configs]

    started = time.perf_counter()
    target = modes[first.target_angle]
    models = [adapt(base, config) for base, config in zip(bases, configs, strict=True)]
    fits = fit_fused(
        models, target.train_x, target.train_y, epochs=first.epochs,
        lrs=[specialisation_lr(c) for c in configs], batch_size=first.batch_size, seeds=[c.seed for c in configs],
        sparsity_weights=[c.sparsity_weight if c.gated else 0.0 for c in configs], cache_prefix=cache_prefix,
        hook=EpochEvaluation(progress, models, configs, target, started) if progress else None,
    )  # fmt: skip
    share = (time.perf_counter() - started) / len(configs)
    folders = artifact_dirs if artifact_dirs is not None else [None] * len(configs)
    return [
        trial_metrics(model, config, modes, result, share, folder)
        for model, config, result, folder in zip(models, configs, fits, folders, strict=True)
    ]
