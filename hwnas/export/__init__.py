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
        quant: int8 vs float report (dict) when quantized to int8: both gates, worst layers.
        qat: quantization-aware fine-tuning summary (``--qat``). data: where the check images came from.
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
    qat: dict[str, Any] | None = None
    partition: dict[str, Any] | None = None
    tvm: dict[str, Any] | None = None
    data: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "quantize": self.quantize, "target": self.target,
                "fresh_init": self.fresh_init, "size_bytes": self.size_bytes, "ops": self.ops,
                "total_ops": sum(self.ops.values()), "lint": self.lint, "parity": self.parity, "quant": self.quant,
                "qat": self.qat, "partition": self.partition, "tvm": self.tvm, "data": self.data, "notes": self.notes, "seconds": self.seconds}


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


def export(arch: ArchSpec, out: str | Path, *, fmt: str = "tflite", weights: str | Path | dict | None = None,
           torch_model: Any = None, quantize: str | None = None, calib_data: str | Path | None = None,
           calib_samples: int = 64, int8_io: bool = False, eval_data: str | Path | None = None,
           eval_samples: int = 1000, max_int8_drop: float = 1.0, min_int8_agreement: float = 0.95,
           recalibrate_bn_batches: int = 0, target: str = "llvm", tune_trials: int = 0, lint: str = "error",
           parity_samples: int = 16, parity_tolerance: float = 1e-4, float16_tolerance: float = 1e-2,
           qat_epochs: int = 0, layer_report: bool = False, data: Any = None, preprocessing: Any = None,
           device: str | None = None, allow_cpu_fallback: bool = False, rpc_tracker: str | None = None,
           rpc_key: str | None = None, seed: int = 0) -> ExportResult:
    """Export ``arch`` with its weights to ``out`` and run the export checks (:mod:`hwnas.export.checks`).

    The checks are the same for ``hwnas export`` and ``hwnas search``: calibration and evaluation
    images come through the training preprocessing (a run's ``data_mean``/``data_std`` from
    ``model.pt`` or its ``config.yaml``, resized as in training), evaluation images are disjoint from
    calibration images, and every format has a gate that fails the export: float32 / float16 max abs
    diff of the softmax outputs vs PyTorch, int8 top-1 agreement with float and (labelled data) the
    accuracy drop; the accuracy gate is refused when float accuracy is near chance.

    Args:
        arch: the architecture.
        out: output file (``.tflite`` / ``.onnx`` / ``.so``/``.tar``); written atomically, only when
            every gate passes.
        fmt: ``tflite`` | ``onnx`` | ``tvm``.
        weights: a ``torch.save`` path (a state dict, or a run's ``model.pt``) or a state dict;
            ``torch_model`` instead passes a built model. Neither: fresh random init (noted; the
            accuracy gate is skipped).
        quantize: tflite only: ``None`` | ``float16`` | ``int8``.
        calib_data: built-in dataset (``digits``, ``mnist``: its train split) or ``.npy``/``.npz``
            preprocessed NHWC images: int8 representative data and BN-recalibration batches.
        calib_samples: calibration images used.
        int8_io: int8 input/output tensors.
        eval_data: held-out data (built-in name: its test split; ``.npz`` with ``x``, ``y``) for the
            gates; default: the test split of a built-in ``calib_data``, else ``digits``' test split.
        eval_samples: evaluation images used.
        max_int8_drop: fail when int8 top-1 is more than this many points below float.
        min_int8_agreement: fail when int8 top-1 agrees with float on fewer evaluation images.
        recalibrate_bn_batches: re-estimate BatchNorm statistics on this many calibration batches of
            16 before export (for subnets taken from a supernet); 0 = no.
        target: TVM target name (:data:`hwnas.export.tvm.TARGETS`).
        tune_trials: TVM MetaSchedule trials (0 = untuned).
        rpc_tracker, rpc_key: TVM: tune on the device behind this RPC tracker (``HOST:PORT``, key);
            tuning a cross target without them is refused.
        lint: ``error`` | ``warn``: what an unexpected TRANSPOSE/RESHAPE/PAD/DEQUANTIZE does.
        parity_samples: evaluation images a TVM library is checked on (run in a fresh process).
        parity_tolerance, float16_tolerance: max abs softmax diff allowed for float32 / float16.
        qat_epochs: int8 only: fine-tune this many epochs with fake quantization first
            (:mod:`hwnas.export.qat`; needs labelled training images: a built-in ``calib_data``).
        layer_report: int8 only: add the per-layer error report (always added when a gate fails).
        data: a prepared :class:`hwnas.export.checks.CheckData` (``hwnas search`` passes its splits).
        preprocessing: a :class:`hwnas.export.checks.Preprocessing` (default: read from ``weights``).
        device: tflite only: a device name (``edgetpu`` …) whose declared op support partitions the
            graph (:func:`hwnas.export.checks.partition`; the ``edgetpu_compiler`` log when installed).
        allow_cpu_fallback: export even when ops would run on the device's CPU.

    Returns:
        :class:`ExportResult`.

    Raises:
        UnknownNameError: unknown format. ExportError: bad weights/data, a failed gate.
        hwnas.io.OutputPathError: unwritable ``out``.
    """
    from hwnas.export import checks

    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    if quantize is not None and fmt != "tflite":
        raise ExportError(f"--quantize applies to the tflite format only, not {fmt}")
    if qat_epochs and quantize != "int8":
        raise ExportError("--qat applies to --quantize int8 only")
    if lint not in ("error", "warn"):
        raise ExportError(f"lint must be 'error' or 'warn', got '{lint}'")
    dev = None
    if device is not None:
        if fmt != "tflite":
            raise ExportError(f"--device partitions .tflite graphs; for {fmt} use --target")
        from hwnas.latency.devices import get_device

        dev = get_device(device)
    out = check_output_path(out)
    result = ExportResult(path=out, format=fmt, quantize=quantize, target=target if fmt == "tvm" else None)
    t0 = time.perf_counter()
    gates = checks.Gates(float32_tolerance=parity_tolerance, float16_tolerance=float16_tolerance,
                         min_int8_agreement=min_int8_agreement, max_int8_drop=max_int8_drop)

    # --- weights and data (through the training preprocessing)
    if torch_model is not None:
        model = torch_model.eval()
    elif weights is not None:
        model = checks.load_weights(arch, weights)
    else:
        model = None
    prep = preprocessing or checks.run_preprocessing(weights if torch_model is None else None)
    if data is None:
        data = checks.check_data(arch, calib_data, eval_data, prep=prep, calib_samples=calib_samples,
                                 eval_samples=eval_samples, need_calib=quantize == "int8")
    elif quantize == "int8" and data.calib is None:
        raise ExportError("int8 export needs representative data (calibration images)")
    result.notes.extend(data.notes)
    result.data = data.describe
    if model is None:
        from hwnas.nn import build_model

        model = build_model(arch, seed=seed)
        result.fresh_init = True
        # A fresh net's softmax is flat, so any exporter would "match" it: give the weights a
        # non-trivial function first (random BN affine + statistics), so the parity check means something.
        checks.perturb_for_parity(model, data.eval_x[:16], seed=seed)
        result.notes.append("no --weights: random weights (BatchNorm scales randomised so the parity check "
                            "compares a non-trivial function); fine for latency work, not for accuracy")
    if recalibrate_bn_batches:
        if data.calib is None:
            raise ExportError("BatchNorm recalibration needs --calib-data")
        import torch

        calib = data.calib
        batches = [torch.from_numpy(np.ascontiguousarray(calib[i:i + 16].transpose(0, 3, 1, 2)))
                   for i in range(0, len(calib), 16)][:recalibrate_bn_batches]
        checks.recalibrate_bn(model, batches)
        result.notes.append(f"BatchNorm statistics recalibrated on {len(batches)} batches")
    if qat_epochs:
        from hwnas.export.qat import qat_finetune

        t = time.perf_counter()
        before = checks.torch_probs(model, data.eval_x)
        qat_finetune(model, data.train_x, data.train_y, epochs=qat_epochs, seed=seed)
        after = checks.torch_probs(model, data.eval_x)
        result.qat = {"epochs": qat_epochs, "float_accuracy_before": checks._accuracy(before, data.eval_y),
                      "float_accuracy_after": checks._accuracy(after, data.eval_y)}
        result.seconds["qat"] = round(time.perf_counter() - t, 3)
        result.notes.append(f"quantization-aware fine-tuning: {qat_epochs} epoch(s) with int8 fake quantization")
    images, labels = data.eval_x, data.eval_y
    ref = checks.torch_probs(model, images)
    result.seconds["prepare"] = round(time.perf_counter() - t0, 3)

    if fmt == "tflite":
        _export_tflite(arch, model, out, result, quantize, data, int8_io, ref, gates, lint, layer_report, dev,
                       allow_cpu_fallback)
    elif fmt == "onnx":
        _export_onnx(model, out, result, images, labels, ref, gates.float32_tolerance)
    else:
        n = min(len(images), parity_samples)
        _export_tvm(model, out, result, target, tune_trials, images[:n], ref[:n], gates.float32_tolerance,
                    rpc_tracker, rpc_key)
    if result.path.exists():
        result.size_bytes = result.path.stat().st_size
    return result


