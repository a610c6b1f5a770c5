"""PyTorch building blocks (NCHW) for every :class:`hwnas.arch.BlockSpec` kind.

Padding follows TF-SAME everywhere (``out = ceil(in / stride)``; the odd pixel of a stride-2
conv's padding goes bottom/right), like timm's ``tf_`` models, so the Keras/TFLite rebuild in
:mod:`hwnas.export.keras` computes the same function with ``padding="same"`` and the exported
``.tflite`` needs no PAD ops. Because shapes are static per ArchSpec, each conv knows its input
size at build time and pads with a fixed :class:`torch.nn.ZeroPad2d` only where the padding is
asymmetric.

All blocks take the same keyword names, built from a resolved :class:`hwnas.arch.Layer`.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.arch import Layer, same_padding

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def make_activation(name: str | None) -> nn.Module:
    """``relu`` | ``relu6`` | ``hswish`` (Howard et al. 2019, eq. 2) | ``swish`` (SiLU) | None."""
    if name is None or name == "none":
        return nn.Identity()
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "swish": nn.SiLU}[name]()


class SamePadConv2d(nn.Sequential):
    """Conv2d with TF-SAME padding for a known input size ``(H, W)``; NCHW in and out."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, in_hw: tuple[int, int],
                 groups: int = 1, bias: bool = False):
        pad_h = same_padding(in_hw[0], kernel, stride)
        pad_w = same_padding(in_hw[1], kernel, stride)
        layers: list[nn.Module] = []
        if pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]:
            padding = (pad_h[0], pad_w[0])
        else:
            layers.append(nn.ZeroPad2d((pad_w[0], pad_w[1], pad_h[0], pad_h[1])))
            padding = (0, 0)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding=padding, groups=groups, bias=bias))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[-1]


class ConvBnAct(nn.Module):
    """Conv (TF-SAME) → BatchNorm → activation [+ input].

    NCHW ``(N, Cin, H, W) -> (N, Cout, ceil(H/s), ceil(W/s))``.

    ``residual=True`` adds the input (a plain conv block in a stage that keeps the shape, see
    :attr:`hwnas.arch.Layer.has_residual`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, in_hw: tuple[int, int],
                 activation: str | None, groups: int = 1, residual: bool = False):
        super().__init__()
        self.conv = SamePadConv2d(in_channels, out_channels, kernel, stride, in_hw, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_activation(activation)
        self.has_residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        return x + y if self.has_residual else y


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used in mobile nets.

    ``efficientnet`` style: squeeze activation = the block's, sigmoid gate (Tan & Le 2019).
    ``mobilenetv3`` style: ReLU squeeze, hard-sigmoid gate (Howard et al. 2019, §5.3).
    NCHW in and out, same shape.
    """

    def __init__(self, channels: int, squeeze_channels: int, activation: str, se_style: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = make_activation("relu" if se_style == "mobilenetv3" else activation)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid() if se_style == "mobilenetv3" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class ChannelShuffle(nn.Module):
    """Channel shuffle between grouped 1×1 convs (Zhang et al. 2018, ShuffleNet §3.1; FBNet's g2 ops)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SeparableBlock(nn.Module):
    """The parts every non-plain block shares (:mod:`hwnas.ops`): [1×1 expansion conv (groups g) →
    [shuffle]] or a full k×k expansion conv → [k×k depthwise] → [SE] → 1×1 linear projection
    (groups g) → + identity when the shape is kept. NCHW. Which parts a kind has is its
    :class:`hwnas.ops.OpKind`; the subclasses below name the kinds.

    Module names (``expand``, ``shuffle``, ``depthwise``, ``se``, ``project``) are the weight map of
    the exporters and of the supernets' ``load_into``; a full k×k conv is ``expand``.
    """

    kind = ""

    def __init__(self, layer: Layer, se_style: str = "efficientnet"):
        super().__init__()
        from hwnas.ops import op_kind

        ok = op_kind(self.kind)
        b = layer.block
        h, w, cin = layer.in_shape
        cout = layer.out_shape[2]
        mid = layer.mid_channels
        g = b.groups if ok.grouped else 1
        if ok.expand_1x1:
            self.expand = ConvBnAct(cin, mid, 1, 1, (h, w), b.activation, groups=g)
            self.shuffle = ChannelShuffle(g) if g > 1 else nn.Identity()
        elif ok.kxk == "full":
            self.expand = ConvBnAct(cin, mid, b.kernel, b.stride, (h, w), b.activation)
        if ok.kxk == "depthwise":
            self.depthwise = ConvBnAct(mid, mid, b.kernel, b.stride, (h, w), b.activation, groups=mid)
        se = layer.se_channels(se_style)
        self.se = SqueezeExcite(mid, se, b.activation, se_style) if se else nn.Identity()
        self.project = ConvBnAct(mid, cout, 1, 1, layer.out_shape[:2], None, groups=g)
        self.has_residual = layer.has_residual
        self.parts = tuple(n for n in ("expand", "shuffle", "depthwise", "se", "project") if n in self._modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.parts:
            y = getattr(self, name)(y)
        return x + y if self.has_residual else y


class MBConv(SeparableBlock):
    """Inverted residual (MobileNetV2 §3.3; FBNet Fig. 3 for grouped pointwise convs).

    1×1 expansion (groups g) → [shuffle] → k×k depthwise (stride) → [SE] → 1×1 linear projection
    (groups g) → + identity when the shape is kept. NCHW.
    """

    kind = "mbconv"


class FusedMBConv(SeparableBlock):
    """Fused-MBConv (Tan & Le 2021, EfficientNetV2 §3.2, Fig. 2; timm's ``EdgeResidual``).

    k×k conv expanding ``in → mid`` (stride) → BN → act → [SE] → 1×1 linear projection
    ``mid → out`` → BN → + identity when the shape is kept. NCHW.
    """

    kind = "fused_mbconv"


class DSConv(SeparableBlock):
    """Depthwise-separable conv: k×k depthwise → [SE] → 1×1 linear projection (+ identity). NCHW."""

    kind = "dsconv"


class ConvBlock(ConvBnAct):
    """A ``conv`` block built from its resolved layer: :class:`ConvBnAct` (+ identity where kept)."""

    def __init__(self, layer: Layer, se_style: str = "efficientnet"):
        b = layer.block
        super().__init__(layer.in_shape[2], layer.out_shape[2], b.kernel, b.stride, layer.in_shape[:2], b.activation,
                         residual=layer.has_residual)


class SkipBlock(nn.Identity):
    """A ``skip`` block: the identity."""

    def __init__(self, layer: Layer | None = None, se_style: str = "efficientnet"):
        super().__init__()


class Classifier(nn.Module):
    """Global average pool → [1×1 prelogits conv + activation] → flatten → dropout → FC.

    ``(N, C, H, W) -> (N, num_classes)`` logits.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0,
                 prelogits_channels: int | None = None, prelogits_activation: str = "hswish"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        if prelogits_channels:
            self.prelogits = nn.Sequential(nn.Conv2d(in_channels, prelogits_channels, 1, bias=True),
                                           make_activation(prelogits_activation))
            in_channels = prelogits_channels
        else:
            self.prelogits = nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.prelogits(self.pool(x)), 1)))


def build_layer(layer: Layer, se_style: str = "efficientnet") -> nn.Module:
    """The module of one resolved block layer (not the classifier): the class its kind registers in
    :mod:`hwnas.ops`."""
    from hwnas.ops import torch_class

    return torch_class(layer.block.kind)(layer, se_style)
