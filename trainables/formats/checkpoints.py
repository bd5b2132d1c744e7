"""Foundations and adapters on disk: `safetensors` tensors beside a JSON config, as PEFT does.

Nothing here unpickles: a corrupted or truncated file is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainables import files
from trainables.config import TrialConfig
from trainables.errors import TauGateError
from trainables.methods import adapt
from trainables.model import MLP

ADAPTER_TENSORS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"
ADAPTER_FIELDS = ("method", "seed", "gate_sharpness", "gate_init_margin", "lora_rank", "lora_alpha", "hidden")


class CheckpointError(TauGateError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or does not fit the model."""


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return files.read_tensors(path, CheckpointError)


def save_foundation(model: MLP, path: Path) -> None:
    files.write_tensors(path, model.state_dict(), metadata={"hidden": json.dumps(model.hidden)})


def load_foundation(path: Path, hidden: list[int]) -> MLP:
    model = MLP(hidden=hidden)
    try:
        model.load_state_dict(_tensors(path))
    except RuntimeError as err:
        raise CheckpointError(f"{path}: does not fit an MLP with hidden={hidden} ({err})") from None
    return model


def save_adapter(model: MLP, config: TrialConfig, folder: Path) -> Path:
    """Write the method's own tensors (trainable ones, plus gate settings) and its config."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    folder.mkdir(parents=True, exist_ok=True)
    files.write_tensors(folder / ADAPTER_TENSORS, tensors)
    settings = {name: getattr(config, name) for name in ADAPTER_FIELDS}
    files.write_json(folder / ADAPTER_CONFIG, {**settings, "tensors": sorted(tensors)}, indent=2)
    return folder


def load_adapter(foundation: MLP, folder: Path) -> MLP:
    """Rebuild the adapted model: the method applied to the foundation, then its tensors loaded."""
    settings = files.read_json(folder / ADAPTER_CONFIG, CheckpointError)
    try:
        config = TrialConfig(**{k: settings[k] for k in ADAPTER_FIELDS})
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: invalid adapter config ({err})") from None
    model = adapt(foundation, config)
    tensors = _tensors(folder / ADAPTER_TENSORS)
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        raise CheckpointError(
            f"{folder / ADAPTER_TENSORS}: tensors {sorted(tensors)} do not match method "
            f"{config.method!r} (expected {sorted(expected)})"
        )
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{folder / ADAPTER_TENSORS}: shapes do not fit ({err})") from None
    return model
