"""The mode bank: one frozen foundation and, per mode, its TauGate (tau, gamma), as HF PEFT keeps many
adapters on one base. Pure torch + safetensors: no Ray, no MLflow.

A bank folder (format version 1) is self-contained:

    bank.json                the index: format, foundation (id, file, sha256), widths, modes (below)
    bank.safetensors         tau.<layer>, gamma.<layer>: [modes, width] float32 (row i = mode i);
                             sharpness: [modes] (the soft gate's s of each mode)
    foundation.safetensors   a byte copy of the study's foundation file
    compact/<mode>/          optional compact subnetworks (compact.safetensors + compact.json)

Mode names are "<method>@<angle key>": taugate@45, gain_only@90, threshold_only@m30, taugate@22p5 (the
angle key of the metric names, `trainables.config.angle_key`), so one bank can hold several methods of
one angle. Every mode is stored as a (tau, gamma) pair (which of them a method learns is its
`GateBanking` in the method registry): gain_only has no gate and is stored with
tau = -inf (1[z > -inf] = sigmoid(s (z + inf)) = 1: the same function as `GatedReLU` without a gate,
in hard and soft form); threshold_only learns no gain and is stored with gamma = 1.

`ModeBank.model()` (`trainables.bank.mixed.BankedMLP`) holds the foundation's Linear layers once and gates
them with `IndexedGate` (`trainables.methods.taugate`): tau and gamma with a leading mode dimension,
selected per sample, so a mixed batch is one gather and `set_mode` only changes an int. Compact
per-mode subnetworks are in `trainables.bank.compact`; the folder is written and read by `trainables.bank.disk`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables import files, registry
from trainables.bank.compact import CompactMLP, compact, load_compact
from trainables.bank.layout import (
    NO_GATE,
    BankError,
)
from trainables.bank.mixed import BankedMLP
from trainables.config import angle_key
from trainables.formats.checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_TENSORS,
    CheckpointError,
    load_adapter,
    load_foundation,
)
from trainables.methods.taugate.gate import GatedReLU
from trainables.model import MLP


def mode_name(method: str, angle: float) -> str:
    """The bank's name of a mode: "taugate@45", "gain_only@m30"."""
    return f"{method}@{angle_key(angle)}"


# --- one mode's tensors, read from a trial's adapter --------------------------------------------


@dataclass
class BankMode:
    """One mode to put into a bank: its (tau, gamma) per hidden layer and where it came from."""

    name: str
    angle: float
    method: str
    foundation_id: str  # the foundation the adapter was trained on: a bank never mixes two
    tau: list[torch.Tensor]  # per hidden layer, [width]
    gamma: list[torch.Tensor]
    gate_sharpness: float
    adapter_config: dict[str, Any]  # the adapter's adapter_config.json (export writes it back)
    trial: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None  # how this trial was chosen among several for the mode


