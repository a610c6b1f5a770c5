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
  searched architecture vs two baselines at the searched net's predicted latency:

  - MobileNetV2 with its width multiplier scaled (bisection) to that latency;
  - ``--random`` (default 5) random members of the same space within ``--band`` (default ±5 %) of
    that latency (:func:`random_at_latency`: uniform rejection sampling with a cap, then, if the cap
    is hit, a Metropolis random walk that is uniform over the band; which one ran, and its
    acceptance counts, are in the JSON) — the random-search baseline of Li & Talwalkar 2019 and
    Yu et al. 2020 ("Evaluating the search phase of NAS"), constrained to equal latency;

  all trained from scratch with the same epochs, learning rate and data for each seed; test accuracy
  per seed, mean ± std, the random archs' median per seed, and a plain ``verdict`` (the searched
  net beats random only if it beats the random median in every seed and on average by more than
  twice the standard error of the paired differences).

The search uses the CLI's defaults for the method (for ``proxyless`` the default objective
:data:`hwnas.search.pipeline.PROXYLESS_DEFAULT_OBJECTIVE`; 2 warm-up epochs).
``--quick``: one search (seed 0, 4 epochs) and 3 training seeds of 4 epochs each; otherwise one
search per seed with the CLI defaults (6 epochs) and 3 × 10 training epochs.

