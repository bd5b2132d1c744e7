"""Foundations and adapters on disk: `safetensors` tensors beside a JSON config, as PEFT does.

Nothing here unpickles: a corrupted or truncated file is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainables.config import TrialConfig
from trainables.methods import adapt
from trainables.model import MLP

ADAPTER_TENSORS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"
ADAPTER_FIELDS = ("method", "seed", "gate_sharpness", "gate_init_margin", "lora_rank", "lora_alpha", "hidden")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or does not fit the model."""


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(partial), metadata=metadata)
    os.replace(partial, path)  # readers on other processes or nodes never see half a file


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def save_foundation(model: MLP, path: Path) -> None:
    _atomic_save(model.state_dict(), path, metadata={"hidden": json.dumps(model.hidden)})


def load_foundation(path: Path, hidden: list[int]) -> MLP:
    model = MLP(hidden=hidden)
    try:
        model.load_state_dict(_load_tensors(path))
    except RuntimeError as err:
        raise CheckpointError(f"{path}: does not fit an MLP with hidden={hidden} ({err})") from None
    return model


def save_adapter(model: MLP, config: TrialConfig, folder: Path) -> Path:
    """Write the method's own tensors (trainable ones, plus gate settings) and its config."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(tensors, folder / ADAPTER_TENSORS)
    settings = {name: getattr(config, name) for name in ADAPTER_FIELDS}
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**settings, "tensors": sorted(tensors)}, indent=2))
    return folder


def load_adapter(foundation: MLP, folder: Path) -> MLP:
    """Rebuild the adapted model: the method applied to the foundation, then its tensors loaded."""
    settings = _load_json(folder / ADAPTER_CONFIG)
    try:
        config = TrialConfig(**{k: settings[k] for k in ADAPTER_FIELDS})
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: invalid adapter config ({err})") from None
    model = adapt(foundation, config)
    tensors = _load_tensors(folder / ADAPTER_TENSORS)
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
