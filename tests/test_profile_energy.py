"""Energy meters: RAPL counters (wrap-around), Android battery over a transport, declared power model."""

from __future__ import annotations

import pytest

from hwnas.latency.devices import get_device
from hwnas.latency.energy import (AndroidBatteryMeter, EnergyEstimate, NoMeter, PowerModelMeter, RaplMeter,
                                  choose_meter)
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


class RecordedTraceTransportForTests:
    """A fake adb transport (no phone here) that answers the meter's commands with a recorded trace:
    ``idle`` lines for the foreground baseline loop, ``active`` lines as the background loop's file."""

    def __init__(self, idle: str, active: str):
        self.idle, self.active, self.commands = idle, active, []

    def shell(self, args, timeout=None):
        self.commands.append(" ".join(args))
        cmd = self.commands[-1]
        if "nohup" in cmd:
            return "4242\n"  # the background loop's pid
        if "while [ $i -lt" in cmd:
            return self.idle
        if args[:1] == ["cat"] and args[1].endswith("hwnas_power.txt"):
            return self.active
        if args[:1] == ["cat"]:
            return "-500000\n" if args[1].endswith("current_now") else "4000000\n"
        return ""


def test_android_battery_samples_during_the_run_minus_idle():
    # recorded on the device format: "current_uA voltage_uV" per sample (sign of current differs by vendor)
    idle = "-250000 4000000\n-250000 4000000\n-250000 4000000\n"  # 1.0 W idle
    active = "-750000 4000000\n-750000 4000000\ngarbage\n-750000 4000000\n"  # 3.0 W while running
    t = RecordedTraceTransportForTests(idle, active)
    meter = AndroidBatteryMeter(t, idle_s=0.15, period_s=0.05)
    meter.start()
    assert meter.stop(runs=50, median_ms=10.0) == pytest.approx(20.0)  # (3 W - 1 W idle) x 10 ms
    assert meter.samples == 3 and meter.idle_w == pytest.approx(1.0)
    cmds = t.commands
    assert cmds[0] == "dumpsys battery unplug" and cmds[-1] == "dumpsys battery reset"  # charging off, restored
    assert any(c == "kill 4242" for c in cmds)
    # active power not above idle: no number rather than a negative or made-up one
    t2 = RecordedTraceTransportForTests(active, idle)
    meter = AndroidBatteryMeter(t2, idle_s=0.15)
    meter.start()
    assert meter.stop(runs=50, median_ms=10.0) is None and t2.commands[-1] == "dumpsys battery reset"


def test_android_battery_chosen_when_readable(tmp_path):
    battery = tmp_path / "sys/class/power_supply/battery"
    battery.mkdir(parents=True)
    (battery / "current_now").write_text("-500000\n")
    (battery / "voltage_now").write_text("4000000\n")
    pixel = get_device("pixel1")
    chosen = choose_meter(pixel, LocalShellTransportForTests(tmp_path))
    assert chosen.source == "android-battery"
    # no battery reading -> the declared power model, and the source says so
    fallback = choose_meter(pixel, LocalShellTransportForTests(tmp_path / "nothing"))
    assert isinstance(fallback, PowerModelMeter) and fallback.source.startswith("power-model: declared")


def test_energy_estimate_carries_source_and_declared_flag():
    from hwnas.latency.predict import predict
    from hwnas.zoo import zoo_arch

    pred = predict(zoo_arch("mobilenetv2"), "pixel")
    e = pred.energy
    assert e.declared and e.source.startswith("power-model: declared") and e.value_mj == pred.energy_mj
    assert pred.to_dict()["energy_declared"] is True and pred.to_dict()["energy"]["declared"] is True
    assert all(b.to_dict()["energy_declared"] for b in pred.per_block if b.energy_source != "identity")
    assert "not measured" in e.label()
    measured = EnergyEstimate.of(3.0, ["rapl"])
    assert not measured.declared and "measured: rapl" in measured.label()
    assert not EnergyEstimate.of(3.0, ["rapl", "power-model: declared 2 W"]).declared


def test_energy_objective_on_a_declared_power_model_is_refused(tmp_path):
    from click.testing import CliRunner

    from hwnas.cli import main

    res = CliRunner().invoke(main, ["search", "--objective", "latency,energy", "--target", "pixel",
                                    "--method", "evolution", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "declared power model" in res.output and "1.6 W" in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_host_without_rapl_uses_declared_model_or_rapl():
    meter = choose_meter(get_device("host"))
    assert meter.source == "rapl" if RaplMeter.available() else meter.source.startswith("power-model")
    assert isinstance(choose_meter(get_device("host-tvm")), NoMeter)
