"""Frozen: the foundation as it is, no trainable tensors (the paper's 'no adapt' row)."""

from trainables.config import TrialConfig
from trainables.model import MLP

NAME = "frozen"
DEFAULT_LR = 1e-3
DIMENSIONS: tuple[str, ...] = ()


def install(model: MLP, config: TrialConfig) -> None:
    """Nothing to train."""
