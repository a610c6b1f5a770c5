"""The weight-sharing (SPOS) evaluator on real data and the searchers' pipeline entry
(`Searcher.run` as `hwnas search --method mnasnet|evolution|random` calls it), with candidates
evaluated in worker processes."""

from __future__ import annotations

import pytest
import torch

from hwnas.latency.predict import layer_latency_table, load_predictor
from hwnas.nn.supernet import Supernet
from hwnas.search.base import Budget, RunDir, get_searcher
from hwnas.search.data import load_data
from hwnas.search.distributed import ParallelEvaluator
from hwnas.search.evaluator import SPOSEvaluator
from hwnas.search.objective import Objective
from hwnas.search.pipeline import make_space


@pytest.fixture(scope="module")
def setup():
    data = load_data("digits", resolution=32, seed=0, limit=600)
    space = make_space("mobilenetv2", resolution=32, num_classes=data.num_classes, in_channels=data.in_channels,
                       width=0.35)
    predictor = load_predictor("pixel", space=space.name, resolution=space.resolution)
    table = layer_latency_table(predictor, space)
    lo = table.fixed_ms + sum(min(r) for r in table.per_layer)
    hi = table.fixed_ms + sum(max(r) for r in table.per_layer)
    objective = Objective("evolution", latency_budget_ms=lo + 0.4 * (hi - lo), predictor=predictor, table=table,
                          latency_range_ms=(lo, hi), hard=True)
    return data, space, predictor, objective


@pytest.mark.slow
def test_spos_evaluator_serial_equals_worker_processes(setup):
    data, space, predictor, objective = setup
    budget = Budget(epochs=1, steps_per_epoch=4, batch_size=32, eval_batches=2)
    ev = SPOSEvaluator(space, data, predictor, budget, seed=0, table=objective.table)
    ev.train_supernet()
    before = {k: v.clone() for k, v in ev.supernet.state_dict().items()}
    import random

    rng = random.Random(1)
    cands = [space.sample(rng) for _ in range(4)]
    serial = ev.evaluate_many(cands)
    for k, v in ev.supernet.state_dict().items():  # evaluation leaves the supernet (and its BN stats) as it was
        assert torch.equal(v, before[k]), k
    for e in serial:
        assert 0.0 <= e.accuracy <= 1.0 and e.params > 0 and e.macs > 0
        assert e.latency_ms == pytest.approx(predictor.predict(space.decode(e.choices)).latency_ms, rel=1e-9)
        assert e.latency_ms == pytest.approx(ev.latency(e.choices), rel=1e-9)  # table == predictor
    with ParallelEvaluator(ev, workers=2) as par:
        parallel = par.evaluate_many(cands)
    assert [e.to_dict() for e in parallel] == [e.to_dict() for e in serial]


@pytest.mark.slow
def test_searcher_run_writes_run_folder_and_resumes(setup, tmp_path):
    data, space, predictor, objective = setup
    budget = Budget(epochs=1, steps_per_epoch=3, batch_size=32, samples=6, eval_batches=1)
    run = RunDir(tmp_path / "run")
    res = get_searcher("mnasnet", seed=0, batch=3).run(space, objective, data, budget, run)
    assert isinstance(res.extra["supernet"], Supernet)
    assert res.extra["evaluator"] == "SPOSEvaluator" and res.extra["supernet_steps"] == 3
    assert len(res.history) == 6 and res.extra["within_limit"]
    assert predictor.predict(res.best_arch).latency_ms <= objective.latency_budget_ms
    assert (run.checkpoints / "supernet.pt").exists() and run.checkpoint.exists()
    assert (run.plots / "pareto_latency.png").exists()
    assert len(run.read_history()) == 6
    # a second call on the same folder resumes: the supernet is loaded, the search is already done
    again = get_searcher("mnasnet", seed=0, batch=3).run(space, objective, data, budget, run)
    assert [e.choices for e in again.history] == [e.choices for e in res.history]
    assert again.best_choices == res.best_choices
