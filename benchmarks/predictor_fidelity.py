"""Predictor fidelity on this machine (device ``host``): per-op table vs end-to-end measurement.

1. Profile the space's op keys at the resolution into a table (timed), with ``--calibrate`` random
   members measured end to end for the calibration fit (members disjoint from step 2's).
2. Measure ``--members`` random members end to end as ``.tflite`` on the same runner (LiteRT,
   XNNPACK, the device's threads, same warm-up/repeats).
3. Print one JSON object: share within ±10 %, RMSPE (%), Spearman ρ, max |error|, profiling
   minutes — for the calibrated predictor and for the raw per-op sum.

Usage::

    python benchmarks/predictor_fidelity.py                          # mobilenetv2 @224, 100 members
    python benchmarks/predictor_fidelity.py --members 20 --resolution 128   # smaller run

``journal_span_minutes`` is the first-to-last measurement time in the journal: the profiling time
of a run that was resumed from an earlier journal (``resumed_ops`` > 0).

The table is written to ``--out`` (default a temporary folder); ``--ship`` writes it to the
repository's ``latency_tables/host-<space>-<res>.yaml`` instead (provenance ``measured``, with this
machine's details in its metadata).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path


def _journal_span_s(path: Path) -> float:
    """First to last measurement time in the journal (covers runs resumed from an earlier journal)."""
    import datetime as dt

    times = [json.loads(line).get("time") for line in Path(path).read_text().splitlines()[1:] if line.strip()]
    stamps = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times if t]
    return (max(stamps) - min(stamps)).total_seconds() if len(stamps) > 1 else 0.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenetv2")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--calibrate", type=int, default=5, help="whole-model calibration points (0 = none)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="table path (default: a temporary folder)")
    ap.add_argument("--ship", action="store_true", help="write the table to latency_tables/ in the repository")
    ap.add_argument("--device", default="host")
    args = ap.parse_args(argv)

    import numpy as np
    from scipy.stats import spearmanr

    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import Predictor, fit_calibration
    from hwnas.latency.table import LatencyTable, table_filename
    from hwnas.profile import profile
    from hwnas.profile.run import make_builder, make_runner
    from hwnas.spaces import get_space

    device = get_device(args.device).model_copy(update={"repeats": args.repeats, "warmup": args.warmup})
    space = get_space(args.space, resolution=args.resolution)
    if args.ship:
        out = Path(__file__).resolve().parents[1] / "latency_tables" / table_filename(device.name, space.name,
                                                                                      args.resolution)
    else:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="hwnas-fidelity-")) / "table.yaml"

    t0 = time.perf_counter()
    res = profile(device, args.space, args.resolution, out=out, progress=sys.stderr.isatty())
    profiling_s = time.perf_counter() - t0
    journal_span_s = _journal_span_s(res.journal)
    table = LatencyTable.load(out)

    builder, runner = make_builder(device), make_runner(device)
    t0 = time.perf_counter()
    if args.calibrate:
        crng = random.Random(args.seed)
        points = []
        for i in range(args.calibrate):
            arch = space.decode(space.sample(crng))
            points.append((f"member{i}", arch, runner.measure(builder.build_arch(arch)).median_ms))
        fit_calibration(table, points)
        table.save(out)
    calibration_s = time.perf_counter() - t0
    calibrated = Predictor(device, table)
    raw = Predictor(device, LatencyTable(table.meta, table.entries))
    rng = random.Random(args.seed + 1_000_003)  # disjoint from the calibration draw
    measured, pred_cal, pred_raw = [], [], []
    members_path = out.with_name(out.stem + ".members.jsonl")
    t1 = time.perf_counter()
    with open(members_path, "w") as fh:
        for _ in range(args.members):
            arch = space.decode(space.sample(rng))
            m = runner.measure(builder.build_arch(arch))
            measured.append(m.median_ms)
            pred_cal.append(calibrated.predict(arch).latency_ms)
            pred_raw.append(raw.predict(arch).latency_ms)
            fh.write(json.dumps({"arch": arch.to_compact(), "measured_ms": m.median_ms, "p10_ms": m.p10_ms,
                                 "p90_ms": m.p90_ms, "predicted_ms": pred_cal[-1], "raw_sum_ms": pred_raw[-1]}) + "\n")
            fh.flush()
    measure_s = time.perf_counter() - t1

    def stats(pred: list[float]) -> dict:
        y, p = np.array(measured), np.array(pred)
        err = 100 * (p - y) / y
        return {"within_10pct": float(np.mean(np.abs(err) <= 10)), "rmspe_pct": float(np.sqrt(np.mean(err ** 2))),
                "max_abs_error_pct": float(np.abs(err).max()), "mean_error_pct": float(err.mean()),
                "spearman": float(spearmanr(y, p).statistic)}

    result = {
        "device": device.name, "space": space.name, "resolution": args.resolution, "members": args.members,
        "op_keys": len(table), "repeats": args.repeats, "warmup": args.warmup, "threads": device.threads,
        "profiling_minutes": round(profiling_s / 60, 2),
        "resumed_ops": res.resumed,
        "journal_span_minutes": round(journal_span_s / 60, 2),
        "calibration_minutes": round(calibration_s / 60, 2),
        "end_to_end_measure_minutes": round(measure_s / 60, 2),
        "calibration": table.calibration.model_dump(exclude={"points"}) if table.calibration else None,
        "calibrated": stats(pred_cal), "raw_sum": stats(pred_raw),
        "measured_ms": {"min": min(measured), "median": float(np.median(measured)), "max": max(measured)},
        "table": str(out), "members_file": str(members_path), "machine": table.meta.machine, "backend_version": table.meta.backend_version,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
