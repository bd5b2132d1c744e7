"""LoRA (Hu et al. 2021) on every Linear layer (the layer and its update are `trainables.methods.lora.lowrank`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainables.registry import Method, SearchRange, register

if TYPE_CHECKING:  # torch's, imported where a model is built or exported: the record is read without them
    import torch

    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    from trainables.methods.lora.lowrank import LoRALinear

    for index, layer in enumerate(model.layers):
        model.layers[index] = LoRALinear(layer, config.lora_rank, config.lora_alpha)


def peft_lora(model: MLP, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT LoRA: PEFT's `lora_A.weight` [r, in] and `lora_B.weight` [out, r] have our layout (no transpose,
    `fan_in_fan_out` false); PEFT scales by lora_alpha / r as we do (`use_rslora` false); no dropout, no
    LoRA bias; every Linear layer is a target."""
    from trainables.methods.lora.lowrank import LoRALinear

    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{name}.lora_A.weight"] = layer.lora_A  # [r, in], as PEFT's lora_A Linear
        tensors[f"{name}.lora_B.weight"] = layer.lora_B  # [out, r], as PEFT's lora_B Linear
    alpha = float(settings["lora_alpha"])
    config = {
        "peft_type": "LORA",
        "r": next(iter(layers.values())).lora_A.shape[0],
        "lora_alpha": int(alpha) if alpha.is_integer() else alpha,  # PEFT writes lora_alpha as an int
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
    return config, tensors


METHOD = register(Method(
    "lora", install, default_lr=1e-3, dimensions=("lora_rank", "lora_alpha"), fuse_fields=("lora_rank",),
    search={"lora_rank": SearchRange("int", 1, 32, log=True)}, peft=peft_lora, peft_note="as PEFT LoRA",
    trainable=lambda widths, config: config.lora_rank * sum(widths[:-1]) + config.lora_rank * sum(widths[1:]),
))  # fmt: skip
