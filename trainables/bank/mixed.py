"""Switching and mixed batches on a mode bank: the foundation held once, every mode's gates beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from trainables.bank.layout import BankError
from trainables.methods.taugate.gate import HardSwitch, IndexedGate


class GateTable(Protocol):
    """What a `BankedMLP` reads of its bank (a `trainables.bank.store.ModeBank`)."""

    foundation: nn.Module
    tau: list[torch.Tensor]
    gamma: list[torch.Tensor]
    sharpness: torch.Tensor
    names: list[str]

    def position(self, name: str) -> int: ...

    def indices(self, names: Sequence[str]) -> torch.Tensor: ...


class BankedMLP(nn.Module, HardSwitch):
    """The foundation's Linear layers (shared with the bank, frozen) gated by every mode of the bank.

    `set_mode(name)` switches the mode used when `forward` gets no `modes`; `forward(x, modes)` with a
    per-sample list of mode names or a [batch] index tensor runs a mixed batch. Hard gates by default
    (what inference uses); `hard=False` gives the soft gates of training."""

    def __init__(self, bank: GateTable, mode: str | None = None, hard: bool = True):
        super().__init__()
        self.layers = bank.foundation.layers  # the same modules: the base is held once, never copied
        self.gates = nn.ModuleList(
            IndexedGate(tau, gamma, bank.sharpness) for tau, gamma in zip(bank.tau, bank.gamma, strict=True)
        )
        self.names = list(bank.names)
        self._bank = bank
        self.hard = hard
        self.active = 0 if mode is None else bank.position(mode)

    @property
    def mode(self) -> str:
        return self.names[self.active]

    def set_mode(self, name: str) -> None:
        """Switch every later single-mode forward to `name`, in place: only an int changes."""
        self.active = self._bank.position(name)

    def set_hard(self, hard: bool) -> None:
        self.hard = hard

    def mode_index(self, modes: str | Sequence[str] | torch.Tensor | None, batch: int) -> int | torch.Tensor:
        """The active mode (None), one mode for the batch (a name), or one per sample (names or indices)."""
        if modes is None:
            return self.active
        if isinstance(modes, str):
            return self._bank.position(modes)
        index = modes if isinstance(modes, torch.Tensor) else self._bank.indices(modes)
        if index.dim() != 1 or len(index) != batch:
            raise BankError(f"modes: {tuple(index.shape)} does not give one mode per sample of a batch of {batch}")
        if index.dtype not in (torch.int64, torch.int32):
            raise BankError(f"modes: index tensor of dtype {index.dtype} (needs integer mode positions)")
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(self.names)):
            raise BankError(
                f"modes: positions must lie in 0..{len(self.names) - 1} (the bank's {len(self.names)} modes)"
            )
        return index.to(device=self.gates[0].tau.device, dtype=torch.int64)

    def forward(self, x: torch.Tensor, modes: str | Sequence[str] | torch.Tensor | None = None) -> torch.Tensor:
        return self.trace(x, modes)[0]

    def trace(
        self, x: torch.Tensor, modes: str | Sequence[str] | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the gated activations of every hidden layer (what reaches the next layer)."""
        index = self.mode_index(modes, len(x))
        activations = []
        for layer, gate in zip(self.layers[:-1], self.gates, strict=True):
            x = gate(layer(x), index, self.hard)
            activations.append(x)
        return self.layers[-1](x), activations
