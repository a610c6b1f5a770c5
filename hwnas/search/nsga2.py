"""NSGA-II multi-objective search (Deb et al. 2002, "A Fast and Elitist Multiobjective Genetic
Algorithm: NSGA-II"; applied to NAS as NSGA-Net, Lu et al. 2019, §3) with :mod:`pymoo`.

Objectives (all minimised inside pymoo): ``1 − accuracy`` and each cost named by the ``objective``
option (``latency`` by default; any of ``latency,energy,params,macs``, see
:data:`hwnas.search.pareto.METRICS`). A member is a vector of option indices, one per decision of
the space; pymoo's integer set-up does the genetics (uniform integer sampling, simulated binary
crossover and polynomial mutation rounded to integers — pymoo's documented recipe for discrete
variables, with duplicate elimination), its non-dominated sorting and crowding distance do the
selection (Deb et al. 2002, §III). Evaluation, budget accounting, caching of repeats, logging and
resume are :class:`~hwnas.search.evaluator.SampleSearcher`'s, so NSGA-II costs the same per
evaluation as regularized evolution and random search.

What a run returns beyond the shared result:

* ``front.yaml`` — every non-dominated member over accuracy and the chosen costs (architecture,
  choices, accuracy, latency ms, energy mJ, params, MACs);
* ``plots/front.png`` (accuracy vs the first cost, the front drawn) and ``plots/hypervolume.png``;
* ``history.jsonl`` — besides one ``"kind": "eval"`` line per evaluation, one ``"kind":
  "generation"`` line per generation with the hypervolume of the front of everything evaluated so
  far. The hypervolume (Zitzler & Thiele 1998) is computed by pymoo in a normalised space:
  ``1 − accuracy`` and each cost divided by 1.1 × its largest value in the first generation, with
  reference point 1 in every objective (points beyond it add nothing).

The chosen architecture (``arch.yaml``) is, as for the other sample-based methods, the member with
the best MnasNet reward within the latency budget; NSGA-II itself ignores the budget (it returns the
whole front). Deviation from NSGA-Net: no Bayesian-network exploitation phase, and the variables
are the space's decisions rather than NSGA-Net's bit-string encoding.

Options: ``population`` (20: members per generation), ``eta_crossover`` (3.0), ``eta_mutation``
(3.0), plus :class:`SampleSearcher`'s (``seed``, ``objective``, ``workers`` …).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import ConfigError
from hwnas.search.base import Evaluated, SearchResult, register_searcher
from hwnas.search.evaluator import SampleSearcher, Strategy
from hwnas.search.pareto import pareto_front as _front_indices
from hwnas.search.pareto import resolve_metrics


def _pymoo():
    try:
        import pymoo  # noqa: F401
    except ImportError:
        raise ConfigError("--method nsga2 needs pymoo: pip install 'hwnas[search]'") from None


def objective_vector(e: Evaluated, costs: list[str]) -> list[float]:
    """``[1 − accuracy, cost_1, …]`` of an evaluated member (``inf`` where a value is missing)."""
    acc = e.accuracy
    out = [1.0 - float(acc) if acc is not None else float("inf")]
    for key in costs:
        value = getattr(e, key)
        out.append(float(value) if value is not None else float("inf"))
    return out


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of the (minimised) ``points`` against ``ref`` (pymoo's exact indicator); 0 when
    no point dominates ``ref``."""
    from pymoo.indicators.hv import HV

    pts = points[np.all(np.isfinite(points), axis=1) & np.all(points < ref, axis=1)]
    return float(HV(ref_point=ref)(pts)) if len(pts) else 0.0


