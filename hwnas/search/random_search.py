"""Random search: uniform members (under the latency limit), the baseline every searcher must beat.

Same evaluator, budget accounting and logging as RL and evolution (:class:`~hwnas.search.evaluator.
SampleSearcher`). With a latency limit, members are drawn by bounded rejection sampling
(:class:`~hwnas.search.sampling.ConstrainedSampler`): an impossible limit stops with the
achievable range instead of looping.
"""

from __future__ import annotations

from hwnas.search.base import register_searcher
from hwnas.search.evaluator import SampleSearcher, Strategy


class RandomStrategy(Strategy):
    """Propose independent uniform members (constrained when the sampler has a limit)."""

    def ask(self, n: int):
        return [self.sampler.sample(self.rng) for _ in range(n)]


@register_searcher("random")
class RandomSearcher(SampleSearcher):
    """``hwnas search --method random``: ``budget.samples`` uniform members; the best within the limit wins."""

    default_batch = 8
    strategy_cls = RandomStrategy


__all__ = ["RandomSearcher", "RandomStrategy"]
