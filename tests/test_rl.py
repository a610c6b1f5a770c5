"""MnasNet RL searcher: pinned rewards (Tan et al. 2019, eq. 2), the LSTM controller over any space,
and the shared sample-search loop (budget accounting, history, resume after a kill)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hwnas.errors import ConfigError
from hwnas.search.base import Evaluated, RunDir, get_searcher, searcher_names
from hwnas.search.evaluator import Evaluator
from hwnas.search.rl import REWARD_SETTINGS, Controller, MnasNetReward, mnasnet_reward
from hwnas.spaces import get_space


# ------------------------------------------------------------------ pinned reward values
def test_soft_reward_pinned():
    # ACC × (LAT/T)^−0.07 on both sides of the target
    assert mnasnet_reward(0.75, 80.0, 80.0) == pytest.approx(0.75, abs=1e-15)
    assert mnasnet_reward(0.75, 100.0, 80.0) == pytest.approx(0.738375983745762, abs=1e-12)  # 0.75·1.25^−0.07
    assert mnasnet_reward(0.75, 40.0, 80.0) == pytest.approx(0.7872875127173005, abs=1e-12)  # 0.75·0.5^−0.07
    # the soft reward trades ~5 % latency for ~0.35 % accuracy (the paper's motivation for w = −0.07)
    assert mnasnet_reward(0.75, 84.0, 80.0) / 0.75 == pytest.approx(1.05 ** -0.07, rel=1e-12)


def test_hard_reward_pinned():
    alpha, beta = REWARD_SETTINGS["hard"]
    assert (alpha, beta) == (0.0, -1.0)
    assert mnasnet_reward(0.75, 60.0, 80.0, alpha=alpha, beta=beta) == 0.75  # no bonus below T
    assert mnasnet_reward(0.75, 100.0, 80.0, alpha=alpha, beta=beta) == pytest.approx(0.6, abs=1e-15)
    assert mnasnet_reward(0.9, 160.0, 80.0, alpha=alpha, beta=beta) == pytest.approx(0.45, abs=1e-15)
    with pytest.raises(ConfigError):
        mnasnet_reward(0.75, 0.0, 80.0)


def test_reward_object_on_evaluated_and_energy():
    e = Evaluated((0,), "a", 0.8, latency_ms=10.0, energy_mj=2.0, params=1, macs=1, step=0)
    soft = MnasNetReward.setting("soft", {"latency": 5.0, "energy": 4.0})
    # (10/5)^−0.07 · (2/4)^−0.07 = 1 exactly: the two factors cancel
    assert soft(e) == pytest.approx(0.8, abs=1e-12)
    hard = MnasNetReward.setting("hard", {"latency": 5.0, "energy": 4.0})
    assert hard(e) == pytest.approx(0.4, abs=1e-12)  # latency over (×1/2), energy under (×1)
    assert hard(Evaluated((0,), "a", None, 1.0, None, 1, 1, 0)) == 0.0  # no accuracy: the minimum
    assert MnasNetReward.setting("hard", {"latency": None})(e) == 0.8  # no target: accuracy
    with pytest.raises(ConfigError):
        MnasNetReward.setting("medium", {})


# ------------------------------------------------------------------ controller
def test_controller_covers_any_space_and_scores_its_samples():
    space = get_space("mobilenetv2")  # decisions with 6 or 7 options
    sizes = [len(d.options) for d in space.decisions]
    ctrl = Controller(sizes)
    g = torch.Generator().manual_seed(0)
    choices, logp, ent = ctrl(32, generator=g)
    assert choices.shape == (32, len(sizes))
    for row in choices.tolist():
        space.check(row)  # every sample is a member
    # initial policy is uniform: log-prob = −Σ log(size)
    assert torch.allclose(logp, torch.full_like(logp, -sum(math.log(s) for s in sizes)), atol=1e-5)
    _, logp2, _ = ctrl(choices=choices)
    assert torch.allclose(logp, logp2, atol=1e-6)


# ------------------------------------------------------------------ the loop, on a toy evaluator
class ToyEvaluator(Evaluator):
    """Deterministic stand-in for a trained evaluator: accuracy rises with option 0, latency with
    the option index (so the limit binds)."""

    cheap = True

    def __init__(self, space, kill_at: int | None = None):
        self.space = space
        self.kill_at = kill_at
        self.calls = 0

    def latency(self, choices):
        return 1.0 + sum(choices) * 0.1

    def evaluate(self, choices, step=0):
        self.calls += 1
        if self.kill_at is not None and self.calls > self.kill_at:
            raise KeyboardInterrupt("simulated kill")
        acc = 0.5 + 0.4 * sum(1 for i, c in enumerate(choices) if c == i % 3) / len(choices)
        return Evaluated(tuple(choices), str(choices), acc, self.latency(choices), 0.1 * sum(choices) + 1, 10, 10, step)


def test_methods_registered():
    assert {"mnasnet", "evolution", "random"} <= set(searcher_names())


@pytest.mark.parametrize("method", ["mnasnet", "evolution", "random"])
def test_search_logs_every_evaluation_and_resumes_after_kill(tmp_path, method):
    space = get_space("fbnet")
    limit = 9.0  # about a quarter of the toy members are within it
    searcher = get_searcher(method, seed=3)
    full = searcher.search(space, ToyEvaluator(space), searcher.make_reward(limit), 40, limit_ms=limit,
                           run=RunDir(tmp_path / "full"), plot=False)
    assert full.extra["queries"] == 40
    assert full.extra["within_limit"] and full.extra["best_latency_ms"] <= limit
    assert all(e.latency_ms <= limit for e in full.history)  # constrained proposals
    lines = [json.loads(s) for s in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    assert len(lines) == len(full.history)
    assert {"accuracy", "latency_ms", "energy_mj", "params", "macs", "reward"} <= set(lines[0])

    run = RunDir(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        get_searcher(method, seed=3).search(space, ToyEvaluator(space, kill_at=21), searcher.make_reward(limit), 40,
                                            limit_ms=limit, run=run, plot=False)
    resumed = get_searcher(method, seed=3).search(space, ToyEvaluator(space), searcher.make_reward(limit), 40,
                                                  limit_ms=limit, run=run, plot=False)
    assert [e.choices for e in resumed.history] == [e.choices for e in full.history]
    assert resumed.best_choices == full.best_choices
    assert len(run.read_history()) == len(full.history)


def test_rl_learns_on_toy_problem():
    space = get_space("fbnet")
    ev = ToyEvaluator(space)
    rl = get_searcher("mnasnet", seed=0).search(space, ev, lambda e: e.accuracy, 320, plot=False)
    first = [e.accuracy for e in rl.history[:32]]
    last = [e.accuracy for e in rl.history[-32:]]
    assert sum(last) / 32 > sum(first) / 32 + 0.05  # the policy moved towards high reward


def test_kill_before_first_checkpoint_drops_partial_history(tmp_path):
    space = get_space("fbnet")
    searcher = get_searcher("evolution", seed=1)
    full = searcher.search(space, ToyEvaluator(space), searcher.make_reward(9.0), 12, limit_ms=9.0,
                           run=RunDir(tmp_path / "full"), plot=False)
    run = RunDir(tmp_path / "killed")
    run.append_history({"kind": "eval", "choices": [0] * 22})  # a torn round: lines but no checkpoint
    run.append_history({"kind": "eval", "choices": [1] * 22})
    again = get_searcher("evolution", seed=1).search(space, ToyEvaluator(space), searcher.make_reward(9.0), 12,
                                                     limit_ms=9.0, run=run, plot=False)
    assert [r["choices"] for r in run.read_history()] == [list(e.choices) for e in full.history]
    assert again.best_choices == full.best_choices
