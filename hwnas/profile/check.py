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


__all__ = ["MemberCheck", "SumCheck", "check_per_op_sum"]
