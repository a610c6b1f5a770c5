"""Does per-op summing hold on this device? (``hwnas profile --device D --check``)

A latency table prices a network as the sum of its ops measured one by one. On a real runtime,
kernel fusion, caches and per-inference overhead make the whole network differ from that sum;
nn-Meter (Zhang et al., MobiSys 2021, §3) measured this gap and showed it depends on the device
and the backend. This check measures a few random members of the table's space end to end with
the same runner and settings as the table and reports, per member, the per-op sum of the table's
entries (raw medians, no calibration) against the end-to-end median.

Over adb the whole model is run once with ``benchmark_model --enable_op_profiling=true``, which
also gives the per-node times inside the whole model (the sum of the nodes' averages is reported
next to the end-to-end time); on the host the local LiteRT runner measures the whole model (the
Python interpreter exposes no per-node profiler).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from hwnas.latency.devices import Device, get_device
from hwnas.latency.table import LatencyTable
from hwnas.opkey import arch_op_keys


@dataclass(frozen=True)
class MemberCheck:
    """One member: its compact string, end-to-end median (ms), the table's per-op sum (ms), the
    error of the sum in % of the end-to-end time, and (adb) the sum of the per-node averages of
    the op profile (ms) with the number of nodes."""

    name: str
    arch: str
    measured_ms: float
    per_op_sum_ms: float
    error_pct: float
    op_profile_sum_ms: float | None = None
    op_profile_nodes: int | None = None


@dataclass(frozen=True)
class SumCheck:
    """The check's result: every member and the mean/max absolute error (%)."""

    device: str
    table: str
    members: list[MemberCheck]

    @property
    def mean_abs_error_pct(self) -> float:
        return statistics.fmean(abs(m.error_pct) for m in self.members)

    @property
    def max_abs_error_pct(self) -> float:
        return max(abs(m.error_pct) for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "table": self.table, "mean_abs_error_pct": self.mean_abs_error_pct,
                "max_abs_error_pct": self.max_abs_error_pct, "members": [asdict(m) for m in self.members]}

    def lines(self) -> list[str]:
        out = []
        for m in self.members:
            prof = (f", op profile {m.op_profile_sum_ms:.3f} ms over {m.op_profile_nodes} nodes"
                    if m.op_profile_sum_ms is not None else "")
            out.append(f"{m.name}: end to end {m.measured_ms:.3f} ms, per-op sum {m.per_op_sum_ms:.3f} ms "
                       f"({m.error_pct:+.1f} %){prof}")
        out.append(f"per-op sum vs end to end on {self.device}: mean |error| {self.mean_abs_error_pct:.1f} %, "
                   f"max {self.max_abs_error_pct:.1f} % over {len(self.members)} member(s) (raw sums, no calibration)")
        return out


def check_per_op_sum(device: str | Device, table: LatencyTable, *, members: int = 3, seed: int = 0,
                     archs=None, builder=None, runner=None) -> SumCheck:
    """Measure ``members`` random members of ``table``'s space (or the given ``archs``) end to end
    and compare with the per-op sum of ``table``'s entries.

    Args:
        device: the device (name or :class:`Device`) the table was measured on.
        table: a measured table covering every op key of its space at its resolution (or of ``archs``).
        archs: check these :class:`~hwnas.arch.ArchSpec` instead of random members.
        builder, runner: override the device's defaults (the runner is closed afterwards).

    Raises:
        MissingOpError: a member's op key is absent from the table (profile the space first).
    """
    from hwnas.profile.run import make_builder, make_runner
    from hwnas.spaces import get_space

    dev = device if isinstance(device, Device) else get_device(device)
    if archs is None:
        sp = get_space(table.meta.space, resolution=table.meta.resolutions[0])
        rng = random.Random(seed)
        archs = [sp.decode(sp.sample(rng)) for _ in range(members)]
    builder = builder or make_builder(dev)
    runner = runner or make_runner(dev)
    out = []
    try:
        for i, arch in enumerate(archs):
            per_op = sum(table.get(key).median_ms for _, key in arch_op_keys(arch) if key.kind != "skip")
            artifact = builder.build_arch(arch)
            nodes = None
            if hasattr(runner, "profile_ops"):
                m, nodes = runner.profile_ops(artifact)
            else:
                m = runner.measure(artifact)
            out.append(MemberCheck(
                name=f"member{i}", arch=arch.to_compact(), measured_ms=m.median_ms, per_op_sum_ms=per_op,
                error_pct=100 * (per_op - m.median_ms) / m.median_ms,
                op_profile_sum_ms=sum(n["avg_ms"] for n in nodes) if nodes else None,
                op_profile_nodes=len(nodes) if nodes else None))
    finally:
        runner.close()
    return SumCheck(dev.name, str(table.path) if table.path else f"{table.meta.device}/{table.meta.space}", out)


# ---------------------------------------------------------------------- table fidelity (hwnas table check)
#: Below either, predictions from the table carry a warning naming the check. HW-NAS-Bench (Li et al.
#: 2021, §4) found per-op sums rank poorly on some accelerators; 0.9 / 0.8 are our thresholds, not theirs.
FIDELITY_MIN_WITHIN_10PCT = 0.9
FIDELITY_MIN_KENDALL_TAU = 0.8