Usage: ``python benchmarks/search_vs_baseline.py --quick [--target pixel] [--width 0.5] [--random 5]``
"""

from __future__ import annotations

import argparse
import json
import os
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


def random_at_latency(space, table, target_ms: float, n: int, seed: int, band: float = 0.05,
                      max_rejections: int = 20000, walk_steps: int = 3000) -> tuple[list[tuple[int, ...]], dict]:
    """``n`` random members of ``space`` whose table latency is within ``±band`` of ``target_ms``.

    First uniform rejection sampling (:class:`hwnas.search.sampling.ConstrainedSampler` on the
    relative latency error, ``max_rejections`` draws per member). When the band is too rare for that
    (a searched net far below the space's typical latency: uniform members of the ProxylessNAS space
    are rarely faster than its median), a Metropolis random walk over the band: start from a uniform
    member, move it into the band by greedy one-decision changes, then ``walk_steps`` proposals of
    one uniformly changed decision (:func:`hwnas.search.sampling.mutate_one`, a symmetric proposal),
    each accepted iff it stays in the band — a chain whose stationary distribution is uniform over
    the band's members. Returns the members and how they were drawn.
    """
    import random

    from hwnas.errors import SearchError
    from hwnas.search.sampling import ConstrainedSampler, mutate_one

    rng = random.Random(seed)

    def err(c) -> float:
        return abs(table.latency(c) - target_ms) / target_ms

    sampler = ConstrainedSampler(space, err, band, max_rejections=max_rejections, what="relative latency error",
                                 unit="")
    out: list[tuple[int, ...]] = []
    how = {"band": band, "target_ms": target_ms, "method": "rejection", "max_rejections": max_rejections}
    try:
        while len(out) < n:
            out.append(sampler.sample(rng))
        how["rejections"] = sampler.rejections
        return out, how
    except SearchError:
        how.update(method="metropolis", rejection_found=len(out), rejections=sampler.rejections,
                   walk_steps=walk_steps)
    accepted = proposed = 0
    while len(out) < n:
        c = space.sample(rng)
        for _ in range(100000):  # greedy descent into the band
            if err(c) <= band:
                break
            c = min((mutate_one(space, c, rng) for _ in range(20)), key=err)
        for _ in range(walk_steps):
            nxt = mutate_one(space, c, rng)
            proposed += 1
            if err(nxt) <= band:
                c, accepted = nxt, accepted + 1
        out.append(tuple(c))
    how.update(walk_acceptance=round(accepted / max(1, proposed), 3))
    return out, how


def verdict(searched: list[float], other: list[float], what: str = "random", test_images: int | None = None) -> dict:
    """Paired comparison of the searched net's accuracy with a baseline's per seed (``other``: the random
    archs' median, or MobileNetV2's), and a plain verdict.

    The standard error of the mean difference is the larger of the spread over seeds (paired,
    ``std/√k``) and, when ``test_images`` is given, the binomial error of two accuracies measured on
    that many test images (``√(p_a(1−p_a)/n + p_b(1−p_b)/n)/√k``): with 2–3 seeds the spread alone
    can be tiny by chance. "Beats" needs a win in every seed and a mean difference above 2 SE.
    """
    k = len(searched)
    diffs = [a - b for a, b in zip(searched, other)]
    mean = statistics.mean(diffs)
    se_seeds = statistics.stdev(diffs) / k ** 0.5 if k > 1 else float("inf")
    se_test = None
    if test_images:
        pa, pb = statistics.mean(searched), statistics.mean(other)
        se_test = ((pa * (1 - pa) + pb * (1 - pb)) / test_images) ** 0.5 / k ** 0.5
    se = max(se_seeds, se_test or 0.0)
    ref = "the random median" if what == "random" else what
    wins = sum(d > 0 for d in diffs)
    if wins == k and mean > 2 * se:
        text = f"the search beats {what}: above {ref} in every seed, by more than 2 standard errors"
    elif mean < 0 and wins == 0:
        text = f"the search does NOT beat {what}: below {ref} in every seed, mean difference {mean:+.4f}"
    else:
        text = (f"the search does NOT beat {what}: above {ref} in {wins} of {k} seeds, "
                f"mean difference {mean:+.4f} (standard error {se:.4f}) — within noise")
    return {"differences": diffs, "mean_difference": mean, "standard_error": se, "standard_error_seeds": se_seeds,
            "standard_error_test_set": se_test, "test_images": test_images, "seeds_won": wins, "text": text}


def compare(rows: list[dict], test_images: int | None = None, **extra) -> dict:
    """The ``comparison`` object from per-seed rows: mean ± std per net, the random medians, the verdicts."""

    def stats(key):
        vals = [r[key] for r in rows]
        return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "values": vals}

    all_random = [r["test_accuracy"] for row in rows for r in row["random"]]
    searched = [r["searched_test_accuracy"] for r in rows]
    return {
        "training": "all from scratch, same recipe", **{k: v for k, v in extra.items() if k != "search_seconds"},
        "seeds": [r["seed"] for r in rows],
        "searched_test_accuracy": stats("searched_test_accuracy"),
        "baseline_test_accuracy": stats("baseline_test_accuracy"),
        "random_median_test_accuracy": stats("random_median_test_accuracy"),
        "random_all_test_accuracy": {"median": statistics.median(all_random), "mean": statistics.mean(all_random),
                                     "std": statistics.stdev(all_random) if len(all_random) > 1 else 0.0,
                                     "min": min(all_random), "max": max(all_random), "n": len(all_random)},
        "vs_random": verdict(searched, [r["random_median_test_accuracy"] for r in rows], test_images=test_images),
        "vs_mobilenetv2": verdict(searched, [r["baseline_test_accuracy"] for r in rows], what="MobileNetV2",
                                  test_images=test_images),
        "search_seconds": extra.get("search_seconds"),
        "rows": rows,
    }


def merge(paths: list[str]) -> None:
    """Print one result from the JSON outputs of runs over disjoint seeds (same settings)."""
    runs = [json.load(open(p)) for p in paths]
    rows = sorted((r for run in runs for r in run["comparison"]["rows"]), key=lambda r: r["seed"])
    first = runs[0]
    c0 = first["comparison"]
    out = {k: v for k, v in first.items() if k not in ("comparison", "total_seconds", "command", "loadavg_start",
                                                         "loadavg_end", "step_times")}
    out["merged_from"] = [{"file": p, "command": r.get("command"), "loadavg_start": r.get("loadavg_start"),
                           "loadavg_end": r.get("loadavg_end"), "total_seconds": r.get("total_seconds")}
                          for p, r in zip(paths, runs)]
    n_test = first.get("test_images")
    if n_test is None:  # outputs written before test_images was recorded
        from hwnas.search.data import load_data

        n_test = len(load_data(first["data"].split(":")[0], resolution=first["resolution"], seed=0).test.y)
    out["test_images"] = n_test
    out["comparison"] = compare(rows, test_images=n_test, train_epochs=c0["train_epochs"], search_epochs=c0["search_epochs"],
                                search_seconds=[s for r in runs for s in r["comparison"]["search_seconds"]],
                                search_convergence=[c for r in runs for c in r["comparison"]["search_convergence"]])
    print(json.dumps(out, indent=2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--target", default="pixel")
    p.add_argument("--method", default="proxyless")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds FIRST..FIRST+SEEDS-1 (to run seeds as separate processes, then --merge)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="combine the outputs of runs over different seeds into one comparison (no training)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--random", type=int, default=5, help="random architectures per seed at the searched latency")
    p.add_argument("--band", type=float, default=0.05, help="relative latency band of the random architectures")
    p.add_argument("--no-steps", action="store_true", help="skip the step-time measurement")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge)

    import torch

    torch.set_num_threads(args.threads)
    from hwnas.latency.predict import layer_latency_table, latency_bounds, load_predictor
    from hwnas.nn import build_model, count
    from hwnas.search.base import Budget, RunDir, get_searcher
    from hwnas.search.data import load_data
    from hwnas.search.objective import Objective, log_unit
    from hwnas.search.pipeline import PROXYLESS_DEFAULT_OBJECTIVE, make_space, reference_latency
    from hwnas.search.train import evaluate, train_model, zero_init_residual
    from hwnas.zoo import zoo_arch

    t_all = time.perf_counter()
    load0 = [round(v, 2) for v in os.getloadavg()]
    data = load_data(args.data, resolution=args.resolution, seed=0)
    space = make_space("mobilenetv2", resolution=args.resolution, num_classes=data.num_classes,
                       in_channels=data.in_channels, width=args.width)
    result: dict = {"target": args.target, "method": args.method, "space": space.name, "width": args.width,
                    "resolution": args.resolution, "data": data.describe(), "threads": args.threads,
                    "quick": args.quick, "loadavg_start": load0,
                    "command": "python benchmarks/search_vs_baseline.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if not args.no_steps:
        result["step_times"] = step_times(space, data)

    pred = load_predictor(args.target)
    table = layer_latency_table(pred, space)
    lo, hi = latency_bounds(pred, space)
    budget_ms = min(max(reference_latency(pred, space, data), lo), hi)
    result["latency_budget_ms"] = budget_ms
    result["latency_budget_source"] = f"MobileNetV2 x{args.width:g} at {args.resolution}px"
    search_epochs, train_epochs = (4, 4) if args.quick else (6, 10)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    search_seeds = [seeds[0]] if args.quick else seeds
    searches = {}
    for s in search_seeds:
        obj_kwargs = dict(PROXYLESS_DEFAULT_OBJECTIVE) if args.method == "proxyless" else {}  # the CLI's default
        obj = Objective(args.method, latency_budget_ms=budget_ms, unit_ms=log_unit(lo), predictor=pred, table=table,
                        latency_range_ms=(lo, hi), **obj_kwargs)
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            res = get_searcher(args.method, seed=s).run(space, obj, data, Budget(epochs=search_epochs,
                                                        warmup_epochs=min(2, search_epochs - 1)), RunDir(tmp))
        conv = res.extra.get("convergence") or {}
        searches[s] = {"arch": res.best_arch, "seconds": time.perf_counter() - t,
                       "latency_ms": pred.predict(res.best_arch).latency_ms,
                       "convergence": {k: v for k, v in conv.items() if not k.endswith("_per_layer")}}

    rows = []
    for s in seeds:
        srch = searches[s if s in searches else search_seeds[0]]
        arch = srch["arch"]
        w, base_lat = width_for_latency(pred, args.resolution, data.num_classes, data.in_channels, srch["latency_ms"])
        base = zoo_arch("mobilenetv2").with_width(w).with_resolution(args.resolution).with_classes(
            data.num_classes, data.in_channels)
        members, how = random_at_latency(space, table, srch["latency_ms"], args.random, seed=1000 + s, band=args.band)
        nets = [("searched", arch), ("mobilenetv2", base)] + [(f"random{k}", space.decode(c))
                                                               for k, c in enumerate(members)]
        accs = {}
        for name, a in nets:
            torch.manual_seed(100 + s)
            model = zero_init_residual(build_model(a, train=True, seed=100 + s))
            train_model(model, data, epochs=train_epochs, lr=0.05, seed=100 + s)
            accs[name] = evaluate(model, data.batches("test", 256))[0]
        rand = [{"arch": space.decode(c).to_compact(), "latency_ms": pred.predict(space.decode(c)).latency_ms,
                 "params": count(space.decode(c)).params, "macs": count(space.decode(c)).macs,
                 "test_accuracy": accs[f"random{k}"]} for k, c in enumerate(members)]
        rows.append({"seed": s, "searched_arch": arch.to_compact(), "searched_latency_ms": srch["latency_ms"],
                     "searched_params": count(arch).params, "searched_macs": count(arch).macs,
                     "searched_test_accuracy": accs["searched"], "baseline_width": w,
                     "baseline_latency_ms": base_lat, "baseline_params": count(base).params,
                     "baseline_macs": count(base).macs, "baseline_test_accuracy": accs["mobilenetv2"],
                     "random": rand, "random_sampling": how,
                     "random_median_test_accuracy": statistics.median(r["test_accuracy"] for r in rand),
                     "search_seconds": srch["seconds"] if s in searches else None})
        print(json.dumps(rows[-1]), file=sys.stderr)

    result["test_images"] = len(data.test.y)
    result["comparison"] = compare(rows, test_images=len(data.test.y), train_epochs=train_epochs, search_epochs=search_epochs,
                                   search_seconds=[searches[s]["seconds"] for s in search_seeds],
                                   search_convergence=[searches[s]["convergence"] for s in search_seeds])
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["total_seconds"] = time.perf_counter() - t_all
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