def _export_tflite(arch, model, out, result, quantize, data, int8_io, ref, gates, lint_mode, layer_report,
                   device=None, allow_cpu_fallback=False):
    from hwnas.export import checks, tflite
    from hwnas.export.keras import keras_model
    from hwnas.io import atomic_write_bytes

    t = time.perf_counter()
    km = keras_model(arch, model)
    data_bytes = tflite.convert(km, quantize=quantize, representative_data=data.calib, int8_io=int8_io)
    result.seconds["convert"] = round(time.perf_counter() - t, 3)
    report = tflite.lint(data_bytes, tflite.expected_suspect_ops(arch, quantize, int8_io),
                         strict=lint_mode == "error")
    result.ops, result.lint = report.ops, report.to_dict()
    if device is not None:
        part = (checks.edgetpu_compile(data_bytes, device) if device.delegate == "edgetpu" else None) or \
            checks.partition(data_bytes, device)
        if part is None:
            result.notes.append(f"device '{device.name}' declares no op support: no partition check")
        else:
            result.partition = part.to_dict()
            if not part.ok and not allow_cpu_fallback:
                raise ExportError(f"{part.describe()}; pass --allow-cpu-fallback to export anyway")
    t = time.perf_counter()
    images, labels = data.eval_x, data.eval_y
    probs = tflite.run_tflite(data_bytes, images)
    rep = checks.parity("tflite", ref, probs, gates.tolerance(quantize), labels)
    result.parity = rep.to_dict()
    if quantize == "int8":
        q = checks.quant_report(ref, probs, labels, max_drop_points=gates.max_int8_drop,
                                min_agreement=gates.min_int8_agreement, accuracy_gate=not result.fresh_init)
        if q.accuracy_gate == "skipped" and not result.fresh_init and labels is None:
            result.notes.append("unlabelled evaluation data: int8 accuracy not measured (agreement gate only)")
        if layer_report or not q.ok:
            q.layers = checks.layer_errors(km, data.calib, images[:32])
        result.quant = q.to_dict()
        result.seconds["check"] = round(time.perf_counter() - t, 3)
        checks.check(q)
    result.seconds["check"] = round(time.perf_counter() - t, 3)
    checks.check(rep)
    atomic_write_bytes(out, data_bytes)


