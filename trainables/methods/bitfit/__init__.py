"""BitFit (Ben Zaken et al. 2021): train every bias, freeze every weight."""

from trainables.config import TrialConfig
from trainables.model import MLP

NAME = "bitfit"
DEFAULT_LR = 1e-2
DIMENSIONS: tuple[str, ...] = ()


def install(model: MLP, config: TrialConfig) -> None:
    for layer in model.layers:
        layer.bias.requires_grad_(True)
