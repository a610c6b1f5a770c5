"""TFLite over ``adb``: push the model and TFLite's ``benchmark_model`` binary, run it with flags
derived from the device file, parse its output.

Every command is an argument list handed to :func:`subprocess.run` (never a shell string). A
:class:`Transport` has three steps — ``push``, ``shell`` (run an argument list on the device),
``remove`` — implemented by :class:`AdbTransport` (``adb -s SERIAL push|shell``) and by
:class:`LocalShellTransportForTests`, which performs the same steps on this machine (a folder
stands in for the device's ``/data/local/tmp``), so the runner's logic is tested without a phone.

Command (:meth:`TFLiteAdbRunner.command`)::

    [taskset MASK] benchmark_model --graph=G --num_threads=T --warmup_runs=W --num_runs=R
        --min_secs=0 --warmup_min_secs=0 <delegate flags> <device flags>

``--min_secs=0 --warmup_min_secs=0`` make the counts exact (by default benchmark_model runs for at
least 1 s / 0.5 s, so ``num_runs`` is only a minimum). Delegate flags: ``none`` →
``--use_xnnpack=false``, ``xnnpack`` → ``--use_xnnpack=true``, ``gpu`` → ``--use_gpu=true``,
``nnapi`` → ``--use_nnapi=true``.

Output parsed (benchmark_model's documented format; with and without the ``INFO:`` prefix and
the ``p5= median= p95=`` fields, both kept as fixtures under ``tests/data/benchmark_model``)::

    count=50 first=15209 curr=14956 min=14856 max=15633 avg=15071.2 std=170 [p5=… median=… p95=…]
    Inference timings in us: Init: 27589, First inference: 17813, Warmup (avg): 15419.3, Inference (avg): 15071.2

The last ``count=`` line before the summary is the timed run. Its ``median`` is used when printed
(newer builds), else the average (recorded in the entry's note); p10/p90 are not printed by
benchmark_model, so p5/p95 are stored in their place when present (note says so), else nothing.
A zero or negative time (``avg=0``: an op shorter than the tool's microsecond timer) is an error.
With ``--enable_op_profiling=true`` the per-node ``Run Order`` table of the regular runs is parsed
by :func:`parse_op_profile` (used by ``hwnas profile --check``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
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


def parse_op_profile(text: str) -> list[dict]:
    """Per-node rows of the *regular runs* of ``benchmark_model --enable_op_profiling=true``: the last
    ``Run Order`` table (the first one, in newer builds, profiles initialisation).

    Returns:
        ``[{"node_type", "avg_ms", "name"}]`` in run order; ``[]`` when the output has no profile.
    """
    blocks = re.split(r"=+ Run Order =+", text)
    if len(blocks) < 2:
        return []
    rows = []
    for line in blocks[-1].splitlines()[1:]:
        if line.startswith("=") or not line.strip():
            if rows:
                break
            continue
        cells = [c.strip() for c in line.replace("INFO:", "").split("\t") if c.strip()]
        if len(cells) < 4 or cells[0].startswith("["):
            continue
        try:
            avg = float(cells[3])
        except ValueError:
            continue
        rows.append({"node_type": cells[0], "avg_ms": avg, "name": cells[-1]})
    return rows


def measurement_from_output(text: str) -> Measurement:
    """A :class:`Measurement` (ms) from benchmark_model's output.

    Raises:
        BenchmarkOutputError: no summary, or a zero/negative/non-finite time (e.g. ``avg=0``).
    """
    import math

    p = parse_benchmark_output(text)
    for name in ("avg_us", "median_us"):
        if name in p and not (math.isfinite(p[name]) and p[name] > 0):
            raise BenchmarkOutputError(f"benchmark_model reported {name[:-3]}={p[name]:g} us: an op cannot take 0 "
                                       f"us or less (shorter than the tool's microsecond timer, or it did not run); "
                                       f"nothing was stored")
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


_DELEGATE_FLAGS = {"none": ["--use_xnnpack=false"], "xnnpack": ["--use_xnnpack=true"],
                   "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"]}


def benchmark_flags(device: Device) -> list[str]:
    """benchmark_model flags derived from the device file (after ``--graph``), then its extra flags.

    Raises:
        ConfigError: a delegate benchmark_model cannot run over adb here (``edgetpu``), or an extra
            flag that contradicts a derived one (naming the device file and fields).

    ``benchmark_model.num_runs``/``warmup_runs`` that differ from ``repeats``/``warmup`` give a
    :class:`~hwnas.errors.HwnasWarning`: the device's ``repeats``/``warmup`` (which ``hwnas profile
    --repeats/--warmup`` override) are what is passed.
    """
    where = f"device '{device.name}'" + (f" ({device.source})" if device.source else "")
    bm = device.benchmark_model
    for field_, own in (("num_runs", "repeats"), ("warmup_runs", "warmup")):
        if field_ in bm.model_fields_set and getattr(bm, field_) != getattr(device, own):
            import warnings

            from hwnas.errors import HwnasWarning

            warnings.warn(f"{where}: benchmark_model.{field_} is {getattr(bm, field_)} but {own} is "
                          f"{getattr(device, own)}; hwnas passes --{field_}={getattr(device, own)} ({own}, which "
                          f"--{own} overrides); set {own} only", HwnasWarning, stacklevel=2)
    if device.delegate not in _DELEGATE_FLAGS:
        raise ConfigError(f"{where}: delegate '{device.delegate}' cannot be timed with benchmark_model over adb; "
                          f"expected one of {', '.join(_DELEGATE_FLAGS)}")
    derived = [f"--num_threads={device.threads}", f"--warmup_runs={device.warmup}", f"--num_runs={device.repeats}",
               "--min_secs=0", "--warmup_min_secs=0", *_DELEGATE_FLAGS[device.delegate]]
    given = {f.split("=", 1)[0]: f for f in derived}
    out = list(derived)
    for flag in bm.flags:
        name = flag.split("=", 1)[0]
        if name == "--graph":
            raise ConfigError(f"{where}: benchmark_model.flags must not set --graph (hwnas passes each op's model)")
        if name in given:
            if given[name] != flag:
                raise ConfigError(f"{where}: benchmark_model.flags has '{flag}' but the device file gives "
                                  f"'{given[name]}' (from threads, delegate, warmup or repeats); remove the flag")
            continue  # the same as derived: keep one
        out.append(flag)
    return out


class TFLiteAdbRunner:
    """Times ``.tflite`` artifacts with ``benchmark_model`` on an Android device.

    Setup (first measure, or :meth:`prepare`): ``mkdir -p`` the remote folder, push the binary named
    by ``device.benchmark_model.binary`` when it is a local file (a bare name is taken as already in
    the device folder), ``chmod 755``, check that the binary is there (a clear error otherwise), and
    read the build fingerprint and model (``getprop``). Each op: optional cooldown, the CPU governor,
    frequency and temperature read before, push the model, run :meth:`command`, read them again,
    parse, remove the model. :meth:`close` removes what is left on the device; the profiler calls
    it even when profiling fails.
    """

    name = "tflite-adb"
    sleep = staticmethod(__import__("time").sleep)  # the cooldown's wait (tests replace it)

    def __init__(self, device: Device, transport: Transport):
        self.device = device
        self.transport = transport
        self.remote_dir = device.transport.remote_dir.rstrip("/")
        self.remote_bin = f"{self.remote_dir}/benchmark_model"
        self.remote_model = f"{self.remote_dir}/op.tflite"
        self._ready = False
        self._ops = 0
        self.meter = choose_meter(device, transport)
        self.flags = benchmark_flags(device)  # fails on a bad device file before anything runs
        self.info: dict = {}

    def prepare(self) -> None:
        """Create the remote folder, push the binary, check it (idempotent)."""
        self._setup()

    def _where(self) -> str:
        return f"device '{self.device.name}'" + (f" ({self.device.source})" if self.device.source else "")

    def _setup(self) -> None:
        import hashlib

        if self._ready:
            return
        bm = self.device.benchmark_model
        self.transport.shell(["mkdir", "-p", self.remote_dir])
        binary = Path(bm.binary)
        if binary.is_file():
            self.transport.push(binary, self.remote_bin)
            self.transport.shell(["chmod", "755", self.remote_bin])
            self.info["benchmark_model_sha256"] = hashlib.sha256(binary.read_bytes()).hexdigest()
        elif "/" in bm.binary:
            raise ConfigError(f"{self._where()}: benchmark_model.binary '{bm.binary}' is not a file on this machine; "
                              f"point it at an Android build of TFLite's benchmark_model (or give a bare name for a "
                              f"binary already in {self.remote_dir})")
        try:
            self.transport.shell(["ls", self.remote_bin])
        except ConfigError:
            raise
        except HwnasError:
            raise ConfigError(f"{self._where()}: benchmark_model is not on the device at {self.remote_bin}; set "
                              f"benchmark_model.binary to a local path of an Android build so hwnas pushes it") from None
        self.info["benchmark_model_version"] = bm.version
        for field_, prop in (("build_fingerprint", "ro.build.fingerprint"), ("model", "ro.product.model")):
            try:
                self.info[field_] = self.transport.shell(["getprop", prop]).strip() or None
            except HwnasError:
                self.info[field_] = None
        self._ready = True

    def version(self) -> str:
        bm = self.device.benchmark_model
        return f"benchmark_model {bm.version or '(version not declared)'} via {self.transport.name}"

    def _read(self, path: str, conv):
        try:
            return conv(self.transport.shell(["cat", path]).strip())
        except (HwnasError, ValueError):
            return None

    def state(self) -> dict:
        """CPU governor, current frequency (kHz) of the first pinned core, temperature (°C) or None."""
        cpu = (self.device.affinity or [0])[0]
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        temp = self._read(self.device.benchmark_model.temperature_path, float)
        return {"governor": self._read(f"{base}/scaling_governor", str),
                "frequency_khz": self._read(f"{base}/scaling_cur_freq", int),
                "temperature_c": temp / 1000 if temp is not None and temp > 1000 else temp}

    def environment(self) -> dict:
        self._setup()
        now = self.state()
        env: dict = {"affinity": self.device.affinity, "governor": now["governor"],
                     "frequency_khz": now["frequency_khz"],
                     "machine": {"transport": self.transport.name, "serial": self.device.transport.serial,
                                 **self.info, "benchmark_flags": self.flags}}
        if self.transport.name.startswith("local"):
            env["machine"]["host"] = machine_info()
        return env

    def command(self, remote_model: str, extra: list[str] = ()) -> list[str]:
        args = [self.remote_bin, f"--graph={remote_model}", *self.flags, *extra]
        if self.device.affinity:
            mask = sum(1 << c for c in self.device.affinity)
            args = ["taskset", f"{mask:x}", *args]
        return args

    def _run(self, artifact: Artifact, extra: list[str] = ()) -> tuple[str, dict, dict]:
        import tempfile

        self._setup()
        cooldown = self.device.benchmark_model.cooldown_s
        if cooldown and self._ops:
            self.sleep(cooldown)
        self._ops += 1
        with tempfile.TemporaryDirectory() as tmp:
            local = artifact.path
            if local is None:
                local = Path(tmp) / "op.tflite"
                local.write_bytes(artifact.data)
            self.transport.push(local, self.remote_model)
        before = self.state()
        try:
            text = self.transport.shell(self.command(self.remote_model, list(extra)))
        finally:
            after = self.state()
            self.transport.remove(self.remote_model)
        return text, before, after

    def measure(self, artifact: Artifact) -> Measurement:
        self.meter.start()
        text, before, after = self._run(artifact)
        m = measurement_from_output(text)
        energy = self.meter.stop(m.samples or 1, m.median_ms)
        notes = [m.note] if m.note else []
        if m.samples and m.samples != self.device.repeats:
            notes.append(f"benchmark_model ran {m.samples} runs, {self.device.repeats} asked")
        notes.append(_state_note(before, after))
        m = replace(m, note="; ".join(n for n in notes if n), env={"before": before, "after": after})
        return m.with_energy(energy, self.meter.source if energy is not None else None)

    def profile_ops(self, artifact: Artifact) -> tuple[Measurement, list[dict]]:
        """Whole model with ``--enable_op_profiling=true``: the end-to-end measurement and the per-node
        rows (:func:`parse_op_profile`)."""
        text, before, after = self._run(artifact, ["--enable_op_profiling=true"])
        return measurement_from_output(text), parse_op_profile(text)

    def close(self) -> None:
        """Remove the model left on the device (if any); safe to call twice."""
        if self._ready:
            try:
                self.transport.remove(self.remote_model)
            except HwnasError:
                pass
        self._ready = False


def _state_note(before: dict, after: dict) -> str:
    parts = []
    if before.get("governor") or after.get("governor"):
        parts.append(f"governor {before.get('governor')}" + (f"→{after.get('governor')}"
                                                             if after.get("governor") != before.get("governor") else ""))
    for key, unit in (("frequency_khz", "kHz"), ("temperature_c", "°C")):
        if before.get(key) is not None or after.get(key) is not None:
            parts.append(f"{before.get(key)}→{after.get(key)} {unit}")
    if before.get("frequency_khz") and after.get("frequency_khz") and before["frequency_khz"] != after["frequency_khz"]:
        parts.append("frequency changed during the run")
    return ", ".join(parts)


__all__ = ["parse_benchmark_output", "parse_op_profile", "benchmark_flags", "measurement_from_output", "AdbTransport", "LocalShellTransportForTests",
           "TFLiteAdbRunner", "BenchmarkOutputError", "Transport"]