def _export_onnx(model, out, result, images, labels, ref, tol):
    from collections import Counter

    import onnx

    from hwnas.export import checks
    from hwnas.export.onnx import onnx_bytes, run_onnx
    from hwnas.io import atomic_write_bytes

    from hwnas.export.tflite import quiet

    t = time.perf_counter()
    with quiet():
        data = onnx_bytes(model, dynamo=True)
    result.seconds["convert"] = round(time.perf_counter() - t, 3)
    result.ops = dict(sorted(Counter(n.op_type for n in onnx.load_from_string(data).graph.node).items()))
    t = time.perf_counter()
    rep = checks.parity("onnxruntime", ref, run_onnx(data, images.transpose(0, 3, 1, 2)), tol, labels)
    result.parity = rep.to_dict()
    result.seconds["check"] = round(time.perf_counter() - t, 3)
    checks.check(rep)
    atomic_write_bytes(out, data)


def _export_tvm(model, out, result, target, tune_trials, images, ref, tol, rpc_tracker=None, rpc_key=None):
    from hwnas.export import checks
    from hwnas.export.onnx import onnx_bytes
    from hwnas.export.tvm import compile_tvm, is_host_target, make_target, run_tvm_fresh_process

    t = time.perf_counter()
    art = compile_tvm(onnx_bytes(model), target, out, tune_trials=tune_trials, rpc_tracker=rpc_tracker,
                      rpc_key=rpc_key)
    result.tvm = {"tuned": art.tuned, "tuning_records": art.tuning_records, "database": art.database}
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