class NSGA2Strategy(Strategy):
    """pymoo's NSGA-II driven through its ask/tell interface (one pymoo generation per ``ask``)."""

    def __init__(self, space, sampler, rng, population: int = 20, eta_crossover: float = 3.0,
                 eta_mutation: float = 3.0, costs: str = "latency", **options: Any):
        super().__init__(space, sampler, rng, **options)
        _pymoo()
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling

        self.population_size = int(population)
        if self.population_size < 2:
            raise ConfigError(f"nsga2: population must be at least 2, got {population}")
        self.costs = [key for key, _ in resolve_metrics(costs) if key != "accuracy"]
        if not self.costs:
            raise ConfigError("nsga2: the objective needs at least one cost (latency, energy, params or macs)")
        n = len(space.decisions)
        self.problem = Problem(n_var=n, n_obj=1 + len(self.costs), xl=np.zeros(n),
                               xu=np.array([len(d.options) - 1 for d in space.decisions], dtype=float), vtype=int)
        self.algorithm = NSGA2(pop_size=self.population_size, sampling=IntegerRandomSampling(),
                               crossover=SBX(prob=1.0, eta=float(eta_crossover), vtype=float, repair=RoundingRepair()),
                               mutation=PM(prob=1.0, eta=float(eta_mutation), vtype=float, repair=RoundingRepair()),
                               eliminate_duplicates=True)
        # pymoo's own RNG, seeded from ours: a resumed run (pickled algorithm) continues identically
        self.algorithm.setup(self.problem, termination=("n_gen", 10 ** 9), seed=rng.randrange(2 ** 31))
        self.pending = None          # the generation being evaluated (pymoo Population)
        self.pending_f: list[list[float]] = []
        self.generation = 0
        self.archive: list[list[float]] = []   # objective vectors of every evaluated member
        self.scale: list[float] | None = None  # cost normalisers, fixed after the first generation
        self.records: list[dict[str, Any]] = []
        self.hv_history: list[float] = []

    def ask(self, n: int):
        if self.pending is None:
            self.pending = self.algorithm.ask()
            self.pending_f = []
        xs = self.pending.get("X")[len(self.pending_f):len(self.pending_f) + n]
        return [tuple(int(v) for v in x) for x in xs]

    def tell(self, results: list[tuple[Evaluated, float]]) -> None:
        for e, _ in results:
            f = objective_vector(e, self.costs)
            self.pending_f.append(f)
            self.archive.append(f)
        if self.pending is not None and len(self.pending_f) >= len(self.pending):
            self._finish_generation()

    def _finish_generation(self) -> None:
        from pymoo.core.evaluator import Evaluator as PymooEvaluator
        from pymoo.problems.static import StaticProblem

        pop = self.pending[:len(self.pending_f)]
        F = np.array(self.pending_f, dtype=float)
        F[~np.isfinite(F)] = 1e12  # unmeasured members rank last instead of breaking the sort
        PymooEvaluator().eval(StaticProblem(self.problem, F=F), pop)
        self.algorithm.tell(infills=pop)
        self.pending, self.pending_f = None, []
        self.generation += 1
        arch = np.array(self.archive, dtype=float)
        if self.scale is None:
            finite = np.where(np.isfinite(arch[:, 1:]), arch[:, 1:], np.nan)
            self.scale = [1.1 * float(np.nanmax(col)) if np.isfinite(np.nanmax(col)) and np.nanmax(col) > 0 else 1.0
                          for col in finite.T]
        norm = arch / np.array([1.0] + self.scale)
        hv = hypervolume(norm, np.ones(norm.shape[1]))
        front = _front_indices([dict(zip(["err"] + self.costs, row)) for row in arch],
                               [("err", -1)] + [(c, -1) for c in self.costs])
        self.hv_history.append(hv)
        self.records.append({"kind": "generation", "method": "nsga2", "generation": self.generation,
                             "evaluated": len(self.archive), "hypervolume": hv, "front_size": len(front),
                             "objectives": ["1-accuracy"] + self.costs})

    def drain_records(self) -> list[dict[str, Any]]:
        out, self.records = self.records, []
        return out

    def state_dict(self):
        return {"algorithm": pickle.dumps(self.algorithm), "pending": pickle.dumps(self.pending),
                "pending_f": self.pending_f, "generation": self.generation, "archive": self.archive,
                "scale": self.scale, "hv_history": self.hv_history, "records": self.records}

    def load_state_dict(self, state):
        self.algorithm = pickle.loads(state["algorithm"])  # noqa: S301 - our own checkpoint
        self.pending = pickle.loads(state["pending"])  # noqa: S301
        self.pending_f = [list(f) for f in state["pending_f"]]
        self.generation = int(state["generation"])
        self.archive = [list(f) for f in state["archive"]]
        self.scale = state["scale"]
        self.hv_history = list(state["hv_history"])
        self.records = list(state["records"])

    def summary(self):
        return {"population": self.population_size, "generations": self.generation, "costs": self.costs,
                "hypervolume": self.hv_history[-1] if self.hv_history else None}


