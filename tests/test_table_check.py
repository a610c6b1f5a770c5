"""`hwnas table check`: fidelity of a table against end-to-end runs, stored and warned about."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.latency.predict import Predictor
from hwnas.latency.devices import get_device
from hwnas.latency.table import LatencyTable, find_tables
from hwnas.profile.check import fidelity_stats, fidelity_warning
from hwnas.spaces import get_space


def test_fidelity_stats_share_rmspe_and_ranks():
    measured = [10.0, 20.0, 30.0, 40.0]
    r = fidelity_stats(measured, [10.5, 19.0, 36.0, 41.0])  # errors +5, -5, +20, +2.5 %
    assert r["within_10pct"] == 0.75 and r["members"] == 4
    assert r["rmspe_pct"] == pytest.approx((0.25 * (25 + 25 + 400 + 6.25)) ** 0.5, abs=1e-3)
    assert r["spearman"] == 1.0 and r["kendall_tau"] == 1.0
    swapped = fidelity_stats(measured, [10.0, 30.0, 20.0, 40.0])
    assert swapped["kendall_tau"] == pytest.approx(2 / 3, abs=1e-4)
    with pytest.raises(ValueError):
        fidelity_stats([1.0], [1.0])


def test_warning_names_the_check_only_below_thresholds():
    good = {"within_10pct": 0.99, "kendall_tau": 0.95, "members": 20, "date": "d"}
    assert fidelity_warning(good) is None and fidelity_warning(None) is None
    low = fidelity_warning({**good, "kendall_tau": 0.5})
    assert "hwnas table check" in low and "Kendall τ 0.50" in low
    assert "within ±10 %" in fidelity_warning({**good, "within_10pct": 0.6})


def test_prediction_and_cli_carry_the_stored_check(tmp_path):
    shipped = find_tables("host", "mobilenetv2", 224)[0]
    table = LatencyTable.load(shipped.path)
    table.meta.fidelity = {"within_10pct": 0.5, "rmspe_pct": 14.0, "spearman": 0.9, "kendall_tau": 0.7,
                           "members": 10, "date": "2026-12-02T15:00:00Z", "rows": [{"arch": "x"}]}
    path = tmp_path / "host-mobilenetv2-224.yaml"
    table.save(path)
    arch = get_space("mobilenetv2", resolution=224).decode(get_space("mobilenetv2", resolution=224).sample())
    pred = Predictor(get_device("host"), LatencyTable.load(path)).predict(arch)
    assert pred.fidelity["kendall_tau"] == 0.7 and "rows" not in pred.fidelity
    assert len(pred.warnings) == 1 and "hwnas table check" in pred.warnings[0]
    res = CliRunner().invoke(main, ["predict", arch.to_compact(), "--target", "host", "--table", str(path)])
    assert res.exit_code == 0, res.output
    assert "checked 2026-12-02T15:00:00Z: 50 % within ±10 %" in res.output
    assert "warning: table check ('hwnas table check'" in res.output
    out = json.loads(CliRunner().invoke(main, ["predict", arch.to_compact(), "--target", "host", "--table", str(path),
                                               "--json"]).output)
    assert out["warnings"] and out["fidelity"]["within_10pct"] == 0.5


def test_check_refuses_an_estimated_device_without_a_measured_table():
    res = CliRunner().invoke(main, ["table", "check", "--device", "pixel4"])
    assert res.exit_code == 2
    assert "no measured table" in res.output and "hwnas profile --device pixel4" in res.output
