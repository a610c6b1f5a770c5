"""NSGA-II (pymoo) searcher: the whole Pareto front, hypervolume per generation, resume, costs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from hwnas.errors import ConfigError
from hwnas.search.base import Evaluated, RunDir, get_searcher, searcher_names
from hwnas.search.evaluator import Evaluator
from hwnas.search.pareto import dominates
from hwnas.spaces import get_space

pytest.importorskip("pymoo")

from hwnas.search.nsga2 import hypervolume  # noqa: E402


class ToyEvaluator(Evaluator):
    """Deterministic stand-in for a trained evaluator with a real trade-off: accuracy grows with
    options that match a hidden pattern, latency and energy with the option indices."""

    cheap = True

    def __init__(self, space, kill_at: int | None = None):
        self.space, self.kill_at, self.calls = space, kill_at, 0

    def latency(self, choices):
        return 1.0 + 0.1 * sum(choices)

    def evaluate(self, choices, step=0):
        self.calls += 1
        if self.kill_at is not None and self.calls > self.kill_at:
            raise KeyboardInterrupt("simulated kill")
        acc = 0.3 + 0.6 * sum(min(c, 4) for c in choices) / (4 * len(choices))
        acc -= 0.1 * sum(1 for i, c in enumerate(choices) if c != (i % 5)) / len(choices)
        return Evaluated(tuple(choices), str(choices), acc, self.latency(choices), 2.0 + 0.05 * sum(choices[:5]),
                         10, 10, step)


def _hv(history, lat_max=10.0):
    pts = np.array([[1 - e.accuracy, e.latency_ms / lat_max] for e in history])
    return hypervolume(pts, np.ones(2))


def test_registered_and_needs_pymoo(monkeypatch):
    assert "nsga2" in searcher_names()
    monkeypatch.setitem(sys.modules, "pymoo", None)
    with pytest.raises(ConfigError, match=r"pip install 'hwnas\[search\]'"):
        get_searcher("nsga2")


def test_returns_the_whole_front_with_hypervolume_per_generation(tmp_path):
    space = get_space("fbnet")
    searcher = get_searcher("nsga2", seed=0, population=10)
    run = RunDir(tmp_path / "run")
    res = searcher.search(space, ToyEvaluator(space), searcher.make_reward(9.0), 60, limit_ms=9.0, run=run)
    assert res.extra["queries"] == 60 and res.extra["generations"] == 6
    # the front: non-dominated over (accuracy, latency) among everything evaluated, and complete
    vec = {e.choices: (e.accuracy, -e.latency_ms) for e in res.history}  # maximisation vectors
    front = {e.choices for e in res.pareto}
    for c in front:
        assert not any(dominates(v, vec[c]) for v in vec.values())
    for c, v in vec.items():
        if c not in front:
            assert any(dominates(vec[f], v) or vec[f] == v for f in front)
    saved = yaml.safe_load((tmp_path / "run" / "front.yaml").read_text())
    assert [m["choices"] for m in saved["members"]] == [list(e.choices) for e in res.pareto]
    gens = [r for r in run.read_history() if r.get("kind") == "generation"]
    assert [g["generation"] for g in gens] == list(range(1, 7))
    hv = [g["hypervolume"] for g in gens]
    assert all(b >= a for a, b in zip(hv, hv[1:])) and hv[-1] > hv[0] > 0
    assert (tmp_path / "run" / "plots" / "front.png").exists()
    assert (tmp_path / "run" / "plots" / "hypervolume.png").exists()
    # the chosen member is the most accurate within the limit (hard reward without an objective)
    assert res.extra["within_limit"] and res.extra["best_latency_ms"] <= 9.0


def test_beats_random_search_on_hypervolume_at_equal_evaluations():
    space = get_space("mobilenetv3")
    lat_max = ToyEvaluator(space).latency([len(d.options) - 1 for d in space.decisions])
    for seed in range(3):
        out = {}
        for method in ("nsga2", "random"):
            s = get_searcher(method, seed=seed, constrained=False)
            out[method] = _hv(s.search(space, ToyEvaluator(space), s.make_reward(None), 200, plot=False).history,
                              lat_max)
        assert out["nsga2"] > out["random"], (seed, out)


def test_resumes_after_a_kill_exactly(tmp_path):
    space = get_space("mobilenetv3")
    kw = dict(seed=5, population=8)
    full = get_searcher("nsga2", **kw).search(space, ToyEvaluator(space), lambda e: e.accuracy, 40,
                                              run=RunDir(tmp_path / "full"), plot=False)
    run = RunDir(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        get_searcher("nsga2", **kw).search(space, ToyEvaluator(space, kill_at=21), lambda e: e.accuracy, 40,
                                           run=run, plot=False)
    resumed = get_searcher("nsga2", **kw).search(space, ToyEvaluator(space), lambda e: e.accuracy, 40,
                                                 run=run, plot=False)
    assert [e.choices for e in resumed.history] == [e.choices for e in full.history]
    assert [e.choices for e in resumed.pareto] == [e.choices for e in full.pareto]
    lines = [json.loads(s) for s in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    assert [(r["kind"], r.get("hypervolume")) for r in run.read_history()] == \
        [(r["kind"], r.get("hypervolume")) for r in lines]


def test_any_costs_make_a_higher_dimensional_front(tmp_path):
    space = get_space("fbnet")
    s = get_searcher("nsga2", seed=1, population=8, objective="latency,energy")
    res = s.search(space, ToyEvaluator(space), lambda e: e.accuracy, 32, run=RunDir(tmp_path / "r"), plot=False)
    assert res.extra["costs"] == ["latency_ms", "energy_mj"]
    saved = yaml.safe_load((tmp_path / "r" / "front.yaml").read_text())
    assert saved["objectives"] == ["accuracy (max)", "latency_ms (min)", "energy_mj (min)"]
    vec = {e.choices: (e.accuracy, -e.latency_ms, -e.energy_mj) for e in res.history}
    assert all(not any(dominates(v, vec[e.choices]) for v in vec.values()) for e in res.pareto)
    with pytest.raises(ConfigError, match="unknown objective"):
        get_searcher("nsga2", objective="speed").search(space, ToyEvaluator(space), lambda e: e.accuracy, 8,
                                                        plot=False)


@pytest.mark.slow
def test_at_least_random_search_on_nb201_pixel3(shared_data):
    """benchmarks/search_quality.py's hypervolume comparison, small: NSGA-II ≥ random at equal evaluations."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "search_quality.py"
    spec = importlib.util.spec_from_file_location("search_quality", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run(queries=100, seeds=3, data_dir=shared_data, methods="nsga2,random")
    hv = {m: r["mean_hypervolume"] for m, r in out["methods"].items()}
    assert 0 < hv["random"] <= hv["nsga2"] < out["optimal_hypervolume"], hv
