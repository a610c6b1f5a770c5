"""An analytical latency model of a mobile CPU core, for devices we cannot reach (the Pixel 1).

Model ``mobile-cpu-v1``
-----------------------
Every op key is lowered to the kernels a float32 TFLite CPU graph runs for it (the graph the
exporters produce: ReLU/ReLU6 fused into the preceding conv; h-swish/swish, SE gates, channel
shuffles and residual adds as separate element-wise kernels):

* ``gemm``: 1×1 convs, the fully connected layer and the k×k full convs (stem) lowered by im2col;
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

For the Pixel 1 (Snapdragon 821, one Kryo big core at 2.15 GHz, TFLite float32) they were fitted
on the 22 MobileNetV2 width × resolution rows of the TF-slim MobileNetV2 README (``slim_mnv2v3``
rows of ``published_latencies.csv``) and nothing else; the values and the fit report are in
``devices/pixel1.yaml``; ``hwnas table fit-costmodel --device pixel1 --csv CSV`` refits them. The model
is an estimate: it knows nothing of cache effects beyond the byte terms and is only as good as that fit.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from hwnas.arch import ArchSpec
from hwnas.errors import ConfigError
from hwnas.opkey import OpKey, arch_op_keys

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


def _ceil(a: int, t: int) -> int:
    return -(-a // t) * t


def _gemm(name: str, m: int, k: int, n: int, weights: int, extra_bytes: int = 0, in_elems: int | None = None) -> KernelCost:
    """``m`` output pixels × ``n`` output channels, reduction ``k`` (MACs padded to whole tiles)."""
    in_elems = m * k if in_elems is None else in_elems
    # m == 1 (FC, SE) runs a matrix-vector kernel: no pixel tiling.
    return KernelCost(name, "gemm", (_ceil(m, TILE_M) if m > 1 else 1) * k * _ceil(n, TILE_N), BYTES * (in_elems + m * n) + extra_bytes, BYTES * weights)


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
    if block.kind == "conv":
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
    g = block.groups
    if block.kind == "mbconv":
        out.append(_gemm("expand", h * w, cin // g, mid, cin * mid // g + mid, in_elems=h * w * cin))
        if separate_act:
            out.append(_elem("expand_act", h * w * mid, h * w * mid))
        if g > 1:
            out.append(_elem("shuffle", h * w * mid, h * w * mid))
    kk = block.kernel * block.kernel
    out.append(KernelCost("depthwise", "dw", oh * ow * _ceil(mid, TILE_C) * kk, BYTES * (h * w * mid + oh * ow * mid),
                          BYTES * (kk * mid + mid)))
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
    """Row of the linear model for one op: ``[MACs_gemm, MACs_dw, bytes, n_kernels]`` in units that
    match the parameters (ns·MAC→ms: 1e-6, µs→ms: 1e-3)."""
    ks = kernels(key)
    gemm = sum(k.macs for k in ks if k.kind == "gemm")
    dw = sum(k.macs for k in ks if k.kind == "dw")
    act = sum(k.bytes for k in ks)
    wts = sum(k.weight_bytes for k in ks)
    return [gemm * 1e-6, dw * 1e-6, act * 1e-6, wts * 1e-6, len(ks) * 1e-3]


class CostModel:
    """``mobile-cpu-v1`` with fixed parameters; :meth:`op_ms` prices any op key."""

    kind = "mobile-cpu-v1"

    def __init__(self, params: dict[str, float]):
        missing = [p for p in PARAM_NAMES if p not in params]
        if missing:
            raise ConfigError(f"cost model parameters missing: {', '.join(missing)}")
        self.params = {p: float(params[p]) for p in PARAM_NAMES}

    def op_ms(self, key: OpKey) -> float:
        """Estimated latency of one op in ms."""
        return sum(f * self.params[p] for f, p in zip(features(key), PARAM_NAMES))

    def arch_ms(self, arch: ArchSpec) -> float:
        return sum(self.op_ms(key) for _, key in arch_op_keys(arch))


# ---------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class FitRow:
    name: str
    arch: ArchSpec
    target_ms: float


def mobilenetv2_rows(csv_path: str | Path, source: str = "slim_mnv2v3", device: str = "Pixel 1") -> list[FitRow]:
    """The MobileNetV2 width × resolution rows of a published-latency CSV (columns ``source, model,
    input_size, width_mult, device, latency_ms``), as zoo MobileNetV2 ArchSpecs."""
    from hwnas.zoo import zoo_arch

    base = zoo_arch("mobilenetv2")
    rows = []
    seen = set()
    with open(csv_path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["source"] != source or r["device"] != device or not r["model"].startswith("mobilenet_v2"):
                continue
            if r["model"] in seen:
                continue
            seen.add(r["model"])
            arch = base.with_width(float(r["width_mult"])).with_resolution(int(r["input_size"]))
            rows.append(FitRow(r["model"], arch, float(r["latency_ms"])))
    if not rows:
        raise ConfigError(f"{csv_path}: no '{source}' MobileNetV2 rows for device '{device}'")
    return rows


def fit(rows: Iterable[FitRow], floors: dict[str, float] | None = None) -> tuple[dict[str, float], dict]:
    """Fit the parameters on whole-network figures. Returns ``(params, report)``.

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
    a = np.array([[sum(col) for col in zip(*(features(k) for _, k in arch_op_keys(r.arch)))] for r in rows])
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
    model = CostModel(params)
    per_row = []
    for r in rows:
        est = model.arch_ms(r.arch)
        per_row.append({"model": r.name, "published_ms": r.target_ms, "estimate_ms": round(est, 3),
                        "error_pct": round(100 * (est - r.target_ms) / r.target_ms, 2)})
    errs = np.array([p["error_pct"] for p in per_row])
    report = {"n": len(rows), "method": "minimax relative error (linear programme), datasheet floors",
              "max_abs_error_pct": round(float(np.abs(errs).max()), 2),
              "rmspe_pct": round(float(np.sqrt((errs ** 2).mean())), 2), "rows": per_row}
    return params, report


