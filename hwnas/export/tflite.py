"""Keras model → ``.tflite`` flatbuffer (float32, float16, int8), LiteRT execution and op lint.

Conversion goes through ``tf.lite.TFLiteConverter.from_keras_model`` (frozen graph, BatchNorm
folded into the convs, activations fused); see ``../shared/STACK.md`` for why this route and not
``from_concrete_functions`` or litert-torch. Artifacts run on the LiteRT interpreter
(``ai_edge_litert``) with its default XNNPACK delegate.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hwnas.errors import ExportError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUANTIZE_MODES = (None, "float16", "int8")

#: Ops that a clean mobile graph should not contain (layout shuffles, explicit padding, float islands).
SUSPECT_OPS = ("TRANSPOSE", "RESHAPE", "PAD", "DEQUANTIZE")


#: Where :func:`quiet` sends TensorFlow/LiteRT/ONNX chatter (None: discarded); see :func:`log_to`.
_LOG_FILE: Path | None = None


def log_to(path: str | Path | None) -> None:
    """Send the native libraries' log output of later :func:`quiet` blocks to ``path`` (appended; None:
    discard). ``hwnas search`` points it at ``RUN/export.log``."""
    global _LOG_FILE
    _LOG_FILE = None if path is None else Path(path)


@contextlib.contextmanager
def logging_to(path: str | Path | None):
    """:func:`log_to` ``path`` for the block, then back to the previous log file."""
    global _LOG_FILE
    previous = _LOG_FILE
    log_to(path)
    try:
        yield
    finally:
        _LOG_FILE = previous


@contextlib.contextmanager
def quiet():
    """Silence TensorFlow, LiteRT and ONNX chatter for the block: C++ logs and prints written to the
    stdout/stderr file descriptors (``INFO: Created TensorFlow Lite XNNPACK delegate``,
    ``fully_quantize: 0 …``), Python warnings and absl/TF loggers go to the file set by
    :func:`log_to` (or nowhere), never into the terminal or its progress bars. Re-entrant."""
    import logging
    import sys

    if getattr(quiet, "_depth", 0):
        yield
        return
    quiet._depth = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    target = open(_LOG_FILE, "ab") if _LOG_FILE is not None else open(os.devnull, "wb")
    saved = []
    for fd in (1, 2):
        try:
            saved.append((fd, os.dup(fd)))
            os.dup2(target.fileno(), fd)
        except OSError:
            pass
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "onnxruntime", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        target.close()
        quiet._depth = 0


def convert(keras_model: Any, *, quantize: str | None = None, representative_data: Iterable[np.ndarray] | np.ndarray |
            None = None, int8_io: bool = False, route: str = "keras") -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer.

    Args:
        keras_model: a ``keras.Model`` (e.g. from :func:`hwnas.export.keras.keras_model`).
        quantize: ``None`` (float32), ``"float16"`` (float16 weights, float32 compute fallback) or
            ``"int8"`` (full-integer: int8 weights and activations, int32 biases).
        representative_data: int8 only: calibration inputs, an array ``(N, H, W, C)`` float32 NHWC or
            an iterable of such arrays (batches); each sample is fed with batch size 1.
        int8_io: int8 only: int8 input/output tensors (quantize/dequantize done by the caller, see
            :func:`run_tflite`) instead of float32 ones.
        route: ``"keras"`` — ``TFLiteConverter.from_keras_model`` (exports a SavedModel first; the
            reference route); ``"frozen"`` — trace the model once, freeze its variables
            (``convert_variables_to_constants_v2``) and convert that concrete function: the same
            graph, ~3× faster (TF's "deprecated" concrete-function path; tests pin that both agree).

    Returns:
        The flatbuffer bytes.

    Raises:
        ExportError: unknown ``quantize`` mode, missing/ill-shaped representative data, or a
            converter failure.
    """
    with quiet():
        import tensorflow as tf

    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"unknown quantization '{quantize}'; expected one of float16, int8 (or none)")
    if route == "keras":
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    elif route == "frozen":
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        specs = [tf.TensorSpec(t.shape, tf.float32) for t in keras_model.inputs]
        fn = tf.function(lambda *xs: keras_model(list(xs) if len(xs) > 1 else xs[0], training=False))
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function(*specs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import logging

            absl_logger = logging.getLogger("absl")
            level = absl_logger.level
            absl_logger.setLevel(logging.ERROR)
            try:
                converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
            finally:
                absl_logger.setLevel(level)
    else:
        raise ExportError(f"unknown conversion route '{route}'; expected keras or frozen")
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        samples = _calibration_samples(representative_data, tuple(keras_model.inputs[0].shape[1:]))

        def gen():
            for s in samples:
                yield [s[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        # Keras' export step prints every captured variable to stdout, the converter its MLIR passes
        # to stderr: keep the CLI's output clean.
        with quiet():
            return bytes(converter.convert())
    except Exception as err:  # converter errors are plain Exceptions with long MLIR dumps
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"TFLite conversion failed: {first}") from err


def _calibration_samples(data, shape: tuple[int, ...]) -> list[np.ndarray]:
    if data is None:
        raise ExportError("int8 quantization needs representative data (--calib-data)")
    if isinstance(data, np.ndarray):
        batches = [data]
    else:
        batches = [np.asarray(b) for b in data]
    samples: list[np.ndarray] = []
    for b in batches:
        if b.ndim == len(shape):
            b = b[None]
        if tuple(b.shape[1:]) != tuple(shape):
            want = ", ".join(map(str, shape))
            raise ExportError(f"calibration data has shape {tuple(b.shape)}; expected (N, {want}) float32 NHWC")
        samples.extend(np.asarray(s, dtype=np.float32) for s in b)
    if not samples:
        raise ExportError("calibration data is empty")
    return samples


def _interpreter(model: bytes | str | Path, threads: int = 1, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"num_threads": int(threads)}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        if isinstance(model, (bytes, bytearray)):
            interp = Interpreter(model_content=bytes(model), **kwargs)
        else:
            interp = Interpreter(model_path=str(model), **kwargs)
        interp.allocate_tensors()
    return interp


def op_counts(tflite: bytes | str | Path) -> dict[str, int]:
    """Builtin op histogram of a ``.tflite`` (raw graph, before delegation), e.g. ``{"CONV_2D": 35, ...}``."""
    interp = _interpreter(tflite, delegates=False)
    counts = Counter(op["op_name"] for op in interp._get_ops_details())
    return dict(sorted(counts.items()))


def op_list(tflite: bytes | str | Path) -> list[dict[str, Any]]:
    """Ops in execution order: ``{"op": name, "inputs": [shapes], "outputs": [shapes]}`` (raw graph)."""
    interp = _interpreter(tflite, delegates=False)
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interp.get_tensor_details()}
    return [{"op": op["op_name"], "inputs": [shapes.get(int(i)) for i in op["inputs"] if int(i) >= 0],
             "outputs": [shapes.get(int(i)) for i in op["outputs"]]} for op in interp._get_ops_details()]


def _moves_data(op: dict[str, Any]) -> bool:
    """Whether a RESHAPE/TRANSPOSE reorders data (not just adds/drops size-1 axes, which is free)."""
    if not op["inputs"] or not op["outputs"] or op["inputs"][0] is None or op["outputs"][0] is None:
        return True
    src, dst = op["inputs"][0], op["outputs"][0]
    if op["op"] == "RESHAPE":
        return [d for d in src if d != 1] != [d for d in dst if d != 1]
    if op["op"] == "TRANSPOSE":  # the permutation moves data only if non-1 axes change order
        perm_out_non1 = [d for d in dst if d != 1]
        return len([d for d in src if d != 1]) > 1 and perm_out_non1 != [d for d in src if d != 1]
    return True


def run_tflite(model: bytes | str | Path, inputs_nhwc: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run a ``.tflite`` on LiteRT (default XNNPACK delegate) sample by sample.

    Args:
        model: flatbuffer bytes or a path.
        inputs_nhwc: ``(N, H, W, C)`` float32 NHWC (or one ``(H, W, C)`` sample). Int8-I/O models get
            their inputs quantized with the input tensor's scale/zero point.
        threads: interpreter threads.

    Returns:
        ``(N, ...)`` float32 outputs (int8 outputs dequantized).
    """
    x = np.asarray(inputs_nhwc, dtype=np.float32)
    interp = _interpreter(model, threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if x.ndim == len(inp["shape"]) - 1:
        x = x[None]
    interp.allocate_tensors()
    results = []
    for sample in x:
        s = sample[None]
        if tuple(s.shape) != tuple(inp["shape"]):
            raise ExportError(f"input shape {tuple(sample.shape)} does not fit the model's {tuple(inp['shape'][1:])}")
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            s = np.clip(np.round(s / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], s)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(np.array(y[0], dtype=np.float32))
    return np.stack(results)


def random_input(detail: dict, seed: int = 0) -> np.ndarray:
    """A seeded random tensor for an interpreter input ``detail`` (float: N(0,1); integer: [-100, 100))."""
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.float32:
        return rng.standard_normal(detail["shape"]).astype(np.float32)
    return rng.integers(-100, 100, detail["shape"]).astype(detail["dtype"])


def time_tflite(model: bytes | str | Path, *, threads: int = 1, warmup: int = 5, runs: int = 30) -> list[float]:
    """Wall-clock latencies (ms) of ``runs`` invocations on LiteRT + XNNPACK after ``warmup`` runs."""
    interp = _interpreter(model, threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], random_input(inp))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


@dataclass
class LintReport:
    """Op lint of a ``.tflite``: op counts, the suspect ops found beyond what was expected, and problems."""

    ops: dict[str, int]
    expected: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "total": self.total, "expected_suspects": self.expected, "problems": self.problems}


def expected_suspect_ops(arch, quantize: str | None = None, int8_io: bool = False) -> dict[str, int]:
    """Suspect-op counts that ``arch`` legitimately needs in a ``.tflite`` from :mod:`hwnas.export.keras`.

    A grouped mbconv's channel shuffle lowers to RESHAPE → TRANSPOSE → RESHAPE; everything else
    needs none. float16 models dequantize each float16 weight tensor once (one DEQUANTIZE per weight
    tensor is expected and not counted as a problem); int8 models with float I/O dequantize their one
    output (a DEQUANTIZE anywhere else is a float island).
    """
    grouped = sum(1 for lay in arch.layers() if lay.block is not None and lay.block.kind == "mbconv"
                  and lay.block.groups > 1)
    expected = {"TRANSPOSE": grouped, "RESHAPE": 2 * grouped, "PAD": 0, "DEQUANTIZE": 0}
    if quantize == "float16":
        expected["DEQUANTIZE"] = -1  # any number: one per float16 weight
    elif quantize == "int8" and not int8_io:
        expected["DEQUANTIZE"] = 1
    return expected


def lint(tflite: bytes | str | Path, expected: dict[str, int] | None = None, *, strict: bool = True) -> LintReport:
    """List the ops of a ``.tflite`` and check the suspect ones (TRANSPOSE, RESHAPE, PAD, DEQUANTIZE).

    RESHAPE/TRANSPOSE ops that only add or drop size-1 axes move no data and are not counted.

    Args:
        tflite: flatbuffer bytes or path.
        expected: allowed count per suspect op (default 0 each; ``-1`` = any number).
        strict: raise on a problem; otherwise only warn (``warnings.warn``) and return the report.

    Raises:
        ExportError: (strict) a suspect op appears more often than expected.
    """
    ops = op_counts(tflite)
    expected = {op: 0 for op in SUSPECT_OPS} | dict(expected or {})
    # RESHAPE/TRANSPOSE that only add or drop size-1 axes (e.g. the converter's lowering of a mean over
    # a 1x1 feature map) move no data: they are listed in ``ops`` but not counted against the lint.
    layout = Counter(o["op"] for o in op_list(tflite) if o["op"] in ("RESHAPE", "TRANSPOSE") and _moves_data(o))
    problems = []
    for op in SUSPECT_OPS:
        allowed = expected.get(op, 0)
        found = layout.get(op, 0) if op in ("RESHAPE", "TRANSPOSE") else ops.get(op, 0)
        if allowed >= 0 and found > allowed:
            problems.append(f"{found} {op} op(s), expected at most {allowed}")
    report = LintReport(ops, expected, problems)
    if problems:
        msg = "op lint: " + "; ".join(problems)
        if strict:
            raise ExportError(msg + " (pass lint='warn' / --lint warn to export anyway)")
        warnings.warn(msg, stacklevel=2)
    return report


__all__ = ["convert", "op_counts", "op_list", "run_tflite", "time_tflite", "random_input", "lint", "LintReport", "expected_suspect_ops",
           "QUANTIZE_MODES", "SUSPECT_OPS", "quiet", "log_to"]
