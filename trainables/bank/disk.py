"""A mode bank's folder on disk: `save_bank` writes it atomically (beside, then renamed), `load_bank`
reads it back with every file checked (the format is `trainables.bank.layout`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from trainables import files, registry
from trainables.bank.compact import CompactMLP, save_compact
from trainables.bank.layout import (
    COMPACT_DIR,
    FORMAT,
    FORMAT_VERSION,
    FOUNDATION_FILE,
    INDEX_FILE,
    TENSORS_FILE,
    BankError,
    field_of,
    json_default,
    read_json,
    read_tensors,
)
from trainables.bank.store import ModeBank, ModeInfo, read_foundation


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bank_tensors(bank: ModeBank) -> dict[str, torch.Tensor]:
    tensors = {"sharpness": bank.sharpness}
    for layer, (tau, gamma) in enumerate(zip(bank.tau, bank.gamma, strict=True)):
        tensors[f"tau.{layer}"], tensors[f"gamma.{layer}"] = tau, gamma
    return tensors


def save_bank(
    bank: ModeBank, folder: Path, compacts: dict[str, tuple[CompactMLP, dict[str, Any]]] | None = None
) -> Path:
    """Write the bank folder (replacing one already there, atomically: it is written beside it and
    renamed). `compacts`: mode name -> (compact subnetwork, its report as a dict) to write with it."""
    folder = Path(folder)
    compacts = compacts or {}
    if unknown := sorted(set(compacts) - set(bank.names)):
        raise BankError(f"compact subnetworks for modes not in the bank: {', '.join(unknown)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copyfile(bank.foundation_file, staging / FOUNDATION_FILE)
        tensors = bank_tensors(bank)
        files.write_tensors(staging / TENSORS_FILE, tensors)
        modes = []
        for info in bank.modes:
            entry = asdict(info)
            if info.name in compacts:
                net, report = compacts[info.name]
                entry["compact"] = f"{COMPACT_DIR}/{info.name}"
                save_compact(net, staging / entry["compact"], {"mode": info.name, "report": report})
            modes.append(entry)
        sharpness = {info.gate_sharpness for info in bank.modes}
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "foundation": {
                "id": bank.foundation_id,
                "file": FOUNDATION_FILE,
                "sha256": _sha256(staging / FOUNDATION_FILE),
            },
            "in_features": bank.foundation.layers[0].in_features,
            "classes": bank.foundation.layers[-1].out_features,
            "hidden": bank.hidden,
            "gate_sharpness": sharpness.pop() if len(sharpness) == 1 else None,  # None: it differs per mode
            "tensors": {name: list(t.shape) for name, t in tensors.items()},
            "modes": modes,
            "source": bank.source,
        }
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2, default=json_default))
        if folder.exists():
            retired = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bank.folder = folder
    return folder


def load_bank(folder: Path) -> ModeBank:
    """Read a bank folder (on the CPU; `.to(device)` the model). Every file is checked: bad JSON, a
    missing field, a damaged or replaced foundation, unreadable or wrongly shaped tensors are each a
    `BankError` naming the file and the field or tensor."""
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file() and folder.is_dir():
        inner = sorted(p.parent.name for p in folder.glob(f"*/{INDEX_FILE}"))
        if inner:
            raise BankError(f"{folder}: holds one bank per foundation ({', '.join(inner)}); load one of those folders")
    index = read_json(index_path)
    if index.get("format") != FORMAT:
        raise BankError(f"{index_path}: field 'format' is {index.get('format')!r}, not {FORMAT!r}")
    version = field_of(index, "format_version", int, index_path)
    if version != FORMAT_VERSION:
        raise BankError(f"{index_path}: format_version {version} (this code reads {FORMAT_VERSION})")
    found = field_of(index, "foundation", dict, index_path)
    foundation_id = field_of(found, "id", str, index_path)
    file_name = field_of(found, "file", str, index_path)
    if Path(file_name).name != file_name:
        raise BankError(f"{index_path}: field 'foundation.file' must name a file inside the bank, not {file_name!r}")
    foundation_path = folder / file_name
    hidden = field_of(index, "hidden", list, index_path)
    if not hidden or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden):
        raise BankError(f"{index_path}: field 'hidden' must list positive widths, not {hidden}")
    entries = field_of(index, "modes", list, index_path)
    modes = [_mode_info(entry, f"{index_path}: modes[{i}]") for i, entry in enumerate(entries)]
    if not modes:
        raise BankError(f"{index_path}: field 'modes' is empty")
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise BankError(f"{index_path}: field 'modes' names a mode twice")

    if not foundation_path.is_file():
        raise BankError(f"{foundation_path}: file not found")
    if _sha256(foundation_path) != found.get("sha256"):
        raise BankError(f"{foundation_path}: sha256 differs from {index_path} (damaged or replaced foundation)")
    foundation = read_foundation(foundation_path, hidden)

    tensors_path = folder / TENSORS_FILE
    tensors = read_tensors(tensors_path)
    expected = {"sharpness": (len(modes),)}
    for layer, width in enumerate(hidden):
        expected[f"tau.{layer}"] = expected[f"gamma.{layer}"] = (len(modes), width)
    if missing := sorted(set(expected) - set(tensors)):
        raise BankError(f"{tensors_path}: tensor {missing[0]} is missing (expected {sorted(expected)})")
    if extra := sorted(set(tensors) - set(expected)):
        raise BankError(f"{tensors_path}: unexpected tensor {extra[0]}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise BankError(
                f"{tensors_path}: tensor {name} has shape {list(tensors[name].shape)}, expected {list(shape)}"
            )
        if tensors[name].dtype != torch.float32:
            raise BankError(f"{tensors_path}: tensor {name} is {tensors[name].dtype}, expected float32")
    tau = [tensors[f"tau.{layer}"] for layer in range(len(hidden))]
    gamma = [tensors[f"gamma.{layer}"] for layer in range(len(hidden))]
    return ModeBank(
        foundation, foundation_id, foundation_path, modes, tau, gamma, tensors["sharpness"], folder=folder,
        source=index.get("source") if isinstance(index.get("source"), dict) else None,
    )  # fmt: skip


def _mode_info(entry: Any, where: str) -> ModeInfo:
    if not isinstance(entry, dict):
        raise BankError(f"{where}: expected an object")
    try:
        info = ModeInfo(
            name=entry["name"], angle=float(entry["angle"]), method=entry["method"],
            gate_sharpness=float(entry["gate_sharpness"]), adapter_config=dict(entry["adapter_config"]),
            trial=entry.get("trial"), metrics=dict(entry.get("metrics") or {}), selection=entry.get("selection"),
            compact=entry.get("compact"),
        )  # fmt: skip
    except KeyError as err:
        raise BankError(f"{where}: field {err.args[0]!r} is missing") from None
    except (TypeError, ValueError) as err:
        raise BankError(f"{where}: invalid entry ({err})") from None
    if not isinstance(info.name, str) or info.method not in registry.bank_methods():
        raise BankError(f"{where}: field 'method' is {info.method!r}, not one of {', '.join(registry.bank_methods())}")
    return info
