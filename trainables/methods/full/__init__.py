"""Full fine-tuning: every tensor of the foundation is trained."""

from trainables.config import TrialConfig
from trainables.model import MLP

NAME = "full"
DEFAULT_LR = 1e-3
DIMENSIONS: tuple[str, ...] = ()


def install(model: MLP, config: TrialConfig) -> None:
    model.requires_grad_(True)
