"""The profiling pipeline: builder → runner → table store, each swappable (as TVM MetaSchedule's
builder/runner/database), with a JSONL journal that doubles as the resume state.

* **builder** (:class:`TFLiteOpBuilder`, :class:`hwnas.profile.tvm_runner.TVMOpBuilder`): turns an
  :class:`~hwnas.opkey.OpKey` into a single-op artifact through the exporters' own code path
  (``hwnas.export.keras.keras_op_model`` → ``hwnas.export.tflite.convert``), so tables price
  exactly what ships; ``build_arch`` does the same for whole models (calibration points).
* **runner** (:class:`hwnas.profile.tflite_local.TFLiteLocalRunner`,
  :class:`hwnas.profile.tflite_adb.TFLiteAdbRunner`, :class:`hwnas.profile.tvm_runner.TVMRunner`):
  times an artifact: warm-up, repeated runs, median/p10/p90 in ms, energy where available.
* **store**: every measurement is appended to ``<out>.journal.jsonl`` and fsynced before the next
  op starts; a rerun reads the journal and measures only what is missing (a kill loses at most the
  op in flight). At the end the table is written atomically.

``skip`` keys are entered as 0 ms without measuring: an identity is no op in the exported graph.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from hwnas import __version__
from hwnas.errors import ConfigError, TableError
from hwnas.latency.devices import Device, get_device
from hwnas.latency.table import Entry, LatencyTable, TableMeta, machine_info, now_iso, read_cpu_state
from hwnas.opkey import OpKey

JOURNAL_VERSION = 1


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class Artifact:
    """A built model: bytes in memory and/or a file, with its format (``tflite`` | ``tvm``)."""

    data: bytes | None = None
    path: Path | None = None
    format: str = "tflite"
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """Timing of one artifact: latency in ms (median, 10th/90th percentile), sample count, energy
    of one inference in mJ and its source, and a note."""

    median_ms: float
    p10_ms: float | None
    p90_ms: float | None
    samples: int
    energy_mj: float | None = None
    energy_source: str | None = None
    note: str | None = None
    env: dict | None = None  # runner state around the run (adb: governor/frequency/temperature before, after)

    def with_energy(self, energy_mj: float | None, source: str | None) -> "Measurement":
        return replace(self, energy_mj=energy_mj, energy_source=source)

    def to_entry(self) -> Entry:
        return Entry(median_ms=self.median_ms, p10_ms=self.p10_ms, p90_ms=self.p90_ms, samples=self.samples,
                     energy_mj=self.energy_mj, energy_source=self.energy_source, note=self.note)


def summarize(times_ms: Iterable[float]) -> Measurement:
    """Median, p10 and p90 (numpy linear percentiles) of per-run times in ms."""
    import numpy as np

    t = np.asarray(list(times_ms), dtype=float)
    if t.size == 0:
        raise ConfigError("no timing samples")
    p10, med, p90 = np.percentile(t, [10, 50, 90])
    return Measurement(float(med), float(p10), float(p90), int(t.size))


class Builder(Protocol):
    name: str

    def build(self, key: OpKey) -> Artifact: ...

    def build_arch(self, arch) -> Artifact: ...


class Runner(Protocol):
    name: str

    def version(self) -> str: ...

    def measure(self, artifact: Artifact) -> Measurement: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- builders
_QUANT = {"float32": None, "float16": "float16", "int8": "int8"}


class TFLiteOpBuilder:
    """Single-op ``.tflite`` through the exporters: ``keras_op_model(key)`` → ``convert``.

    ``int8`` devices get full-integer models calibrated on random normal inputs (weights and data
    do not change an op's latency). Single-op models take and return int8 tensors (``int8_io``), so
    no QUANTIZE/DEQUANTIZE pair is timed with each op: in a whole int8 network activations stay
    int8 between ops, and a per-op sum would otherwise count one pair per layer (~20 extra pairs
    for a MobileNetV2). Whole models (:meth:`build_arch`, the calibration points) keep the exported
    model's float32 input/output, so their one pair is measured where it really occurs.
    """

    name = "keras-tflite"

    def __init__(self, device: Device, seed: int = 0):
        self.device = device
        self.seed = seed
        self.quantize = _QUANT[device.precision]

    def _convert(self, model, shape, *, int8_io: bool = False) -> bytes:
        from hwnas.export.tflite import convert

        if self.quantize == "int8":
            import numpy as np

            rng = np.random.default_rng(self.seed)
            data = rng.standard_normal((8, *shape)).astype("float32")
            return convert(model, quantize="int8", representative_data=data, int8_io=int8_io)
        return convert(model, quantize=self.quantize)

    def _finish(self, data: bytes) -> Artifact:
        """Edge TPU devices: list ops outside ``supported_ops`` (they run on the CPU) and compile
        with ``edgetpu_compiler`` (argument list; a clear error when it is not installed)."""
        if self.device.delegate != "edgetpu":
            return Artifact(data=data, format="tflite")
        from hwnas.export.tflite import op_counts

        note = None
        if self.device.supported_ops is not None:
            outside = sorted(set(op_counts(data)) - set(self.device.supported_ops))
            note = f"ops outside the Edge TPU support list (run on the CPU): {', '.join(outside)}" if outside else None
        import shutil
        import subprocess
        import tempfile

        compiler = shutil.which("edgetpu_compiler")
        if compiler is None:
            raise ConfigError("device '%s' needs edgetpu_compiler on PATH (coral.ai/docs/edgetpu/compiler)"
                              % self.device.name)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "op.tflite"
            src.write_bytes(data)
            subprocess.run([compiler, "-s", "-o", tmp, str(src)], check=True, capture_output=True)
            data = (Path(tmp) / "op_edgetpu.tflite").read_bytes()
        return Artifact(data=data, format="tflite", extra={"note": note} if note else {})

    def build(self, key: OpKey) -> Artifact:
        from hwnas.export.keras import keras_op_model

        return self._finish(self._convert(keras_op_model(key, seed=self.seed), key.input_shape, int8_io=True))

    def build_arch(self, arch) -> Artifact:
        from hwnas.export.keras import keras_model

        model = keras_model(arch, softmax=False)
        return self._finish(self._convert(model, (arch.resolution, arch.resolution, arch.in_channels)))


def make_builder(device: Device) -> Builder:
    if device.backend == "tflite":
        return TFLiteOpBuilder(device)
    from hwnas.profile.tvm_runner import TVMOpBuilder

    return TVMOpBuilder(device)


def make_runner(device: Device, transport=None) -> Runner:
    """The runner for the device's backend and transport (``transport`` overrides adb's)."""
    kind = device.transport.kind
    if device.backend == "tflite" and kind == "local":
        from hwnas.profile.tflite_local import TFLiteLocalRunner

        return TFLiteLocalRunner(device)
    if device.backend == "tflite" and kind == "adb":
        from hwnas.profile.tflite_adb import AdbTransport, TFLiteAdbRunner

        return TFLiteAdbRunner(device, transport or AdbTransport(device.transport.serial))
    if device.backend == "tvm":
        from hwnas.profile.tvm_runner import TVMRunner

        return TVMRunner(device)
    raise ConfigError(f"device '{device.name}': no runner for backend {device.backend} over {kind}")


# ---------------------------------------------------------------------- journal
class Journal:
    """Append-only JSONL: a header line naming device/space/resolution/backend and the measuring
    environment (``env``: :func:`journal_environment`), then one line per measured key, each flushed
    and fsynced. A truncated last line (a kill mid-write) is ignored.

    Raises:
        TableError: resuming a journal of another device/space/resolution/backend, or whose
            environment differs (threads 1 → 2, another runtime version, precision, delegate, governor,
            warm-up/repeat counts, benchmark_model flags), naming every changed field.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]):
        self.path = Path(path)
        self.header = {"journal": JOURNAL_VERSION, **header}
        self.records: dict[str, dict] = {}
        self.dropped_lines = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line(self.header)

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        try:
            head = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            raise TableError(f"{self.path}: corrupt journal header; delete it to start over") from None
        for field_ in ("device", "space", "resolution", "backend"):
            if head.get(field_) != self.header.get(field_):
                raise TableError(f"{self.path}: journal was written for {field_} '{head.get(field_)}', this run is "
                                 f"for '{self.header.get(field_)}'; use another --out or delete the journal")
        was, now = head.get("env") or {}, self.header.get("env") or {}
        changed = [f"{k}: journal {was[k]!r}, now {now[k]!r}" for k in sorted(set(was) & set(now))
                   if was[k] is not None and now[k] is not None and was[k] != now[k]]
        if changed:
            raise TableError(f"{self.path}: the environment changed since this profile started ({'; '.join(changed)}); "
                             f"resuming would mix both in one table labelled with the new one: restore the old "
                             f"settings, or delete the journal (or pick another --out) to start over")
        self.header = {**head, "env": {**was, **now}}
        for i, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
                self.records[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                if i != len(lines):
                    raise TableError(f"{self.path}: corrupt journal line {i}; delete it to start over") from None
                self.dropped_lines += 1  # truncated tail from a kill: re-measure that op
        if self.dropped_lines:
            # rewrite without the torn tail so appends start on a clean line
            good = [json.dumps(self.header)] + [json.dumps(r) for r in self.records.values()]
            from hwnas.io import atomic_write_text

            atomic_write_text(self.path, "\n".join(good) + "\n")

    def _write_line(self, obj: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(obj) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, key: OpKey, m: Measurement, **extra: Any) -> None:
        rec = {"key": str(key), **{k: v for k, v in m.__dict__.items() if v is not None}, "time": now_iso(), **extra}
        self._write_line(rec)
        self.records[str(key)] = rec

    def entry(self, key: str) -> Entry:
        rec = self.records[key]
        return Entry(**{k: rec[k] for k in ("median_ms", "p10_ms", "p90_ms", "samples", "energy_mj",
                                             "energy_source", "note") if k in rec})


def journal_environment(dev: Device) -> dict[str, Any]:
    """What a journal's measurements depend on besides the op: the device file's threads, affinity,
    precision, delegate, warm-up/repeat counts (and ``benchmark_model`` flags over adb), the runtime
    installed here and the CPU governor (local devices, where readable). Unknown values are None and
    are not compared."""
    from hwnas.latency.table import installed_backend_version

    local = dev.transport.kind == "local"
    env: dict[str, Any] = {"threads": dev.threads, "affinity": dev.affinity, "precision": dev.precision,
                           "delegate": dev.delegate, "warmup": dev.warmup, "repeats": dev.repeats,
                           "timer": dev.timer, "backend_version": installed_backend_version(dev),
                           "governor": read_cpu_state(dev.affinity).get("governor") if local else None}
    if dev.transport.kind == "adb":
        bm = dev.benchmark_model
        env.update(benchmark_flags=list(bm.flags), warmup_runs=bm.warmup_runs, num_runs=bm.num_runs)
    return env


class MeasurementError(TableError):
    """A runner returned an impossible timing (0 ms, negative, NaN) or failed on one op."""


def measure_key(key: OpKey, builder: Builder, runner: Runner, device: Device) -> Measurement:
    """Build and time one op; a ``skip`` is entered as 0 ms without measuring.

    Raises:
        MeasurementError: the runner failed, or returned a non-positive or non-finite median (e.g.
            ``benchmark_model``'s ``avg=0``), naming the op and the device.
    """
    import math

    from hwnas.errors import HwnasError

    if key.kind == "skip":
        return Measurement(0.0, 0.0, 0.0, 0, 0.0, "identity", "identity: no op in the exported graph")
    artifact = builder.build(key)
    try:
        m = runner.measure(artifact)
    except MeasurementError:
        raise
    except HwnasError as err:
        raise MeasurementError(f"device '{device.name}', op '{key}': {err}") from None
    if not (math.isfinite(m.median_ms) and m.median_ms > 0):
        raise MeasurementError(f"device '{device.name}', op '{key}': the runner ({runner.name}) reported a median of "
                               f"{m.median_ms} ms; an op cannot take 0 ms or less (a timer too coarse for the op, or "
                               f"a run that did not happen); nothing was written for it")
    if artifact.extra.get("note"):
        m = replace(m, note="; ".join(filter(None, [m.note, artifact.extra["note"]])))
    return m


def recheck(entries: dict[str, Entry], keys: Iterable[OpKey], builder: Builder, runner: Runner, device: Device,
            journal: "Journal | None" = None):
    """Check ``entries`` for inversions and high spread
    (:func:`hwnas.latency.table.check_table_consistency`), re-measure every offender once (journalled:
    the newer line wins on resume), and check again.

    A key is measured again at most once: the journal marks re-measured lines, and a resumed or
    repeated run does not measure them a third time.

    Returns:
        ``(entries, check, remeasured)``: the updated entries, the findings that remain, and the keys
        measured again.
    """
    from hwnas.latency.table import check_table_consistency

    first = check_table_consistency(entries)
    by_name = {str(k): k for k in keys}
    done = set() if journal is None else {k for k, r in journal.records.items() if r.get("remeasured")}
    again = [by_name[k] for k in first.offenders if k in by_name and k not in done]
    entries = dict(entries)
    for key in again:
        m = measure_key(key, builder, runner, device)
        if journal is not None:
            journal.append(key, m, remeasured=True)
        entries[str(key)] = m.to_entry()
    return entries, (check_table_consistency(entries) if again else first), [str(k) for k in again]


# ---------------------------------------------------------------------- pipeline
@dataclass
class ProfileResult:
    table: LatencyTable
    path: Path
    journal: Path
    measured: list[str]
    resumed: int
    seconds: float
    check: Any = None  # hwnas.latency.table.TableCheck: what the consistency check still finds
    remeasured: list[str] = field(default_factory=list)


def default_out(device: Device, space: str, resolution: int) -> Path:
    from hwnas.latency.table import table_filename, user_table_dir

    return user_table_dir() / table_filename(device.name, space, resolution)


def profile(device: str | Device, space: str, resolution: int, *, out: str | Path | None = None,
            builder: Builder | None = None, runner: Runner | None = None, keys: Iterable[OpKey | str] | None = None,
            limit: int | None = None, repeats: int | None = None, warmup: int | None = None, calibrate: int = 0,
            seed: int = 0, progress: bool = True, transport=None,
            on_measured: Callable[[OpKey, Measurement], None] | None = None) -> ProfileResult:
    """Measure every op key of ``space`` at ``resolution`` on ``device`` and write a table.

    Args:
        device: name/alias or :class:`Device`.
        space: space name (``get_space``).
        resolution: input resolution.
        out: table path (default ``~/.hwnas/latency_tables/<device>-<space>-<res>.yaml``); the journal
            is ``<out>.journal.jsonl``.
        builder, runner: override the defaults for the device (swappable components).
        keys: measure only these keys (a slice of the space); ``limit``: only the first N keys.
        repeats, warmup: override the device's counts.
        calibrate: measure this many random members end to end and fit the calibration.
        on_measured: callback after each op is journalled (tests use it to inject interruptions).

    Returns:
        :class:`ProfileResult` with the table, its path, the keys measured in this run and how many
        were taken from the journal.

    Raises:
        TableError: a journal for another device/space/resolution at the same path.
    """
    from hwnas.spaces import get_space

    t0 = time.perf_counter()
    dev = get_device(device)
    overrides = {k: v for k, v in (("repeats", repeats), ("warmup", warmup)) if v is not None}
    if overrides:
        dev = dev.model_copy(update=overrides)
    sp = get_space(space, resolution=resolution)
    all_keys = sp.op_keys(resolution)
    if keys is not None:
        wanted = {str(k) for k in keys}
        unknown = wanted - {str(k) for k in all_keys}
        if unknown:
            raise TableError(f"keys not in space {sp.name} at {resolution}: {', '.join(sorted(unknown)[:3])}")
        all_keys = [k for k in all_keys if str(k) in wanted]
    if limit is not None:
        all_keys = all_keys[:limit]
    out = Path(out) if out else default_out(dev, sp.name, resolution)
    runner = runner or make_runner(dev, transport)
    builder = builder or make_builder(dev)
    journal = Journal(out.with_name(out.name + ".journal.jsonl"),
                      {"device": dev.name, "space": sp.name, "resolution": int(resolution), "backend": dev.backend,
                       "env": journal_environment(dev)})
    resumed = sum(1 for k in all_keys if str(k) in journal.records)
    todo = [k for k in all_keys if str(k) not in journal.records]
    try:  # the runner's session (adb, RPC) is closed whatever happens
        result = _measure_all(dev, sp, resolution, all_keys, todo, builder, runner, journal, out, progress,
                              on_measured, calibrate, seed)
    finally:
        runner.close()
    table, measured, check, remeasured = result
    return ProfileResult(table, out, journal.path, measured, resumed, time.perf_counter() - t0, check, remeasured)


def _measure_all(dev, sp, resolution, all_keys, todo, builder, runner, journal, out, progress, on_measured,
                 calibrate, seed):
    prepare = getattr(runner, "prepare", None)
    if prepare is not None and any(k.kind != "skip" for k in todo):
        prepare()  # fail fast (no adb, no RPC server) before building anything
    measured: list[str] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"profile {dev.name}/{sp.name}@{resolution}", unit="op")
    try:
        for key in todo:
            m = measure_key(key, builder, runner, dev)
            journal.append(key, m)
            measured.append(str(key))
            if bar is not None:
                bar.update(1)
            if on_measured is not None:
                on_measured(key, m)
    finally:
        if bar is not None:
            bar.close()
    env = _environment(dev, runner)
    tuned = getattr(runner, "tuned", None) if dev.backend == "tvm" else None
    provenance = "measured" if tuned is not False else "measured: untuned TVM schedules (not a latency model of " \
                                                       "the device's best code)"
    meta = TableMeta(device=dev.name, space=sp.name, resolutions=[int(resolution)], backend=dev.backend,
                     backend_version=runner.version(), threads=dev.threads, governor=env.get("governor"),
                     frequency_khz=env.get("frequency_khz"), affinity=env.get("affinity"), date=now_iso(),
                     hwnas_version=__version__, provenance=provenance, machine=env.get("machine"), tuned=tuned,
                     precision=dev.precision, delegate=dev.delegate,
                     notes=f"runner {runner.name}, builder {builder.name}, warmup {dev.warmup}, repeats {dev.repeats}"
                           + (f", timer {runner.timer}" if getattr(runner, "timer", None) else ""))
    entries, check, remeasured = recheck({str(k): journal.entry(str(k)) for k in all_keys}, all_keys, builder,
                                         runner, dev, journal)
    if check:
        meta.notes += (f"; consistency check (after re-measuring {len(remeasured)} op(s) once): "
                       + "; ".join(check.lines()))
    table = LatencyTable(meta, entries)
    if calibrate:
        from hwnas.latency.predict import fit_calibration

        rng = random.Random(seed)
        points = []
        for i in range(calibrate):
            arch = sp.decode(sp.sample(rng))
            m = runner.measure(builder.build_arch(arch))
            points.append((f"member{i}", arch, m.median_ms))
        fit_calibration(table, points)
    table.save(out)
    return table, measured, check, remeasured




def _environment(dev: Device, runner) -> dict[str, Any]:
    env_fn = getattr(runner, "environment", None)
    if env_fn is not None:
        return env_fn()
    return {**read_cpu_state(dev.affinity), "machine": machine_info()}


__all__ = ["Artifact", "Measurement", "summarize", "Builder", "Runner", "TFLiteOpBuilder", "make_builder",
           "make_runner", "Journal", "ProfileResult", "profile", "default_out", "measure_key", "recheck",
           "journal_environment", "MeasurementError"]
