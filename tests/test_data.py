"""Datasets: built-in real images, disk formats, seeded splits, train-only augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hwnas.errors import ConfigError, UnknownNameError
from hwnas.search.data import load_data


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=16, seed=0)


def test_digits_splits_are_seeded_and_disjoint(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1258, 180, 359)
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.resolution == 16
    assert digits.train.x.shape == (1258, 1, 16, 16) and digits.train.x.dtype == torch.float32
    again = load_data("digits", resolution=16, seed=0)
    assert torch.equal(again.val.x, digits.val.x) and torch.equal(again.test.y, digits.test.y)
    other = load_data("digits", resolution=16, seed=1)
    assert not torch.equal(other.test.y, digits.test.y)
    # normalised with the train split's statistics
    assert abs(float(digits.train.x.mean())) < 1e-4 and abs(float(digits.train.x.std()) - 1) < 1e-2
    # no image is in two splits
    rows = {tuple(r.tolist()) for r in digits.test.x.flatten(1)[:, ::7]}
    assert not any(tuple(r.tolist()) in rows for r in digits.train.x.flatten(1)[:, ::7][:300])


def test_mnist5k_is_the_shipped_mnist():
    d = load_data("mnist5k", resolution=28, seed=0)
    assert len(d.train) + len(d.val) + len(d.test) == 5000
    assert d.in_channels == 1 and d.num_classes == 10
    counts = torch.bincount(torch.cat([d.train.y, d.val.y, d.test.y]), minlength=10)
    assert counts.min() > 400  # all ten digits, roughly balanced


def test_augmentation_is_train_only_and_reproducible(digits):
    a = next(digits.batches("train", 32, epoch=0))
    b = next(digits.batches("train", 32, epoch=0))
    assert torch.equal(a[0], b[0])  # same (seed, epoch, step) → same batch
    plain = next(digits.batches("train", 32, epoch=0, augment=False))
    assert torch.equal(a[1], plain[1]) and not torch.equal(a[0], plain[0])
    v = next(digits.batches("val", 1000))
    assert torch.equal(v[0], digits.val.x)  # val: in order, no augmentation
    resumed = list(digits.batches("train", 32, epoch=2, start=3, limit=5))
    full = list(digits.batches("train", 32, epoch=2, limit=5))
    assert len(resumed) == 2 and all(torch.equal(r[0], f[0]) for r, f in zip(resumed, full[3:]))


def _digits_uint8():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).astype(np.uint8), d.target


def test_npz_and_cifar10_and_imagefolder(tmp_path):
    imgs, labels = _digits_uint8()
    np.savez(tmp_path / "d.npz", x_train=imgs[:1500], y_train=labels[:1500], x_test=imgs[1500:],
             y_test=labels[1500:])
    d = load_data(f"npz:{tmp_path / 'd.npz'}", seed=0)
    assert len(d.test) == len(imgs) - 1500 and d.resolution == 8 and d.in_channels == 1

    rgb = np.repeat(imgs[:, None], 3, axis=1).reshape(len(imgs), -1)  # CIFAR rows: 3072 = 3x32x32 → here 3x8x8
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    big = np.repeat(np.repeat(np.repeat(imgs[:, None], 3, 1), 4, 2), 4, 3).reshape(len(imgs), 3072)
    for name, sl in (("data_batch_1", slice(0, 900)), ("data_batch_2", slice(900, 1500)),
                     ("test_batch", slice(1500, None))):
        with open(cifar / name, "wb") as fh:
            pickle.dump({b"data": big[sl], b"labels": labels[sl].tolist()}, fh)
    c = load_data(f"cifar10:{cifar}", seed=0)
    assert c.in_channels == 3 and c.resolution == 32 and len(c.train) + len(c.val) == 1500 and c.flip
    assert rgb.shape[1] == 192

    from PIL import Image

    root = tmp_path / "folder"
    for i in range(40):
        cls = root / f"class{labels[i]}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(imgs[i][:, :, None], 3, 2)).save(cls / f"{i}.png")
    f = load_data(f"imagefolder:{root}", resolution=16, seed=0)
    assert f.in_channels == 3 and f.resolution == 16 and len(f.train) + len(f.val) + len(f.test) == 40


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_data("imagenet")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="unreadable"):
        load_data(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(ConfigError, match="data_batch"):
        load_data(f"cifar10:{tmp_path}")