def fidelity_stats(measured_ms: list[float], predicted_ms: list[float]) -> dict[str, Any]:
    """Share of predictions within ±10 % of the measurement, RMSPE (%), max |error| (%), mean error
    (%), Spearman ρ and Kendall τ of prediction vs measurement (ms lists of equal length ≥ 2).

    Raises:
        ValueError: fewer than two members or lists of different length.
    """
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    if len(measured_ms) != len(predicted_ms) or len(measured_ms) < 2:
        raise ValueError("fidelity needs two or more (measured, predicted) pairs")
    y, p = np.asarray(measured_ms, float), np.asarray(predicted_ms, float)
    err = 100 * (p - y) / y
    return {"members": len(y), "within_10pct": round(float(np.mean(np.abs(err) <= 10)), 4),
            "rmspe_pct": round(float(np.sqrt(np.mean(err ** 2))), 3),
            "max_abs_error_pct": round(float(np.abs(err).max()), 3), "mean_error_pct": round(float(err.mean()), 3),
            "spearman": round(float(spearmanr(y, p)[0]), 4), "kendall_tau": round(float(kendalltau(y, p)[0]), 4)}


def fidelity_warning(fidelity: dict[str, Any] | None) -> str | None:
    """The warning a prediction carries for a table whose last check fell below the thresholds
    (:data:`FIDELITY_MIN_WITHIN_10PCT`, :data:`FIDELITY_MIN_KENDALL_TAU`), or None."""
    if not fidelity:
        return None
    low = []
    if fidelity.get("within_10pct", 1.0) < FIDELITY_MIN_WITHIN_10PCT:
        low.append(f"{100 * fidelity['within_10pct']:.0f} % of members within ±10 % "
                   f"(< {100 * FIDELITY_MIN_WITHIN_10PCT:.0f} %)")
    tau = fidelity.get("kendall_tau")
    if tau is not None and tau == tau and tau < FIDELITY_MIN_KENDALL_TAU:
        low.append(f"Kendall τ {tau:.2f} (< {FIDELITY_MIN_KENDALL_TAU})")
    if not low:
        return None
    return (f"table check ('hwnas table check', {fidelity.get('date', '?')}, {fidelity.get('members', '?')} members): "
            + " and ".join(low) + "; per-op sums may misprice this device")


def fidelity_line(fidelity: dict[str, Any] | None) -> str | None:
    """One line summarising a table's stored check, or None when it was never checked."""
    if not fidelity:
        return None
    return (f"checked {fidelity.get('date', '?')}: {100 * fidelity['within_10pct']:.0f} % within ±10 %, "
            f"RMSPE {fidelity['rmspe_pct']:.1f} %, Spearman {fidelity['spearman']:.3f}, "
            f"Kendall τ {fidelity['kendall_tau']:.3f} over {fidelity['members']} members")


def check_table(device: str | Device, table: LatencyTable, *, members: int = 20, seed: int = 0,
                builder=None, runner=None, progress=None, space=None, predictor=None) -> dict[str, Any]:
    """Measure ``members`` random members of ``table``'s space end to end on ``device`` and compare
    them with the table's predictor (calibration included, as ``hwnas predict`` prices them).

    ``space``: the :class:`~hwnas.spaces.SearchSpace` to draw from (a search's width, input channels and
    classes, built by :func:`hwnas.spaces.resolve_space`); default the table's space name at its first
    resolution with the default width 1, 3 channels and 1000 classes. The report records its
    ``width``, ``in_channels`` and ``classes``.

    Returns the fidelity report (:func:`fidelity_stats` plus ``date``, ``seed``, ``load_average``
    (1-minute load while measuring, when readable), ``timer`` and per-member ``measured_ms`` /
    ``predicted_ms``), ready for ``table.meta.fidelity``. ``progress(i, n)`` is called per member.

    Raises:
        MissingOpError: a member's op key is absent from the table (profile the space first).
    """
    import os

    from hwnas.latency.predict import Predictor
    from hwnas.latency.table import now_iso
    from hwnas.profile.run import make_builder, make_runner
    from hwnas.spaces import get_space

    dev = device if isinstance(device, Device) else get_device(device)
    resolution = table.meta.resolutions[0]
    sp = space if space is not None else get_space(table.meta.space, resolution=resolution)
    priced_by = predictor.provenance if predictor is not None else None
    predictor = predictor or Predictor(dev, table)
    builder = builder or make_builder(dev)
    runner = runner or make_runner(dev)
    rng = random.Random(seed)
    rows, loads = [], []
    try:
        for i in range(members):
            arch = sp.decode(sp.sample(rng))
            predicted = predictor.predict(arch).latency_ms
            m = runner.measure(builder.build_arch(arch))
            if hasattr(os, "getloadavg"):
                loads.append(os.getloadavg()[0])
            rows.append({"arch": arch.to_compact(), "measured_ms": round(m.median_ms, 4),
                         "predicted_ms": round(predicted, 4)})
            if progress:
                progress(i + 1, members)
    finally:
        runner.close()
    report = fidelity_stats([r["measured_ms"] for r in rows], [r["predicted_ms"] for r in rows])
    report.update({"date": now_iso(), "seed": seed, "timer": dev.timer, "space": sp.name, "resolution": sp.resolution,
                   "width": sp.width_multiplier, "in_channels": sp.in_channels, "classes": sp.num_classes, "priced_by": priced_by,
                   "load_average": round(statistics.fmean(loads), 2) if loads else None, "rows": rows})
    return report


__all__ = ["MemberCheck", "SumCheck", "check_per_op_sum", "check_table", "fidelity_stats", "fidelity_warning",
           "fidelity_line", "FIDELITY_MIN_WITHIN_10PCT", "FIDELITY_MIN_KENDALL_TAU"]