@register_searcher("nsga2")
class NSGA2Searcher(SampleSearcher):
    """``hwnas search --method nsga2``: NSGA-II over accuracy and the ``--objective`` costs.

    Returns the whole Pareto front (``result.pareto``, ``front.yaml``); see the module docstring.
    """

    default_batch = 20
    strategy_cls = NSGA2Strategy

    def __init__(self, **options: Any):
        super().__init__(**options)
        _pymoo()

    def search(self, space, evaluator, reward, samples, *, limit_ms=None, run=None, max_seconds=None,
               plot=True) -> SearchResult:
        self.options.setdefault("batch", int(self.options.get("population", 20)))
        self.options["costs"] = str(self.options.get("objective", "latency"))
        result = super().search(space, evaluator, reward, samples, limit_ms=limit_ms, run=run,
                                 max_seconds=max_seconds, plot=plot)
        metrics = [("accuracy", +1)] + [(k, -1) for k in result.extra["costs"]]
        points = [e.to_dict() for e in result.history]
        seen, front = set(), []
        for i in _front_indices(points, metrics):
            if result.history[i].choices not in seen:
                seen.add(result.history[i].choices)
                front.append(result.history[i])
        result.pareto = sorted(front, key=lambda e: getattr(e, result.extra["costs"][0]))
        result.extra["front_size"] = len(result.pareto)
        if run is not None and getattr(run, "writes", True):  # under torchrun rank 0 alone writes
            self._write_front(run, result, limit_ms)
        return result

    def _write_front(self, run, result: SearchResult, limit_ms: float | None) -> None:
        from hwnas.io import atomic_write_yaml
        from hwnas.search.pareto import plot_front

        costs = result.extra["costs"]
        atomic_write_yaml(Path(run.root) / "front.yaml", {
            "method": "nsga2", "objectives": ["accuracy (max)"] + [f"{c} (min)" for c in costs],
            "hypervolume": result.extra.get("hypervolume"),
            "members": [{"arch": e.arch_compact, "choices": list(e.choices), "accuracy": e.accuracy,
                         "latency_ms": e.latency_ms, "energy_mj": e.energy_mj, "params": e.params,
                         "macs": e.macs} for e in result.pareto]})
        history = [e.to_dict() for e in result.history]
        plots = result.extra.setdefault("plots", [])
        x = {"latency_ms": "latency", "energy_mj": "energy"}.get(costs[0], costs[0])
        plots.append(str(plot_front(history, run.plots / "front.png", x=x, limit=limit_ms if x == "latency" else None,
                                    title=f"nsga2: Pareto front ({len(result.pareto)} members)")))
        hv = [r["hypervolume"] for r in run.read_history() if r.get("kind") == "generation"]
        if hv:
            plots.append(str(_plot_hypervolume(hv, run.plots / "hypervolume.png")))


def _plot_hypervolume(hv: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    ax.plot(range(1, len(hv) + 1), hv, "-o", ms=3)
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title("nsga2: hypervolume of the front")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


__all__ = ["NSGA2Searcher", "NSGA2Strategy", "hypervolume", "objective_vector"]
