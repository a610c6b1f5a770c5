"""Datasets: built-in real images, disk formats, seeded splits, train-only augmentation, streaming
loaders (workers, shards) and full-resolution image folders."""

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
    # normalised with the train split's statistics (measured on its first STATS_IMAGES images)
    assert abs(float(digits.train.x.mean())) < 0.05 and abs(float(digits.train.x.std()) - 1) < 0.05
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


def _stripes(root, per_class: int, size: int = 256):
    """Full-size images of 2-px stripes whose orientation is the class (period 4 px: a 64-px
    reduction of a 256-px image averages every stripe pair to flat grey)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("horizontal", "vertical"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            line = ((np.arange(size) + rng.integers(0, 4)) // 2) % 2 * 255
            img = np.tile(line[:, None], (1, size)) if cls == "horizontal" else np.tile(line[None, :], (size, 1))
            Image.fromarray(img.astype(np.uint8)).convert("RGB").save(root / cls / f"{i}.png")


def test_imagefolder_reaches_the_network_at_full_resolution(tmp_path):
    """Images are resampled once from the file to --resolution: 2-px stripes survive at 128 px
    (they would not through a 64-px intermediate: accuracy then stays at chance)."""
    from torch import nn

    from hwnas.search.train import evaluate, train_model

    _stripes(tmp_path / "stripes", 40)
    data = load_data(f"imagefolder:{tmp_path / 'stripes'}", resolution=128, seed=0, workers=0)
    assert data.recipe == "imagenet" and data.train.x.shape[1:] == (3, 128, 128)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    train_model(model, data, epochs=4, lr=0.1, batch_size=16)
    test_acc, _ = evaluate(model, data.batches("test", 64))
    all_acc, _ = evaluate(model, data.batches("train", 64, shuffle=False, augment=False))
    assert test_acc >= 0.9 and all_acc >= 0.9, (test_acc, all_acc)  # chance: 0.5


def test_imagenet_layout_and_transforms(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 12), ("val", 3)):
        for cls in ("a", "b"):
            (tmp_path / "inet" / part / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)  # not square: crops must cope
                Image.fromarray(arr).save(tmp_path / "inet" / part / cls / f"{i}.jpg", quality=90)
    d = load_data(f"imagefolder:{tmp_path / 'inet'}", resolution=40, seed=0, workers=0)
    assert len(d.test) == 6 and len(d.train) + len(d.val) == 24 and d.num_classes == 2  # val/ is the test split
    a = next(d.batches("train", 8, epoch=0))[0]
    b = next(d.batches("train", 8, epoch=0))[0]
    c = next(d.batches("train", 8, epoch=1))[0]
    assert a.shape == (8, 3, 40, 40) and torch.equal(a, b) and not torch.equal(a, c)
    # eval: the centre 0.875·short-side square, resampled once
    from hwnas.search.data import Transform

    tf = Transform(40, "imagenet")
    assert tf._centre_box(120, 90) == pytest.approx((20.625, 5.625, 99.375, 84.375))
    boxes = {tf._random_box(120, 90, __import__("random").Random(s)) for s in range(20)}
    assert len(boxes) == 20 and all(0 <= l < r <= 120 and 0 <= t < bt <= 90 for l, t, r, bt in boxes)
    (tmp_path / "inet" / "val" / "zzz").mkdir()
    with pytest.raises(ConfigError, match="zzz"):
        load_data(f"imagefolder:{tmp_path / 'inet'}", resolution=40)


def test_workers_and_shards_give_the_same_batches(tmp_path):
    """Worker processes change nothing; two ranks' shards of B make up the one-process batch of 2B."""
    from hwnas.search import data as D

    imgs, labels = _digits_uint8()
    np.savez(tmp_path / "d.npz", x=imgs[:400], y=labels[:400])
    d0 = load_data(f"npz:{tmp_path / 'd.npz'}", resolution=12, seed=0, workers=0)
    assert isinstance(d0.train.dataset.source.x, np.memmap)  # uncompressed npz: memory-mapped, not read
    d2 = load_data(f"npz:{tmp_path / 'd.npz'}", resolution=12, seed=0, workers=2)
    for a, b in zip(d0.batches("train", 16, epoch=3, limit=4), d2.batches("train", 16, epoch=3, limit=4)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    d2.close()
    whole = list(d0.batches("train", 16, epoch=1, limit=3))
    shards = []
    for rank in range(2):
        dl = d0.loader("train", 8, shuffle=True, shard=True)
        dl.batch_sampler.set((0, "train", 1), True, 0, 3, rank, 2)
        shards.append(list(dl))
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards):
        got = sorted(map(tuple, torch.cat([x0, x1]).flatten(1)[:, ::5].tolist()))
        assert got == sorted(map(tuple, x.flatten(1)[:, ::5].tolist()))
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())
    assert D.DataBundle.steps(d0, "train", 16) == len(d0.train) // 16
