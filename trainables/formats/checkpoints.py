"""Foundations and adapters on disk: `safetensors` tensors beside a JSON config, as PEFT does.

Nothing here unpickles: a corrupted or truncated file is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensor_bytes

from trainables import files
from trainables.config import ConfigError, TrialConfig, parse_config
from trainables.errors import TauGateError
from trainables.methods import adapt
from trainables.model import MLP

ADAPTER_TENSORS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"
ADAPTER_FIELDS = ("method", "seed", "gate_sharpness", "gate_init_margin", "lora_rank", "lora_alpha", "hidden")
# Which foundation an adapter was trained on. `save_foundation` and `load_foundation` note the file (its
# name and sha256) on the model as FOUNDATION_FILE; `adapt` copies the foundation, note included, and
# `save_adapter` writes it into the adapter's config as "foundation": {"file", "sha256"}.
FOUNDATION_FILE = "foundation_file"
# `taugate trial --artifacts DIR` saves the foundation it trained as DIR/ARTIFACT_FOUNDATION beside DIR/adapter
ARTIFACT_FOUNDATION = "foundation.safetensors"


class CheckpointError(TauGateError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or does not fit the model."""


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return files.read_tensors(path, CheckpointError)


def save_foundation(model: MLP, path: Path | str) -> None:
    path = Path(path)
    files.write_tensors(path, model.state_dict(), metadata={"hidden": json.dumps(model.hidden)})
    _note_file(model, path, hashlib.sha256(path.read_bytes()).hexdigest())


def load_foundation(path: Path | str, hidden: list[int] | None = None) -> MLP:
    """The foundation saved at `path`; `hidden` (the hidden widths) is read from the tensors' shapes
    when not given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None
    try:
        tensors = load_tensor_bytes(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    widths = hidden if hidden is not None else _hidden_widths(tensors, path)
    model = MLP(hidden=widths)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: does not fit an MLP with hidden={widths} ({err})") from None
    _note_file(model, path, hashlib.sha256(data).hexdigest())
    return model


def _hidden_widths(tensors: dict[str, torch.Tensor], path: Path) -> list[int]:
    """The hidden widths of an MLP's state dict: the output size of every Linear but the last."""
    weights = [tensors.get(f"layers.{i}.weight") for i in range(len(tensors))]
    shapes = [tuple(w.shape) for w in weights[: weights.index(None) if None in weights else len(weights)]]
    if len(shapes) < 2 or any(len(shape) != 2 for shape in shapes):
        raise CheckpointError(f"{path}: not an MLP foundation (no layers.<i>.weight matrices: {sorted(tensors)})")
    return [rows for rows, _ in shapes[:-1]]


def _note_file(model: MLP, path: Path, sha256: str) -> None:
    model.__dict__[FOUNDATION_FILE] = {"file": path.name, "sha256": sha256}


def foundation_for(adapter_folder: Path | str) -> Path:
    """The foundation file an adapter was trained on, its sha256 checked against the adapter's record.

    A study trial's adapter (`STUDY/trials/<key>/adapter`): the study's `STUDY/foundations/<id>.safetensors`
    (its name recorded in the adapter's config, else the foundation id of the trial's `config.json`).
    `taugate trial --artifacts DIR`: `DIR/foundation.safetensors`. A missing foundation, or one whose
    sha256 is not the recorded one (retrained, replaced), is a `CheckpointError` naming both files."""
    folder = Path(adapter_folder)
    settings = files.read_json(folder / ADAPTER_CONFIG, CheckpointError)
    record = settings.get("foundation") if isinstance(settings.get("foundation"), dict) else {}
    trial_dir = folder.resolve().parent
    study_foundations = trial_dir.parent.parent / "foundations"
    if trial_dir.parent.name == "trials" and study_foundations.is_dir():  # a study's ledger
        name = record.get("file") or f"{_ledger_config(trial_dir).foundation_id()}.safetensors"
        path = study_foundations / name
    else:
        path = trial_dir / (record.get("file") or ARTIFACT_FOUNDATION)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (the foundation of the adapter {folder}); the adapter "
                              "is usable only on the foundation it was trained on")  # fmt: skip
    if expected := record.get("sha256"):
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        if found != expected:
            raise CheckpointError(
                f"{path}: sha256 {found} is not the {expected} recorded in {folder / ADAPTER_CONFIG}: this is not "
                "the foundation the adapter was trained on (retrained or replaced)"
            )
    return path


def _ledger_config(trial_dir: Path) -> TrialConfig:
    path = trial_dir / "config.json"
    try:
        return parse_config(files.read_json(path, CheckpointError))
    except ConfigError as err:
        raise CheckpointError(f"{path}: not a trial config ({err})") from None


def save_adapter(model: MLP, config: TrialConfig, folder: Path) -> Path:
    """Write the method's own tensors (trainable ones, plus gate settings) and its config."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    folder.mkdir(parents=True, exist_ok=True)
    files.write_tensors(folder / ADAPTER_TENSORS, tensors)
    settings = {name: getattr(config, name) for name in ADAPTER_FIELDS}
    if source := model.__dict__.get(FOUNDATION_FILE):  # the file its foundation came from (see foundation_for)
        settings["foundation"] = dict(source)
    files.write_json(folder / ADAPTER_CONFIG, {**settings, "tensors": sorted(tensors)}, indent=2)
    return folder


def load_adapter(foundation: MLP, folder: Path | str) -> MLP:
    """Rebuild the adapted model: the method applied to the foundation, then its tensors loaded."""
    folder = Path(folder)
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
