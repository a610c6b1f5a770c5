"""Energy meters: RAPL counters (wrap-around), Android battery over a transport, declared power model."""

from __future__ import annotations

import pytest

from hwnas.latency.devices import get_device
from hwnas.latency.energy import AndroidBatteryMeter, NoMeter, PowerModelMeter, RaplMeter, choose_meter
from hwnas.profile.tflite_adb import LocalShellTransportForTests


def test_rapl_counter_difference_and_wraparound(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("2000000\n")
    meter = RaplMeter([zone])
    meter.start()
    (zone / "energy_uj").write_text("1500000\n")
    assert meter.stop(runs=10, median_ms=1.0) == pytest.approx(50.0)  # 0.5 J / 10 runs = 50 mJ
    meter.start()
    (zone / "energy_uj").write_text("100000\n")  # wrapped: 2e6 - 1.5e6 + 1e5 = 6e5 uJ
    assert meter.stop(runs=6, median_ms=1.0) == pytest.approx(100.0)


def test_android_battery_over_transport(tmp_path):
    battery = tmp_path / "sys/class/power_supply/battery"
    battery.mkdir(parents=True)
    (battery / "current_now").write_text("-500000\n")  # 0.5 A (sign differs between vendors)
    (battery / "voltage_now").write_text("4000000\n")  # 4 V
    meter = AndroidBatteryMeter(LocalShellTransportForTests(tmp_path))
    meter.start()
    assert meter.stop(runs=50, median_ms=10.0) == pytest.approx(20.0)  # 2 W x 10 ms
    pixel = get_device("pixel1")
    chosen = choose_meter(pixel, LocalShellTransportForTests(tmp_path))
    assert chosen.source == "android-battery"
    # no battery reading -> the declared power model, and the source says so
    fallback = choose_meter(pixel, LocalShellTransportForTests(tmp_path / "nothing"))
    assert isinstance(fallback, PowerModelMeter) and fallback.source.startswith("power-model: declared")


def test_host_without_rapl_uses_declared_model_or_rapl():
    meter = choose_meter(get_device("host"))
    assert meter.source == "rapl" if RaplMeter.available() else meter.source.startswith("power-model")
    assert isinstance(choose_meter(get_device("host-tvm")), NoMeter)
