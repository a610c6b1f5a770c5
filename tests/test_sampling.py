"""Bounded constrained sampling: never loops forever; an impossible limit says why and what is achievable."""

from __future__ import annotations

import random
import time

import pytest

from hwnas.errors import SearchError
from hwnas.search.base import get_searcher
from hwnas.search.sampling import ConstrainedSampler
from hwnas.spaces import get_space


def _lat(c):
    return 1.0 + 0.1 * sum(c)


def test_feasible_limit_samples_within_it():
    space = get_space("fbnet")
    s = ConstrainedSampler(space, _lat, 9.0, max_rejections=2000)
    rng = random.Random(0)
    for _ in range(50):
        parent = s.sample(rng)
        assert _lat(parent) <= 9.0
        child = s.mutate(parent, rng)
        assert _lat(child) <= 9.0 and sum(a != b for a, b in zip(parent, child)) == 1
    assert s.rejections > 0


def test_impossible_limit_without_bounds_stops_after_n_rejections():
    space = get_space("fbnet")
    calls = []

    def cost(c):
        calls.append(c)
        return _lat(c)

    s = ConstrainedSampler(space, cost, 0.5, max_rejections=300)  # every member costs >= 1.0
    t0 = time.time()
    with pytest.raises(SearchError) as err:
        s.sample(random.Random(0))
    assert time.time() - t0 < 5
    assert len(calls) == 300
    msg = str(err.value)
    assert "after 300 rejected samples" in msg and "0.5 ms" in msg
    lo, hi = min(map(_lat, calls)), max(map(_lat, calls))
    assert f"{lo:.4g}" in msg and f"{hi:.4g}" in msg  # the range it saw


def test_impossible_limit_with_known_bounds_fails_at_once():
    space = get_space("fbnet")
    with pytest.raises(SearchError, match=r"below the space's minimum; achievable latency: 1–5\.2 ms"):
        ConstrainedSampler(space, _lat, 0.5, bounds=(1.0, 5.2))


@pytest.mark.parametrize("method", ["random", "evolution", "mnasnet"])
def test_each_searcher_stops_on_impossible_limit(method):
    from test_rl import ToyEvaluator

    space = get_space("fbnet")
    searcher = get_searcher(method, seed=0, max_rejections=200)
    with pytest.raises(SearchError, match="after 200 rejected samples"):
        searcher.search(space, ToyEvaluator(space), searcher.make_reward(0.5), 10, limit_ms=0.5, plot=False)
