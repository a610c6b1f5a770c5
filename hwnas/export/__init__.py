"""Export an ArchSpec (+ trained PyTorch weights) to deployable artifacts, with checks always on.

* :mod:`hwnas.export.keras` — native NHWC Keras rebuild with the PyTorch weights copied over.
* :mod:`hwnas.export.tflite` — ``.tflite`` float32 / float16 / int8, LiteRT runner, op lint.
* :mod:`hwnas.export.onnx` — ``.onnx`` via ``torch.onnx.export``, onnxruntime runner.
* :mod:`hwnas.export.tvm` — TVM Relax compile for host / Android / GPU targets, ``.so`` or ``.tar``.
* :mod:`hwnas.export.scaling` — EfficientNet compound scaling.
* :mod:`hwnas.export.checks` — weight loading, BatchNorm recalibration, parity and int8 reports.

:func:`export` is the one entry point the CLI (``hwnas export``) uses. Heavy frameworks are
imported lazily, so ``import hwnas.export`` is cheap.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.arch import ArchSpec
from hwnas.errors import ExportError, UnknownNameError

FORMATS = ("tflite", "onnx", "tvm")


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured.

    Attributes:
        path: the artifact. format/quantize/target: what was asked.
        fresh_init: True when no weights were given (random init; fine for latency work only).
        ops: op histogram (``.tflite``: builtin ops; ``.onnx``: node types).
        lint: the op-lint report (``.tflite``).
        parity: float parity vs PyTorch (:class:`hwnas.export.checks.ParityReport` as a dict).
        quant: int8 vs float report (dict) when quantized to int8.
        notes: human-readable remarks (fresh init, BN recalibrated, compile-only target …).
        seconds: wall time per phase.
    """

    path: Path
    format: str
    quantize: str | None = None
    target: str | None = None
    fresh_init: bool = False
    ops: dict[str, int] = field(default_factory=dict)
    lint: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    quant: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "quantize": self.quantize, "target": self.target,
                "fresh_init": self.fresh_init, "size_bytes": self.size_bytes, "ops": self.ops,
                "total_ops": sum(self.ops.values()), "lint": self.lint, "parity": self.parity, "quant": self.quant,
                "notes": self.notes, "seconds": self.seconds}


def check_output_path(path: str | Path) -> Path:
    """Fail early (before any conversion) when ``path`` cannot be written.

    Raises:
        hwnas.io.OutputPathError: the folder cannot be created or written, or ``path`` is a folder.
    """
    from hwnas.io import OutputPathError

    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path}: is a directory; give a file name")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot write output (folder '{probe}' is not writable)")
    if parent.is_dir():  # access() says yes for root and on special file systems (/proc): really try
        import tempfile

        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.probe."):
                pass
        except OSError as err:
            raise OutputPathError(f"{path}: cannot write output ({err.strerror or err})") from None
    return path


