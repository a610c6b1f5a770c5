"""An analytical latency model of a mobile CPU core, for devices we cannot reach (the Pixel 1).

Model ``mobile-cpu-v1``
-----------------------
Every op key is lowered to the kernels a float32 TFLite CPU graph runs for it (the graph the
exporters produce: ReLU/ReLU6 fused into the preceding conv; h-swish/swish, SE gates, channel
shuffles and residual adds as separate element-wise kernels):

* ``gemm``: 1×1 convs, the fully connected layer and the k×k full convs (stem, fused-MBConv's
  expansion) lowered by im2col;
* ``dw``: depthwise k×k convs;
* ``elem``: element-wise kernels and pooling (add, mul, h-swish, mean, shuffle).

The time of one kernel is a sum of compute terms, memory-traffic terms and a fixed overhead, as in
the additive roofline-style kernel models of nn-Meter (Zhang et al. 2021, §4)::

    t = s_gemm·MACs_gemm + s_dw·MACs_dw + s_act·bytes_act + s_weight·bytes_weight + t_op

``MACs`` are counted in whole register tiles (``TILE_M`` output pixels × ``TILE_N`` output channels
for GEMMs, ``TILE_C`` channels for depthwise convs; a GEMV — one output pixel — is not tiled);
``bytes_act`` are float32 bytes of the input and output activations (plus the im2col patch buffer,
written and read once); ``bytes_weight`` the float32 weights, which stream from DRAM on every
inference (they do not stay cached between inferences). The five global parameters ``s_gemm``,
``s_dw`` (ns per MAC), ``s_act``, ``s_weight`` (ns per byte) and ``t_op`` (µs per kernel) are the
only fitted values. The model is linear in them, so :func:`fit` solves a minimax (Chebyshev)
problem on the *relative* errors over whole-network figures as a linear programme, each parameter
bounded below by a datasheet floor (:data:`PARAM_FLOORS`).

Model ``mobile-cpu-v2``
-----------------------
The same kernels, priced with one rate per kernel kind, because the public per-op Pixel-1 data
(ProxylessNAS, Single-Path NAS and nn-Meter LUTs, see :mod:`hwnas.latency.sources`) showed that v1's
errors follow the layer's spatial size and over-price h-swish/SE blocks::

    t = s_gemm·MACs_gemm + s_gemv·MACs_gemv + s_dw·MACs_dw + s_gemm_act·bytes_gemm + s_dw_act·bytes_dw
        + s_elem·bytes_elem + s_weight·bytes_weight + t_op·n_kernels + t_hswish·n_hswish + t_se·n_se

GEMVs (FC, prelogits, the SE FCs) get their own MAC rate; activation traffic is priced per kernel
kind (the spatial-size / memory-traffic term: a 112×112 depthwise conv is bound by its bytes, a
7×7 one by its weights); h-swish/swish kernels and SE modules carry a fixed cost on top of their
element-wise bytes. :func:`fit_sources` fits the ten parameters (all ≥ 0, no floors) on several
sources at once, each with its own factor, by log-ratio least squares (``scipy.optimize.least_squares``);
:func:`fit_report` adds per-source and leave-one-source-out errors.

For the Pixel 1 (Snapdragon 821, one Kryo big core at 2.15 GHz, TFLite float32) the anchor (factor 1)
is the 22 MobileNetV2 width × resolution rows of the TF-slim MobileNetV2 README (``slim_mnv2v3`` rows
of ``published_latencies.csv``), the setup of the published end-to-end figures; no other published
end-to-end figure is used (they are a held-out check). The values, factors and the fit report are in
``devices/pixel1.yaml``; ``hwnas table fit-costmodel --device pixel1 --data ../shared/data`` refits
them. The model is an estimate: it knows nothing of cache effects beyond the byte terms and is only as
good as that fit. The v1 fit (:func:`fit`, minimax on the 22 rows only) is kept for comparison
(``benchmarks/pixel1_fidelity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from hwnas.arch import ArchSpec
from hwnas.errors import ConfigError
from hwnas.latency.sources import SourceRow, mobilenetv2_rows
from hwnas.opkey import OpKey, arch_op_keys
from hwnas.ops import op_kind

# Register-tile sizes of the float32 NEON micro-kernels: a GEMM computes output pixels in blocks of
# TILE_M and output channels in blocks of TILE_N, a depthwise conv channels in blocks of TILE_C; a
# partial tile costs a full one. Chosen from {1, 4, 8, 16} by the same fit (docs/latency.md).
TILE_M, TILE_N, TILE_C = 4, 16, 16
# Lower bounds of the fitted parameters from the Snapdragon 821 datasheet (2.15 GHz, 2×128-bit
# NEON FMA → 17.2 GMAC/s peak; LPDDR4 29.8 GB/s peak; ≥ 2 µs per TFLite kernel invocation).
PARAM_FLOORS = {"s_gemm_ns_per_mac": 0.058, "s_dw_ns_per_mac": 0.058, "s_act_ns_per_byte": 0.034,
                "s_weight_ns_per_byte": 0.034, "t_op_us": 2.0}
PARAM_NAMES = ("s_gemm_ns_per_mac", "s_dw_ns_per_mac", "s_act_ns_per_byte", "s_weight_ns_per_byte", "t_op_us")
BYTES = 4  # float32


@dataclass(frozen=True)
class KernelCost:
    """One kernel of an op: ``kind`` (gemm|dw|elem), MACs (padded to whole register tiles), activation
    bytes and weight bytes moved (float32)."""

    name: str
    kind: str
    macs: int
    bytes: int
    weight_bytes: int = 0
    pixels: int = 0  # output pixels (H×W) of a GEMM / depthwise kernel; 1 for a GEMV


def _ceil(a: int, t: int) -> int:
    return -(-a // t) * t


def _gemm(name: str, m: int, k: int, n: int, weights: int, extra_bytes: int = 0, in_elems: int | None = None) -> KernelCost:
    """``m`` output pixels × ``n`` output channels, reduction ``k`` (MACs padded to whole tiles)."""
    in_elems = m * k if in_elems is None else in_elems
    # m == 1 (FC, SE) runs a matrix-vector kernel: no pixel tiling.
    return KernelCost(name, "gemm", (_ceil(m, TILE_M) if m > 1 else 1) * k * _ceil(n, TILE_N), BYTES * (in_elems + m * n) + extra_bytes, BYTES * weights, m)


def _elem(name: str, read: int, write: int) -> KernelCost:
    return KernelCost(name, "elem", 0, BYTES * (read + write))


def kernels(key: OpKey) -> list[KernelCost]:
    """The kernels the TFLite float32 graph runs for ``key`` (see the module docstring)."""
    h, w, cin = key.input_shape
    if key.kind == "skip":
        return []
    if key.kind == "classifier":
        classes, prelogits, _ = key.classifier_parts()
        out = [_elem("mean", h * w * cin, cin)]
        c = cin
        if prelogits:
            out.append(_gemm("prelogits", 1, c, prelogits, c * prelogits + prelogits))
            out.append(_elem("prelogits_act", prelogits, prelogits))
            c = prelogits
        out.append(_gemm("fc", 1, c, classes, c * classes + classes))
        return out
    block = key.block()
    oh, ow, cout = key.output_shape
    separate_act = block.activation in ("hswish", "swish")
    out: list[KernelCost] = []
    kind = op_kind(block.kind)  # its parts (hwnas.ops)
    if not kind.project:  # plain conv
        k = block.kernel
        m = oh * ow
        if k == 1 and block.stride == 1:
            out.append(_gemm("conv1x1", m, cin, cout, cin * cout + cout))
        else:
            patches = m * k * k * cin
            out.append(_gemm(f"conv{k}x{k}", m, k * k * cin, cout, k * k * cin * cout + cout,
                             extra_bytes=2 * BYTES * patches, in_elems=h * w * cin))
        if separate_act:
            out.append(_elem("act", m * cout, m * cout))
        return out
    layer = key.layer()
    mid = layer.mid_channels
    g = block.groups if kind.grouped else 1
    if kind.expand_1x1:
        out.append(_gemm("expand", h * w, cin // g, mid, cin * mid // g + mid, in_elems=h * w * cin))
        if separate_act:
            out.append(_elem("expand_act", h * w * mid, h * w * mid))
        if g > 1:
            out.append(_elem("shuffle", h * w * mid, h * w * mid))
    kk = block.kernel * block.kernel
    if kind.kxk == "full":  # fused-MBConv: k×k full conv (im2col GEMM) instead of 1×1 expand + depthwise
        patches = oh * ow * kk * cin
        out.append(_gemm(f"expand{block.kernel}x{block.kernel}", oh * ow, kk * cin, mid, kk * cin * mid + mid,
                         extra_bytes=2 * BYTES * patches, in_elems=h * w * cin))
        if separate_act:
            out.append(_elem("expand_act", oh * ow * mid, oh * ow * mid))
    else:
        out.append(KernelCost("depthwise", "dw", oh * ow * _ceil(mid, TILE_C) * kk,
                              BYTES * (h * w * mid + oh * ow * mid), BYTES * (kk * mid + mid), oh * ow))
        if separate_act:
            out.append(_elem("dw_act", oh * ow * mid, oh * ow * mid))
    se = layer.se_channels(key.se_style)
    if se:
        out.append(_elem("se_mean", oh * ow * mid, mid))
        out.append(_gemm("se_reduce", 1, mid, se, mid * se + se))
        out.append(_gemm("se_expand", 1, se, mid, se * mid + mid))
        out.append(_elem("se_gate", mid, mid))
        out.append(_elem("se_mul", oh * ow * mid + mid, oh * ow * mid))
    out.append(_gemm("project", oh * ow, mid // g, cout, mid * cout // g + cout, in_elems=oh * ow * mid))
    if layer.has_residual or (block.residual and block.stride == 1 and cin == cout):
        out.append(_elem("add", 2 * oh * ow * cout, oh * ow * cout))
    return out


def features(key: OpKey) -> list[float]:
    """``mobile-cpu-v1`` row of one op: ``[MACs_gemm, MACs_dw, bytes, weight_bytes, n_kernels]`` in units
    that match :data:`PARAM_NAMES` (ns·MAC→ms: 1e-6, µs→ms: 1e-3)."""
    ks = kernels(key)
    gemm = sum(k.macs for k in ks if k.kind == "gemm")
    dw = sum(k.macs for k in ks if k.kind == "dw")
    act = sum(k.bytes for k in ks)
    wts = sum(k.weight_bytes for k in ks)
    return [gemm * 1e-6, dw * 1e-6, act * 1e-6, wts * 1e-6, len(ks) * 1e-3]


# ``mobile-cpu-v2``: the v1 kernels with separate rates per kernel kind (module docstring).
PARAM_NAMES_V2 = ("s_gemm_ns_per_mac", "s_gemv_ns_per_mac", "s_dw_ns_per_mac", "s_gemm_act_ns_per_byte",
                  "s_dw_act_ns_per_byte", "s_elem_ns_per_byte", "s_weight_ns_per_byte", "t_op_us", "t_hswish_us",
                  "t_se_us")
_GEMV = ("fc", "prelogits", "se_reduce", "se_expand")


def features_v2(key: OpKey) -> list[float]:
    """``mobile-cpu-v2`` row of one op, in the order of :data:`PARAM_NAMES_V2` (ms per unit parameter):
    tiled GEMM MACs, GEMV MACs (FC, prelogits, SE FCs), tiled depthwise MACs, activation bytes of GEMM
    and of depthwise kernels, bytes of element-wise kernels (add, pool mean, shuffle, h-swish/swish,
    SE pool/gate/multiply), weight bytes, the kernel count, the separate h-swish/swish kernels and the
    SE modules (their extra fixed cost beyond the kernels they run)."""
    f = [0.0] * len(PARAM_NAMES_V2)
    for k in kernels(key):
        if k.kind == "gemm" and k.name in _GEMV:
            f[1] += k.macs
        elif k.kind == "gemm":
            f[0] += k.macs
            f[3] += k.bytes
        elif k.kind == "dw":
            f[2] += k.macs
            f[4] += k.bytes
        else:
            f[5] += k.bytes
            f[8] += 1e3 if k.name.endswith("act") else 0.0
            f[9] += 1e3 if k.name == "se_mean" else 0.0
        f[6] += k.weight_bytes
        f[7] += 1e3
    return [v * 1e-6 for v in f]


MODELS = {"mobile-cpu-v1": (PARAM_NAMES, features), "mobile-cpu-v2": (PARAM_NAMES_V2, features_v2)}


class CostModel:
    """An analytical model (``mobile-cpu-v1`` or ``-v2``) with fixed parameters; :meth:`op_ms` prices
    any op key in ms. ``kind=None`` picks the model whose parameter names ``params`` has."""

    def __init__(self, params: dict[str, float], kind: str | None = None):
        if kind is None:
            kind = next((k for k, (names, _) in MODELS.items() if set(names) == set(params)), "mobile-cpu-v1")
        if kind not in MODELS:
            raise ConfigError(f"unknown cost model '{kind}'; expected one of {', '.join(MODELS)}")
        names, self._features = MODELS[kind]
        missing = [p for p in names if p not in params]
        if missing:
            raise ConfigError(f"cost model {kind} parameters missing: {', '.join(missing)}")
        self.kind = kind
        self.params = {p: float(params[p]) for p in names}
        self._vector = [self.params[p] for p in names]

    def op_ms(self, key: OpKey) -> float:
        """Estimated latency of one op in ms."""
        return sum(f * p for f, p in zip(self._features(key), self._vector))

    def arch_ms(self, arch: ArchSpec) -> float:
        return sum(self.op_ms(key) for _, key in arch_op_keys(arch))


# ---------------------------------------------------------------------- fitting
FitRow = SourceRow  # a fitting row: op keys, measured latency, source (hwnas.latency.sources)


def fit(rows: Iterable[SourceRow], floors: dict[str, float] | None = None) -> tuple[dict[str, float], dict]:
    """Fit ``mobile-cpu-v1`` on whole-network rows (the old Pixel-1 fit, kept for comparison).
    Returns ``(params, report)``.

    A Chebyshev (minimax) fit of the relative error: minimise ``e`` subject to
    ``|est_i / target_i - 1| <= e`` for every row and each parameter at least its datasheet floor
    (:data:`PARAM_FLOORS`), solved as a linear programme (the model is linear in its parameters).
    The report holds per-row target, estimate and error (%), max |error| and RMSPE (%).

    Raises:
        ConfigError: the linear programme has no solution.
    """
    import numpy as np
    from scipy.optimize import linprog

    rows = list(rows)
    floors = {**PARAM_FLOORS, **(floors or {})}
    a = np.array([[sum(col) for col in zip(*(features(k) for k in r.keys))] for r in rows])
    y = np.array([r.target_ms for r in rows])
    rel = a / y[:, None]
    n, m = rel.shape[1], len(rows)
    cost = np.r_[np.zeros(n), 1.0]
    a_ub = np.r_[np.c_[rel, -np.ones(m)], np.c_[-rel, -np.ones(m)]]
    b_ub = np.r_[np.ones(m), -np.ones(m)]
    bounds = [(floors[p], None) for p in PARAM_NAMES] + [(0, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if not res.success:
        raise ConfigError(f"cost-model fit failed: {res.message}")
    params = {p: float(f"{c:.6g}") for p, c in zip(PARAM_NAMES, res.x[:n])}
    per_row = _row_report(CostModel(params, "mobile-cpu-v1"), rows, 1.0)
    errs = np.array([p["error_pct"] for p in per_row])
    report = {"n": len(rows), "method": "minimax relative error (linear programme), datasheet floors",
              "max_abs_error_pct": round(float(np.abs(errs).max()), 2),
              "rmspe_pct": round(float(np.sqrt((errs ** 2).mean())), 2), "rows": per_row}
    return params, report


def _row_report(model: CostModel, rows: list[SourceRow], factor: float) -> list[dict]:
    out = []
    for r in rows:
        est = factor * sum(model.op_ms(k) for k in r.keys)
        out.append({"model": r.name, "published_ms": r.target_ms, "estimate_ms": round(est, 3),
                    "error_pct": round(100 * (est - r.target_ms) / r.target_ms, 2)})
    return out


def _matrix(rows: list[SourceRow], cache: dict) -> "np.ndarray":  # noqa: F821
    import numpy as np

    out = np.zeros((len(rows), len(PARAM_NAMES_V2)))
    for i, r in enumerate(rows):
        for k in r.keys:
            if k not in cache:
                cache[k] = np.array(features_v2(k))
            out[i] += cache[k]
    return out


def fit_sources(sources: dict[str, list[SourceRow]], anchor: str, *, anchor_weight: float = 10.0,
                anchor_max_error: float = 0.095, ridge: float = 1e-3,
                _cache: dict | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Fit ``mobile-cpu-v2`` on several measurement sources at once. Returns ``(params, factors)``.

    Every source ``s`` sees the same model times its own factor ``f_s`` (its setup: TFLite version,
    threads, per-op vs whole-graph timing); the ``anchor`` source has ``f = 1``, so the fitted model
    represents the anchor's setup. Least squares on the log ratio ``log(f_s·est / measured)`` with
    :func:`scipy.optimize.least_squares` (bounded trust region), each source weighted equally in
    total (rows of a source weigh ``1/sqrt(n_s)``; the anchor ``anchor_weight`` times more), a small
    ridge ``ridge·‖p‖²`` so that a rate no source exercises stays at 0 rather than drifting. All
    parameters are bounded at 0 from below (no datasheet floors in v2) and factors to [0.05, 20].
    Anchor rows whose error exceeds ``anchor_max_error`` get their weight doubled and the fit is
    repeated (at most 12 times): the published whole-network rows are the figure a budget means.
    With a single source (a phone known only from one LUT) there is no such reweighting.

    Raises:
        ConfigError: no anchor rows, or the optimiser failed.
    """
    import numpy as np
    from scipy.optimize import least_squares

    if not sources.get(anchor):
        raise ConfigError(f"cost-model fit: the anchor source '{anchor}' has no rows")
    cache = {} if _cache is None else _cache
    names = list(sources)
    others = [s for s in names if s != anchor]
    xs = {s: _matrix(sources[s], cache) for s in names}
    ys = {s: np.array([r.target_ms for r in sources[s]]) for s in names}
    ws = {s: np.full(len(ys[s]), (anchor_weight if s == anchor else 1.0) / np.sqrt(len(ys[s]))) for s in names}
    n = len(PARAM_NAMES_V2)

    def residuals(z):
        p = z[:n]
        out = []
        for s in names:
            f = 1.0 if s == anchor else z[n + others.index(s)]
            out.append(ws[s] * np.log(np.maximum(f * (xs[s] @ p), 1e-12) / ys[s]))
        out.append(ridge * p)
        return np.concatenate(out)

    z = np.r_[np.full(n, 0.1), np.ones(len(others))]
    lower = np.r_[np.zeros(n), np.full(len(others), 0.05)]
    upper = np.r_[np.full(n, np.inf), np.full(len(others), 20.0)]
    rounds = 12 if others else 1
    for _ in range(rounds):
        res = least_squares(residuals, z, bounds=(lower, upper), method="trf")
        if not res.success:
            raise ConfigError(f"cost-model fit failed: {res.message}")
        z = res.x
        err = np.abs(xs[anchor] @ z[:n] / ys[anchor] - 1)
        if err.max() <= anchor_max_error:
            break
        ws[anchor][err > anchor_max_error] *= 2.0
    params = {p: (float(f"{v:.6g}") if v > 1e-9 else 0.0) for p, v in zip(PARAM_NAMES_V2, z[:n])}
    factors = {s: float(f"{z[n + i]:.6g}") for i, s in enumerate(others)}
    return params, factors


