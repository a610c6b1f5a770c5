"""Compound scaling of an ArchSpec (Tan & Le 2019, EfficientNet §3.3), as pure functions.

Depth ``d = alpha**phi``, width ``w = beta**phi``, resolution ``r = gamma**phi`` with
``alpha * beta**2 * gamma**2 ≈ 2`` (paper eq. 3; alpha=1.2, beta=1.1, gamma=1.15 from its grid
search), so each unit of ``phi`` roughly doubles the FLOPs. The released B0…B7 use the rounded
coefficients of :data:`EFFICIENTNET` instead (``efficientnet_params`` of the reference code).

Rules (the reference TF code and timm's ``_gen_efficientnet``):

* width: every conv's channels — stem, blocks and the head conv — become
  ``round_filters(c, w)``: nearest multiple of 8, never below 90 % of ``c * w``. The head conv of
  a width < 1 net keeps its base channels (MobileNetV2 §4, and :meth:`ArchSpec.layers`).
* depth: each stage's block count becomes ``ceil(d * repeats)``; the added blocks repeat the stage's
  last block with stride 1. When a stage mixes several block types, the new count is shared out
  over runs of equal blocks in proportion, last run first (timm ``_scale_stage_depth``).
* resolution: ``round(r * resolution)``, or the table's pixel value.

The result has *materialised* channels: ``width_multiplier == 1`` and block channels already scaled,
so the YAML shows the real widths.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hwnas.arch import ArchSpec, BlockSpec, make_divisible
from hwnas.errors import SpecError

#: EfficientNet-B0…B7: (width, depth, resolution in pixels, dropout) — Tan & Le 2019 reference code
#: ``efficientnet_params``; timm ``efficientnet_b*`` use the same.
EFFICIENTNET: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels of a conv with ``filters`` base channels under width multiplier ``width``.

    Nearest multiple of ``divisor`` to ``filters * width``, never below 90 % of it (EfficientNet
    reference ``round_filters``; MobileNetV2 ``_make_divisible``).
    """
    if width == 1.0:
        return int(filters)
    return make_divisible(filters * width, divisor)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage with ``repeats`` base blocks under depth multiplier ``depth``: ``ceil(depth * repeats)``."""
    return int(math.ceil(depth * repeats))


def _runs(stage: tuple[BlockSpec, ...]) -> list[tuple[BlockSpec, int]]:
    """Runs of equal blocks (the first block of a run may have stride 2; the rest are stride-1 copies)."""
    runs: list[list] = []
    for b in stage:
        if runs and replace(b, stride=1) == replace(runs[-1][0], stride=1) and b.stride == 1:
            runs[-1][1] += 1
        else:
            runs.append([b, 1])
    return [(b, n) for b, n in runs]


def scale_stage_depth(stage: tuple[BlockSpec, ...], depth: float) -> tuple[BlockSpec, ...]:
    """A stage with ``round_repeats(len(stage), depth)`` blocks, shared over its runs (timm's rule)."""
    runs = _runs(stage)
    repeats = [n for _, n in runs]
    total = sum(repeats)
    total_scaled = round_repeats(total, depth)
    scaled: list[int] = []
    for r in reversed(repeats):
        rs = max(1, round(r / total * total_scaled)) if total else 0
        scaled.append(rs)
        total -= r
        total_scaled -= rs
    scaled.reverse()
    out: list[BlockSpec] = []
    for (block, _), n in zip(runs, scaled):
        out.append(block)
        out.extend([replace(block, stride=1)] * (n - 1))
    return tuple(out)


def scale_coefficients(arch: ArchSpec, width: float = 1.0, depth: float = 1.0, resolution: float | int = 1.0, *,
                       dropout: float | None = None, name: str | None = None) -> ArchSpec:
    """Scale ``arch`` by explicit width/depth/resolution coefficients.

    Args:
        arch: the base network (its own ``width_multiplier`` is folded in: channels are scaled by
            ``arch.width_multiplier * width``).
        width: channel multiplier.
        depth: block-count multiplier per stage.
        resolution: a multiplier of ``arch.resolution`` when ≤ 8, else the new resolution in pixels
            (the EfficientNet table gives pixels: 240, 260, …).
        dropout: classifier dropout (default: unchanged).
        name: the new spec's name (default ``<name>-w<w>-d<d>-r<r>``).

    Returns:
        An :class:`ArchSpec` with materialised channels (``width_multiplier == 1``).

    Raises:
        SpecError: a non-positive coefficient.
    """
    for label, value in (("width", width), ("depth", depth), ("resolution", resolution)):
        if not value > 0:
            raise SpecError(f"expected a positive {label} coefficient, got {value}", field=label)
    mult = arch.width_multiplier * float(width)
    div = arch.divisor

    def chans(block: BlockSpec) -> BlockSpec:
        if block.kind == "skip" or block.out_channels is None:
            return block
        return replace(block, out_channels=round_filters(block.out_channels, mult, div))

    stages = tuple(tuple(chans(b) for b in scale_stage_depth(stage, depth)) for stage in arch.stages)
    head = arch.head
    if head.conv is not None:
        c = head.conv.out_channels
        head = replace(head, conv=replace(head.conv, out_channels=max(c, round_filters(c, mult, div))))
    res = int(round(arch.resolution * resolution)) if resolution <= 8 else int(round(resolution))
    classifier = arch.classifier if dropout is None else replace(arch.classifier, dropout=float(dropout))
    if name is None:
        name = f"{arch.name or 'arch'}-w{width:g}-d{depth:g}-r{res}"
    return replace(arch, stem=chans(arch.stem), stages=stages, head=head, classifier=classifier, resolution=res,
                   width_multiplier=1.0, name=name)


def scale(arch: ArchSpec, phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15) -> ArchSpec:
    """Compound scaling by ``phi`` (EfficientNet eq. 3): depth ``alpha**phi``, width ``beta**phi``,
    resolution ``gamma**phi`` (rounded to whole pixels). ``phi = 0`` returns the channels materialised.
    """
    return scale_coefficients(arch, width=beta ** phi, depth=alpha ** phi, resolution=gamma ** phi,
                              name=f"{arch.name or 'arch'}-phi{phi:g}")


def efficientnet_variant(arch: ArchSpec, variant: str) -> ArchSpec:
    """``arch`` (normally EfficientNet-B0 or a member of the efficientnet space) scaled like B0…B7.

    Raises:
        SpecError: unknown variant (valid: b0…b7).
    """
    key = variant.lower().replace("efficientnet-", "")
    if key not in EFFICIENTNET:
        raise SpecError(f"unknown EfficientNet variant '{variant}'; expected one of {', '.join(EFFICIENTNET)}",
                        field="variant")
    w, d, r, drop = EFFICIENTNET[key]
    base = (arch.name or "arch").replace("-b0", "")
    return scale_coefficients(arch, w, d, r, dropout=drop, name=f"{base}-{key}")


__all__ = ["round_filters", "round_repeats", "scale_stage_depth", "scale_coefficients", "scale",
           "efficientnet_variant", "EFFICIENTNET"]
