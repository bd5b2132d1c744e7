"""One trial: a config dict in, a metrics dict out (plus optional artifacts on disk)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig, TrialMetrics, accuracy_name, angle_key, parse_config
from trainables.data import Mode, load_modes
from trainables.device import resolve_device
from trainables.engine.evaluation import evaluate, gate_statistics
from trainables.engine.fit import FitResult, specialise, train_foundation
from trainables.engine.resume import EpochHook, EpochRecord, Progress, TrainState
from trainables.formats.checkpoints import ARTIFACT_FOUNDATION, save_adapter, save_foundation
from trainables.methods import count_trainable, specialisation_lr
from trainables.methods.taugate.gate import gates
from trainables.model import MLP, first_layer_cache

GATE_STATS_FILE = "gate_stats.json"
FoundationProvider = Callable[[TrialConfig, dict], MLP]


def run_trial(
    raw_config: dict[str, Any] | TrialConfig,
    foundation: FoundationProvider | None = None,
    artifact_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train (or fetch) the foundation, specialise it and evaluate every mode.

    `foundation(config, modes)` supplies a shared foundation (the study caches them); by
    default the trial trains its own. With `artifact_dir` the adapter and the per-neuron
    gate statistics are written there (and the foundation, `foundation.safetensors`, when the trial
    trained its own). `progress` (trainables.engine.resume.Progress) gets an
    `EpochRecord` after every epoch and may resume training from a saved state. Raises
    `ConfigError` for invalid input; a diverging run is not an error but `status: "diverged"`.
    """
    config = raw_config if isinstance(raw_config, TrialConfig) else parse_config(raw_config)
    device = resolve_device(config.device)
    modes = load_modes(config, device)
    base = (foundation or train_foundation)(config, modes)
    if artifact_dir is not None and foundation is None:  # its own foundation goes beside the adapter, which
        save_foundation(base, Path(artifact_dir) / ARTIFACT_FOUNDATION)  # names it (checkpoints.foundation_for)

    started = time.perf_counter()
    target = modes[config.target_angle]

    def hook(model: MLP) -> EpochHook | None:
        return EpochEvaluation(progress, [model], [config], target, started) if progress else None

    model, fit = specialise(base, config, target, hook)
    return trial_metrics(model, config, modes, fit, time.perf_counter() - started, artifact_dir)


class EpochEvaluation:
    """The epoch hook of a trial's training (`fit`, `fit_fused`): each epoch, every model that has
    not diverged is evaluated on the target mode's validation digits, as its final `val_acc_<target>`
    (and `_hard`) will be, and the records go to the trial's `Progress`."""

    def __init__(self, progress: Progress, models: list[MLP], configs: list[TrialConfig], target: Mode,
                 started: float) -> None:  # fmt: skip
        self.progress, self.models, self.configs, self.target = progress, models, configs, target
        self.started = started

    def resume(self) -> TrainState | None:
        return self.progress.resume()

    def after_epoch(self, epoch: int, losses: list[float | None], snapshot: Callable[[], TrainState]) -> None:
        seconds = time.perf_counter() - self.started
        with first_layer_cache():
            records = self._records(epoch, losses, seconds)
        self.progress.report(records, snapshot)

    def _records(self, epoch: int, losses: list[float | None], seconds: float) -> list[EpochRecord]:
        records = []
        for model, config, loss in zip(self.models, self.configs, losses, strict=True):
            if loss is None:
                records.append(EpochRecord(epoch, None, None, seconds, diverged=True))
                continue
            hard = evaluate(model, self.target, hard=True, split="val") if config.gated else None
            records.append(EpochRecord(epoch, loss, evaluate(model, self.target, split="val"), seconds,
                                       val_acc_hard=hard))  # fmt: skip
        return records


@first_layer_cache()  # a dozen evaluations on the same digits: layer 1 once per input
def trial_metrics(
    model: MLP, config: TrialConfig, modes: dict, result: FitResult, seconds: float,
    artifact_dir: Path | str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The metrics dict of a specialised model, built as `run_trial` builds it."""
    metrics: dict[str, Any] = {
        "method": config.method,
        "seed": config.seed,
        "trainable_params": count_trainable(model),
        "train_seconds": seconds,
    }
    if result.diverged_at_step is not None:
        return TrialMetrics(status="diverged", diverged_at_step=result.diverged_at_step, **metrics).to_dict()
    for angle, mode in modes.items():
        for split in ("test", "val"):
            for hard in (False, True) if config.gated else (False,):
                name = accuracy_name(angle, hard=hard, validation=split == "val")
                metrics[name] = evaluate(model, mode, hard=hard, split=split)
    # the metrics need the target mode's statistics only; the artifacts need every mode's
    wanted = modes if artifact_dir is not None else {config.target_angle: modes[config.target_angle]}
    stats = {angle: gate_statistics(model, mode) for angle, mode in wanted.items()}
    target = stats[config.target_angle]
    metrics |= {
        "final_loss": result.final_loss,
        "high_activation_ratio": target.high_activation_ratio,
        "active_ratio": target.active_ratio,
        "strong_activation_ratio": target.strong_activation_ratio,
        "mean_gate": target.mean_gate,
    }
    # what a lambda chosen for a target sparsity, or a search on sparsity, reads: validation only
    validation = gate_statistics(model, modes[config.target_angle], split="val")
    metrics |= {
        "val_high_activation_ratio": validation.high_activation_ratio,
        "val_active_ratio": validation.active_ratio,
    }
    metrics |= tau_budget(model, config, result)
    if artifact_dir is not None:
        write_artifacts(model, config, stats, Path(artifact_dir))
    return TrialMetrics(status="ok", **metrics).to_dict()


def tau_budget(model: MLP, config: TrialConfig, result: FitResult) -> dict[str, float]:
    """How far a gated trial's thresholds moved (mean tau - tau_0, tau_0 = -margin/s: > 0 closes gates),
    how far Adam could move them (tau's lr x steps: Adam's step is about the lr, whatever lambda is),
    and lambda at the end. Empty for a method without thresholds."""
    taus = [g.tau.detach().flatten() for g in gates(model)]
    if not taus:
        return {}
    start = -config.gate_init_margin / config.gate_sharpness
    final = result.sparsity_weight if result.sparsity_weight is not None else config.sparsity_weight
    return {
        "tau_displacement": (torch.cat(taus) - start).mean().item(),
        "tau_step_budget": specialisation_lr(config) * config.tau_lr_multiplier * result.steps,
        "sparsity_weight_final": float(final),
    }


def shared(model: MLP) -> FoundationProvider:
    """A foundation provider that hands every trial the same, already trained, foundation."""
    return lambda config, modes: model


def write_artifacts(model: MLP, config: TrialConfig, stats: dict, folder: Path) -> None:
    save_adapter(model, config, folder / "adapter")
    # vars(), not dataclasses.asdict: asdict deep-copies every rate list first (~0.01 s a mode), then
    # _rounded copies them again
    by_mode = {angle_key(angle): _rounded(dict(vars(s))) for angle, s in stats.items()}
    (folder / GATE_STATS_FILE).write_text(json.dumps({"method": config.method, "modes": by_mode}))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
