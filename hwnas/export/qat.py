"""Quantization-aware fine-tuning (QAT) before a full-integer ``.tflite`` conversion.

``hwnas export --quantize int8 --qat N`` fine-tunes the PyTorch model for N epochs with *fake
quantization* simulating what TFLite's full-integer kernels compute (Jacob et al. 2018, "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", §3 and eq. 12),
then converts through the ordinary route (Keras rebuild → ``TFLiteConverter`` with a representative
dataset), which yields a fully int8 ``.tflite`` (int8 weights and activations, int32 biases).

What is simulated, and how it matches TFLite's int8 scheme (the TFLite 8-bit quantization spec):

* weights: BatchNorm folded into the preceding convolution exactly as the converter folds it
  (``w·γ/√(σ²+ε)``), then symmetric per-output-channel int8 in ``[-127, 127]`` with
  ``scale = max|w|/127`` (:func:`torch.fake_quantize_per_channel_affine`); BN statistics are frozen
  during fine-tuning (Jacob et al. §3.2 "batch normalization folding"; we freeze from the start,
  since the model is already trained);
* activations: the output of every conv-BN-act unit, block, SE gate and the classifier's input is
  fake-quantized per tensor, asymmetric int8 ``[-128, 127]``, with ranges tracked as an exponential
  moving average of batch min/max (Jacob et al. §3.1).

Gradients pass the rounding with the straight-through estimator (built into PyTorch's fake-quant ops).
After fine-tuning the folded-and-rounded weights are written back into the float model (so the
converter recomputes exactly the scales that training saw) and the hooks are removed.

Deviation from the reference QAT flows (TF Model Optimization's Keras QAT, torchao's PT2E QAT): both
insert observers into the graph and let the converter read the learnt ranges. The first needs
``tf-keras`` (incompatible with the Keras 3 this project uses, see STACK.md) and the second the
``litert-torch`` converter; here activation ranges are re-calibrated by the converter on the
representative data instead of being taken from training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hwnas.errors import ExportError


def _fold_scale(bn) -> torch.Tensor:
    """Per-output-channel factor γ/√(σ²+ε) that TFLite folds into the conv weights."""
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return torch.where(s.abs() < 1e-12, torch.ones_like(s), s)


class FoldedWeightFakeQuant(torch.nn.Module):
    """Parametrization of a conv/FC weight ``(Cout, ...)``: fake-quantize ``w·s`` per output channel and
    divide ``s`` back out, so that ``BN(conv(x, w'))`` equals ``conv(x, q(w·s)) + b`` — what the int8
    kernel computes (``s`` = :func:`_fold_scale` of the following BN, or 1 without one)."""

    def __init__(self, bn=None):
        super().__init__()
        self._bn = [bn]  # a plain list, not a submodule: the state dict stays unchanged

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        bn = self._bn[0]
        s = _fold_scale(bn) if bn is not None else torch.ones(w.shape[0], device=w.device, dtype=w.dtype)
        shape = (-1,) + (1,) * (w.dim() - 1)
        folded = w * s.view(shape)
        scale = (folded.detach().abs().flatten(1).amax(1) / 127.0).clamp_min(1e-12).float()
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        q = torch.fake_quantize_per_channel_affine(folded, scale, zero, 0, -127, 127)
        return q / s.view(shape)


class _ActFakeQuant:
    """Forward hook: fake-quantize a module's output per tensor (asymmetric int8, EMA min/max range)."""

    def __init__(self, momentum: float = 0.01):
        self.lo = None
        self.hi = None
        self.momentum = momentum

    def __call__(self, module, inputs, out):
        if not isinstance(out, torch.Tensor):
            return out
        if module.training or self.lo is None:
            lo, hi = float(out.detach().min()), float(out.detach().max())
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo += self.momentum * (lo - self.lo)
                self.hi += self.momentum * (hi - self.hi)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        zero = int(np.clip(round(-128 - lo / scale), -128, 127))
        return torch.fake_quantize_per_tensor_affine(out, scale, zero, -128, 127)


def _units(model):
    """``(conv, bn-or-None)`` pairs in the order TFLite folds them, and the modules whose output is an
    int8 tensor in the converted graph."""
    from hwnas.nn.blocks import ConvBnAct, DSConv, MBConv, SqueezeExcite

    pairs, outputs, folded = [], [], set()
    for m in model.modules():
        if isinstance(m, ConvBnAct):
            pairs.append((m.conv.conv, m.bn))
            folded.add(id(m.conv.conv))
            outputs.append(m)
        elif isinstance(m, (MBConv, DSConv, SqueezeExcite)):
            outputs.append(m)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and id(m) not in folded:
            pairs.append((m, None))
    return pairs, outputs


def qat_finetune(model, train_x: np.ndarray, train_y: np.ndarray, *, epochs: int, lr: float = 1e-3,
                 batch_size: int = 64, seed: int = 0, progress=None):
    """Fine-tune ``model`` in place for ``epochs`` with int8 fake quantization (see the module docstring).

    Args:
        model: a trained :class:`hwnas.nn.HwnasNet` (NCHW).
        train_x: ``(N, H, W, C)`` float32 NHWC, preprocessed as in training; ``train_y``: ``(N,)`` labels.
        epochs: passes over the data (0: nothing happens).
        lr: SGD learning rate (momentum 0.9); small, since the model is already trained.
        progress: optional callable ``(epoch, loss)``.

    Returns:
        The model, in eval mode, with fake-quantized (folded, rounded, unfolded) weights and no hooks.

    Raises:
        ExportError: no labelled training data.
    """
    from torch.nn.utils import parametrize

    if epochs <= 0:
        return model
    if train_x is None or train_y is None or len(train_x) == 0:
        raise ExportError("--qat needs labelled training images: pass --calib-data with a built-in name "
                          "(digits, mnist) or an .npz with arrays x and y")
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    x_all = torch.from_numpy(np.ascontiguousarray(np.asarray(train_x, np.float32).transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(np.asarray(train_y, np.int64))
    pairs, outputs = _units(model)
    for conv, bn in pairs:
        parametrize.register_parametrization(conv, "weight", FoldedWeightFakeQuant(bn))
    hooks = [m.register_forward_hook(_ActFakeQuant()) for m in outputs]
    hooks.append(model.classifier.fc.register_forward_pre_hook(
        lambda m, args, fq=_ActFakeQuant(): (fq(m, None, args[0]),)))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    try:
        for epoch in range(epochs):
            model.train()
            for m in model.modules():  # frozen BN statistics (folding needs fixed σ², μ)
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            order = torch.randperm(len(x_all), generator=g)
            total, count = 0.0, 0
            for i in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
                idx = order[i:i + batch_size]
                x, y = x_all[idx].to(dev, dtype), y_all[idx].to(dev)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()), count + 1
            if progress is not None:
                progress(epoch + 1, total / max(1, count))
    finally:
        for h in hooks:
            h.remove()
        for conv, _ in pairs:
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return model.eval()


__all__ = ["qat_finetune", "FoldedWeightFakeQuant"]
