"""Data: the bundled digits, the deterministic split, rotation modes, mixtures, torchvision IDX files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.support.mnist_files import mnist_root
from trainables.config import ConfigError, parse_config
from trainables.data import cache_dir, load_digits, load_mnist5k, load_modes, mixture, rotate_images, stratified_split


def test_bundled_digits_are_5000_real_mnist_digits():
    digits = load_mnist5k()
    assert digits.images.shape == (5000, 28, 28) and digits.images.dtype == torch.uint8
    assert sorted(digits.labels.unique().tolist()) == list(range(10))
    assert 0.05 < (digits.images > 0).float().mean() < 0.4  # ink on a dark background, as MNIST is


def test_decoded_digits_are_cached_by_file_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TAUGATE_CACHE_DIR", str(tmp_path))
    first = load_mnist5k()
    cached = list(tmp_path.glob("mnist5k-*.npz"))
    assert len(cached) == 1
    second = load_mnist5k()
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    cached[0].write_bytes(b"torn")  # a damaged cache is rebuilt, never trusted
    assert torch.equal(load_mnist5k().images, first.images)
    assert cache_dir() == tmp_path


def test_split_is_stratified_disjoint_and_deterministic():
    labels = load_mnist5k().labels
    train, test = stratified_split(labels, 0.2)
    again_train, again_test = stratified_split(labels, 0.2)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    assert len(train) + len(test) == 5000 and not set(train.tolist()) & set(test.tolist())
    per_class = torch.bincount(labels[test], minlength=10).float() / torch.bincount(labels, minlength=10)
    assert torch.allclose(per_class, torch.full((10,), 0.2), atol=0.01)


def _digit_keys(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.5])
def test_validation_split_is_carved_from_training_digits_disjoint_from_train_and_test(val_fraction):
    train, val, test = load_digits(parse_config({"val_fraction": val_fraction}))
    assert len(train.labels) + len(val.labels) == 4000 and len(test.labels) == 1000
    assert len(val.labels) == pytest.approx(4000 * val_fraction, abs=10)
    # disjoint as digits, not just as indices (the subset's 5,000 images are all distinct)
    train_keys, val_keys, test_keys = (_digit_keys(d.images) for d in (train, val, test))
    assert len(train_keys | val_keys | test_keys) == 5000
    assert not train_keys & val_keys and not val_keys & test_keys and not train_keys & test_keys
    per_class = torch.bincount(val.labels, minlength=10).float() / torch.bincount(
        torch.cat([train.labels, val.labels]), minlength=10
    )
    assert torch.allclose(per_class, torch.full((10,), val_fraction), atol=0.01)  # stratified
    again = load_digits(parse_config({"val_fraction": val_fraction}))[1]
    assert torch.equal(again.images, val.images)  # seeded: every trial selects on the same digits


def test_training_never_sees_validation_digits():
    config = parse_config({"foundation_epochs": 1, "epochs": 1})
    modes = load_modes(config, torch.device("cpu"))
    train_rows = {row.numpy().tobytes() for row in modes[45].train_x}
    val_rows = {row.numpy().tobytes() for row in modes[45].val_x}
    test_rows = {row.numpy().tobytes() for row in modes[45].test_x}
    foundation_x, _ = mixture(modes, None, seed=0)
    foundation_rows = {row.numpy().tobytes() for row in foundation_x}
    assert foundation_rows <= train_rows | {row.numpy().tobytes() for row in modes[0].train_x}
    assert not val_rows & train_rows and not val_rows & test_rows and not val_rows & foundation_rows


def test_rotation_by_45_changes_the_image_and_minus_45_brings_it_back():
    images = load_mnist5k().images[:64]
    original = rotate_images(images, 0)
    turned = rotate_images(images, 45)
    assert (turned - original).abs().mean() > 0.05
    back = rotate_images(turned, -45)
    centre = (slice(None), slice(7, 21), slice(7, 21))

    def correlation(a, b):
        return torch.corrcoef(torch.stack([a[centre].flatten(), b[centre].flatten()]))[0, 1].item()

    # two bilinear resamplings blur the strokes a little, but the digits come back
    assert correlation(back, original) > 0.9
    assert correlation(turned, original) < 0.5


@pytest.mark.parametrize("angle", [45, -45, 90, 30.5, 180])
def test_rotation_is_torchvisions_bilinear_rotate_bit_for_bit(angle):
    from torchvision.transforms.functional import InterpolationMode, rotate

    images = load_mnist5k().images[:256]
    reference = rotate((images.float() / 255).unsqueeze(1), angle, interpolation=InterpolationMode.BILINEAR)
    assert torch.equal(rotate_images(images, angle), reference.squeeze(1))


def test_a_trial_worker_does_not_import_torchvision():
    # importing torchvision costs a Ray worker ~1.3 s; only the torchvision MNIST source needs it
    code = "import sys, study.tune.trainable, trainables.engine.fused; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_modes_hold_the_same_digits_rotated_and_are_built_once():
    config = parse_config({"angles": [0, 45, 90], "target_angle": 90})
    modes = load_modes(config, torch.device("cpu"))
    assert list(modes) == [0, 45, 90]
    assert torch.equal(modes[0].train_y, modes[90].train_y)
    assert not torch.equal(modes[0].train_x, modes[90].train_x)
    # 5,000 digits: 1,000 test, and of the other 4,000 a fifth (800) is the validation split
    assert modes[0].train_x.shape == (3200, 784) and modes[0].val_x.shape == (800, 784)
    assert modes[0].test_x.shape == (1000, 784)
    assert load_modes(config, torch.device("cpu"))[90].train_x is modes[90].train_x


def test_mixture_draws_each_digit_once_in_a_weighted_mode():
    modes = load_modes(parse_config({}), torch.device("cpu"))
    x, y = mixture(modes, None, seed=3)
    from_0 = (x == modes[0].train_x).all(1)
    from_45 = (x == modes[45].train_x).all(1)
    assert bool((from_0 | from_45).all()) and torch.equal(y, modes[0].train_y)
    assert 0.45 < from_45.float().mean() < 0.55
    x_skewed, _ = mixture(modes, [0.9, 0.1], seed=3)
    assert (x_skewed == modes[0].train_x).all(1).float().mean() > 0.85
    assert torch.equal(mixture(modes, None, seed=3)[0], x)


def test_torchvision_mnist_reads_idx_files_from_a_local_root(tmp_path):
    mnist_root(tmp_path, train=60, test=20)
    train, val, test = load_digits(parse_config({"dataset": "mnist", "data_root": str(tmp_path)}))
    assert train.images.shape == (50, 28, 28) and val.images.shape == (10, 28, 28)  # one of each 6 per class
    assert test.images.shape == (20, 28, 28)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == sorted(i % 10 for i in range(60))
    modes = load_modes(parse_config({"dataset": "mnist", "data_root": str(tmp_path)}), torch.device("cpu"))
    assert modes[45].train_x.shape == (50, 784)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"dataset": "mnist"}, "data_root"),
        ({"dataset": "mnist", "data_root": "/nonexistent/mnist"}, "data_root"),
    ],
)
def test_missing_torchvision_root_is_a_clear_error(raw, field):
    with pytest.raises(ConfigError, match=field):
        load_digits(parse_config(raw))


def test_empty_root_without_download_names_the_root(tmp_path):
    with pytest.raises(ConfigError, match="data_root"):
        load_digits(parse_config({"dataset": "mnist", "data_root": str(tmp_path)}))
