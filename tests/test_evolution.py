"""Regularized evolution (Real et al. 2019): one-decision mutation, tournament selection, aging."""

from __future__ import annotations

import random

from hwnas.search.base import Evaluated
from hwnas.search.evolution import EvolutionStrategy
from hwnas.search.sampling import ConstrainedSampler, mutate_one
from hwnas.spaces import get_space


def test_mutation_changes_exactly_one_decision():
    space = get_space("mobilenetv2")
    rng = random.Random(0)
    for _ in range(300):
        parent = space.sample(rng)
        child = mutate_one(space, parent, rng)
        space.check(child)
        assert sum(a != b for a, b in zip(parent, child)) == 1


def _ev(c, acc):
    return Evaluated(tuple(c), "x", acc, 1.0, None, 0, 0, 0)


def test_tournament_and_age_based_removal():
    space = get_space("fbnet")
    sampler = ConstrainedSampler(space, lambda c: 0.0, None)
    st = EvolutionStrategy(space, sampler, random.Random(0), population=4, sample_size=4)
    init = st.ask(4)
    assert len(set(init)) == 4
    st.tell([(_ev(c, r), r) for c, r in zip(init, [0.1, 0.9, 0.2, 0.3])])
    # with S = P = 4 the tournament (with replacement) usually holds the best; its child differs in one place
    children = st.ask(20)
    best = init[1]
    assert sum(sum(a != b for a, b in zip(best, ch)) == 1 for ch in children) >= 12
    # aging: a new member removes the OLDEST (reward 0.1 first, then the best 0.9), not the worst
    st.tell([(_ev(children[0], 0.05), 0.05)])
    assert [r for _, r in st.population] == [0.9, 0.2, 0.3, 0.05]
    st.tell([(_ev(children[1], 0.06), 0.06)])
    assert [r for _, r in st.population] == [0.2, 0.3, 0.05, 0.06]
    state = st.state_dict()
    st2 = EvolutionStrategy(space, sampler, random.Random(0), population=4, sample_size=4)
    st2.load_state_dict(state)
    assert list(st2.population) == list(st.population)
