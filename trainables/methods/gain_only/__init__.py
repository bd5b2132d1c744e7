"""TauGate ablation without the threshold: a learned gain per hidden neuron (IA3-like)."""

from trainables.config import TrialConfig
from trainables.methods.taugate.gate import install_gates
from trainables.model import MLP

NAME = "gain_only"
DEFAULT_LR = 1e-2
DIMENSIONS: tuple[str, ...] = ()


def install(model: MLP, config: TrialConfig) -> None:
    install_gates(model, config, learn_tau=False, learn_gamma=True)
