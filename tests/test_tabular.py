"""Tabular benchmark mode: NB201 CIFAR-10 accuracy × HW-NAS-Bench Pixel 3 latency (from ../shared)."""

from __future__ import annotations

import random

import pytest

from hwnas.errors import SpecError, TableError
from hwnas.search.base import get_searcher
from hwnas.search.tabular import NB201Benchmark, NB201Space, TabularEvaluator


@pytest.fixture(scope="module")
def bench(shared_data):
    return NB201Benchmark(shared_data)


def test_space_round_trip():
    space = NB201Space()
    assert space.size == 15625 and len(space.decisions) == 6
    rng = random.Random(0)
    for _ in range(100):
        c = space.sample(rng)
        assert space.encode(space.decode(c)) == c
    assert space.decode((1, 3, 0, 1, 2, 3)) == ("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|"
                                                "nor_conv_1x1~1|nor_conv_3x3~2|")
    with pytest.raises(SpecError):
        space.encode("|conv~0|")


def test_join_and_reference(bench):
    assert len(bench.joined) == 8689  # every accuracy entry has a latency; only these count
    assert bench.unmatched_accuracy == 0
    limit = bench.median_latency()
    assert limit == pytest.approx(13.4143, abs=1e-4)
    choices, rec = bench.best_under(limit)
    assert (rec.nb201_idx, round(rec.accuracy, 5), rec.latency_ms) == (6330, 94.00667, 11.5124)
    assert bench.best_under(None)[1].accuracy == pytest.approx(94.37333, abs=1e-5)  # NB201's best
    with pytest.raises(TableError, match="joined range"):
        bench.best_under(1.0)
    with pytest.raises(TableError, match="no latency column"):
        NB201Benchmark(bench.data_dir, device="pixel9")


def test_members_outside_join_are_infeasible(bench):
    ev = TabularEvaluator(bench)
    absent = next(c for c, r in bench._by_choices.items() if not r.in_join)
    e = ev.evaluate(absent)
    assert e.accuracy is None and e.latency_ms > 0  # latency known, accuracy not
    searcher = get_searcher("random", seed=0)
    assert searcher.make_reward(20.0)(e) == 0.0
    e2 = ev.evaluate(bench.best_under(None)[0])
    assert e2.accuracy == pytest.approx(0.9437333, abs=1e-6)


@pytest.mark.parametrize("method", ["mnasnet", "evolution", "random"])
def test_searchers_on_tabular_task(bench, method):
    limit = bench.median_latency()
    searcher = get_searcher(method, seed=0)
    res = searcher.search(bench.space, TabularEvaluator(bench), searcher.make_reward(limit), 200, limit_ms=limit)
    assert res.extra["queries"] == 200
    assert res.extra["within_limit"] and res.extra["best_latency_ms"] <= limit
    assert res.extra["best_accuracy"] >= 0.93  # gap <= ~1 point of the 94.0 optimum
    assert res.best_arch == bench.query(res.best_choices).arch_str
