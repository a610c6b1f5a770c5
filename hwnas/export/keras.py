"""ArchSpec (+ PyTorch weights) → native NHWC Keras 3 model, the source of every ``.tflite``.

The rebuild mirrors :mod:`hwnas.nn.blocks` layer for layer:

* every conv uses ``padding="same"``: the PyTorch side pads TF-SAME (odd pixel bottom/right, see
  :mod:`hwnas.nn.blocks`), so both compute the same function and the converter emits no PAD ops;
* BatchNorm uses PyTorch's epsilon (1e-5) and running statistics;
* activations: ``relu`` → ReLU, ``relu6`` → ReLU(6), ``hswish`` → ``x * relu6(x + 3) / 6``
  (Howard et al. 2019, eq. 2; Keras ``hard_silu``), ``swish`` → ``x * sigmoid(x)`` (Keras ``silu``);
  the MobileNetV3 SE gate is the hard sigmoid ``relu6(x + 3) / 6`` (Keras 3 ``hard_sigmoid``);
* grouped mbconv (FBNet ``g2``) shuffles channels after the expansion conv with
  Reshape → Permute → Reshape (ShuffleNet §3.1), the only blocks that produce RESHAPE/TRANSPOSE ops;
* the classifier is global average pooling → [Dense prelogits + activation (MobileNetV3)] → Dense
  (→ softmax when asked). A 1×1 conv on a 1×1 map equals a Dense layer, so no RESHAPE is needed.

Weight layouts (PyTorch → Keras): conv OIHW ``(O, I/g, kh, kw)`` → HWIO ``(kh, kw, I/g, O)``
(``transpose(2, 3, 1, 0)``); depthwise ``(C, 1, kh, kw)`` → ``(kh, kw, C, 1)``
(``transpose(2, 3, 0, 1)``); Linear ``(out, in)`` → Dense ``(in, out)``; a 1×1 prelogits conv
``(P, C, 1, 1)`` → Dense ``(C, P)``.

Keras layer names follow the PyTorch module names with ``.`` → ``_`` (``stages_2_1_depthwise_conv``),
so a Keras layer can always be traced back to the ArchSpec layer it came from.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hwnas.arch import ArchSpec, Layer
from hwnas.errors import ExportError
from hwnas.ops import op_kind

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BN_EPS = 1e-5


def _keras():
    from hwnas.export.tflite import quiet

    with quiet():  # TensorFlow's import logs (oneDNN notice, absl pre-init warnings)
        import keras

    if keras.backend.backend() != "tensorflow":  # pragma: no cover - environment guard
        raise ExportError(f"the TFLite route needs the Keras TensorFlow backend, got '{keras.backend.backend()}' "
                          "(set KERAS_BACKEND=tensorflow)")
    return keras


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _conv_hwio(weight) -> np.ndarray:
    """PyTorch conv weight OIHW → Keras HWIO."""
    return _np(weight).transpose(2, 3, 1, 0)


def _dw_hwc1(weight) -> np.ndarray:
    """PyTorch depthwise weight ``(C, 1, kh, kw)`` → Keras ``(kh, kw, C, 1)``."""
    return _np(weight).transpose(2, 3, 0, 1)


class _Builder:
    """Builds Keras layers on a functional graph and (optionally) copies PyTorch weights into them."""

    def __init__(self, se_style: str, prefix: str = ""):
        self.k = _keras()
        self.se_style = se_style
        self.prefix = prefix

    # ------------------------------------------------------------------ primitives
    def act(self, x, name: str | None, prefix: str):
        L = self.k.layers
        if name is None or name == "none":
            return x
        if name == "relu":
            return L.ReLU(name=f"{prefix}_relu")(x)
        if name == "relu6":
            return L.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x)
        if name == "hswish":
            return L.Activation("hard_silu", name=f"{prefix}_hswish")(x)
        if name == "swish":
            return L.Activation("silu", name=f"{prefix}_swish")(x)
        raise ExportError(f"no Keras lowering for activation '{name}'")

    def conv_bn(self, x, prefix: str, filters: int, kernel: int, stride: int, act: str | None, groups: int = 1,
                tm=None):
        """Conv (same) → BN → act; ``tm`` is the PyTorch :class:`ConvBnAct` to copy weights from."""
        L = self.k.layers
        conv = L.Conv2D(filters, kernel, strides=stride, padding="same", groups=groups, use_bias=False,
                        name=f"{prefix}_conv")
        x = conv(x)
        bn = L.BatchNormalization(epsilon=BN_EPS, name=f"{prefix}_bn")
        x = bn(x)
        if tm is not None:
            conv.set_weights([_conv_hwio(tm.conv.conv.weight)])
            self._copy_bn(bn, tm.bn)
        return self.act(x, act, prefix)

    def dw_bn(self, x, prefix: str, kernel: int, stride: int, act: str | None, tm=None):
        L = self.k.layers
        dw = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")
        x = dw(x)
        bn = L.BatchNormalization(epsilon=BN_EPS, name=f"{prefix}_bn")
        x = bn(x)
        if tm is not None:
            dw.set_weights([_dw_hwc1(tm.conv.conv.weight)])
            self._copy_bn(bn, tm.bn)
        return self.act(x, act, prefix)

    @staticmethod
    def _copy_bn(bn, tbn) -> None:
        if abs(tbn.eps - BN_EPS) > 1e-12:
            raise ExportError(f"BatchNorm eps {tbn.eps} differs from the Keras rebuild's {BN_EPS}")
        bn.set_weights([_np(tbn.weight), _np(tbn.bias), _np(tbn.running_mean), _np(tbn.running_var)])

    def se(self, x, prefix: str, channels: int, squeeze: int, act: str, tm=None):
        """Squeeze-excite: mean → 1×1 conv (bias) → act → 1×1 conv (bias) → gate → multiply."""
        L = self.k.layers
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(x)
        reduce = L.Conv2D(squeeze, 1, use_bias=True, name=f"{prefix}_reduce")
        s = reduce(s)
        s = self.act(s, "relu" if self.se_style == "mobilenetv3" else act, f"{prefix}_reduce")
        expand = L.Conv2D(channels, 1, use_bias=True, name=f"{prefix}_expand")
        s = expand(s)
        if self.se_style == "mobilenetv3":
            s = L.Activation("hard_sigmoid", name=f"{prefix}_hsigmoid")(s)
        else:
            s = L.Activation("sigmoid", name=f"{prefix}_sigmoid")(s)
        if tm is not None:
            reduce.set_weights([_conv_hwio(tm.reduce.weight), _np(tm.reduce.bias)])
            expand.set_weights([_conv_hwio(tm.expand.weight), _np(tm.expand.bias)])
        return L.Multiply(name=f"{prefix}_scale")([x, s])

    def shuffle(self, x, prefix: str, groups: int):
        """Channel shuffle, NHWC: ``(H, W, g, C/g) → (H, W, C/g, g)``, equal to the PyTorch NCHW one."""
        L = self.k.layers
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        x = L.Reshape((h, w, groups, c // groups), name=f"{prefix}_split")(x)
        x = L.Permute((1, 2, 4, 3), name=f"{prefix}_transpose")(x)
        return L.Reshape((h, w, c), name=f"{prefix}_merge")(x)

    # ------------------------------------------------------------------ layers
    def layer(self, x, layer: Layer, prefix: str, tm=None):
        """One resolved :class:`Layer` (not the classifier) applied to the NHWC tensor ``x``."""
        b = layer.block
        cout = layer.out_shape[2]
        kind = op_kind(b.kind)  # its parts (hwnas.ops), named as the PyTorch module's (hwnas.nn.blocks)
        if kind.kxk is None:  # skip
            return x
        inp = x

        def part(name: str):
            return getattr(tm, name) if tm is not None else None

        if not kind.project:  # plain conv
            y = self.conv_bn(x, prefix, cout, b.kernel, b.stride, b.activation, tm=tm)
        else:
            mid = layer.mid_channels
            g = b.groups if kind.grouped else 1
            y = x
            if kind.expand_1x1:
                y = self.conv_bn(y, f"{prefix}_expand", mid, 1, 1, b.activation, groups=g, tm=part("expand"))
                if g > 1:
                    y = self.shuffle(y, f"{prefix}_shuffle", g)
            elif kind.kxk == "full":
                y = self.conv_bn(y, f"{prefix}_expand", mid, b.kernel, b.stride, b.activation, tm=part("expand"))
            if kind.kxk == "depthwise":
                y = self.dw_bn(y, f"{prefix}_depthwise", b.kernel, b.stride, b.activation, tm=part("depthwise"))
            se = layer.se_channels(self.se_style)
            if se:
                y = self.se(y, f"{prefix}_se", mid, se, b.activation, tm=part("se"))
            y = self.conv_bn(y, f"{prefix}_project", cout, 1, 1, None, groups=g, tm=part("project"))
        if layer.has_residual:
            y = self.k.layers.Add(name=f"{prefix}_add")([inp, y])
        return y

    def classifier(self, x, num_classes: int, prelogits: int | None, prelogits_act: str | None, tm=None,
                   softmax: bool = False):
        """Global average pool → [Dense prelogits + act] → Dense [→ softmax].

        ``(1, H, W, C) → (1, classes)``.
        """
        L = self.k.layers
        p = self.prefix
        x = L.GlobalAveragePooling2D(name=f"{p}classifier_pool")(x)
        if prelogits:
            dense = L.Dense(prelogits, use_bias=True, name=f"{p}classifier_prelogits")
            x = dense(x)
            if tm is not None:
                conv = tm.prelogits[0]
                dense.set_weights([_np(conv.weight)[:, :, 0, 0].T, _np(conv.bias)])
            x = self.act(x, prelogits_act, f"{p}classifier_prelogits")
        fc = L.Dense(num_classes, use_bias=True, name=f"{p}classifier_fc")
        x = fc(x)
        if tm is not None:
            fc.set_weights([_np(tm.fc.weight).T, _np(tm.fc.bias)])
        if softmax:
            x = L.Softmax(name=f"{p}softmax")(x)
        return x


def apply_arch(x, arch: ArchSpec, torch_model: Any = None, *, softmax: bool = True, prefix: str = ""):
    """Apply the whole network ``arch`` to a symbolic NHWC Keras tensor ``x`` (functional API).

    The building block of :func:`keras_model`; ``prefix`` is prepended to every layer name so several
    networks can live in one Keras model.

    Raises:
        ExportError: ``torch_model`` does not match ``arch``.
    """
    layers = arch.layers()
    builder = _Builder(arch.se_style, prefix)
    modules = dict(torch_model.layer_modules()) if torch_model is not None else {}
    if torch_model is not None and set(modules) != {lay.name for lay in layers}:
        missing = sorted({lay.name for lay in layers} ^ set(modules))
        raise ExportError(f"the PyTorch model does not match the architecture: layer '{missing[0]}' differs")
    try:
        for lay in layers:
            tm = modules.get(lay.name)
            if lay.block is None:
                x = builder.classifier(x, arch.classifier.num_classes, arch.head.prelogits_channels,
                                       arch.head.prelogits_activation, tm=tm, softmax=softmax)
            else:
                x = builder.layer(x, lay, prefix + lay.name.replace(".", "_"), tm=tm)
    except ValueError as err:  # set_weights shape mismatch
        raise ExportError(f"weights do not fit the architecture: {err}") from None
    return x


def keras_model(arch: ArchSpec, torch_model: Any = None, *, softmax: bool = True, batch_size: int | None = 1):
    """The whole network ``arch`` as a Keras 3 functional model (NHWC).

    Args:
        arch: the architecture.
        torch_model: a :class:`hwnas.nn.HwnasNet` built from ``arch`` (``hwnas.nn.build_model``) whose
            weights and BatchNorm statistics are copied; ``None`` keeps Keras' random init.
        softmax: end with a softmax (probabilities, as ``keras.applications`` models do) instead of logits.
        batch_size: fixed batch dimension of the input (1 gives a fully static ``.tflite``), or None.

    Returns:
        ``keras.Model`` with input ``(batch, R, R, in_channels)`` float32 NHWC and output
        ``(batch, num_classes)``.

    Raises:
        ExportError: ``torch_model`` does not match ``arch`` (layer structure or tensor shapes).
    """
    k = _keras()
    inp = k.Input(shape=(arch.resolution, arch.resolution, arch.in_channels), batch_size=batch_size, name="input")
    out = apply_arch(inp, arch, torch_model, softmax=softmax)
    return k.Model(inp, out, name=(arch.name or "hwnas").replace(".", "_"))


def keras_op_model(key, *, seed: int = 0):
    """A one-op Keras model for a latency-table key (for the latency profiler).

    Args:
        key: :class:`hwnas.opkey.OpKey` (or its string form) of an ``mbconv`` | ``fused_mbconv`` | ``dsconv`` | ``conv`` |
            ``skip`` | ``classifier`` op.
        seed: seeds Keras' random initialisation (weights do not change the op's latency, only
            reproducibility).

    Returns:
        ``keras.Model`` with input ``(1, H, W, C)`` float32 NHWC (the key's input shape) and output
        ``(1, *key.output_shape)`` for blocks or ``(1, num_classes)`` logits for a classifier key.
        A ``skip`` key gives an identity model (no ops once converted).
    """
    from hwnas.opkey import OpKey

    k = _keras()
    if isinstance(key, str):
        key = OpKey.parse(key)
    import random

    py_state, np_state = random.getstate(), np.random.get_state()
    k.utils.set_random_seed(seed)  # seeds Python's and NumPy's global RNGs too: restored below
    try:
        builder = _Builder(key.se_style)
        inp = k.Input(shape=key.input_shape, batch_size=1, name="input")
        if key.kind == "classifier":
            classes, prelogits, act = key.classifier_parts()
            out = builder.classifier(inp, classes, prelogits, act)
        elif key.kind == "skip":
            out = k.layers.Identity(name="skip")(inp)
        else:
            out = builder.layer(inp, key.layer(), "op")
        return k.Model(inp, out, name="op")
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


__all__ = ["keras_model", "keras_op_model", "apply_arch", "BN_EPS"]