def read_mode(
    foundation: MLP, adapter: Path, *, angle: float, foundation_id: str, trial: str | None = None,
    metrics: dict[str, Any] | None = None, selection: dict[str, Any] | None = None,
) -> BankMode:  # fmt: skip
    """A trial's adapter folder as a bank mode (loaded onto `foundation` with `load_adapter`, which
    checks its tensors against the method). Non-gate methods and damaged files are `BankError`s."""
    adapter = Path(adapter)
    try:
        settings = json.loads((adapter / ADAPTER_CONFIG).read_text())
        method = settings["method"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BankError(f"{adapter / ADAPTER_CONFIG}: unreadable adapter config ({err})") from None
    if method not in registry.bank_methods():
        raise BankError(
            f"{adapter}: method {method!r} has no gate to bank (a bank holds {', '.join(registry.bank_methods())})"
        )
    try:
        model = load_adapter(foundation, adapter)
    except CheckpointError as err:
        raise BankError(str(err)) from None
    gates = [module for module in model.activations if isinstance(module, GatedReLU)]
    tau = [g.tau.detach().clone() if g.has_gate else torch.full_like(g.tau, NO_GATE) for g in gates]
    return BankMode(
        name=mode_name(method, angle), angle=float(angle), method=method, foundation_id=foundation_id,
        tau=tau, gamma=[g.gamma.detach().clone() for g in gates], gate_sharpness=float(settings["gate_sharpness"]),
        adapter_config=settings, trial=trial, metrics=dict(metrics or {}), selection=selection,
    )  # fmt: skip


# --- the bank ------------------------------------------------------------------------------------


@dataclass
class ModeInfo:
    """A mode's entry in the bank's index."""

    name: str
    angle: float
    method: str
    gate_sharpness: float
    adapter_config: dict[str, Any]
    trial: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    compact: str | None = None  # the compact subnetwork's folder, relative to the bank folder


class ModeBank:
    """A frozen foundation and the (tau, gamma) of every mode; `load_bank` reads one from its folder,
    `assemble` builds one in memory from `BankMode`s."""

    def __init__(
        self, foundation: MLP, foundation_id: str, foundation_file: Path, modes: list[ModeInfo],
        tau: list[torch.Tensor], gamma: list[torch.Tensor], sharpness: torch.Tensor,
        folder: Path | None = None, source: dict[str, Any] | None = None,
    ):  # fmt: skip
        foundation.requires_grad_(False)
        self.foundation = foundation.eval()
        self.foundation_id, self.foundation_file = foundation_id, Path(foundation_file)
        self.modes, self.tau, self.gamma, self.sharpness = modes, tau, gamma, sharpness
        self.folder, self.source = folder, dict(source or {})
        self._positions = {mode.name: i for i, mode in enumerate(modes)}

    @property
    def names(self) -> list[str]:
        return [mode.name for mode in self.modes]

    @property
    def hidden(self) -> list[int]:
        return self.foundation.hidden

    def __len__(self) -> int:
        return len(self.modes)

    def __contains__(self, name: object) -> bool:
        return name in self._positions

    def position(self, name: str) -> int:
        """The mode's row in the bank's tensors; an unknown name is a `BankError` listing the names."""
        try:
            return self._positions[name]
        except (KeyError, TypeError):
            where = f" ({self.folder})" if self.folder else ""
            raise BankError(f"mode {name!r} is not in the bank{where}; modes: {', '.join(self.names)}") from None

    def mode(self, name: str) -> ModeInfo:
        return self.modes[self.position(name)]

    def indices(self, names: Sequence[str]) -> torch.Tensor:
        """Per-sample mode names as the index tensor `BankedMLP.forward` gathers with."""
        return torch.tensor([self.position(name) for name in names], dtype=torch.int64)

    def model(self, mode: str | None = None, hard: bool = True) -> BankedMLP:
        """An `nn.Module` over the bank's own foundation modules and tensors (nothing is copied), in
        `mode` (default: the first). Its `.to(device)` moves the shared foundation modules too."""
        return BankedMLP(self, mode, hard)

    def mode_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The mode's adapter tensors, named as its method's `adapter.safetensors` names them."""
        info, row = self.mode(name), self.position(name)
        tensors = {}
        for layer in range(len(self.hidden)):
            banking = registry.get(info.method).bank
            if banking.tau:
                tensors[f"activations.{layer}.tau"] = self.tau[layer][row].clone()
            if banking.gamma:
                tensors[f"activations.{layer}.gamma"] = self.gamma[layer][row].clone()
        return tensors

    def export_adapter(self, name: str, folder: Path) -> Path:
        """Write the mode as an ordinary adapter folder that `load_adapter` reads onto the foundation."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files.write_tensors(folder / ADAPTER_TENSORS, self.mode_tensors(name))
        files.write_json(folder / ADAPTER_CONFIG, self.mode(name).adapter_config, indent=2, default=None)
        return folder

    def compact(self, name: str, train_x: torch.Tensor) -> CompactMLP:
        """The mode's compact subnetwork, dropping the units that never open on `train_x`
        (`trainables.bank.compact.compact`)."""
        return compact(self.model(name), train_x)

    def load_compact(self, name: str) -> CompactMLP:
        info = self.mode(name)
        if info.compact is None or self.folder is None:
            raise BankError(f"mode {name!r} has no compact subnetwork in the bank ({self.folder})")
        return load_compact(self.folder / info.compact)


def assemble(foundation_file: Path, foundation_id: str, hidden: list[int], modes: Sequence[BankMode],
             source: dict[str, Any] | None = None) -> ModeBank:  # fmt: skip
    """A bank in memory: the foundation file loaded once and the modes' tensors stacked.

    Refused with a `BankError`: no modes, a mode trained on another foundation, two modes of one name,
    tensors that do not fit the foundation's hidden widths."""
    if not modes:
        raise BankError(f"foundation {foundation_id}: no modes to bank")
    for mode in modes:
        if mode.foundation_id != foundation_id:
            raise BankError(
                f"mode {mode.name} (trial {mode.trial}) was trained on foundation {mode.foundation_id}, not on "
                f"{foundation_id}: a bank holds the modes of one foundation"
            )
    names = [mode.name for mode in modes]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise BankError(f"foundation {foundation_id}: two modes named {', '.join(duplicates)}")
    for mode in modes:
        widths = [len(t) for t in mode.tau], [len(g) for g in mode.gamma]
        if widths != (list(hidden), list(hidden)):
            raise BankError(f"mode {mode.name}: tau/gamma widths {widths[0]}/{widths[1]} do not fit hidden {hidden}")
    foundation = read_foundation(Path(foundation_file), hidden)
    tau = [torch.stack([mode.tau[layer] for mode in modes]).float() for layer in range(len(hidden))]
    gamma = [torch.stack([mode.gamma[layer] for mode in modes]).float() for layer in range(len(hidden))]
    sharpness = torch.tensor([mode.gate_sharpness for mode in modes], dtype=torch.float32)
    infos = [
        ModeInfo(m.name, m.angle, m.method, m.gate_sharpness, m.adapter_config, m.trial, m.metrics, m.selection)
        for m in modes
    ]
    return ModeBank(foundation, foundation_id, Path(foundation_file), infos, tau, gamma, sharpness, source=source)


def read_foundation(path: Path, hidden: list[int]) -> MLP:
    """`load_foundation`, its `CheckpointError` (naming the file) raised as a `BankError`."""
    try:
        return load_foundation(path, hidden)
    except CheckpointError as err:
        raise BankError(str(err)) from None
