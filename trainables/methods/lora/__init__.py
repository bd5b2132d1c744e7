"""LoRA (Hu et al. 2021) on every Linear layer (the layer is `trainables.methods.lora.lowrank`)."""

from trainables.config import TrialConfig
from trainables.methods.lora.lowrank import LoRALinear
from trainables.model import MLP

NAME = "lora"
DEFAULT_LR = 1e-3
DIMENSIONS: tuple[str, ...] = ("lora_rank", "lora_alpha")


def install(model: MLP, config: TrialConfig) -> None:
    for index, layer in enumerate(model.layers):
        model.layers[index] = LoRALinear(layer, config.lora_rank, config.lora_alpha)