def refit_device(device_file: str | Path, csv_path: str | Path) -> dict:
    """Refit the ``cost_model`` of a device file on the MobileNetV2 rows of ``csv_path`` and rewrite
    the file's ``cost_model:`` section (which must be last; everything above it is kept verbatim).

    Returns the fit report. Raises ConfigError on a file without a ``cost_model:`` section.
    """
    import yaml

    from hwnas.io import atomic_write_text

    device_file = Path(device_file)
    text = device_file.read_text()
    marker = "\ncost_model:"
    if marker not in text:
        raise ConfigError(f"{device_file}: no top-level 'cost_model:' section to refit")
    params, report = fit(mobilenetv2_rows(csv_path))
    section = {"cost_model": {
        "kind": CostModel.kind,
        "params": params,
        "fitted_on": (f"{len(report['rows'])} MobileNetV2 width x resolution Pixel-1 rows (source slim_mnv2v3) of "
                      f"{Path(csv_path).name}; no other figure"),
        "refit": f"hwnas table fit-costmodel --device {device_file.stem} --csv {Path(csv_path).name}",
        "fit_report": {k: v for k, v in report.items()},
    }}
    stamp = "# Written by the refit command below; do not edit by hand.\n"
    head = text[: text.index(marker) + 1]
    if head.endswith(stamp):
        head = head[: -len(stamp)]
    atomic_write_text(device_file, head + stamp + yaml.safe_dump(section, sort_keys=False, width=120))
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
    from hwnas.spaces import get_space

    dev = get_device(device)
    if dev.cost_model is None:
        raise ConfigError(f"device '{dev.name}' has no cost model to estimate from; profile it instead")
    model = CostModel(dev.cost_model.params)
    sp = get_space(space, resolution=resolution)
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
                     provenance=(f"estimated: {dev.cost_model.kind} analytical cost model (hwnas/latency/costmodel.py) "
                                 f"fitted on {dev.cost_model.fitted_on}; fit max |error| "
                                 f"{report.get('max_abs_error_pct', '?')} %"),
                     precision=dev.precision,
                     notes=f"materialised by: hwnas table estimate --device {dev.name} --space {space} "
                           f"--resolution {resolution}")
    return LatencyTable(meta, entries)


__all__ = ["CostModel", "KernelCost", "kernels", "features", "fit", "mobilenetv2_rows", "FitRow", "PARAM_NAMES",
           "estimate_table", "refit_device"]