def source_errors(model: CostModel, rows: list[SourceRow], factor: float = 1.0) -> dict:
    """Errors of ``factor × model`` on one source: ``n``, share within ±10 %, MAPE (%), median error
    (%), max |error| (%), Spearman ρ of estimate vs measurement."""
    import numpy as np
    from scipy.stats import spearmanr

    est = np.array([factor * sum(model.op_ms(k) for k in r.keys) for r in rows])
    y = np.array([r.target_ms for r in rows])
    e = est / y - 1
    rho = float(spearmanr(est, y)[0]) if len(rows) > 2 else float("nan")
    return {"n": len(rows), "within_10pct": round(float((np.abs(e) <= 0.10).mean()), 3),
            "mape_pct": round(float(100 * np.abs(e).mean()), 2), "median_error_pct": round(float(100 * np.median(e)), 2),
            "max_abs_error_pct": round(float(100 * np.abs(e).max()), 2), "spearman": round(rho, 4)}


def _rescale(model: CostModel, rows: list[SourceRow]) -> float:
    """The factor a held-out source would need: exp(median log(measured / estimate))."""
    import numpy as np

    est = np.array([sum(model.op_ms(k) for k in r.keys) for r in rows])
    return float(np.exp(np.median(np.log(np.array([r.target_ms for r in rows]) / est))))


