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
    python benchmarks/predictor_fidelity.py --space fbnet --members 6 --only-member-keys   # any space, small N
    python benchmarks/predictor_fidelity.py --zoo mobilenetv3-large,efficientnet-b0 --members 0

``--space``: ``mobilenetv2``, ``fbnet``, ``mnasnet``, ``efficientnet`` (any registered space works).
``--only-member-keys`` profiles only the op keys of the drawn members instead of the whole space (a
small-N run on a loaded machine). ``--zoo`` measures reference nets end to end and prices them from
a table of their own op keys measured the same way (MobileNetV3 with SE/h-swish, EfficientNet-B0).
The calibration is kept only when its leave-one-out error on the calibration members beats the raw
sum's (../shared/STACK.md, 2026-12-02: a scale fitted on 5 members under load made things worse);
``calibration_kept`` says which. ``load_average`` gives the 1-minute load at start and end: figures
taken under load are not quiet-machine figures.

``journal_span_minutes`` is the first-to-last measurement time in the journal: the profiling time
of a run that was resumed from an earlier journal (``resumed_ops`` > 0).

``--fit-correction`` then fits the device's learned correction (:mod:`hwnas.latency.correction`,
``--grouping total|kind``) on half of the measured members and reports it on the other half
(``correction.in_sample`` / ``correction.held_out`` beside the raw sums of the same splits); the
correction is not saved (``hwnas table fit-correction --points <members file> --table <table>`` does
that). ``uptime`` gives the output of ``uptime`` at start and end.

``calibrated`` is None when no calibration was fitted or kept (the predictions are then the raw sum).
Rerunning with the same ``--out`` measures the op keys again (so table and networks are timed
together) and overwrites that run's table, members file and zoo tables; the converted ``.tflite``
files are reused. Give each run its own ``--out`` to keep an earlier one.

Order: every member's (and zoo net's) ``.tflite`` is converted first (``--build-workers`` processes;
files under ``<table>.members/``, kept, so a rerun resumes), then the op keys are profiled and the
members timed, one after the other in one process: tables and networks are timed close together, at
the same load, and no conversion runs while anything is timed.

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


def _build_member(job: tuple[str, str, str]) -> str:
    """Convert one member (compact string) to ``.tflite`` at ``path`` (atomically); a process-pool job."""
    device_name, compact, path = job
    from hwnas.arch import ArchSpec
    from hwnas.latency.devices import get_device
    from hwnas.profile.run import make_builder

    art = make_builder(get_device(device_name)).build_arch(ArchSpec.from_compact(compact))
    tmp = Path(path + ".part")
    tmp.write_bytes(art.data)
    tmp.replace(path)
    return path


