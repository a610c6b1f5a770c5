"""Hardware-aware architecture search.

* :mod:`hwnas.search.base` — results, budget, run folder, the searcher registry;
* :mod:`hwnas.search.data` — datasets (built-in ``mnist5k``, ``digits``; ``imagefolder:``,
  ``cifar10:``, ``npz:`` from disk) with seeded train/val/test splits;
* :mod:`hwnas.search.objective` — the papers' latency-aware losses and rewards;
* :mod:`hwnas.search.train` — supernet and child training loops, BN recalibration, evaluation;
* :mod:`hwnas.search.differentiable` — FBNet, ProxylessNAS and Single-Path NAS searchers;
* :mod:`hwnas.search.pipeline` — the whole job behind ``hwnas search``.
"""

from hwnas.search.base import (Budget, Evaluated, RunDir, SearchResult, Searcher, get_searcher, pareto_front,
                               register_searcher, searcher_names)

__all__ = ["Budget", "Evaluated", "RunDir", "SearchResult", "Searcher", "get_searcher", "pareto_front",
           "register_searcher", "searcher_names"]
