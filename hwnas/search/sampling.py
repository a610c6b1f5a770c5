"""Bounded constrained sampling: draw members under a cost limit, never loop forever.

Once-for-all's evolution samples ``while True`` until an architecture meets the constraint; with an
impossible limit it hangs. :class:`ConstrainedSampler` gives up after ``max_rejections`` rejected
draws and raises :class:`~hwnas.errors.SearchError` naming the limit and the achievable range:
the exact range when ``bounds`` are known (the predictor's ``latency_bounds``, or a tabular
benchmark's min/max), otherwise the range it observed over its rejected draws.

A limit below the known minimum fails at once, before any draw.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from hwnas.errors import SearchError

Choices = tuple[int, ...]

#: Default number of rejected draws before a constrained sampler gives up.
DEFAULT_MAX_REJECTIONS = 10000


class ConstrainedSampler:
    """Uniform sampling and one-decision mutation of a space's members under ``cost(c) <= limit``.

    Args:
        space: anything with ``decisions`` (each with ``options``) and ``sample(rng)``.
        cost: member → cost (e.g. predicted latency in ms). Must be cheap: it is called per draw.
        limit: the upper limit on ``cost`` (``None``: no constraint, every draw is accepted).
        max_rejections: rejected draws per call before giving up (≥ 1).
        bounds: the achievable ``(min, max)`` cost over the space, when known (for the message and
            the immediate infeasibility check).
        what, unit: the cost's name and unit for messages (``"latency"``, ``"ms"``).

    Attributes:
        rejections: total rejected draws so far (all calls).
    """

    def __init__(self, space, cost: Callable[[Choices], float], limit: float | None, *,
                 max_rejections: int = DEFAULT_MAX_REJECTIONS, bounds: tuple[float, float] | None = None,
                 what: str = "latency", unit: str = "ms"):
        if max_rejections < 1:
            raise SearchError(f"max_rejections must be >= 1, got {max_rejections}")
        self.space = space
        self.cost = cost
        self.limit = None if limit is None else float(limit)
        self.max_rejections = int(max_rejections)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        self.what = what
        self.unit = unit
        self.rejections = 0
        if self.limit is not None and self.bounds is not None and self.limit < self.bounds[0]:
            raise SearchError(self._message(0, None))

    # ------------------------------------------------------------------ checks
    def feasible(self, choices: Sequence[int]) -> bool:
        """``cost(choices) <= limit`` (always true without a limit)."""
        return self.limit is None or self.cost(tuple(choices)) <= self.limit

    def _message(self, tried: int, observed: tuple[float, float] | None) -> str:
        if self.bounds is not None:
            rng = f"achievable {self.what}: {self.bounds[0]:.4g}–{self.bounds[1]:.4g} {self.unit}"
        elif observed is not None:
            rng = (f"{self.what} over the {tried} rejected draws: {observed[0]:.4g}–{observed[1]:.4g} {self.unit} "
                   "(exact bounds unknown)")
        else:
            rng = "achievable range unknown"
        if tried == 0:
            return f"{self.what} limit {self.limit:g} {self.unit} is below the space's minimum; {rng}"
        return (f"no member with {self.what} <= {self.limit:g} {self.unit} after {tried} rejected samples "
                f"(max_rejections={self.max_rejections}); {rng}")

    def _accept(self, draw: Callable[[], Choices]) -> Choices:
        lo, hi = float("inf"), float("-inf")
        for _ in range(self.max_rejections):
            choices = tuple(draw())
            if self.limit is None:
                return choices
            c = float(self.cost(choices))
            if c <= self.limit:
                return choices
            self.rejections += 1
            lo, hi = min(lo, c), max(hi, c)
        raise SearchError(self._message(self.max_rejections, (lo, hi)))

    # ------------------------------------------------------------------ draws
    def sample(self, rng: random.Random) -> Choices:
        """A uniform member under the limit.

        Raises:
            SearchError: ``max_rejections`` draws in a row were over the limit (message: limit and range).
        """
        return self._accept(lambda: self.space.sample(rng))

    def mutate(self, choices: Sequence[int], rng: random.Random) -> Choices:
        """``choices`` with one decision changed to a different option (Real et al. 2019, §2: the
        mutation alters one element), redrawn until under the limit.

        Raises:
            SearchError: as :meth:`sample`.
        """
        return self._accept(lambda: mutate_one(self.space, choices, rng))


def mutate_one(space, choices: Sequence[int], rng: random.Random) -> Choices:
    """Change one randomly chosen decision (with ≥ 2 options) to a different, uniformly drawn option."""
    choices = list(choices)
    decisions = [i for i, d in enumerate(space.decisions) if len(d.options) > 1]
    if not decisions:
        return tuple(choices)
    i = rng.choice(decisions)
    n = len(space.decisions[i].options)
    new = rng.randrange(n - 1)
    choices[i] = new if new < choices[i] else new + 1
    return tuple(choices)


__all__ = ["ConstrainedSampler", "mutate_one", "DEFAULT_MAX_REJECTIONS"]