def build_members(device_name: str, archs: list, folder: Path, workers: int) -> list:
    """Every arch's ``.tflite`` under ``folder`` (named by a hash of the arch, so a file is only reused
    for the same network; files already there are kept, so an interrupted run resumes), converted by
    ``workers`` processes: the conversions, which take most of a run's time, all happen before any
    timing, so the timing runs on a machine they no longer load."""
    from concurrent.futures import ProcessPoolExecutor
    import hashlib
    import multiprocessing as mp

    from hwnas.profile.run import Artifact

    folder.mkdir(parents=True, exist_ok=True)
    compacts = [a.to_compact() for a in archs]
    paths = [str(folder / (hashlib.sha1(f"{device_name}|{c}".encode()).hexdigest()[:20] + ".tflite")) for c in compacts]
    jobs = [(device_name, c, p) for c, p in zip(compacts, paths) if not Path(p).exists()]
    if jobs and workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_build_member, jobs))
    else:
        for job in jobs:
            _build_member(job)
    return [Artifact(path=Path(p), format="tflite") for p in paths]


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
    ap.add_argument("--only-member-keys", action="store_true", help="profile only the drawn members' op keys")
    ap.add_argument("--zoo", default="", help="comma-separated zoo nets measured end to end too")
    ap.add_argument("--fit-correction", action="store_true",
                    help="fit a learned correction on half the members, report it on the other half")
    ap.add_argument("--grouping", default="total", choices=["total", "kind"])
    ap.add_argument("--build-workers", type=int, default=1,
                    help="processes converting the members to .tflite, all before any timing (timing stays serial)")
    args = ap.parse_args(argv)
    import os
    import subprocess

    def uptime() -> str | None:
        try:
            return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    uptime_start = uptime()

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

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

    crng = random.Random(args.seed)
    cal_archs = [space.decode(space.sample(crng)) for _ in range(args.calibrate)]
    rng = random.Random(args.seed + 1_000_003)  # disjoint from the calibration draw
    test_archs = [space.decode(space.sample(rng)) for _ in range(args.members)]
    keys = None
    if args.only_member_keys:
        from hwnas.opkey import arch_op_keys

        keys = sorted({str(k) for a in cal_archs + test_archs for _, k in arch_op_keys(a)})
    zoo_archs = {}
    if args.zoo:
        from hwnas.zoo import zoo_arch

        zoo_archs = {name: zoo_arch(name).with_resolution(args.resolution) for name in filter(None, args.zoo.split(","))}
    members_dir = (Path(tempfile.mkdtemp(prefix="hwnas-fidelity-members-")) if args.ship
                   else out.with_name(out.stem + ".members"))
    t0 = time.perf_counter()
    arts = build_members(device.name, cal_archs + test_archs + list(zoo_archs.values()), members_dir, args.build_workers)
    build_s = time.perf_counter() - t0
    cal_arts, test_arts = arts[:len(cal_archs)], arts[len(cal_archs):len(cal_archs) + len(test_archs)]
    zoo_arts = dict(zip(zoo_archs, arts[len(cal_archs) + len(test_archs):]))
    t0 = time.perf_counter()
    res = profile(device, args.space, args.resolution, out=out, progress=sys.stderr.isatty(), keys=keys,
                  only_missing=False)  # a table of its own: the fidelity of what it measured
    profiling_s = time.perf_counter() - t0
    journal_span_s = _journal_span_s(res.journal)
    table = LatencyTable.load(out)

    builder, runner = make_builder(device), make_runner(device)
    t0 = time.perf_counter()
    raw = Predictor(device, LatencyTable(table.meta, table.entries))
    calibration_kept = None
    if args.calibrate:
        points = []
        for i, (arch, art) in enumerate(zip(cal_archs, cal_arts)):
            points.append((f"member{i}", arch, runner.measure(art).median_ms))
        # leave-one-out on the calibration members: keep the calibration only if it beats the raw sum
        sums = np.array([raw.predict(a).latency_ms for _, a, _ in points])
        meas = np.array([m for _, _, m in points])
        loo = [abs(np.median(np.delete(meas / sums, i)) * sums[i] / meas[i] - 1) for i in range(len(points))]
        calibration_kept = bool(len(points) >= 3 and np.mean(loo) < np.mean(np.abs(sums / meas - 1)))
        if calibration_kept:
            fit_calibration(table, points)
            table.save(out)
    calibration_s = time.perf_counter() - t0
    calibrated = Predictor(device, table)
    measured, pred_cal, pred_raw = [], [], []
    members_path = out.with_name(out.stem + ".members.jsonl")
    t1 = time.perf_counter()
    with open(members_path, "w") as fh:
        for arch, art in zip(test_archs, test_arts):
            m = runner.measure(art)
            measured.append(m.median_ms)
            pred_cal.append(calibrated.predict(arch).latency_ms)
            pred_raw.append(raw.predict(arch).latency_ms)
            fh.write(json.dumps({"arch": arch.to_compact(), "measured_ms": m.median_ms, "p10_ms": m.p10_ms,
                                 "p90_ms": m.p90_ms, "predicted_ms": pred_cal[-1], "raw_sum_ms": pred_raw[-1]}) + "\n")
            fh.flush()
    measure_s = time.perf_counter() - t1

    zoo = {}
    if args.zoo:
        from hwnas.latency.table import Entry
        from hwnas.opkey import arch_op_keys
        from hwnas.profile.run import measure_key
        for name, arch in zoo_archs.items():
            zkeys = {str(k): k for _, k in arch_op_keys(arch)}
            ztable = LatencyTable(table.meta.model_copy(update={"space": f"zoo:{name}", "notes": "benchmark only"}),
                                  {s: Entry(median_ms=measure_key(k, builder, runner, device).median_ms, samples=1)
                                   for s, k in zkeys.items() if k.kind != "skip"})
            e2e = runner.measure(zoo_arts[name]).median_ms
            psum = Predictor(device, ztable).predict(arch).latency_ms
            zpath = ztable.save(out.with_name(f"{out.stem}.zoo-{name}.yaml"))
            zoo[name] = {"measured_ms": e2e, "per_op_sum_ms": psum, "error_pct": round(100 * (psum - e2e) / e2e, 2),
                         "table": str(zpath)}

    correction = None
    if args.fit_correction and len(measured) >= 10:
        from hwnas.latency.correction import fit_correction

        corr = fit_correction(device, list(zip(test_archs, measured)), predictor=raw, holdout=0.5, seed=args.seed,
                              grouping=args.grouping)
        correction = {"grouping": args.grouping, "coef": corr.coef, "per_op_ms": corr.per_op_ms, "per_mparam_ms": corr.per_mparam_ms,
                      "intercept_ms": corr.intercept_ms, **corr.report}

    def stats(pred: list[float]) -> dict:
        from hwnas.profile.check import fidelity_stats

        return fidelity_stats(measured, pred) if len(measured) >= 2 else {}

    result = {
        "device": device.name, "space": space.name, "resolution": args.resolution, "members": args.members,
        "op_keys": len(table), "repeats": args.repeats, "warmup": args.warmup, "threads": device.threads,
        "build_minutes": round(build_s / 60, 2), "build_workers": args.build_workers,
        "profiling_minutes": round(profiling_s / 60, 2),
        "resumed_ops": res.resumed,
        "journal_span_minutes": round(journal_span_s / 60, 2),
        "calibration_minutes": round(calibration_s / 60, 2),
        "end_to_end_measure_minutes": round(measure_s / 60, 2),
        "calibration": table.calibration.model_dump(exclude={"points"}) if table.calibration else None,
        "calibration_kept": calibration_kept,
        "calibrated": stats(pred_cal) if calibration_kept else None, "raw_sum": stats(pred_raw), "correction": correction, "zoo": zoo,
        "measured_ms": ({"min": min(measured), "median": float(np.median(measured)), "max": max(measured)}
                        if measured else None),
        "load_average": {"start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "uptime": {"start": uptime_start, "end": uptime()},
        "only_member_keys": args.only_member_keys,
        "table": str(out), "members_file": str(members_path), "machine": table.meta.machine, "backend_version": table.meta.backend_version,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
