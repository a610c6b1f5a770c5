"""Energy meters (RAPL, Android battery over adb, a declared power model) and :class:`EnergyEstimate`.

Energy always travels with its source: :class:`EnergyEstimate` is a value in mJ, the source string and
a ``declared`` flag that is True when the number is a declared power model × latency (not measured:
exactly proportional to latency, so it is no second objective).

A meter brackets a timed loop: ``start()`` before, ``stop(runs, median_ms)`` after, returning the
energy of *one* inference in mJ and a source string that says how it was obtained; the table entry
records both. :func:`choose_meter` follows the device's ``energy`` field and falls back — RAPL
unreadable, or no battery reading — to the device's declared power model, and to no energy
(``None``) when none is declared. It never invents a number.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hwnas.latency.devices import Device

#: Prefix of every declared (not measured) energy source string.
DECLARED_PREFIX = "power-model"


def declared_source(active_w: float) -> str:
    """The source string of energy from a declared power model of ``active_w`` watts."""
    return f"{DECLARED_PREFIX}: declared {active_w} W"


def is_declared(source: str | None) -> bool:
    """Whether an energy ``source`` is a declared power model (not a measurement)."""
    return bool(source) and str(source).startswith(DECLARED_PREFIX)


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one inference: ``value_mj`` (None when unknown), where it came from (``source``: e.g.
    ``rapl``, ``android-battery``, ``power-model: declared 1.6 W``) and whether it is ``declared``
    (a power model × latency, not measured)."""

    value_mj: float | None
    source: str | None
    declared: bool

    @classmethod
    def of(cls, value_mj: float | None, sources) -> "EnergyEstimate":
        """From a value and one or several source strings (declared only if every source is)."""
        srcs = [sources] if isinstance(sources, str) or sources is None else list(sources)
        srcs = [s for s in srcs if s and s != "identity"]
        return cls(value_mj, ", ".join(sorted(set(srcs))) or None,
                   bool(srcs) and all(is_declared(s) for s in srcs))

    def label(self) -> str:
        """``12.30 mJ (declared power model: 1.6 W × latency, not measured)`` / ``12.30 mJ (rapl)`` / ``unknown``."""
        if self.value_mj is None:
            return "unknown"
        if self.declared:
            return f"{self.value_mj:.2f} mJ ({self.source}; declared power model × latency, not measured)"
        return f"{self.value_mj:.2f} mJ (measured: {self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {"value_mj": self.value_mj, "source": self.source, "declared": self.declared}


def energy_of(predictor, space, choices) -> "EnergyEstimate | None":
    """:class:`EnergyEstimate` of the space member ``choices`` (None without a predictor or on error)."""
    if predictor is None:
        return None
    try:
        return predictor.predict(space.decode(choices)).energy
    except Exception:  # noqa: BLE001 - a label only
        return None


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
    """Battery power sampled *during* the run by a background loop on the phone, minus an idle baseline.

    ``start()``: disables USB charging (``dumpsys battery unplug``: otherwise the charger, not the
    battery, supplies the current), samples ``current_now`` (µA) × ``voltage_now`` (µV) with nothing
    running for ``idle_s`` (the idle baseline), then starts a sampling loop in the background on the
    device (``sh`` ``while`` loop, every ``period_s``, writing to ``trace``). ``stop()``: kills the
    loop, reads the trace, re-enables charging (``dumpsys battery reset``) and returns
    ``(mean active power − mean idle power) × median latency`` — the energy one inference adds, in mJ
    (W × ms). The sign of ``current_now`` differs between vendors, so its magnitude is used. No
    reading, or active power not above idle: ``None`` (never a made-up number).
    """

    source = "android-battery"

    def __init__(self, transport, base: str = "/sys/class/power_supply/battery", *, period_s: float = 0.05,
                 idle_s: float = 1.0, trace: str = "/data/local/tmp/hwnas_power.txt"):
        self.transport = transport
        self.base = base
        self.period_s = period_s
        self.idle_s = idle_s
        self.trace = trace
        self._pid: str | None = None
        self.idle_w: float | None = None
        self.active_w: float | None = None
        self.samples: int = 0

    def _sample_expr(self) -> str:
        return f"echo $(cat {self.base}/current_now) $(cat {self.base}/voltage_now)"

    def _sh(self, script: str, timeout: float | None = 60) -> str:
        import shlex

        return self.transport.shell(["sh", "-c", shlex.quote(script)], timeout=timeout)

    @staticmethod
    def parse_trace(text: str) -> list[float]:
        """Watts of each ``current_uA voltage_uV`` line (malformed lines skipped)."""
        watts = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            try:
                watts.append(abs(int(parts[0])) * 1e-6 * int(parts[1]) * 1e-6)
            except ValueError:
                continue
        return watts

    def _power_w(self) -> float | None:
        """One reading now (W), or None when the battery files cannot be read."""
        try:
            cur = abs(int(self.transport.shell(["cat", f"{self.base}/current_now"]).strip()))
            volt = int(self.transport.shell(["cat", f"{self.base}/voltage_now"]).strip())
        except Exception:  # noqa: BLE001 - any failure means no reading
            return None
        return cur * 1e-6 * volt * 1e-6

    def start(self) -> None:
        self.idle_w = self.active_w = None
        self.transport.shell(["dumpsys", "battery", "unplug"])
        n = max(1, int(round(self.idle_s / self.period_s)))
        idle = self.parse_trace(self._sh(f"i=0; while [ $i -lt {n} ]; do {self._sample_expr()}; sleep {self.period_s}; "
                                         "i=$((i+1)); done", timeout=self.idle_s * 4 + 30))
        self.idle_w = sum(idle) / len(idle) if idle else None
        loop = f"while true; do {self._sample_expr()}; sleep {self.period_s}; done"
        out = self._sh(f"rm -f {self.trace}; nohup sh -c '{loop}' > {self.trace} 2>/dev/null & echo $!")
        self._pid = out.strip().split()[-1] if out.strip() else None

    def stop(self, runs: int, median_ms: float) -> float | None:
        try:
            if self._pid:
                self.transport.shell(["kill", self._pid])
            active = self.parse_trace(self.transport.shell(["cat", self.trace]))
            self.transport.shell(["rm", "-f", self.trace])
        finally:
            self.transport.shell(["dumpsys", "battery", "reset"])
            self._pid = None
        self.samples = len(active)
        if not active or self.idle_w is None:
            return None
        self.active_w = sum(active) / len(active)
        if self.active_w <= self.idle_w:
            return None
        return (self.active_w - self.idle_w) * median_ms


class PowerModelMeter:
    """Declared (not measured) power × median latency."""

    def __init__(self, active_w: float):
        self.active_w = active_w
        self.source = declared_source(active_w)

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


__all__ = ["EnergyEstimate", "energy_of", "declared_source", "is_declared", "DECLARED_PREFIX", "EnergyMeter", "RaplMeter", "AndroidBatteryMeter", "PowerModelMeter", "NoMeter", "choose_meter"]
