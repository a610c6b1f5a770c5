"""The estimated Pixel 1: cost model fitted on every public Pixel-1 measurement (22 MobileNetV2 rows
within ±10 %, each per-op source ranked with Spearman ≥ 0.95)."""

from __future__ import annotations

import json
import math

import pytest

from click.testing import CliRunner

from hwnas.cli import main
from hwnas.latency.costmodel import CostModel, fit, fit_sources, kernels, mobilenetv2_rows, source_errors
from hwnas.latency.devices import get_device
from hwnas.latency.predict import load_predictor
from hwnas.latency.table import find_tables
from hwnas.opkey import OpKey


def test_22_published_mobilenetv2_rows_within_10_percent(shared_data):
    rows = mobilenetv2_rows(shared_data / "published-latency" / "published_latencies.csv")
    assert len(rows) == 22
    pred = load_predictor("pixel1")
    errors = {}
    for r in rows:
        est = pred.predict(r.arch).latency_ms
        errors[r.name] = 100 * (est - r.target_ms) / r.target_ms
    assert all(abs(e) <= 10 for e in errors.values()), errors


def _stored():
    spec = get_device("pixel1").cost_model
    return spec, CostModel(spec.params, spec.kind)


def test_stored_parameters_are_the_fit_of_the_public_data(shared_data):
    from hwnas.latency.sources import load_sources

    spec, _ = _stored()
    assert spec.kind == "mobile-cpu-v2" and spec.anchor == "slim_mnv2v3"
    params, factors = fit_sources(load_sources(shared_data, spec.sources), spec.anchor)
    assert params == pytest.approx(spec.params, rel=1e-3, abs=1e-6)  # the optimiser's last digits may vary
    assert factors == pytest.approx(spec.source_factors, rel=1e-3)
    assert all(v >= 0 for v in params.values())


def test_each_fitted_source_ranked_and_scaled(shared_data):
    from hwnas.latency.sources import load_sources

    spec, model = _stored()
    sources = load_sources(shared_data, spec.sources)
    assert {len(r) for r in sources.values()} == {22, 72, 85, 1863}
    for name, rows in sources.items():
        err = source_errors(model, rows, spec.source_factors.get(name, 1.0))
        assert err["spearman"] >= 0.95, (name, err)
        assert abs(err["median_error_pct"]) <= 5, (name, err)
    # the old model (v1, MobileNetV2 rows only) ranked nn-Meter's blocks well but was 33 % high on them;
    # the new one is within ±10 % on most of them (with nn-Meter's factor)
    assert source_errors(model, sources["nn-meter-pixel1"], spec.source_factors["nn-meter-pixel1"])["within_10pct"] > 0.6


def test_fit_report_has_leave_one_source_out():
    spec, _ = _stored()
    loo = spec.fit_report["leave_one_source_out"]
    assert set(loo) == set(spec.sources)
    for held in loo.values():
        assert {"factor_1", "rescaled", "factor"} <= set(held)


def test_cost_model_prices_any_key_and_is_monotone():
    _, model = _stored()
    small = model.op_ms(OpKey.parse("ir_k3_e3_s1_c24_r6@56x56x24"))
    assert model.op_ms(OpKey.parse("ir_k3_e6_s1_c24_r6@56x56x24")) > small
    assert model.op_ms(OpKey.parse("ir_k5_e3_s1_c24_r6@56x56x24")) > small
    assert model.op_ms(OpKey.parse("ir_k3_e3_s1_c24_r6@112x112x24")) > small
    se = OpKey.parse("ir_k3_e4_s1_c40_se0.25_hs_semv3@28x28x40")
    names = [k.name for k in kernels(se)]
    assert {"se_mean", "se_mul", "add", "expand_act"} <= set(names)
    assert model.op_ms(OpKey.parse("skip@56x56x24")) == 0.0
    # h-swish and SE cost something on top of the same block with ReLU / without SE
    relu = OpKey.parse("ir_k3_e4_s1_c40_re@28x28x40")
    assert model.op_ms(OpKey.parse("ir_k3_e4_s1_c40_hs@28x28x40")) > model.op_ms(relu)
    assert model.op_ms(OpKey.parse("ir_k3_e4_s1_c40_se0.25_re_semv3@28x28x40")) > model.op_ms(relu)


def test_cli_predict_json_for_width_and_resolution():
    res = CliRunner().invoke(main, ["predict", "mobilenetv2", "--target", "pixel1", "--width", "0.75",
                                    "--resolution", "192", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert isinstance(out["latency_ms"], float) and out["latency_ms"] > 0
    assert out["energy_mj"] is None or isinstance(out["energy_mj"], float)
    assert isinstance(out["per_block"], list) and out["per_block"][0]["name"] == "stem"
    assert out["provenance"].startswith("estimated")
    assert out["per_block"][0]["key"].startswith("cn_k3_s2_c24_r6@192x192x3")


def test_shipped_pixel1_tables_are_the_cost_model_materialised():
    _, model = _stored()
    tables = find_tables("pixel1")
    assert {t.meta.space for t in tables} >= {"mobilenetv2", "fbnet", "mnasnet", "efficientnet"}
    for t in tables:
        assert t.meta.provenance.startswith("estimated: mobile-cpu-v2")
        assert "leave-one-source-out" in t.meta.provenance
        for key in list(t.keys())[:20]:
            assert math.isclose(t.get(str(key)).median_ms, model.op_ms(key), rel_tol=1e-12)


def test_table_estimate_command_reproduces_shipped_table(tmp_path):
    out = tmp_path / "p.yaml"
    res = CliRunner().invoke(main, ["table", "estimate", "--device", "pixel1", "--space", "fbnet",
                                    "--resolution", "224", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from hwnas.latency.table import LatencyTable

    shipped = [t for t in find_tables("pixel1", "fbnet", 224)][0]
    assert LatencyTable.load(out).entries == shipped.entries


def test_refit_rewrites_only_the_cost_model_section(shared_data, tmp_path):
    from hwnas.latency.costmodel import refit_device
    from hwnas.latency.devices import load_device

    src = get_device("pixel1").source
    copy = tmp_path / "pixel1.yaml"
    text = open(src).read()
    # two sources keep the test short (the shipped fit has four)
    text = text.replace("sources:\n  - slim_mnv2v3\n  - proxylessnas-pixel\n  - single-path-nas\n  - nn-meter-pixel1",
                        "sources:\n  - slim_mnv2v3\n  - single-path-nas", 1)
    assert "  - single-path-nas\n  held_out" in text
    copy.write_text(text)
    report = refit_device(copy, shared_data)
    new = copy.read_text()
    assert new.split("\ncost_model:")[0] == text.split("\ncost_model:")[0]  # comments and fields above kept
    dev = load_device(copy)
    assert dev.cost_model.sources == ["slim_mnv2v3", "single-path-nas"]
    assert set(dev.cost_model.source_factors) == {"single-path-nas"}
    assert set(report["leave_one_source_out"]) == {"slim_mnv2v3", "single-path-nas"}
    assert len(report["rows"]) == 22 and report["max_abs_error_pct"] <= 10


def test_old_model_is_still_the_minimax_fit_of_the_22_rows(shared_data):
    params, report = fit(mobilenetv2_rows(shared_data / "published-latency" / "published_latencies.csv"))
    assert report["n"] == 22 and report["max_abs_error_pct"] <= 10
    assert CostModel(params).kind == "mobile-cpu-v1"
