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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

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


@dataclass
class LatencyFit:
    """Result of :func:`fit_latency`: the chosen compound coefficient and its network.

    Attributes:
        phi: the chosen φ (a multiple of ``step``). arch: the scaled network.
        latency_ms: its predicted latency; ``next_latency_ms``: that of φ + step (above the budget,
            unless the search range ended); ``provenance``: where the prediction came from.
        width, depth, resolution: the coefficients ``β**φ``, ``α**φ`` and the resolution in pixels.
        tried: ``(φ, latency_ms)`` of every φ evaluated.
    """

    phi: float
    arch: ArchSpec
    latency_ms: float
    next_latency_ms: float | None
    width: float
    depth: float
    resolution: int
    step: float
    provenance: str
    tried: list[tuple[float, float]] = field(default_factory=list)


def fit_latency(arch: ArchSpec, target, latency_ms: float, *, alpha: float = 1.2, beta: float = 1.1,
                gamma: float = 1.15, step: float = 0.25, phi_min: float = -6.0, phi_max: float = 8.0) -> LatencyFit:
    """The compound coefficient φ (EfficientNet eq. 3, Tan & Le 2019 §3.3) whose scaled network's
    *predicted* latency on ``target`` is closest to ``latency_ms`` from below.

    φ runs over multiples of ``step`` in ``[phi_min, phi_max]``; latency grows with φ (depth, width and
    resolution all grow), so a bisection over the grid finds the largest φ whose prediction is
    ≤ ``latency_ms`` and the answer is within one step of the budget. Deviation from the paper:
    EfficientNet picks φ by FLOPs (each unit of φ ≈ 2× FLOPs); here the budget is latency on a device.

    Args:
        arch: the base network (e.g. ``efficientnet-b0``). target: a device name, or a
            :class:`hwnas.latency.predict.Predictor`.
        latency_ms: the budget in ms.
        alpha, beta, gamma: depth, width, resolution bases (EfficientNet's 1.2, 1.1, 1.15).

    Raises:
        SpecError: a non-positive budget, step or base.
        hwnas.errors.HwnasError: even ``phi_min`` is over the budget (the message gives its latency), or
            the target cannot price the scaled network (unknown device, table at another resolution).
    """
    from hwnas.latency.predict import Predictor, load_predictor

    if not latency_ms > 0:
        raise SpecError(f"expected a positive latency budget, got {latency_ms}", field="latency-ms")
    if not step > 0 or min(alpha, beta, gamma) <= 0:
        raise SpecError("expected positive step and coefficients alpha, beta, gamma", field="coefficients")
    predictors: dict[int, Any] = {}

    def at(phi: float) -> tuple[ArchSpec, float, str]:
        scaled = scale(arch, phi, alpha, beta, gamma)
        if isinstance(target, Predictor):
            pred = target
        else:
            if scaled.resolution not in predictors:
                predictors[scaled.resolution] = load_predictor(target, resolution=scaled.resolution)
            pred = predictors[scaled.resolution]
        p = pred.predict(scaled)
        return scaled, p.latency_ms, p.provenance

    lo_k, hi_k = int(np.ceil(phi_min / step)), int(np.floor(phi_max / step))
    tried: dict[int, tuple[ArchSpec, float, str]] = {}

    def lat(k: int) -> float:
        if k not in tried:
            tried[k] = at(k * step)
        return tried[k][1]

    if lat(lo_k) > latency_ms:
        raise SpecError(f"even φ = {lo_k * step:g} (resolution {tried[lo_k][0].resolution}) is predicted at "
                        f"{tried[lo_k][1]:.2f} ms, over the {latency_ms:g} ms budget", field="latency-ms")
    if lat(hi_k) <= latency_ms:
        best = hi_k
    else:  # invariant: lat(lo) <= budget < lat(hi)
        lo, hi = lo_k, hi_k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if lat(mid) <= latency_ms:
                lo = mid
            else:
                hi = mid
        best = lo
    # rounding (channels to multiples of 8, whole repeats) can make latency non-monotone: check neighbours
    for k in (best + 1, best + 2):
        if k <= hi_k and lat(k) <= latency_ms:
            best = k
    scaled, latency, provenance = tried[best]
    nxt = lat(best + 1) if best + 1 <= hi_k else None
    phi = best * step
    return LatencyFit(phi, scaled, latency, nxt, beta ** phi, alpha ** phi, scaled.resolution, step, provenance,
                      sorted((k * step, v[1]) for k, v in tried.items()))


def measure_latency(arch: ArchSpec, target) -> float | None:
    """Median latency (ms) of ``arch`` timed here with LiteRT when ``target`` is a device this machine runs
    (a local TFLite CPU device such as ``host``, at its thread count); None for other devices.

    Random weights (latency does not depend on them); float32 ``.tflite`` via :mod:`hwnas.export.tflite`.
    """
    import statistics

    from hwnas.latency.devices import get_device

    device = target if not isinstance(target, str) else get_device(target)
    device = getattr(device, "device", device)
    transport = getattr(getattr(device, "transport", None), "kind", None)
    if getattr(device, "backend", None) != "tflite" or transport != "local" or getattr(device, "kind", "") != "host":
        return None
    from hwnas.export.keras import keras_model
    from hwnas.export.tflite import convert, time_tflite
    from hwnas.nn import build_model

    flat = convert(keras_model(arch, build_model(arch, seed=0)), route="frozen")
    return float(statistics.median(time_tflite(flat, threads=int(device.threads or 1), runs=20)))


__all__ = ["LatencyFit", "fit_latency", "measure_latency", "round_filters", "round_repeats", "scale_stage_depth", "scale_coefficients", "scale",
           "efficientnet_variant", "EFFICIENTNET"]