def _labelled(ref: str | Path | None, arch: ArchSpec, n: int):
    """Held-out ``(images NHWC, labels)`` from a built-in name or an ``.npz`` with ``x`` and ``y``."""
    from hwnas.export.checks import BUILTIN_IMAGES, real_images

    if ref is None:
        return None
    if str(ref) in BUILTIN_IMAGES:
        return real_images(n, arch.resolution, arch.in_channels, source=str(ref), seed=1, with_labels=True)
    path = Path(ref)
    try:
        data = np.load(path, allow_pickle=False)
        x, y = np.asarray(data["x"], np.float32), np.asarray(data["y"])
    except Exception:
        raise ExportError(f"{ref}: evaluation data must be a built-in name or an .npz with arrays 'x' (N,R,R,C) "
                          "and 'y' (N,)") from None
    shape = (arch.resolution, arch.resolution, arch.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or len(y) != len(x):
        raise ExportError(f"{ref}: evaluation images have shape {tuple(x.shape)} with {len(y)} labels; "
                          f"expected (N, {', '.join(map(str, shape))}) and N labels")
    return x[:n], y[:n]


def export(arch: ArchSpec, out: str | Path, *, fmt: str = "tflite", weights: str | Path | dict | None = None,
           torch_model: Any = None, quantize: str | None = None, calib_data: str | Path | None = None,
           calib_samples: int = 64, int8_io: bool = False, eval_data: str | Path | None = None,
           eval_samples: int = 200, max_int8_drop: float = 1.0, recalibrate_bn_batches: int = 0,
           target: str = "llvm", tune_trials: int = 0, lint: str = "error", parity_samples: int = 8,
           parity_tolerance: float = 1e-4, seed: int = 0) -> ExportResult:
    """Export ``arch`` with its weights to ``out`` and check the artifact against PyTorch.

    Args:
        arch: the architecture.
        out: output file (``.tflite`` / ``.onnx`` / ``.so``/``.tar``); written atomically.
        fmt: ``tflite`` | ``onnx`` | ``tvm``.
        weights: a ``torch.save`` state dict path (or dict) for ``arch``; ``torch_model`` instead
            passes a built model. Neither: fresh random init (noted in the result).
        quantize: tflite only: ``None`` | ``float16`` | ``int8``.
        calib_data: built-in image source (``digits``, ``mnist``) or ``.npy``/``.npz`` NHWC images:
            int8 representative data, BN-recalibration batches and parity inputs.
        calib_samples: calibration images used.
        int8_io: int8 input/output tensors.
        eval_data: held-out labelled data (built-in name or ``.npz`` with ``x``, ``y``) for the int8
            accuracy delta; without it only top-1 agreement with PyTorch is reported.
        max_int8_drop: fail when int8 top-1 is more than this many points below float.
        recalibrate_bn_batches: re-estimate BatchNorm statistics on this many calibration batches of
            16 before export (for subnets taken from a supernet); 0 = no.
        target: TVM target name (:data:`hwnas.export.tvm.TARGETS`).
        tune_trials: TVM MetaSchedule trials (0 = untuned).
        lint: ``error`` | ``warn``: what an unexpected TRANSPOSE/RESHAPE/PAD/DEQUANTIZE does.
        parity_samples: real images used for the parity check.
        parity_tolerance: max abs diff of softmax outputs allowed for float artifacts.

    Returns:
        :class:`ExportResult`.

    Raises:
        UnknownNameError: unknown format. ExportError: bad weights/calibration data, a failed check.
        hwnas.io.OutputPathError: unwritable ``out``.
    """
    from hwnas.export import checks

    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    if quantize is not None and fmt != "tflite":
        raise ExportError(f"--quantize applies to the tflite format only, not {fmt}")
    if lint not in ("error", "warn"):
        raise ExportError(f"lint must be 'error' or 'warn', got '{lint}'")
    out = check_output_path(out)
    result = ExportResult(path=out, format=fmt, quantize=quantize, target=target if fmt == "tvm" else None)
    t0 = time.perf_counter()

    # --- weights
    if torch_model is not None:
        model = torch_model.eval()
    elif weights is not None:
        model = checks.load_weights(arch, weights)
    else:
        from hwnas.nn import build_model

        model = build_model(arch, seed=seed)
        result.fresh_init = True
        # A fresh net's softmax is flat, so any exporter would "match" it: give the weights a
        # non-trivial function first (random BN affine + statistics), so the parity check means something.
        checks.perturb_for_parity(model, checks.real_images(16, arch.resolution, arch.in_channels), seed=seed)
        result.notes.append("no --weights: random weights (BatchNorm scales randomised so the parity check "
                            "compares a non-trivial function); fine for latency work, not for accuracy")

    # --- data
    calib = checks.load_calibration(calib_data, arch, calib_samples) if calib_data is not None else None
    if quantize == "int8" and calib is None:
        raise ExportError("int8 export needs representative data: pass --calib-data (a .npy/.npz of NHWC images "
                          "or a built-in name: digits, mnist)")
    if recalibrate_bn_batches:
        if calib is None:
            raise ExportError("BatchNorm recalibration needs --calib-data")
        import torch

        batches = [torch.from_numpy(np.ascontiguousarray(calib[i:i + 16].transpose(0, 3, 1, 2)))
                   for i in range(0, len(calib), 16)][:recalibrate_bn_batches]
        checks.recalibrate_bn(model, batches)
        result.notes.append(f"BatchNorm statistics recalibrated on {len(batches)} batches")
    if calib is not None and len(calib) >= parity_samples:
        images = calib[:parity_samples]
    else:
        images = checks.real_images(parity_samples, arch.resolution, arch.in_channels)
    ref = checks.torch_probs(model, images)
    result.seconds["prepare"] = round(time.perf_counter() - t0, 3)

    if fmt == "tflite":
        _export_tflite(arch, model, out, result, quantize, calib, int8_io, images, ref, eval_data, eval_samples,
                       max_int8_drop, lint, parity_tolerance)
    elif fmt == "onnx":
        _export_onnx(model, out, result, images, ref, parity_tolerance)
    else:
        _export_tvm(model, out, result, target, tune_trials, images, ref, parity_tolerance)
    if result.path.exists():
        result.size_bytes = result.path.stat().st_size
    return result


def _export_tflite(arch, model, out, result, quantize, calib, int8_io, images, ref, eval_data, eval_samples,
                   max_int8_drop, lint_mode, tol):
    from hwnas.export import checks, tflite
    from hwnas.export.keras import keras_model
    from hwnas.io import atomic_write_bytes

    t = time.perf_counter()
    km = keras_model(arch, model)
    data = tflite.convert(km, quantize=quantize, representative_data=calib, int8_io=int8_io)
    result.seconds["convert"] = round(time.perf_counter() - t, 3)
    report = tflite.lint(data, tflite.expected_suspect_ops(arch, quantize, int8_io), strict=lint_mode == "error")
    result.ops, result.lint = report.ops, report.to_dict()
    t = time.perf_counter()
    probs = tflite.run_tflite(data, images)
    rep = checks.parity("tflite", ref, probs, tol if quantize is None else None)
    result.parity = rep.to_dict()
    if quantize == "int8":
        held = _labelled(eval_data, arch, eval_samples)
        if held is not None:
            x, y = held
            q = checks.quant_report(checks.torch_probs(model, x), tflite.run_tflite(data, x), y,
                                    max_drop_points=max_int8_drop)
            result.quant = q.to_dict()
            checks.check(q)
        else:
            result.notes.append("no --eval-data: int8 accuracy delta not measured (top-1 agreement with PyTorch "
                                "on the parity images is in 'parity')")
    result.seconds["check"] = round(time.perf_counter() - t, 3)
    checks.check(rep)
    atomic_write_bytes(out, data)


def _export_onnx(model, out, result, images, ref, tol):
    from collections import Counter

    import onnx

    from hwnas.export import checks
    from hwnas.export.onnx import onnx_bytes, run_onnx
    from hwnas.io import atomic_write_bytes

    t = time.perf_counter()
    data = onnx_bytes(model, dynamo=True)
    result.seconds["convert"] = round(time.perf_counter() - t, 3)
    result.ops = dict(sorted(Counter(n.op_type for n in onnx.load_from_string(data).graph.node).items()))
    t = time.perf_counter()
    rep = checks.parity("onnxruntime", ref, run_onnx(data, images.transpose(0, 3, 1, 2)), tol)
    result.parity = rep.to_dict()
    result.seconds["check"] = round(time.perf_counter() - t, 3)
    checks.check(rep)
    atomic_write_bytes(out, data)


def _export_tvm(model, out, result, target, tune_trials, images, ref, tol):
    from hwnas.export import checks
    from hwnas.export.onnx import onnx_bytes
    from hwnas.export.tvm import compile_tvm, is_host_target, make_target, run_tvm_fresh_process

    t = time.perf_counter()
    art = compile_tvm(onnx_bytes(model), target, out, tune_trials=tune_trials)
    result.path = art.path
    result.notes.extend(art.notes)
    result.seconds["convert"] = round(time.perf_counter() - t, 3)
    if is_host_target(make_target(target)) and art.kind == "so":
        t = time.perf_counter()
        try:
            rep = checks.parity("tvm", ref, run_tvm_fresh_process(art.path, images.transpose(0, 3, 1, 2)), tol)
            result.parity = rep.to_dict()
            checks.check(rep)
        except ExportError:
            art.path.unlink(missing_ok=True)
            raise
        result.seconds["check"] = round(time.perf_counter() - t, 3)
    else:
        result.notes.append(f"target '{target}' cannot run here: compiled only, no parity check")


__all__ = ["export", "ExportResult", "FORMATS", "check_output_path"]
