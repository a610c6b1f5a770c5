"""Profile → search → measure on one device: missing keys are profiled or named with the command that
fixes them, and a host search reports its exported model's measured latency beside the prediction."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.latency.costmodel import CostModel
from hwnas.latency.devices import get_device
from hwnas.latency.table import LatencyTable, TableMeta
from hwnas.profile.run import measurable, measurement_report, space_request
from hwnas.spaces import resolve_space

SEARCH = ["search", "--target", "host", "--data", "digits", "--data-limit", "300", "--resolution", "16",
          "--width", "0.35", "--epochs", "1", "--warmup-epochs", "0", "--steps-per-epoch", "2", "--final-epochs", "1",
          "--batch-size", "32"]


def _fixture_table(keys, path):
    """A stand-in for an earlier profile of the other keys (priced by the Pixel 1 cost model, labelled as a
    test fixture), so that the test measures only a few keys for real."""
    cm = CostModel(get_device("pixel1").cost_model.params, get_device("pixel1").cost_model.kind)
    meta = TableMeta(device="host", space="fixture", resolutions=[16], backend="tflite", date="2026-12-01T00:00:00Z",
                     hwnas_version="0", provenance="measured: test fixture priced by a cost model, not measured")
    LatencyTable(meta, {str(k): {"median_ms": 0.0 if k.kind == "skip" else cm.op_ms(k), "samples": 1}
                        for k in keys}).save(path)


def test_missing_keys_on_a_remote_device_fail_with_the_command_that_fixes_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    res = CliRunner().invoke(main, ["search", "--target", "note10", "--data", "digits", "--resolution", "16",
                                    "--width", "0.35", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert ("hwnas profile --device note10 --space mobilenetv2 --resolution 16 --width 0.35 --in-channels 1 "
            "--classes 10") in res.output
    assert "no local runner" in res.output and not (tmp_path / "run").exists()


def test_estimated_target_says_nothing_was_measured():
    assert measurable(get_device("pixel1")).startswith("nothing was measured: 'pixel1' is an estimated-only")
    rep = measurement_report(get_device("pixel1"), 10.0, None, budget_ms=12.0, note="nothing was measured: x")
    assert rep["measured_latency_ms"] is None and rep["within_budget_measured"] is None
    assert measurable(get_device("host")) is None
    res = CliRunner().invoke(main, ["predict", "mobilenetv2", "--target", "pixel", "--measure", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["measured_latency_ms"] is None and out["measurement_note"].startswith("nothing was measured")


@pytest.mark.slow
def test_host_round_trip_profiles_searches_and_measures(tmp_path, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    space = resolve_space("mobilenetv2", resolution=16, width=0.35, in_channels=1, classes=10)
    keys = space_request(space, reference=True).keys
    real = [k for k in keys if k.kind != "skip"][:4]
    _fixture_table([k for k in keys if k not in real], tmp_path / "latency_tables" / "fixture.yaml")

    # 1. refusing to profile names the exact command; running it (2 of the 4 keys) fills the store
    runner = CliRunner()
    res = runner.invoke(main, [*SEARCH, "--no-profile", "--out", str(tmp_path / "refused")])
    assert res.exit_code == 2 and "4 op key(s)" in res.output, res.output
    command = res.output[res.output.index("hwnas profile"):].split(" (or")[0]
    args = shlex.split(command)[1:] + ["--repeats", "3", "--warmup", "1", "--limit", "2"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"{len(keys)} op keys, {len(keys) - 4} already in host's latency tables (skipped)" in res.output
    assert "2 measured now" in res.output

    # 2. the search profiles the remaining 2 itself, then runs, exports and measures model.tflite
    out = tmp_path / "run"
    res = runner.invoke(main, [*SEARCH, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 of the" in res.output and "measuring them first" in res.output
    result = json.loads((out / "result.json").read_text())
    assert result["measured_latency_ms"] > 0 and result["measured_samples"] == get_device("host").repeats
    assert result["measured_p10_ms"] <= result["measured_latency_ms"] <= result["measured_p90_ms"]
    err = 100 * (result["predicted_latency_ms"] - result["measured_latency_ms"]) / result["measured_latency_ms"]
    assert result["prediction_error_pct"] == pytest.approx(err)
    assert result["within_budget_measured"] == (result["measured_latency_ms"] <= result["latency_budget_ms"])
    assert "prediction error" in res.output
