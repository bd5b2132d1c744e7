"""Adapters in Hugging Face PEFT's format, so that PEFT can load them onto the foundation.

`export_lora` writes a LoRA adapter as a PEFT LoRA adapter; `export_gain_only` writes a gain-only
adapter as a PEFT IA3 adapter. Either folder loads with PEFT's own loader onto a plain `MLP`
carrying the foundation's weights (`checkpoints.foundation_for` names the file an adapter was trained on):

    model = PeftModel.from_pretrained(load_foundation(foundation_for(adapter_folder)), out_folder)

and computes what `load_adapter(foundation, adapter_folder)` computes (the tests check
the logits against real PEFT). Each method exports through the `peft` function of its registry entry
(`trainables.methods.lora.peft_lora`, `trainables.methods.gain_only.peft_ia3`, which state their layout
mappings); what this module adds is common to both:

- Key names: PEFT saves an adapter's tensors under the `PeftModel` prefix `base_model.model.` with
  the adapter name ("default") removed, e.g. `base_model.model.layers.0.lora_A.weight`,
  `base_model.model.layers.1.ia3_l`.

A threshold gate (taugate, threshold_only) has no PEFT equivalent, and frozen/bitfit/full adapters
are not PEFT adapter types: exporting them is an `ExportError` naming the method. This module does
not import peft (a development dependency only); it writes the files PEFT reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables import files, registry
from trainables.errors import TauGateError
from trainables.formats.checkpoints import ADAPTER_CONFIG, CheckpointError, load_adapter
from trainables.model import MLP

PEFT_CONFIG, PEFT_TENSORS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel -> tuner model (`base_model`) -> our MLP (`model`)
# PEFT records the class of a custom base model here when it saves one (informational for `PeftModel`).
AUTO_MAPPING = {"base_model_class": MLP.__name__, "parent_library": MLP.__module__}


class ExportError(TauGateError, ValueError):
    """The adapter's method has no PEFT counterpart, or the export would overwrite its source."""


def export_peft(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Export any exportable adapter (a method whose registry entry has a `peft` exporter: LoRA as PEFT
    LoRA, gain_only as PEFT IA3) as a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`)."""
    method = _read_settings(Path(adapter_folder)).get("method")
    return _export(Path(adapter_folder), Path(out_folder), method, base_model_name_or_path)


def export_lora(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write a LoRA adapter folder as a PEFT LoRA adapter (any other method is refused)."""
    return _export(Path(adapter_folder), Path(out_folder), "lora", base_model_name_or_path)


def export_gain_only(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write a gain-only adapter folder as a PEFT IA3 adapter (any other method is refused)."""
    return _export(Path(adapter_folder), Path(out_folder), "gain_only", base_model_name_or_path)


_EXPORTERS = {"lora": "export_lora", "gain_only": "export_gain_only"}  # the named exporters below


def _export(adapter_folder: Path, out_folder: Path, method: Any, base_model_name_or_path: str | None) -> Path:
    exporter = registry.REGISTRY[method].peft if method in registry.REGISTRY else None
    if exporter is None:
        raise ExportError(_refusal(adapter_folder, method))
    settings, model = _load(adapter_folder, out_folder, method)
    config, tensors = exporter(model, settings)
    config = {**_common_config(base_model_name_or_path), **config}
    return _write(out_folder, config, {PEFT_PREFIX + name: t for name, t in tensors.items()}, settings)


def _common_config(base_model_name_or_path: str | None) -> dict[str, Any]:
    # Only long-standing PeftConfig fields: older PEFT versions refuse fields they do not know.
    return {
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "task_type": None,  # a plain nn.Module, not a transformers task model
        "inference_mode": True,  # as PEFT writes it; `from_pretrained(..., is_trainable=True)` overrides it
        "fan_in_fan_out": False,  # weights are [out, in], as nn.Linear stores them
        "modules_to_save": None,
        "auto_mapping": AUTO_MAPPING,
    }


def _read_settings(adapter_folder: Path) -> dict[str, Any]:
    path = adapter_folder / ADAPTER_CONFIG
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path}: invalid adapter config (not a JSON object)")
    return settings


def _refusal(adapter_folder: Path, method: Any) -> str:
    known = registry.REGISTRY.get(method) if isinstance(method, str) else None
    reason = known.peft_note if known is not None else "not a known method"
    if known is not None and known.peft is not None:  # exportable, by its own exporter
        reason = f"{_EXPORTERS.get(method, 'export_peft')} exports it ({reason})"
    return f"{adapter_folder}: cannot export method {method!r} to PEFT: {reason}"


def _load(adapter_folder: Path, out_folder: Path, method: str) -> tuple[dict[str, Any], MLP]:
    """The adapter's settings and the adapted model, every file checked by `load_adapter`."""
    if out_folder.resolve() == adapter_folder.resolve():
        raise ExportError(f"{out_folder}: the export would overwrite the adapter's own {ADAPTER_CONFIG}")
    settings = _read_settings(adapter_folder)
    if settings.get("method") != method:
        raise ExportError(_refusal(adapter_folder, settings.get("method")))
    hidden = settings.get("hidden")
    if not (isinstance(hidden, list) and hidden and all(isinstance(w, int) and w > 0 for w in hidden)):
        raise CheckpointError(f"{adapter_folder / ADAPTER_CONFIG}: invalid adapter config (hidden: {hidden!r})")
    # Only the adapter's tensors are exported, so any foundation of this shape will do. Building it and
    # the adapter draws random numbers: keep the caller's random state as it was.
    with torch.random.fork_rng(devices=[]):
        model = load_adapter(MLP(hidden=hidden), adapter_folder)
    return settings, model


def _write(out_folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], settings: dict) -> Path:
    out_folder.mkdir(parents=True, exist_ok=True)
    # "format": "pt" is what PEFT writes; the rest says where the adapter came from (metadata is str -> str)
    metadata = {
        "format": "pt",
        "taugate_method": settings["method"],
        "taugate_hidden": json.dumps(settings["hidden"]),
        "taugate_seed": str(settings["seed"]),
    }
    files.write_tensors(out_folder / PEFT_TENSORS, _plain(tensors), metadata=metadata)
    files.write_text(out_folder / PEFT_CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return out_folder


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous().cpu().clone() for name, tensor in tensors.items()}
