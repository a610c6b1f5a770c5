"""Parameters and MACs computed from an ArchSpec alone (no module is built).

Counting convention (the one behind the published figures: MobileNetV2 300 M, EfficientNet-B0
390 M): MACs are multiply-accumulates of convolutions and fully connected layers, SE's 1×1 convs
included; BatchNorm, activations, pooling, the SE multiply and residual adds are not counted.
Parameters count conv/FC weights and biases and BatchNorm's γ and β (running statistics are
buffers, not parameters), exactly as ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.arch import ArchSpec, Layer
from hwnas.ops import op_kind


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer: ``params`` (count) and ``macs`` (multiply-accumulates)."""

    name: str
    op: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: int
    macs: int


@dataclass(frozen=True)
class ArchCost:
    """Whole-network cost and its per-layer breakdown."""

    params: int
    macs: int
    layers: tuple[LayerCost, ...]


def _conv(h_out: int, w_out: int, cin: int, cout: int, k: int, groups: int = 1, bn: bool = True,
          bias: bool = False) -> tuple[int, int]:
    weights = k * k * (cin // groups) * cout
    params = weights + (2 * cout if bn else 0) + (cout if bias else 0)
    return params, h_out * w_out * weights


def layer_cost(layer: Layer, se_style: str, *, num_classes: int | None = None,
               prelogits_channels: int | None = None) -> tuple[int, int]:
    """``(params, macs)`` of one resolved layer."""
    b = layer.block
    h, w, cin = layer.in_shape
    oh, ow, cout = layer.out_shape
    if b is None:  # classifier: pool (+ prelogits 1x1 conv with bias) + FC
        classes = num_classes if num_classes is not None else cout
        params = macs = 0
        c = cin
        if prelogits_channels:
            params += c * prelogits_channels + prelogits_channels
            macs += c * prelogits_channels
            c = prelogits_channels
        return params + c * classes + classes, macs + c * classes
    kind = op_kind(b.kind)  # its parts (hwnas.ops)
    if kind.kxk is None:  # skip
        return 0, 0
    if not kind.project:  # plain conv
        return _conv(oh, ow, cin, cout, b.kernel)
    parts = []
    mid = layer.mid_channels
    g = b.groups if kind.grouped else 1
    if kind.expand_1x1:
        parts.append(_conv(h, w, cin, mid, 1, g))
    if kind.kxk == "full":
        parts.append(_conv(oh, ow, cin, mid, b.kernel))
    else:
        parts.append(_conv(oh, ow, mid, mid, b.kernel, groups=mid))
    se = layer.se_channels(se_style)
    if se:
        parts.append((mid * se + se, mid * se))
        parts.append((se * mid + mid, se * mid))
    parts.append(_conv(oh, ow, mid, cout, 1, g))
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def count(arch: ArchSpec) -> ArchCost:
    """Parameters and MACs of ``arch`` with a per-layer breakdown (names as in ``ArchSpec.layers``)."""
    from hwnas.opkey import layer_key

    rows = []
    for layer in arch.layers():
        params, macs = layer_cost(layer, arch.se_style, num_classes=arch.classifier.num_classes,
                                  prelogits_channels=arch.head.prelogits_channels)
        op = layer_key(layer, arch).op
        rows.append(LayerCost(layer.name, op, layer.in_shape, layer.out_shape, params, macs))
    return ArchCost(sum(r.params for r in rows), sum(r.macs for r in rows), tuple(rows))
