"""A torchvision MNIST root written by hand (IDX files, plain and gzipped), for tests of the `mnist`
dataset path: nothing downloads."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(folder: Path, name: str, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    (folder / name).write_bytes(header + array.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{name}.gz", "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def mnist_root(root: Path, train: int, test: int, random_labels: bool = False) -> Path:
    """`root/MNIST/raw` with `train` and `test` random digits; labels cycle 0-9, or are random."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(raw, f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), 2051)
        labels = rng.integers(0, 10, n) if random_labels else np.arange(n) % 10
        write_idx(raw, f"{prefix}-labels-idx1-ubyte", labels, 2049)
    return root