def leave_one_out(sources: dict[str, list[SourceRow]], anchor: str, groups: dict[str, list[str]] | None = None,
                  **fit_kw) -> dict[str, dict]:
    """Leave-one-source-out errors of :func:`fit_sources`: for each source, refit on the others and
    price the held-out one (with factor 1, i.e. as the anchor's setup, and with the one factor its
    own median ratio would give, which isolates the model's shape from the setup). Leaving out the
    anchor re-anchors on the next source. With ``groups`` (group name -> row names of a single
    source) the held-out units are those groups instead (phones with one LUT: leave one spatial
    size out). Returns ``{held_out: {"factor_1": errors, "rescaled": errors, "factor": f}}``.
    """
    cache: dict = {}
    out = {}
    if groups is None:
        for held in sources:
            rest = {s: r for s, r in sources.items() if s != held}
            if not rest:
                continue
            a = anchor if anchor in rest else next(iter(rest))
            params, _ = fit_sources(rest, a, _cache=cache, **fit_kw)
            model = CostModel(params, "mobile-cpu-v2")
            f = _rescale(model, sources[held])
            out[held] = {"anchor": a, "factor_1": source_errors(model, sources[held]),
                         "rescaled": source_errors(model, sources[held], f), "factor": round(f, 4)}
        return out
    (src, rows), = sources.items()
    for g, members in groups.items():
        members = set(members)
        train = [r for r in rows if r.name not in members]
        test = [r for r in rows if r.name in members]
        params, _ = fit_sources({src: train}, src, _cache=cache, **fit_kw)
        model = CostModel(params, "mobile-cpu-v2")
        f = _rescale(model, test)
        out[g] = {"anchor": src, "factor_1": source_errors(model, test), "rescaled": source_errors(model, test, f),
                  "factor": round(f, 4)}
    return out


