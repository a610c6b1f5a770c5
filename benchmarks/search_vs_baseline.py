"""Searched net vs width-scaled MobileNetV2 at equal predicted latency, and search step costs.

Prints one JSON object:

* ``step_times``: seconds per step (batch 64, MNIST at 32 px, ProxylessNAS space, the given width)
  of a plain single-path net (the space's k5_e6 member) and of each supernet step — proxyless weight
  step (one sampled path), proxyless architecture step (two paths, no weight gradients), the
  amortised proxyless step (one architecture step per 5 weight steps, the default), FBNet weight and
  architecture steps (all candidates), Single-Path steps (one superkernel) — with ratios to the
  plain step, the figures STACK.md compares with NNI (7.1× / 23×).
* ``comparison``: for ``--target`` at the latency of MobileNetV2 (the zoo net at the space's
  width and resolution, as in the ProxylessNAS/FBNet papers' "same latency as MobileNetV2"), the
  searched architecture vs MobileNetV2 with its width multiplier scaled (bisection) to the searched
  net's predicted latency; both trained from scratch with the same epochs, learning rate and data
  for each seed; test accuracy per seed, mean and std; search wall time per seed.

``--quick``: one search (seed 0, 4 epochs) and 3 training seeds of 4 epochs each; otherwise one
search per seed with the CLI defaults (6 epochs) and 3 × 10 training epochs.

Usage: ``python benchmarks/search_vs_baseline.py --quick [--target pixel] [--width 0.5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time


def step_times(space, data, repeats: int = 6) -> dict:
    import torch
    import torch.nn.functional as F

    from hwnas.nn import build_model
    from hwnas.nn.supernet import Supernet
    from hwnas.search.train import weight_optimizer

    x, y = next(data.batches("train", 64, augment=False))

    def bench(fn) -> float:
        fn()
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    member = tuple(next((j for j, c in enumerate(s.candidates) if c.startswith("ir_k5_e6")), 0) for s in space.slots)
    plain = build_model(space.decode(member), train=True, seed=0)
    opt = weight_optimizer(plain.parameters(), 0.05)

    def plain_step():
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()

    out = {"plain_k5e6_s": bench(plain_step)}
    for mode in ("proxyless", "fbnet", "singlepath"):
        torch.manual_seed(0)
        net = Supernet(space, mode).train()
        wopt = weight_optimizer(net.weight_parameters(), 0.05)
        aopt = torch.optim.Adam(net.arch_parameters(), 1e-3)

        def wstep():
            wopt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            wopt.step()

        def astep():
            with net.arch_step():
                aopt.zero_grad()
                F.cross_entropy(net(x), y).backward()
                aopt.step()
            net.after_arch_step()

        out[f"{mode}_weight_step_s"] = bench(wstep)
        out[f"{mode}_arch_step_s"] = bench(astep)
    out["proxyless_amortised_step_s"] = out["proxyless_weight_step_s"] + out["proxyless_arch_step_s"] / 5
    out["fbnet_step_s"] = out["fbnet_weight_step_s"] + out["fbnet_arch_step_s"]
    out["singlepath_step_s"] = out["singlepath_weight_step_s"] + out["singlepath_arch_step_s"]
    base = out["plain_k5e6_s"]
    out["ratios_to_plain"] = {k[:-2]: round(v / base, 2) for k, v in out.items() if k.endswith("_s") and k != "plain_k5e6_s"}
    out["nni_reference"] = {"proxyless_step_ratio": 7.1, "fbnet_step_ratio": 23.0,
                            "note": "NNI 3.0 on the same data/machine, 2 threads (STACK.md)"}
    return out


def width_for_latency(predictor, resolution: int, num_classes: int, in_channels: int, target_ms: float) -> tuple[float, float]:
    """Width multiplier of the zoo MobileNetV2 whose predicted latency is closest to ``target_ms``."""
    from hwnas.zoo import zoo_arch

    def lat(w: float) -> float:
        a = zoo_arch("mobilenetv2").with_width(w).with_resolution(resolution).with_classes(num_classes, in_channels)
        return predictor.predict(a).latency_ms

    lo, hi = 0.1, 3.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if lat(mid) < target_ms:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: abs(lat(w) - target_ms))
    return round(best, 4), lat(best)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--target", default="pixel")
    p.add_argument("--method", default="proxyless")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-steps", action="store_true", help="skip the step-time measurement")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from hwnas.latency.predict import layer_latency_table, latency_bounds, load_predictor
    from hwnas.nn import build_model, count
    from hwnas.search.base import Budget, RunDir, get_searcher
    from hwnas.search.data import load_data
    from hwnas.search.objective import Objective, log_unit
    from hwnas.search.pipeline import make_space, reference_latency
    from hwnas.search.train import evaluate, train_model, zero_init_residual
    from hwnas.zoo import zoo_arch

    t_all = time.perf_counter()
    data = load_data(args.data, resolution=args.resolution, seed=0)
    space = make_space("mobilenetv2", resolution=args.resolution, num_classes=data.num_classes,
                       in_channels=data.in_channels, width=args.width)
    result: dict = {"target": args.target, "method": args.method, "space": space.name, "width": args.width,
                    "resolution": args.resolution, "data": data.describe(), "threads": args.threads,
                    "quick": args.quick}
    if not args.no_steps:
        result["step_times"] = step_times(space, data)

    pred = load_predictor(args.target)
    table = layer_latency_table(pred, space)
    lo, hi = latency_bounds(pred, space)
    budget_ms = min(max(reference_latency(pred, space, data), lo), hi)
    result["latency_budget_ms"] = budget_ms
    result["latency_budget_source"] = f"MobileNetV2 x{args.width:g} at {args.resolution}px"
    search_epochs, train_epochs = (4, 4) if args.quick else (6, 10)
    seeds = list(range(args.seeds))
    search_seeds = [0] if args.quick else seeds
    searches = {}
    for s in search_seeds:
        obj = Objective(args.method, latency_budget_ms=budget_ms, unit_ms=log_unit(lo), predictor=pred, table=table,
                        latency_range_ms=(lo, hi))
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            res = get_searcher(args.method, seed=s).run(space, obj, data, Budget(epochs=search_epochs,
                                                        warmup_epochs=min(2, search_epochs - 1)), RunDir(tmp))
        searches[s] = {"arch": res.best_arch, "seconds": time.perf_counter() - t,
                       "latency_ms": pred.predict(res.best_arch).latency_ms}

    rows = []
    for s in seeds:
        srch = searches[s if s in searches else search_seeds[0]]
        arch = srch["arch"]
        w, base_lat = width_for_latency(pred, args.resolution, data.num_classes, data.in_channels, srch["latency_ms"])
        base = zoo_arch("mobilenetv2").with_width(w).with_resolution(args.resolution).with_classes(
            data.num_classes, data.in_channels)
        accs = {}
        for name, a in (("searched", arch), ("mobilenetv2", base)):
            torch.manual_seed(100 + s)
            model = zero_init_residual(build_model(a, train=True, seed=100 + s))
            train_model(model, data, epochs=train_epochs, lr=0.05, seed=100 + s)
            accs[name] = evaluate(model, data.batches("test", 256))[0]
        rows.append({"seed": s, "searched_arch": arch.to_compact(), "searched_latency_ms": srch["latency_ms"],
                     "searched_params": count(arch).params, "searched_macs": count(arch).macs,
                     "searched_test_accuracy": accs["searched"], "baseline_width": w,
                     "baseline_latency_ms": base_lat, "baseline_params": count(base).params,
                     "baseline_macs": count(base).macs, "baseline_test_accuracy": accs["mobilenetv2"],
                     "search_seconds": srch["seconds"] if s in searches else None})
        print(json.dumps(rows[-1]), file=sys.stderr)

    def stats(key):
        vals = [r[key] for r in rows]
        return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "values": vals}

    result["comparison"] = {
        "train_epochs": train_epochs, "search_epochs": search_epochs, "training": "both from scratch, same recipe",
        "searched_test_accuracy": stats("searched_test_accuracy"),
        "baseline_test_accuracy": stats("baseline_test_accuracy"),
        "search_seconds": [searches[s]["seconds"] for s in search_seeds],
        "rows": rows,
    }
    result["total_seconds"] = time.perf_counter() - t_all
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
