"""Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search", §2 and Algorithm 1).

* Population of ``population`` members, initialised with uniform members (under the latency limit).
* Each cycle: draw ``sample_size`` members of the population uniformly *with* replacement
  (tournament), the one with the highest fitness is the parent; the child is the parent with one
  decision changed to a different option (the paper's mutation alters one element); the child is
  evaluated and joins the population, and the *oldest* member is removed (age-based removal, the
  "regularization"), not the worst.
* Fitness is the searcher's reward (MnasNet's ``ACC × (LAT/T)^w``; with the hard setting and the
  latency-constrained mutation it is the accuracy of members within the limit).
* ``batch`` children are proposed per round and evaluated together (in worker processes with
  ``workers > 1``), like the paper's asynchronous workers.

Defaults (``population=20, sample_size=5``) were chosen once on the tabular NB201 × Pixel-3 task at
200 queries (``benchmarks/search_quality.py``), not per seed; Real et al. used P=100, S=25 with
20k models.
"""

from __future__ import annotations

from collections import deque

from hwnas.search.base import Evaluated, register_searcher
from hwnas.search.evaluator import SampleSearcher, Strategy


class EvolutionStrategy(Strategy):
    """Aging evolution: tournament selection, one-decision mutation, oldest removed."""

    def __init__(self, space, sampler, rng, population: int = 20, sample_size: int = 5, **options):
        super().__init__(space, sampler, rng, **options)
        self.population_size = int(population)
        self.sample_size = max(1, int(sample_size))
        self.population: deque[tuple[tuple[int, ...], float]] = deque()
        self.proposed = 0  # members proposed for the initial population

    def ask(self, n: int):
        out = []
        for _ in range(n):
            if self.proposed < self.population_size:
                out.append(self.sampler.sample(self.rng))
                self.proposed += 1
            elif not self.population:
                # initial members still being evaluated in this batch: sample more
                out.append(self.sampler.sample(self.rng))
            else:
                members = list(self.population)
                tournament = [members[self.rng.randrange(len(members))] for _ in range(self.sample_size)]
                parent = max(tournament, key=lambda m: m[1])[0]
                out.append(self.sampler.mutate(parent, self.rng))
        return out

    def tell(self, results: list[tuple[Evaluated, float]]) -> None:
        for e, r in results:
            self.population.append((tuple(e.choices), float(r)))
            while len(self.population) > self.population_size:
                self.population.popleft()  # age-based removal: the oldest goes

    def state_dict(self):
        return {"population": [(list(c), r) for c, r in self.population], "proposed": self.proposed}

    def load_state_dict(self, state):
        self.population = deque((tuple(c), float(r)) for c, r in state["population"])
        self.proposed = int(state["proposed"])

    def summary(self):
        return {"population": self.population_size, "sample_size": self.sample_size}


@register_searcher("evolution")
class EvolutionSearcher(SampleSearcher):
    """``hwnas search --method evolution``: regularized evolution over the space's decisions.

    Options: ``population`` (20), ``sample_size`` (5), plus :class:`SampleSearcher`'s.
    """

    default_batch = 4
    strategy_cls = EvolutionStrategy


__all__ = ["EvolutionSearcher", "EvolutionStrategy"]
