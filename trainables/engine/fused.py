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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainables.config import ConfigError, TrialConfig, parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import FitResult, fit, tau_multipliers, train, train_foundation
from trainables.engine.fusable import FUSE_FIELDS, check_fusable, fuse_key  # noqa: F401 - where they were
from trainables.engine.resume import EpochHook, Progress
from trainables.engine.stacked import FusedMLP
from trainables.engine.trial import EpochEvaluation, FoundationProvider, trial_metrics
from trainables.methods import adapt, specialisation_lr
from trainables.methods.taugate.control import SparsityControl
from trainables.methods.taugate.gate import mean_gate
from trainables.model import MLP

# ------------------------------------------------------------------------------------------
# training


def fit_fused(
    models: Sequence[MLP], x: torch.Tensor, y: torch.Tensor, *,
    epochs: int, lrs: Sequence[float], batch_size: int, seeds: Sequence[int],
    sparsity_weights: Sequence[float] | None = None, tau_lr_multipliers: Sequence[float] | None = None,
    control: SparsityControl | None = None, cache_prefix: bool = True, hook: EpochHook | None = None,
) -> list[FitResult]:  # fmt: skip
    """`trainables.engine.fit.fit` for K adapted models (one method and shape) at once, in place.

    Member k gets what `fit(models[k], x, y, lr=lrs[k], seed=seeds[k],
    sparsity_weight=sparsity_weights[k], tau_lr_multiplier=tau_lr_multipliers[k], ...)` gives it (lambda
    adapted per member by `control` when a member has a sparsity target): its batch order, its loss, its
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
    multipliers = list(tau_lr_multipliers) if tau_lr_multipliers is not None else [1.0] * size
    trainee = _Group(fused, x, y, weights, multipliers, control)
    return train(trainee, len(y), x.device, epochs=epochs, lrs=lrs, batch_size=batch_size, seeds=seeds, hook=hook)


class _Group:
    """A fused group as a trainee (trainables.engine.fit.train): each member's mean batch loss on its own
    rows, plus its lambda * mean(g); the members' models get their tensors back when training pauses."""

    def __init__(self, fused: FusedMLP, x: torch.Tensor, y: torch.Tensor, weights: list[float],
                 tau_lr_multipliers: list[float], control: SparsityControl | None = None) -> None:  # fmt: skip
        self.fused, self.x, self.y = fused, x, y
        self.members, self.params = fused.size, fused.trainable
        self.multipliers = tau_multipliers(self.params, fused.taus, tau_lr_multipliers)
        self.control = control if fused.gated else None
        self.sparsity = None
        if fused.gated and any(w > 0 for w in weights):  # a member with weight 0 adds exactly 0, as fit adds nothing
            self.sparsity = torch.tensor(weights, dtype=x.dtype, device=x.device)

    def losses(self, index: torch.Tensor) -> torch.Tensor:
        size, batch = index.shape
        logits, soft = self.fused.forward(self.x, index)
        targets = self.y.index_select(0, index.reshape(-1))
        loss = F.cross_entropy(logits.reshape(size * batch, -1), targets, reduction="none").view(size, batch).mean(1)
        if self.control is not None:
            loss = loss + self.control.term(soft)
            self.control.update(soft)
        elif self.sparsity is not None:
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
        sparsity_weights=[c.sparsity_weight if c.gated else 0.0 for c in configs],
        tau_lr_multipliers=[c.tau_lr_multiplier for c in configs],
        control=SparsityControl.of(configs, target.train_x.device, target.train_x.dtype), cache_prefix=cache_prefix,
        hook=EpochEvaluation(progress, models, configs, target, started) if progress else None,
    )  # fmt: skip
    share = (time.perf_counter() - started) / len(configs)
    folders = artifact_dirs if artifact_dirs is not None else [None] * len(configs)
    return [
        trial_metrics(model, config, modes, result, share, folder)
        for model, config, result, folder in zip(models, configs, fits, folders, strict=True)
    ]
