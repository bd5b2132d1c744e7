"""Adapters in Hugging Face PEFT's format, so that PEFT can load them onto the foundation.

`export_lora` writes a LoRA adapter as a PEFT LoRA adapter; `export_gain_only` writes a gain-only
adapter as a PEFT IA3 adapter. Either folder loads with PEFT's own loader onto a plain `MLP`
carrying the foundation's weights:

    model = PeftModel.from_pretrained(load_foundation(path, hidden), out_folder)

and computes what `load_adapter(foundation, adapter_folder)` computes (tests/test_export.py checks
the logits against real PEFT). The conventions the two formats share, or that the export maps:

- LoRA: PEFT's `lora_A.weight` [r, in] and `lora_B.weight` [out, r] have our layout (no transpose,
  `fan_in_fan_out` false); PEFT scales by `lora_alpha / r` as we do (`use_rslora` false, which would
  be `lora_alpha / sqrt(r)`); no dropout, no LoRA bias (`bias: "none"`); every Linear layer is a target.
- IA3: our gain multiplies a hidden unit after its ReLU, `a = gamma * relu(z)`, which is the input of
  the next Linear layer: so `gamma` of hidden layer i is the IA3 vector of `layers.{i+1}` as a
  feed-forward module (IA3 scales that layer's input). IA3 on `layers.i` itself would scale `z`
  before the ReLU, which differs for negative gains. PEFT stores the vector as [1, width].
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

from trainables import files
from trainables.errors import TauGateError
from trainables.formats.checkpoints import ADAPTER_CONFIG, CheckpointError, load_adapter
from trainables.methods.lora.lowrank import LoRALinear
from trainables.methods.taugate.gate import GatedReLU
from trainables.model import MLP

PEFT_CONFIG, PEFT_TENSORS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel -> tuner model (`base_model`) -> our MLP (`model`)
# PEFT records the class of a custom base model here when it saves one (informational for `PeftModel`).
AUTO_MAPPING = {"base_model_class": MLP.__name__, "parent_library": MLP.__module__}

NOT_EXPORTABLE = {
    "taugate": "its threshold gate g = 1[z > tau] has no PEFT equivalent (PEFT's IA3 covers a gain, not a gate)",
    "threshold_only": "its threshold gate g = 1[z > tau] has no PEFT equivalent",
    "frozen": "a frozen foundation has no adapter tensors to export",
    "bitfit": "PEFT has no BitFit adapter type (trained biases are neither LoRA nor IA3 tensors)",
    "full": "full fine-tuning changes every weight: its result is a model, not an adapter",
}
EXPORTED_BY = {
    "lora": "export_lora exports it (as PEFT LoRA)",
    "gain_only": "export_gain_only exports it (as PEFT IA3)",
}


class ExportError(TauGateError, ValueError):
    """The adapter's method has no PEFT counterpart, or the export would overwrite its source."""


def export_peft(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Export any exportable adapter: LoRA as PEFT LoRA, gain_only as PEFT IA3."""
    method = _read_settings(Path(adapter_folder)).get("method")
    exporter = {"lora": export_lora, "gain_only": export_gain_only}.get(method)
    if exporter is None:
        raise ExportError(_refusal(Path(adapter_folder), method))
    return exporter(adapter_folder, out_folder, base_model_name_or_path=base_model_name_or_path)


def export_lora(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write a LoRA adapter folder as a PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`)."""
    adapter_folder, out_folder = Path(adapter_folder), Path(out_folder)
    settings, model = _load(adapter_folder, out_folder, "lora")
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    rank = next(iter(layers.values())).lora_A.shape[0]
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A  # [r, in], as PEFT's lora_A Linear
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B  # [out, r], as PEFT's lora_B Linear
    config = {
        **_common_config(base_model_name_or_path),
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": _plain_number(float(settings["lora_alpha"])),
        "use_rslora": False,  # PEFT then scales by lora_alpha / r, as LoRALinear does
        "target_modules": list(layers),
        "lora_dropout": 0.0,
        "bias": "none",
        "use_dora": False,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    return _write(out_folder, config, tensors, settings)


def export_gain_only(
    adapter_folder: Path | str, out_folder: Path | str, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write a gain-only adapter folder as a PEFT IA3 adapter: hidden layer i's gains scale `layers.{i+1}`'s input."""
    adapter_folder, out_folder = Path(adapter_folder), Path(out_folder)
    settings, model = _load(adapter_folder, out_folder, "gain_only")
    tensors = {}
    for index, activation in enumerate(model.activations):
        assert isinstance(activation, GatedReLU) and not activation.has_gate, "gain_only installs ungated gains"
        # MLP.trace feeds activation i into layers[i + 1]; PEFT keeps a feed-forward IA3 vector as [1, in]
        tensors[f"{PEFT_PREFIX}layers.{index + 1}.ia3_l"] = activation.gamma.reshape(1, -1)
    targets = [key.removeprefix(PEFT_PREFIX).removesuffix(".ia3_l") for key in tensors]
    config = {
        **_common_config(base_model_name_or_path),
        "peft_type": "IA3",
        "target_modules": targets,
        "feedforward_modules": targets,  # scale each target's input, not its output
        "init_ia3_weights": True,
    }
    return _write(out_folder, config, tensors, settings)


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
    reason = NOT_EXPORTABLE.get(method) or EXPORTED_BY.get(method) or "not a known method"
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


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value  # PEFT writes lora_alpha as an int


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
