"""The papers' objective formulas, pinned at known inputs."""

from __future__ import annotations

import math

import pytest
import torch

from hwnas.errors import SearchError
from hwnas.search.objective import (MNASNET_HARD, Objective, check_feasible, fbnet_loss, log_unit, mnasnet_reward,
                                    proxyless_add_loss, proxyless_mul_log_loss, singlepath_loss)


def test_fbnet_loss_is_ce_alpha_log_lat_pow_beta():
    # CE 2.0, LAT 20 ms: 2 * 0.2 * (ln 20)^0.6 = 0.4 * 2.99573^0.6
    value = float(fbnet_loss(2.0, 20.0))
    assert value == pytest.approx(2.0 * 0.2 * math.log(20.0) ** 0.6, rel=1e-12)
    assert value == pytest.approx(0.7727, abs=1e-4)
    # (log LAT)^β, not log(LAT^β) = β log LAT (that would give 0.7190)
    assert value != pytest.approx(2.0 * 0.2 * 0.6 * math.log(20.0), abs=1e-3)


def test_proxyless_forms():
    # mul#log: α · CE · (ln E[LAT] / ln T)^β with α=0.2, β=0.3
    assert float(proxyless_mul_log_loss(1.5, 40.0, 80.0)) == pytest.approx(
        0.2 * 1.5 * (math.log(40.0) / math.log(80.0)) ** 0.3, rel=1e-12)
    assert float(proxyless_mul_log_loss(1.5, 40.0, 80.0)) == pytest.approx(0.28490, abs=1e-5)
    # additive: CE + λ (E[LAT] − T) / T with λ = 0.1
    assert float(proxyless_add_loss(1.5, 100.0, 80.0)) == pytest.approx(1.5 + 0.1 * 0.25, rel=1e-12)


def test_singlepath_loss():
    assert float(singlepath_loss(1.0, 79.0)) == pytest.approx(1.0 + 0.02 * math.log(79.0), rel=1e-12)


def test_mnasnet_reward_soft_and_hard():
    # soft: ACC (LAT/T)^-0.07 on both sides
    assert mnasnet_reward(0.75, 100.0, 80.0) == pytest.approx(0.75 * (1.25 ** -0.07), rel=1e-12)
    assert mnasnet_reward(0.75, 60.0, 80.0) == pytest.approx(0.75 * (0.75 ** -0.07), rel=1e-12)
    # hard: ACC below the target, ACC·(LAT/T)^-1 above
    assert mnasnet_reward(0.75, 60.0, 80.0, **MNASNET_HARD) == pytest.approx(0.75)
    assert mnasnet_reward(0.75, 100.0, 80.0, **MNASNET_HARD) == pytest.approx(0.6)


def test_objective_defaults_units_and_hard_constraint():
    o = Objective("fbnet")
    assert (o.alpha, o.beta) == (0.2, 0.6)
    ce, lat = torch.tensor(2.0), torch.tensor(20.0)
    assert float(o.loss(ce, lat)) == pytest.approx(float(fbnet_loss(2.0, 20.0)))
    o2 = Objective("fbnet", unit_ms=0.5)
    assert float(o2.loss(ce, lat)) == pytest.approx(float(fbnet_loss(2.0, 40.0)))
    p = Objective("proxyless", latency_budget_ms=80.0)
    assert (p.alpha, p.beta, p.form) == (0.2, 0.3, "mul_log")
    hard = Objective("singlepath", latency_budget_ms=50.0, hard=True)
    # below the budget: no latency pressure (gradient 0), above: the paper's
    lat_lo = torch.tensor(30.0, requires_grad=True)
    hard.loss(torch.tensor(1.0), lat_lo).backward()
    assert lat_lo.grad == 0
    lat_hi = torch.tensor(60.0, requires_grad=True)
    hard.loss(torch.tensor(1.0), lat_hi).backward()
    assert float(lat_hi.grad) == pytest.approx(0.02 / 60.0)
    assert Objective("mnasnet", latency_budget_ms=80.0, hard=True).reward(0.75, 100.0) == pytest.approx(0.6)
    with pytest.raises(SearchError, match="budget"):
        Objective("proxyless")
    assert log_unit(10.0) == 1.0 and log_unit(1.0) == pytest.approx(1 / math.e)


def test_feasibility_message_names_range():
    with pytest.raises(SearchError, match=r"0\.491–2\.442 ms"):
        check_feasible(0.01, (0.491, 2.442), "pixel1", "mobilenetv2")
    check_feasible(1.0, (0.491, 2.442), "pixel1", "mobilenetv2")
