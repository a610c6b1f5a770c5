"""The estimated Pixel 1: cost model fitted only on the 22 MobileNetV2 rows, each within ±10 %."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from hwnas.cli import main
from hwnas.latency.costmodel import CostModel, fit, kernels, mobilenetv2_rows
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


def test_stored_parameters_are_the_fit_of_the_csv(shared_data):
    params, report = fit(mobilenetv2_rows(shared_data / "published-latency" / "published_latencies.csv"))
    stored = get_device("pixel1").cost_model.params
    assert params == stored
    assert report["max_abs_error_pct"] == get_device("pixel1").cost_model.fit_report["max_abs_error_pct"]


def test_cost_model_prices_any_key_and_is_monotone():
    model = CostModel(get_device("pixel1").cost_model.params)
    small = model.op_ms(OpKey.parse("ir_k3_e3_s1_c24_r6@56x56x24"))
    assert model.op_ms(OpKey.parse("ir_k3_e6_s1_c24_r6@56x56x24")) > small
    assert model.op_ms(OpKey.parse("ir_k5_e3_s1_c24_r6@56x56x24")) > small
    assert model.op_ms(OpKey.parse("ir_k3_e3_s1_c24_r6@112x112x24")) > small
    se = OpKey.parse("ir_k3_e4_s1_c40_se0.25_hs_semv3@28x28x40")
    names = [k.name for k in kernels(se)]
    assert {"se_mean", "se_mul", "add", "expand_act"} <= set(names)
    assert model.op_ms(OpKey.parse("skip@56x56x24")) == 0.0


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
    model = CostModel(get_device("pixel1").cost_model.params)
    tables = find_tables("pixel1")
    assert {t.meta.space for t in tables} >= {"mobilenetv2", "fbnet", "mnasnet", "efficientnet"}
    for t in tables:
        assert t.meta.provenance.startswith("estimated: mobile-cpu-v1")
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
    copy.write_text(text.replace("max_abs_error_pct:", "max_abs_error_pct_old:", 1))
    report = refit_device(copy, shared_data / "published-latency" / "published_latencies.csv")
    new = copy.read_text()
    assert new.split("\ncost_model:")[0] == text.split("\ncost_model:")[0]  # comments and fields above kept
    dev = load_device(copy)
    assert dev.cost_model.params == get_device("pixel1").cost_model.params
    assert report["n"] == 22 and report["max_abs_error_pct"] <= 10
