"""Resolve the `device` config value to a torch device: auto picks cuda, directml, mps, cpu."""

from __future__ import annotations

import importlib

import torch

from trainables.config import ConfigError


def _directml_device() -> torch.device | None:
    try:
        torch_directml = importlib.import_module("torch_directml")
    except ImportError:
        return None
    return torch_directml.device()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for `name`; an unavailable device is a `ConfigError`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        directml = _directml_device()
        if directml is not None:
            return directml
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but torch.cuda.is_available() is False")
        return torch.device("cuda")
    if name == "mps":
        if not _mps_available():
            raise ConfigError("device: mps requested but torch.backends.mps is not available")
        return torch.device("mps")
    if name == "directml":
        directml = _directml_device()
        if directml is None:
            raise ConfigError(
                "device: directml requested but torch_directml is not installed (pip install '.[directml]')"
            )
        return directml
    raise ConfigError(f"device: unknown device {name!r}; choose auto, cpu, cuda, mps or directml")
