"""Predictor: layer tables for the searchers, calibration, missing keys, fallback, energy."""

from __future__ import annotations

import math
import random

import pytest
import torch

from hwnas.errors import MissingOpError, TableError
from hwnas.latency.costmodel import estimate_table
from hwnas.latency.devices import get_device
from hwnas.latency.predict import (Predictor, fit_calibration, latency_bounds, layer_latency_table, load_predictor,
                                   predict)
from hwnas.latency.table import Calibration, LatencyTable
from hwnas.opkey import OpKey
from hwnas.spaces import get_space
from hwnas.zoo import zoo_arch


def _calibrated_pixel_table(space: str, resolution: int, scale=1.1, offset=2.5) -> LatencyTable:
    t = estimate_table("pixel1", space, resolution)
    t.calibration = Calibration(scale=scale, offset_ms=offset)
    return t


@pytest.mark.parametrize("space_name", ["mobilenetv2", "fbnet"])
@pytest.mark.parametrize("source", ["cost-model", "calibrated-table"])
def test_layer_table_sums_equal_predict(space_name, source):
    space = get_space(space_name, resolution=224)
    pred = load_predictor("pixel", space=space_name, resolution=224) if source == "cost-model" else \
        Predictor(get_device("pixel1"), _calibrated_pixel_table(space_name, 224))
    table = layer_latency_table(pred, space)
    assert len(table.per_layer) == len(space.slots)
    assert [len(r) for r in table.per_layer] == [len(s.candidates) for s in space.slots]
    rng = random.Random(0)
    for _ in range(20):
        choices = space.sample(rng)
        expected = pred.predict(space.decode(choices)).latency_ms
        assert math.isclose(table.fixed_ms + sum(r[c] for r, c in zip(table.per_layer, choices)), expected,
                            rel_tol=1e-12, abs_tol=1e-9)
    # skip costs exactly 0 and the op latency is the calibrated per-op figure
    for slot, row, keys in zip(space.slots, table.per_layer, table.keys):
        if "skip" in slot.candidates:
            assert row[slot.candidates.index("skip")] == 0.0
        assert row[0] == pred.op_latency(OpKey.parse(keys[0]))
    lo, hi = latency_bounds(pred, space)
    assert lo < table.latency(space.sample(rng)) < hi


def test_expected_latency_is_differentiable_and_exact_on_one_hot():
    space = get_space("fbnet", resolution=224)
    pred = load_predictor("pixel1", space="fbnet", resolution=224)
    table = layer_latency_table(pred, space)
    logits = [torch.zeros(len(r), requires_grad=True) for r in table.per_layer]
    probs = [torch.softmax(lg, 0) for lg in logits]
    e = table.expected(probs)
    e.backward()
    assert all(lg.grad is not None and torch.isfinite(lg.grad).all() for lg in logits)
    uniform = table.fixed_ms + sum(sum(r) / len(r) for r in table.per_layer)
    assert math.isclose(float(e.detach()), uniform, rel_tol=1e-5)
    choices = space.sample(random.Random(3))
    onehot = [torch.nn.functional.one_hot(torch.tensor(c), len(r)).double()
              for c, r in zip(choices, table.per_layer)]
    assert math.isclose(float(table.expected(onehot)), table.latency(choices), rel_tol=1e-9)


def test_calibration_fit_recovers_scale_and_offset():
    t = estimate_table("pixel1", "mobilenetv2", 224)
    space = get_space("mobilenetv2", resolution=224)
    rng = random.Random(1)
    raw = Predictor(get_device("pixel1"), LatencyTable(t.meta, t.entries))
    points = []
    for i in range(8):
        arch = space.decode(space.sample(rng))
        points.append((f"m{i}", arch, 1.25 * raw.predict(arch).latency_ms + 3.0))
    scale_only = fit_calibration(estimate_table("pixel1", "mobilenetv2", 224), points[:5])
    assert scale_only.calibration.offset_ms == 0.0 and scale_only.calibration.report["fitted"] == "scale"
    fit_calibration(t, points)
    assert t.calibration.report["fitted"] == "scale+offset"
    assert math.isclose(t.calibration.scale, 1.25, rel_tol=1e-9)
    assert math.isclose(t.calibration.offset_ms, 3.0, rel_tol=1e-6)
    assert t.calibration.report["max_abs_error_pct"] < 1e-6
    p = Predictor(get_device("pixel1"), t).predict(points[0][1])
    assert math.isclose(p.latency_ms, points[0][2], rel_tol=1e-9)
    assert p.calibration["scale"] == t.calibration.scale


def test_missing_key_raises_and_fallback_is_reported_never_constant():
    t = estimate_table("pixel1", "mobilenetv2", 224)
    arch = zoo_arch("mobilenetv2")  # stages 32/64/160 are not in the ProxylessNAS space
    pred = Predictor(get_device("pixel1"), t)
    with pytest.raises(MissingOpError, match=r"op key '.*' is not in .*nearest keys: "):
        pred.predict(arch)
    fb = Predictor(get_device("pixel1"), t, fallback=True).predict(arch)
    assert fb.fallback and set(fb.fallback) == set(fb.missing)
    sources = {b.key: b.source for b in fb.per_block}
    assert all(sources[k].startswith("fallback: ") for k in fb.fallback)
    lat = {b.key: b.latency_ms for b in fb.per_block if b.key in fb.fallback}
    assert len(set(round(v, 9) for v in lat.values())) > 1  # not one constant
    # MAC scaling: the fallback value is the neighbour's entry times the MAC ratio
    key = fb.fallback[0]
    neighbour, ratio = sources[key].split("fallback: ")[1].split(" x")
    assert math.isclose(lat[key], t.get(neighbour).median_ms * float(ratio), rel_tol=1e-3)


def test_predict_asks_the_store_or_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    arch = get_space("fbnet", resolution=192).decode([0] * 22)
    with pytest.raises(MissingOpError, match=r"op key\(s\) of .* not in any latency table of device 'host'.*"
                                             r"hwnas profile --device host --arch"):
        load_predictor("host").predict(arch)
    p = predict(zoo_arch("mobilenetv2"), "pixel")
    assert p.provenance.startswith("estimated:") and p.energy_mj > 0
    assert [b.name for b in p.per_block][:2] == ["stem", "stages.0.0"]
    assert math.isclose(sum(b.latency_ms for b in p.per_block), p.latency_ms)


def test_measured_table_takes_precedence_over_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    t = estimate_table("pixel1", "mobilenetv2", 224)
    t.meta.provenance = "measured"
    for e in t.entries.values():
        e.median_ms *= 2
    t.save(tmp_path / "latency_tables" / "pixel1-mobilenetv2-224.yaml")
    p = load_predictor("pixel1", space="mobilenetv2", resolution=224)
    assert p.store.measured and p.provenance.startswith("measured")
    arch = get_space("mobilenetv2", resolution=224).decode([0] * 21)
    est = Predictor(get_device("pixel1"), None).predict(arch).latency_ms
    pred = p.predict(arch)
    assert math.isclose(pred.latency_ms, 2 * est, rel_tol=1e-9)
    assert pred.provenance.startswith("measured") and "pixel1-mobilenetv2-224.yaml" in pred.provenance
    assert all(b.source == "measured: pixel1-mobilenetv2-224.yaml" for b in pred.per_block if b.key[:4] != "skip")
    # a key the measured table lacks is priced by the cost model, and says so
    other = get_space("mobilenetv2", resolution=192).decode([0] * 21)
    mixed = p.predict(other)
    assert {b.source for b in mixed.per_block} == {"cost-model"}
    assert mixed.provenance.startswith("estimated:")
