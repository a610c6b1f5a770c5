"""Search quality on the tabular NB201 × Pixel-3 task: RL (MnasNet), regularized evolution, random, NSGA-II.

Task: NAS-Bench-201 CIFAR-10 accuracy joined with HW-NAS-Bench Pixel 3 latency (only the 8,689
members in both tables count; the others are infeasible — see :mod:`hwnas.search.tabular`).
Latency limit: the median Pixel-3 latency of the joined members. Each method gets ``--queries``
evaluations (repeats count) per seed, for ``--seeds`` seeds; its result is the most accurate member
it evaluated within the limit (MnasNet's hard reward, α = 0, β = −1, so that is also the highest
reward). Figures (accuracy points): mean and worst gap to the best member under the limit, the
share of seeds that find it, and the mean number of distinct members evaluated.

Multi-objective figure: the hypervolume of everything a method evaluated (its accuracy–latency
front), computed exactly by pymoo in a normalised space: ``1 − accuracy`` and latency each scaled
so that the ideal point of the table's true front is 0 and its nadir point 1, reference point
``(1.1, 1.1)`` (the usual choice: a little beyond the true front's nadir); ``optimal_hypervolume``
is that of the whole joined table (the ceiling). Every method gets the same number of evaluations. NSGA-II searches the
whole front (it ignores the limit); the single-objective methods search under the limit, so their
hypervolume shows how much of the trade-off a constrained search leaves unexplored.

Hyper-parameters are each searcher's defaults, chosen once on seeds 100..129 (not the reported
seeds 0..9); see docs/search-rl.md.

Usage: ``python benchmarks/search_quality.py [--queries 200] [--seeds 10] [--first-seed 0]
[--data-dir ../shared/data] [--methods mnasnet,evolution,random,nsga2] [--count-repeats]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

HV_REFERENCE = 1.1  # per normalised objective: 10 % beyond the true front's nadir point


def run(queries: int = 200, seeds: int = 10, first_seed: int = 0, data_dir: str | None = None,
        methods: str = "mnasnet,evolution,random,nsga2", options: dict | None = None, count_repeats: bool = False) -> dict:
    from hwnas.search.base import get_searcher
    from hwnas.search.tabular import NB201Benchmark, TabularEvaluator

    bench = NB201Benchmark(data_dir)
    limit = bench.median_latency()
    best_c, best_rec = bench.best_under(limit)
    # hypervolume space: each objective scaled by the ideal and nadir points of the table's true front
    import numpy as np

    from hwnas.search.nsga2 import hypervolume

    table = np.array([[1.0 - r.accuracy / 100.0, r.latency_ms] for _, r in bench.joined])
    true_front = table[[not np.any(np.all(table <= p, axis=1) & np.any(table < p, axis=1)) for p in table]]
    ideal, nadir = true_front.min(axis=0), true_front.max(axis=0)
    ref = np.full(2, HV_REFERENCE)

    def hv(evaluated) -> float:
        pts = np.array([[1.0 - e.accuracy, e.latency_ms] for e in evaluated if e.accuracy is not None])
        return hypervolume((pts - ideal) / (nadir - ideal), ref) if len(pts) else 0.0

    out = {"task": "nb201-cifar10 x hw-nas-bench pixel3", **bench.summary(), "limit_ms": limit,
           "best_under_limit": {"arch": best_rec.arch_str, "nb201_idx": best_rec.nb201_idx,
                                "accuracy": best_rec.accuracy, "latency_ms": best_rec.latency_ms},
           "optimal_hypervolume": hv([TabularEvaluator(bench).evaluate(c) for c, _ in bench.joined]),
           "true_front_size": int(len(true_front)), "hv_reference": HV_REFERENCE,
           "queries": queries, "seeds": list(range(first_seed, first_seed + seeds)),
           "accounting": "every proposal counts" if count_repeats else "distinct architectures (repeats free)",
           "methods": {}}
    for method in methods.split(","):
        gaps, hits, uniq, hvs, t0 = [], 0, [], [], time.time()
        for seed in range(first_seed, first_seed + seeds):
            searcher = get_searcher(method, seed=seed, count_repeats=count_repeats, **(options or {}).get(method, {}))
            evaluator = TabularEvaluator(bench)
            reward = searcher.make_reward(limit)
            res = searcher.search(bench.space, evaluator, reward, queries, limit_ms=limit)
            acc = res.extra["best_accuracy"] * 100 if res.extra["within_limit"] else float("nan")
            gap = best_rec.accuracy - acc if res.extra["within_limit"] else float("inf")
            gaps.append(gap)
            hits += int(abs(gap) < 1e-9)
            uniq.append(res.extra["unique_archs"])
            hvs.append(hv(res.history))
        out["methods"][method] = {
            "mean_gap": statistics.fmean(gaps), "worst_gap": max(gaps), "median_gap": statistics.median(gaps),
            "found_best_share": hits / seeds, "mean_unique_archs": statistics.fmean(uniq),
            "mean_hypervolume": statistics.fmean(hvs), "worst_hypervolume": min(hvs),
            "hypervolumes": [round(h, 5) for h in hvs],
            "gaps": [round(g, 4) for g in gaps], "seconds": round(time.time() - t0, 2)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", default="mnasnet,evolution,random,nsga2")
    p.add_argument("--options", default="{}", help='JSON, e.g. {"mnasnet": {"controller_lr": 0.05}}')
    p.add_argument("--count-repeats", action="store_true", help="count every proposal, repeats included")
    a = p.parse_args(argv)
    print(json.dumps(run(a.queries, a.seeds, a.first_seed, a.data_dir, a.methods, json.loads(a.options),
                         a.count_repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
