"""Once-for-all on the built-in data: specialised subnets vs the same architectures trained from scratch.

One elastic supernet is trained (``hwnas ofa train`` settings, ``--quick`` by default) and specialised
for every device at three latency budgets (by default at 20 %, 50 % and 80 % of the device's
predicted range over all subnets); each chosen architecture is then trained from scratch (fresh
init, zero-init residuals) for the same epochs, steps per epoch and batch size as the supernet, and
both are evaluated on the same test split at the subnet's resolution. Prints one JSON object: the
supernet's training time, the accuracy predictor's held-out Spearman ρ, per (device, budget) the
specialised subnet's test accuracy (inherited weights, BN-recalibrated, no retraining) next to the
from-scratch one, the time each took, and ``uptime`` before and after (shared machine: timings are
noisy; compare the side-by-side figures).

Usage::

    HWNAS_HOME=... python benchmarks/ofa_report.py [--run runs/ofa-report] [--devices pixel,note10] \\
        [--quantiles 0.2,0.5,0.8] [--samples 60] [--fallback] [--no-export]

``note10`` has no table at these sizes: import the once-for-all Note10 table first
(``hwnas table import --format ofa ../shared/data/ofa-note10-lut/lookup_tables/224_lookup_table.yaml``)
and pass ``--fallback`` (its keys are then priced by the nearest imported key scaled by MACs; the
share is reported per row). A run folder that already holds the supernet is reused (training resumes
or is skipped), and so are its accuracy samples.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/ofa-report")
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=None, help="default: --quick's")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="default: --quick's")
    ap.add_argument("--devices", default="pixel,note10")
    ap.add_argument("--quantiles", default="0.2,0.5,0.8", help="budgets as positions in each device's range")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--fallback", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from hwnas.arch import ArchSpec
    from hwnas.latency.predict import load_predictor
    from hwnas.nn import build_model
    from hwnas.search.data import load_data
    from hwnas.search.ofa import QUICK, OFAConfig, SubnetLatency, Target, _build, specialize, train_ofa
    from hwnas.search.train import evaluate, train_model, zero_init_residual

    torch.set_num_threads(args.threads)
    up_before = _uptime()
    cfg = OFAConfig(space=args.space, data=args.data, resolution=args.resolution, width=args.width,
                    epochs=args.epochs or QUICK["epochs"], steps_per_epoch=args.steps_per_epoch or QUICK["steps_per_epoch"],
                    threads=args.threads, out=args.run)
    t0 = time.perf_counter()
    trained = train_ofa(cfg)
    train_call_seconds = time.perf_counter() - t0

    data = load_data(cfg.data, resolution=cfg.resolution, seed=cfg.seed, limit=cfg.data_limit)
    es, _ = _build(cfg, data)
    quantiles = [float(q) for q in args.quantiles.split(",")]
    targets = []
    ranges = {}
    for dev in args.devices.split(","):
        lo, hi = SubnetLatency(load_predictor(dev, fallback=args.fallback), es).bounds
        ranges[dev] = [lo, hi]
        targets += [Target(dev, float(f"{lo + q * (hi - lo):.3g}")) for q in quantiles]
    t1 = time.perf_counter()
    spec = specialize(args.run, targets, samples=args.samples, fallback=args.fallback, export=not args.no_export)
    specialize_seconds = time.perf_counter() - t1

    bundles = {cfg.resolution: data}
    scratch: dict[str, dict] = {}
    rows = []
    for res in spec["targets"]:
        arch = ArchSpec.load(res["artifacts"]["arch"])
        key = arch.to_compact()
        if key not in scratch:
            r = arch.resolution
            if r not in bundles:
                bundles[r] = load_data(cfg.data, resolution=r, seed=cfg.seed, limit=cfg.data_limit)
            d = bundles[r]
            model = zero_init_residual(build_model(arch, train=True, seed=cfg.seed))
            ts = time.perf_counter()
            records = train_model(model, d, epochs=cfg.epochs, lr=0.05, batch_size=cfg.batch_size, seed=cfg.seed,
                                  steps_per_epoch=cfg.steps_per_epoch)
            seconds = time.perf_counter() - ts
            acc, _ = evaluate(model, d.batches("test", 256))
            scratch[key] = {"test_accuracy": acc, "train_seconds": seconds, "val_accuracy": records[-1]["val_acc"]}
        s = scratch[key]
        rows.append({"device": res["target"], "budget_ms": res["latency_budget_ms"],
                     "predicted_latency_ms": res["predicted_latency_ms"],
                     "latency_fallback_share": res["latency_fallback_share"], "subnet": res["subnet"],
                     "params": res["params"], "macs": res["macs"],
                     "ofa_predicted_accuracy": res["predicted_accuracy"], "ofa_test_accuracy": res["test_accuracy"],
                     "ofa_tflite_test_accuracy": res["tflite_test_accuracy"],
                     "ofa_search_seconds": res["search_seconds"],
                     "scratch_test_accuracy": s["test_accuracy"], "scratch_train_seconds": s["train_seconds"]})
    out = {
        "settings": {"space": cfg.space, "data": cfg.data, "resolution": cfg.resolution,
                     "resolutions": trained["resolutions"], "width": cfg.width, "epochs": cfg.epochs,
                     "steps_per_epoch": trained["steps_per_epoch"], "batch_size": cfg.batch_size,
                     "random_subnets": cfg.random_subnets, "samples": args.samples, "fallback": args.fallback,
                     "threads": args.threads, "export": not args.no_export},
        "supernet": {"train_seconds": trained["train_seconds"], "train_call_seconds": train_call_seconds,
                     "val_acc_largest": trained["val_acc_largest"], "val_acc_smallest": trained["val_acc_smallest"]},
        "accuracy_predictor": spec["accuracy_predictor"],
        "latency_ranges_ms": ranges,
        "specialize_seconds": specialize_seconds,
        "rows": rows,
        "totals": {"ofa_seconds": trained["train_seconds"] + specialize_seconds,
                   "scratch_seconds": sum(s["train_seconds"] for s in scratch.values()),
                   "distinct_architectures": len(scratch)},
        "uptime_before": up_before,
        "uptime_after": _uptime(),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
