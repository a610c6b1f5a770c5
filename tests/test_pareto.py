"""Multi-objective output: Pareto front, MnasNet weighted-product ranking (`--objective latency,energy`), plot."""

from __future__ import annotations

import pytest

from hwnas.errors import ConfigError
from hwnas.search.pareto import pareto_front, plot_front, rank_weighted_product, resolve_metrics, weighted_product

POINTS = [
    {"accuracy": 0.90, "latency_ms": 10.0, "energy_mj": 5.0},   # 0 front
    {"accuracy": 0.85, "latency_ms": 12.0, "energy_mj": 6.0},   # 1 dominated by 0
    {"accuracy": 0.95, "latency_ms": 20.0, "energy_mj": 4.0},   # 2 front
    {"accuracy": 0.80, "latency_ms": 5.0, "energy_mj": 9.0},    # 3 front (fastest)
    {"accuracy": 0.90, "latency_ms": 10.0, "energy_mj": 5.0},   # 4 duplicate of 0
    {"accuracy": None, "latency_ms": 1.0, "energy_mj": 1.0},    # 5 no accuracy: never on the front
]


def test_front_accuracy_latency():
    assert pareto_front(POINTS, "accuracy,latency") == [3, 0, 2]  # by latency


def test_front_three_objectives():
    # energy makes nothing new non-dominated here except via the trade-offs already there
    assert sorted(pareto_front(POINTS, "accuracy,latency,energy")) == [0, 2, 3]
    assert pareto_front(POINTS, "accuracy,energy") == [2]  # 2 is best on both


def test_weighted_product_pinned():
    p = {"accuracy": 0.8, "latency_ms": 10.0, "energy_mj": 2.0}
    assert weighted_product(p, {"latency": 5.0, "energy": 4.0}) == pytest.approx(0.8, abs=1e-12)
    assert weighted_product(p, {"latency": 5.0}) == pytest.approx(0.8 * 2 ** -0.07, abs=1e-12)
    assert weighted_product(p, {"latency": 5.0, "energy": 4.0}, alpha=0.0, beta=-1.0) == pytest.approx(0.4)
    assert weighted_product({"accuracy": None, "latency_ms": 1.0}, {"latency": 5.0}) == float("-inf")


def test_rank_by_weighted_product():
    order = rank_weighted_product(POINTS, {"latency": 10.0, "energy": 5.0}, alpha=0.0, beta=-1.0)
    assert order[0] == 0 and order[-1] == 5
    with pytest.raises(ConfigError, match="valid objectives"):
        resolve_metrics("latency,flops")


def test_plot_writes_png(tmp_path):
    path = plot_front(POINTS, tmp_path / "front.png", limit=12.0, best=0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
