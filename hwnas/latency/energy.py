"""Energy meters: RAPL (Linux powercap), Android battery over adb, or a declared power model.

A meter brackets a timed loop: ``start()`` before, ``stop(runs, median_ms)`` after, returning the
energy of *one* inference in mJ and a source string that says how it was obtained; the table entry
records both. :func:`choose_meter` follows the device's ``energy`` field and falls back — RAPL
unreadable, or no battery reading — to the device's declared power model, and to no energy
(``None``) when none is declared. It never invents a number.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Protocol

from hwnas.latency.devices import Device


class EnergyMeter(Protocol):
    source: str

    def start(self) -> None: ...

    def stop(self, runs: int, median_ms: float) -> float | None: ...


class RaplMeter:
    """Package energy from ``/sys/class/powercap/intel-rapl:*/energy_uj`` (µJ counters, wrap-around
    handled with ``max_energy_range_uj``). Whole-package energy: it includes other processes."""

    source = "rapl"

    def __init__(self, zones: list[Path] | None = None):
        self.zones = zones if zones is not None else [Path(p) for p in sorted(glob.glob("/sys/class/powercap/intel-rapl:[0-9]"))]
        self._start: list[int] = []

    @classmethod
    def available(cls) -> bool:
        try:
            zones = cls().zones
            return bool(zones) and all(int((z / "energy_uj").read_text()) >= 0 for z in zones)
        except (OSError, ValueError):
            return False

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def start(self) -> None:
        self._start = self._read()

    def stop(self, runs: int, median_ms: float) -> float | None:
        end = self._read()
        total_uj = 0
        for z, a, b in zip(self.zones, self._start, end):
            if b < a:
                try:
                    b += int((z / "max_energy_range_uj").read_text())
                except (OSError, ValueError):
                    return None
            total_uj += b - a
        return total_uj / 1e3 / max(runs, 1)


class AndroidBatteryMeter:
    """Battery power from ``current_now`` (µA) × ``voltage_now`` (µV) read over adb, sampled before
    and after the run; ``energy = mean power × median latency``. Needs the phone unplugged (else the
    charger supplies the current); the sign of ``current_now`` differs between vendors, so its
    magnitude is used."""

    source = "android-battery"

    def __init__(self, transport, base: str = "/sys/class/power_supply/battery"):
        self.transport = transport
        self.base = base
        self._samples: list[float] = []

    def _power_w(self) -> float | None:
        try:
            cur = abs(int(self.transport.shell(["cat", f"{self.base}/current_now"]).strip()))
            volt = int(self.transport.shell(["cat", f"{self.base}/voltage_now"]).strip())
        except Exception:  # noqa: BLE001 - any failure means no reading
            return None
        return cur * 1e-6 * volt * 1e-6

    def start(self) -> None:
        p = self._power_w()
        self._samples = [p] if p is not None else []

    def stop(self, runs: int, median_ms: float) -> float | None:
        p = self._power_w()
        if p is not None:
            self._samples.append(p)
        if not self._samples:
            return None
        return sum(self._samples) / len(self._samples) * median_ms


class PowerModelMeter:
    """Declared (not measured) power × median latency."""

    def __init__(self, active_w: float):
        self.active_w = active_w
        self.source = f"power-model: declared {active_w} W"

    def start(self) -> None:
        pass

    def stop(self, runs: int, median_ms: float) -> float | None:
        return self.active_w * median_ms


class NoMeter:
    source = None

    def start(self) -> None:
        pass

    def stop(self, runs: int, median_ms: float) -> float | None:
        return None


def choose_meter(device: Device, transport=None):
    """The meter the device asks for, falling back to its power model, then to none."""
    if device.energy == "rapl" and RaplMeter.available():
        return RaplMeter()
    if device.energy == "android-battery" and transport is not None:
        meter = AndroidBatteryMeter(transport)
        if meter._power_w() is not None:
            return meter
    if device.power_model is not None:
        return PowerModelMeter(device.power_model.active_w)
    return NoMeter()


def now() -> float:
    return time.perf_counter()


__all__ = ["EnergyMeter", "RaplMeter", "AndroidBatteryMeter", "PowerModelMeter", "NoMeter", "choose_meter"]
