"""ArchSpec / PyTorch model → ONNX (NCHW), checked with ``onnx.checker`` and run on onnxruntime.

Export uses ``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``), which on
torch 2.13 is quick (~1 s per net) and gives a plain Conv/Add/Mul graph; ``dynamo=True`` (needs
onnxscript) is available through the ``dynamo`` argument. Both matched PyTorch within 1e-7 here
(``../shared/STACK.md``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.arch import ArchSpec
from hwnas.errors import ExportError
from hwnas.io import atomic_path

DEFAULT_OPSET = 17


class _WithSoftmax:
    """Factory for a module returning softmax probabilities (a plain nn.Module built lazily)."""

    @staticmethod
    def wrap(model):
        import torch

        class WithSoftmax(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return torch.softmax(self.net(x), dim=-1)

        return WithSoftmax(model).eval()


def _resolve(arch_or_model: Any):
    """``(torch_model, arch)`` from an ArchSpec (fresh init) or a built HwnasNet."""
    from hwnas.nn import build_model

    if isinstance(arch_or_model, ArchSpec):
        return build_model(arch_or_model), arch_or_model
    arch = getattr(arch_or_model, "arch", None)
    if arch is None:
        raise ExportError("export_onnx needs an ArchSpec or a model built by hwnas.nn.build_model")
    return arch_or_model.eval(), arch


def onnx_bytes(arch_or_model: Any, *, softmax: bool = True, opset: int = DEFAULT_OPSET, dynamo: bool = False,
               batch_size: int = 1) -> bytes:
    """The ONNX model of ``arch_or_model`` as bytes (see :func:`export_onnx`)."""
    import torch

    model, arch = _resolve(arch_or_model)
    module = _WithSoftmax.wrap(model) if softmax else model
    x = torch.zeros(batch_size, arch.in_channels, arch.resolution, arch.resolution)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                program = torch.onnx.export(module, (x,), None, dynamo=True, opset_version=max(opset, 18),
                                            input_names=["input"], output_names=["output"])
                program.save(buf)
            else:
                torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                                  output_names=["output"], do_constant_folding=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"ONNX export failed: {first}") from err
    data = buf.getvalue()
    if not dynamo:
        data = fold_constants(data)
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as err:
        raise ExportError(f"exported ONNX model fails onnx.checker: {str(err).splitlines()[0]}") from err
    return data


def fold_constants(data: bytes) -> bytes:
    """Constant-fold an ONNX model with onnxruntime's basic (standard-ops-only) graph optimizations.

    The TorchScript exporter writes each asymmetric ``ZeroPad2d`` as a ConstantOfShape/Concat/
    Slice/Transpose/Cast chain that computes the pads at run time ("dynamic pads", which TVM's ONNX
    frontend rejects) and leaves Identity nodes for every weight; folding leaves plain Pad nodes with
    constant pads.
    """
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "folded.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = out
        opts.log_severity_level = 3
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        import onnx

        model = onnx.load(out)
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model.SerializeToString()


def export_onnx(arch_or_model: Any, path: str | Path, *, softmax: bool = True, opset: int = DEFAULT_OPSET,
                dynamo: bool = False) -> Path:
    """Export to an ``.onnx`` file (written atomically), checked with ``onnx.checker``.

    Args:
        arch_or_model: an :class:`ArchSpec` (exported with fresh weights) or a
            :class:`hwnas.nn.HwnasNet` (its weights).
        path: output file.
        softmax: end with a softmax (probabilities) instead of logits.
        opset: ONNX opset (≥ 18 with ``dynamo``).
        dynamo: use the torch.export-based exporter instead of the TorchScript one.

    Returns:
        ``path``. The model's input ``input`` is ``(1, C, R, R)`` float32 **NCHW** (PyTorch layout);
        output ``output`` is ``(1, num_classes)``.

    Raises:
        ExportError: export or checker failure. OutputPathError: unwritable path.
    """
    data = onnx_bytes(arch_or_model, softmax=softmax, opset=opset, dynamo=dynamo)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def run_onnx(model: bytes | str | Path, inputs_nchw: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run an ONNX model on onnxruntime (CPU) sample by sample; ``(N, C, H, W)`` → ``(N, ...)`` float32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.asarray(inputs_nchw, dtype=np.float32)
    return np.stack([sess.run(None, {name: s[None]})[0][0] for s in x])


__all__ = ["export_onnx", "onnx_bytes", "run_onnx", "DEFAULT_OPSET"]