SPATIAL_BANDS = ((1, 8), (9, 28), (29, 48), (49, 64), (65, 96), (97, 128), (129, 4096))


def spatial_groups(rows: list[SourceRow]) -> dict[str, list[str]]:
    """Rows of one source grouped by bands of the input height of their first key (``hw=16-28`` ...,
    :data:`SPATIAL_BANDS`; the 3-channel stems are the ``hw=129-4096`` band)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        lo, hi = next(b for b in SPATIAL_BANDS if b[0] <= r.keys[0].height <= b[1])
        groups.setdefault(f"hw={lo}-{hi}", []).append(r.name)
    return groups


def fit_report(sources: dict[str, list[SourceRow]], anchor: str, *, held_out: dict[str, list[SourceRow]] | None = None,
               leave_out: str = "source") -> tuple[dict[str, float], dict[str, float], dict]:
    """Fit (:func:`fit_sources`) and report: per-source errors in-sample (with each source's factor),
    errors on ``held_out`` sources (evaluated, never fitted; factor 1 and rescaled), leave-one-out
    errors (``leave_out``: ``source`` or ``spatial`` for a one-source device), and the anchor's rows.
    Returns ``(params, factors, report)``."""
    params, factors = fit_sources(sources, anchor)
    model = CostModel(params, "mobile-cpu-v2")
    per_source = {s: {**source_errors(model, rows, factors.get(s, 1.0)), "factor": factors.get(s, 1.0)}
                  for s, rows in sources.items()}
    held = {}
    for s, rows in (held_out or {}).items():
        f = _rescale(model, rows)
        held[s] = {"factor_1": source_errors(model, rows), "rescaled": source_errors(model, rows, f),
                   "factor": round(f, 4)}
    if leave_out == "spatial":
        (src, rows), = sources.items()
        loo = leave_one_out(sources, anchor, spatial_groups(rows))
    else:
        loo = leave_one_out(sources, anchor)
    anchor_rows = _row_report(model, sources[anchor], 1.0)
    errs = [abs(r["error_pct"]) for r in anchor_rows]
    report = {
        "method": "log-ratio least squares (scipy.optimize.least_squares), parameters >= 0, one factor per source, "
                  "anchor rows reweighted until within 9.5 %",
        "anchor": anchor, "max_abs_error_pct": round(max(errs), 2),
        "rmspe_pct": round((sum(e * e for e in errs) / len(errs)) ** 0.5, 2),
        "per_source": per_source, "held_out": held, f"leave_one_{leave_out}_out": loo,
        "rows": anchor_rows if len(anchor_rows) <= 40 else [],
    }
    return params, factors, report


def refit_device(device_file: str | Path, data_root: str | Path) -> dict:
    """Refit the ``cost_model`` of a device file on the public data under ``data_root``
    (``../shared/data``) and rewrite the file's ``cost_model:`` section (which must be last;
    everything above it is kept verbatim). Which sources are fitted, which are only evaluated and which
    is the anchor come from the section itself (``sources``, ``held_out``, ``anchor``); a ``mobile-cpu-v1``
    section is refitted the old way on the 22 MobileNetV2 rows.

    Returns the fit report. Raises ConfigError on a file without a ``cost_model:`` section.
    """
    import yaml

    from hwnas.io import atomic_write_text
    from hwnas.latency.devices import load_device
    from hwnas.latency.sources import load_sources

    device_file = Path(device_file)
    text = device_file.read_text()
    marker = "\ncost_model:"
    if marker not in text:
        raise ConfigError(f"{device_file}: no top-level 'cost_model:' section to refit")
    spec = load_device(device_file).cost_model
    data_root = Path(data_root)
    if spec.kind == "mobile-cpu-v1":
        from hwnas.latency.sources import mobilenetv2_rows as _rows

        csv_path = data_root / "published-latency" / "published_latencies.csv"
        params, report = fit(_rows(csv_path))
        section = {"kind": spec.kind, "params": params,
                   "fitted_on": f"{report['n']} MobileNetV2 width x resolution Pixel-1 rows (source slim_mnv2v3) of "
                                f"published_latencies.csv; no other figure"}
        factors: dict = {}
    else:
        sources = load_sources(data_root, spec.sources)
        held = load_sources(data_root, spec.held_out) if spec.held_out else {}
        anchor = spec.anchor or spec.sources[0]
        params, factors, report = fit_report(sources, anchor, held_out=held,
                                             leave_out="source" if len(sources) > 1 else "spatial")
        section = {"kind": spec.kind, "params": params, "anchor": anchor, "sources": list(spec.sources),
                   "held_out": list(spec.held_out), "source_factors": factors, "fitted_on": spec.fitted_on,
                   "represents": spec.represents}
    section["refit"] = f"hwnas table fit-costmodel --device {device_file.stem} --data ../shared/data"
    section["fit_report"] = report
    stamp = "# Written by the refit command below; do not edit by hand.\n"
    head = text[: text.index(marker) + 1]
    if head.endswith(stamp):
        head = head[: -len(stamp)]
    body = yaml.safe_dump({"cost_model": section}, sort_keys=False, width=120)
    atomic_write_text(device_file, head + stamp + body)
    return report


def estimate_table(device, space: str, resolution: int):
    """Materialise an estimated device's cost model over ``space.op_keys(resolution)`` as a
    :class:`~hwnas.latency.table.LatencyTable` with provenance ``estimated: …`` (not saved).

    Raises:
        ConfigError: the device has no cost model.
    """
    from hwnas import __version__
    from hwnas.latency.devices import get_device
    from hwnas.latency.table import Entry, LatencyTable, TableMeta, now_iso
    from hwnas.spaces import resolve_space

    dev = get_device(device)
    if dev.cost_model is None:
        raise ConfigError(f"device '{dev.name}' has no cost model to estimate from; profile it instead")
    model = CostModel(dev.cost_model.params, dev.cost_model.kind)
    sp = resolve_space(space, resolution=resolution)
    pm = dev.power_model
    entries = {}
    for key in sp.op_keys(resolution):
        ms = 0.0 if key.kind == "skip" else model.op_ms(key)
        entries[str(key)] = Entry(median_ms=ms, samples=0,
                                  energy_mj=pm.active_w * ms if pm else None,
                                  energy_source=f"power-model: declared {pm.active_w} W" if pm else None)
    report = dev.cost_model.fit_report or {}
    meta = TableMeta(device=dev.name, space=sp.name, resolutions=[int(resolution)], backend=dev.backend,
                     backend_version=None, threads=dev.threads, affinity=dev.affinity, date=now_iso(),
                     hwnas_version=__version__,
                     provenance=f"estimated: {describe_fit(dev.cost_model)}",
                     precision=dev.precision,
                     notes=f"materialised by: hwnas table estimate --device {dev.name} --space {space} "
                           f"--resolution {resolution}")
    return LatencyTable(meta, entries)


def describe_fit(spec) -> str:
    """One line saying what a device's cost model rests on: model, fitted sources, the setup it
    represents, the anchor's fit error and the leave-one-out share within ±10 % (``spec`` is a
    :class:`hwnas.latency.devices.CostModelSpec`)."""
    report = spec.fit_report or {}
    anchor = report.get("anchor", "its rows")
    within = (report.get("per_source") or {}).get(anchor, {}).get("within_10pct")
    text = (f"{spec.kind} analytical cost model (hwnas/latency/costmodel.py) fitted on {spec.fitted_on}; "
            f"fit on {anchor}: max |error| {report.get('max_abs_error_pct', '?')} %"
            + (f", {100 * within:.0f} % within ±10 %" if within is not None else ""))
    if report.get("leave_one_source_out"):
        parts = [f"{k} {100 * v['rescaled']['within_10pct']:.0f} %" for k, v in report["leave_one_source_out"].items()]
        text += "; leave-one-source-out share within ±10 % (one factor per held-out source): " + ", ".join(parts)
    elif report.get("leave_one_spatial_out"):
        parts = [f"{k} {100 * v['factor_1']['within_10pct']:.0f} %" for k, v in report["leave_one_spatial_out"].items()]
        text += "; leave-one-spatial-band-out share within ±10 %: " + ", ".join(parts)
    if getattr(spec, "represents", ""):
        text += f"; represents {spec.represents}"
    return text


__all__ = ["CostModel", "KernelCost", "kernels", "features", "features_v2", "fit", "fit_sources", "fit_report",
           "leave_one_out", "source_errors", "mobilenetv2_rows", "FitRow", "PARAM_NAMES", "PARAM_NAMES_V2",
           "MODELS", "estimate_table", "refit_device", "describe_fit"]
