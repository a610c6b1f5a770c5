"""benchmarks/search_vs_baseline.py's random baseline: members at the searched net's latency, and the verdict."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hwnas.latency.predict import layer_latency_table, latency_bounds, load_predictor
from hwnas.search.pipeline import make_space


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "search_vs_baseline.py"
    spec = importlib.util.spec_from_file_location("search_vs_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    space = make_space("mobilenetv2", resolution=32, num_classes=10, in_channels=1, width=0.5)
    table = layer_latency_table(load_predictor("pixel"), space)
    return mod, space, table, latency_bounds(load_predictor("pixel"), space)


@pytest.mark.parametrize("where, method", [(0.3, "rejection"), (0.06, "metropolis")])
def test_random_members_lie_in_the_latency_band(bench, where, method):
    """A common latency is drawn by rejection; one that uniform draws almost never reach (just above the
    space's fastest member) by the band-restricted random walk — either way every member is in the band,
    and they differ."""
    mod, space, table, (lo, hi) = bench
    target = lo + where * (hi - lo)
    members, how = mod.random_at_latency(space, table, target, 5, seed=0, band=0.05, max_rejections=2000,
                                         walk_steps=300)
    assert how["method"] == method
    assert len(members) == 5 and len(set(members)) == 5
    for c in members:
        space.check(c)
        assert abs(table.latency(c) - target) <= 0.05 * target + 1e-12


def test_verdict_says_plainly_when_the_search_does_not_beat_random(bench):
    mod = bench[0]
    assert "does NOT beat random" in mod.verdict([0.95, 0.94, 0.96], [0.94, 0.95, 0.95])["text"]
    assert "does NOT beat random" in mod.verdict([0.90, 0.91, 0.92], [0.94, 0.95, 0.95])["text"]
    assert mod.verdict([0.96, 0.97, 0.965], [0.94, 0.95, 0.945])["text"].startswith("the search beats random")
    assert "MobileNetV2" in mod.verdict([0.9, 0.9], [0.95, 0.95], what="MobileNetV2")["text"]
    # consistent small wins over 3 seeds are still within the test set's binomial noise (1,000 images)
    v = mod.verdict([0.973, 0.967, 0.976], [0.968, 0.964, 0.966], test_images=1000)
    assert "does NOT beat random" in v["text"] and v["standard_error_test_set"] > v["standard_error_seeds"]
    assert mod.verdict([0.973, 0.967, 0.976], [0.968, 0.964, 0.966])["text"].startswith("the search beats")
