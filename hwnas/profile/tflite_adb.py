"""TFLite over ``adb``: push the model and TFLite's ``benchmark_model`` binary, run it with the
device's flags, parse its output.

Every command is an argument list handed to :func:`subprocess.run` (never a shell string). A
:class:`Transport` has three steps — ``push``, ``shell`` (run an argument list on the device),
``remove`` — implemented by :class:`AdbTransport` (``adb -s SERIAL push|shell``) and by
:class:`LocalShellTransportForTests`, which performs the same steps on this machine (a folder
stands in for the device's ``/data/local/tmp``), so the runner's logic is tested without a phone.

Output parsed (benchmark_model 2.x)::

    count=50 first=15209 curr=14956 min=14856 max=15633 avg=15071.2 std=170 [p5=… median=… p95=…]
    Inference timings in us: Init: 27589, First inference: 17813, Warmup (avg): 15419.3, Inference (avg): 15071.2

The last ``count=`` line before the summary is the timed run. Its ``median`` is used when printed
(newer builds), else the average (recorded in the entry's note); p10/p90 are not printed by
benchmark_model, so p5/p95 are stored in their place when present (note says so), else nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Protocol

from hwnas.errors import ConfigError, HwnasError
from hwnas.latency.devices import Device
from hwnas.latency.energy import choose_meter
from hwnas.latency.table import machine_info
from hwnas.profile.run import Artifact, Measurement

_NUM = r"([0-9.]+(?:e[+-]?\d+)?)"


class BenchmarkOutputError(HwnasError):
    """benchmark_model printed no parsable timing."""


def parse_benchmark_output(text: str) -> dict[str, float]:
    """Timings (µs) from benchmark_model's output: ``avg_us`` and, when printed, ``count``,
    ``min_us``, ``max_us``, ``std_us``, ``p5_us``, ``median_us``, ``p95_us``, ``init_us``,
    ``first_us``, ``warmup_avg_us``.

    Raises:
        BenchmarkOutputError: no ``Inference (avg)`` summary in the text (quotes its tail).
    """
    summary = re.search(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, Warmup \(avg\): {_NUM}, "
                        rf"Inference \(avg\): {_NUM}", text)
    if not summary:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise BenchmarkOutputError(f"benchmark_model printed no 'Inference timings in us' summary; output ends: {tail}")
    out = {"init_us": float(summary.group(1)), "first_us": float(summary.group(2)),
           "warmup_avg_us": float(summary.group(3)), "avg_us": float(summary.group(4))}
    counts = [m for m in re.finditer(r"count=(\d+)([^\n]*)", text[: summary.start()])]
    if counts:
        last = counts[-1]
        out["count"] = float(last.group(1))
        for name in ("min", "max", "avg", "std", "p5", "median", "p95"):
            m = re.search(rf"\b{name}={_NUM}", last.group(2))
            if m:
                out[f"{name}_us"] = float(m.group(1))
    return out


def measurement_from_output(text: str) -> Measurement:
    p = parse_benchmark_output(text)
    notes = []
    if "median_us" in p:
        median = p["median_us"] / 1e3
    else:
        median = p["avg_us"] / 1e3
        notes.append("benchmark_model avg (no median printed)")
    p10 = p.get("p5_us")
    p90 = p.get("p95_us")
    if p10 is not None:
        notes.append("p10/p90 fields hold benchmark_model's p5/p95")
    return Measurement(median, p10 / 1e3 if p10 is not None else None, p90 / 1e3 if p90 is not None else None,
                       int(p.get("count", 0)), note="; ".join(notes) or None)


class Transport(Protocol):
    name: str

    def push(self, local: Path, remote: str) -> None: ...

    def shell(self, args: list[str], timeout: float | None = None) -> str: ...

    def remove(self, remote: str) -> None: ...


def _run(args: list[str], timeout: float | None = None) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ConfigError(f"'{args[0]}' not found: install the Android platform tools (adb) or fix PATH") from None
    except subprocess.TimeoutExpired:
        raise HwnasError(f"command timed out after {timeout} s: {' '.join(args[:4])} ...") from None
    if proc.returncode != 0:
        raise HwnasError(f"command failed ({proc.returncode}): {' '.join(args[:4])} ...: "
                         f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc.stdout + proc.stderr


class AdbTransport:
    """``adb [-s SERIAL] push|shell`` with argument lists."""

    name = "adb"

    def __init__(self, serial: str | None = None, adb: str = "adb"):
        self.serial = serial
        self.adb = adb

    def _base(self) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else [])]

    def push(self, local: Path, remote: str) -> None:
        _run([*self._base(), "push", str(local), remote], timeout=300)

    def shell(self, args: list[str], timeout: float | None = 600) -> str:
        return _run([*self._base(), "shell", *args], timeout=timeout)

    def remove(self, remote: str) -> None:
        _run([*self._base(), "shell", "rm", "-f", remote], timeout=60)


class LocalShellTransportForTests:
    """Runs the transport's steps on this machine: remote absolute paths map under ``root``;
    ``shell`` runs the argument list locally after mapping remote paths (in ``--flag=PATH`` too)."""

    name = "local-shell-for-tests"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.commands: list[list[str]] = []

    def _map(self, remote: str) -> Path:
        return self.root / PurePosixPath(remote).relative_to("/")

    def _map_arg(self, arg: str) -> str:
        if arg.startswith("/"):
            return str(self._map(arg))
        m = re.fullmatch(r"(--[\w-]+=)(/.*)", arg)
        return m.group(1) + str(self._map(m.group(2))) if m else arg

    def push(self, local: Path, remote: str) -> None:
        dest = self._map(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local, dest)

    def shell(self, args: list[str], timeout: float | None = 600) -> str:
        self.commands.append(list(args))
        return _run([self._map_arg(a) for a in args], timeout=timeout)

    def remove(self, remote: str) -> None:
        self._map(remote).unlink(missing_ok=True)


class TFLiteAdbRunner:
    """Times ``.tflite`` artifacts with ``benchmark_model`` on an Android device.

    Setup (first measure): ``mkdir -p`` the remote folder, push the binary named by
    ``device.benchmark_model.binary`` (a local path; a bare name is taken as already on the device
    folder), ``chmod +x``. Each op: push the model, run ``[taskset MASK] benchmark_model
    --graph=… --num_threads=N --warmup_runs=W --num_runs=R <device flags>``, parse, remove.
    """

    name = "tflite-adb"

    def __init__(self, device: Device, transport: Transport):
        self.device = device
        self.transport = transport
        self.remote_dir = device.transport.remote_dir.rstrip("/")
        self.remote_bin = f"{self.remote_dir}/benchmark_model"
        self._ready = False
        self.meter = choose_meter(device, transport)
        self._version = None

    def prepare(self) -> None:
        """Create the remote folder and push the binary (idempotent)."""
        self._setup()

    def _setup(self) -> None:
        if self._ready:
            return
        self.transport.shell(["mkdir", "-p", self.remote_dir])
        binary = Path(self.device.benchmark_model.binary)
        if binary.is_file():
            self.transport.push(binary, self.remote_bin)
            self.transport.shell(["chmod", "755", self.remote_bin])
        self._ready = True

    def version(self) -> str:
        return f"benchmark_model via {self.transport.name}"

    def environment(self) -> dict:
        cpu = (self.device.affinity or [0])[0]
        env: dict = {"affinity": self.device.affinity, "machine": {"transport": self.transport.name,
                                                                   "serial": self.device.transport.serial}}
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        for field_, name, conv in (("governor", "scaling_governor", str), ("frequency_khz", "scaling_cur_freq", int)):
            try:
                env[field_] = conv(self.transport.shell(["cat", f"{base}/{name}"]).strip())
            except (HwnasError, ValueError):
                env[field_] = None
        try:
            env["machine"]["model"] = self.transport.shell(["getprop", "ro.product.model"]).strip() or None
        except HwnasError:
            pass
        if self.transport.name.startswith("local"):
            env["machine"]["host"] = machine_info()
        return env

    def command(self, remote_model: str) -> list[str]:
        bm = self.device.benchmark_model
        args = [self.remote_bin, f"--graph={remote_model}", f"--num_threads={self.device.threads}",
                f"--warmup_runs={bm.warmup_runs}", f"--num_runs={bm.num_runs}", *bm.flags]
        if self.device.affinity:
            mask = sum(1 << c for c in self.device.affinity)
            args = ["taskset", f"{mask:x}", *args]
        return args

    def measure(self, artifact: Artifact) -> Measurement:
        import tempfile

        self._setup()
        remote_model = f"{self.remote_dir}/op.tflite"
        with tempfile.TemporaryDirectory() as tmp:
            local = artifact.path
            if local is None:
                local = Path(tmp) / "op.tflite"
                local.write_bytes(artifact.data)
            self.transport.push(local, remote_model)
        self.meter.start()
        text = self.transport.shell(self.command(remote_model))
        m = measurement_from_output(text)
        energy = self.meter.stop(m.samples or 1, m.median_ms)
        self.transport.remove(remote_model)
        return m.with_energy(energy, self.meter.source if energy is not None else None)

    def close(self) -> None:
        pass


__all__ = ["parse_benchmark_output", "measurement_from_output", "AdbTransport", "LocalShellTransportForTests",
           "TFLiteAdbRunner", "BenchmarkOutputError", "Transport"]
