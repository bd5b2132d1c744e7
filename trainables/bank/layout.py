"""The mode bank's file format: its names, version, error and the readers every bank file goes through."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from trainables import files
from trainables.errors import TauGateError

FORMAT, FORMAT_VERSION = "taugate-mode-bank", 1
INDEX_FILE, TENSORS_FILE, FOUNDATION_FILE = "bank.json", "bank.safetensors", "foundation.safetensors"
COMPACT_DIR, COMPACT_TENSORS, COMPACT_INDEX = "compact", "compact.safetensors", "compact.json"
NO_GATE = -math.inf  # tau of a mode without a threshold (gain_only): the gate is always open


class BankError(TauGateError, RuntimeError):
    """A bank cannot be built or read: the message names the file, field, mode or foundation."""


def json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: Path) -> dict[str, Any]:
    return files.read_json(path, BankError)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return files.read_tensors(path, BankError)


def field_of(data: dict[str, Any], name: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if name not in data:
        raise BankError(f"{where}: field {name!r} is missing")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # JSON true is no int
        raise BankError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")
    return value
