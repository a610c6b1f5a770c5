"""The learned per-device correction across spaces, on held-out networks (device ``host``).

Reads the outputs of ``benchmarks/predictor_fidelity.py`` runs (their JSON report, which names the
run's table and members file), pools the measured networks of every run (one device, one machine),
fits :func:`hwnas.latency.correction.fit_correction` on a random share of them and prints one JSON
object: per space, the raw per-op sum and the correction on the **held-out** networks (share within
±10 %, RMSPE, Spearman ρ, Kendall τ), the in-sample figures separately, the coefficients, and the zoo
networks of the runs (``--zoo`` in predictor_fidelity) priced by the correction from their own op table
(or, for runs that kept only the per-op sum, from that sum: ``--grouping total`` only).

Each run's networks are priced from that run's own table (the one its per-op sums came from).

Usage::

    python benchmarks/correction_fidelity.py /tmp/fid-runs/mobilenetv2.json /tmp/fid-runs/mnasnet.json ... \\
        [--holdout 0.5] [--seed 0] [--grouping total|kind] [--save corrections/host.json]

``uptime`` is printed with the figures (taken now: the measurements' own load is in each run's report,
``uptime`` / ``load_average``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="predictor_fidelity.py JSON outputs")
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grouping", default="total", choices=["total", "kind"])
    ap.add_argument("--save", default=None, help="also write the correction here (JSON)")
    ap.add_argument("--leave-space-out", action="store_true",
                    help="also fit on all spaces but one and report that space (a space the fit never saw)")
    args = ap.parse_args(argv)

    from hwnas.latency.correction import fit_correction, read_points
    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import Predictor
    from hwnas.latency.table import LatencyTable
    from hwnas.opkey import arch_op_keys
    from hwnas.zoo import zoo_arch

    reports = [json.loads(Path(r).read_text()) for r in args.reports]
    device = get_device(reports[0]["device"])
    points, predictors, runs = [], [], []
    for rep in reports:
        table = LatencyTable.load(rep["table"])
        pred = Predictor(device, table, calibrated=False)
        pts = read_points([rep["members_file"]])
        points += pts
        predictors += [pred] * len(pts)
        runs.append({"space": rep["space"], "resolution": rep["resolution"], "members": len(pts),
                     "load_average": rep.get("load_average"), "uptime": rep.get("uptime")})

    corr = fit_correction(device, points, predictor=predictors, holdout=args.holdout, seed=args.seed,
                          grouping=args.grouping, trained_on={"reports": [str(r) for r in args.reports], "runs": runs})
    if args.save:
        corr.save(args.save)

    zoo = {}
    for rep in reports:
        for name, z in (rep.get("zoo") or {}).items():
            arch = zoo_arch(name).with_resolution(rep["resolution"])
            if z.get("table"):  # the zoo net's own op table (predictor_fidelity.py keeps it since 2026-12-02)
                zp = Predictor(device, LatencyTable.load(z["table"]), calibrated=False)
                corrected = corr.predict_raw([(k, zp._price(k)[0]) for _, k in arch_op_keys(arch)])
            elif args.grouping == "total":  # from the per-op sum: Σ scale·raw = scale·Σ raw
                keys = [k for _, k in arch_op_keys(arch) if k.kind != "skip"]
                corrected = (corr.intercept_ms + corr.coef["all"] * z["per_op_sum_ms"] + corr.per_op_ms * len(keys)
                             + corr.per_mparam_ms * sum(k.cost()[0] for k in keys) / 1e6)
            else:
                zoo[name] = {**z, "corrected_ms": None, "note": "no per-op table kept: --grouping total only"}
                continue
            zoo[name] = {**z, "resolution": rep["resolution"], "corrected_ms": round(corrected, 4),
                         "corrected_error_pct": round(100 * (corrected - z["measured_ms"]) / z["measured_ms"], 2)}

    leave_out = {}
    if args.leave_space_out and len(runs) > 1:
        from hwnas.profile.check import fidelity_stats

        names = [a.name for a, _ in points]
        for space in sorted(set(names)):
            train = [i for i, n in enumerate(names) if n != space]
            test = [i for i, n in enumerate(names) if n == space]
            c = fit_correction(device, [points[i] for i in train], predictor=[predictors[i] for i in train],
                               holdout=0, grouping=args.grouping)
            y = [points[i][1] for i in test]
            terms = [[(k, predictors[i]._price(k)[0]) for _, k in arch_op_keys(points[i][0])] for i in test]
            leave_out[space] = {"correction": fidelity_stats(y, [c.predict_raw(t) for t in terms]),
                                "raw_sum": fidelity_stats(y, [sum(r for _, r in t) for t in terms])}

    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = {"device": device.name, "grouping": args.grouping, "holdout": args.holdout, "seed": args.seed,
           "networks": len(points), "runs": runs,
           "coef": corr.coef, "per_op_ms": corr.per_op_ms, "per_mparam_ms": corr.per_mparam_ms,
           "intercept_ms": corr.intercept_ms, **corr.report, "zoo": zoo, "leave_space_out": leave_out,
           "uptime_now": up}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
