"""Pixel 4 / Pixel 6 / Xiaomi 11: estimated devices fitted on nn-Meter's block LUT of each phone."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.latency.costmodel import CostModel, fit_sources, source_errors
from hwnas.latency.devices import get_device
from hwnas.latency.predict import load_predictor
from hwnas.zoo import zoo_arch

PHONES = ("pixel4", "pixel6", "xiaomi11")


@pytest.mark.parametrize("name", PHONES)
def test_phone_is_estimated_from_its_nn_meter_lut_only(name):
    dev = get_device(name)
    spec = dev.cost_model
    assert dev.estimated and spec.kind == "mobile-cpu-v2"
    assert spec.sources == [f"nn-meter-{name}"] and spec.anchor == f"nn-meter-{name}"
    report = spec.fit_report
    assert set(report["leave_one_spatial_out"]) >= {"hw=29-48", "hw=97-128", "hw=1-8"}
    assert report["per_source"][f"nn-meter-{name}"]["within_10pct"] > 0.7
    pred = load_predictor(name).predict(zoo_arch("mobilenetv3-large"))
    assert pred.latency_ms > 0 and pred.provenance.startswith("estimated")


def test_phone_parameters_are_the_fit_of_the_lut(shared_data):
    from hwnas.latency.sources import load_sources

    spec = get_device("pixel4").cost_model
    sources = load_sources(shared_data, spec.sources)
    params, factors = fit_sources(sources, spec.anchor)
    assert params == pytest.approx(spec.params, rel=1e-3, abs=1e-6) and factors == {}
    err = source_errors(CostModel(params, spec.kind), sources[spec.anchor])
    assert err["spearman"] >= 0.99


def test_devices_command_says_what_each_estimate_rests_on():
    res = CliRunner().invoke(main, ["devices"])
    assert res.exit_code == 0, res.output
    for name in ("pixel1",) + PHONES:
        line = next(x for x in res.output.splitlines() if x.startswith(f"{name}: estimate rests on:"))
        assert "leave-one-" in line
    assert "nn-Meter's pixel6 block LUT" in res.output
    assert not any(x.startswith("host: estimate rests on") for x in res.output.splitlines())
