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
    tuned: bool | None = None  # TVM: a MetaSchedule database was applied to this op's library (None: not TVM)

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
        if self.device.accelerator_ops() is not None:
            outside = sorted(set(op_counts(data)) - set(self.device.accelerator_ops()))
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
    if "tuned" in artifact.extra:
        m = replace(m, tuned=bool(artifact.extra["tuned"]))
    return m


def table_tuned(records: Iterable[dict]) -> tuple[bool, str]:
    """A TVM table's ``tuned`` label from its ops' journal records: True only when every measured op
    (``skip`` entries aside) had a MetaSchedule database applied (``"tuned": true``, set from
    :class:`hwnas.export.tvm.TVMArtifact` by the builder); a record without the field (an older
    journal) counts as untuned. Returns ``(tuned, how many ops were tuned, as words)``."""
    ops = [r for r in records if r.get("energy_source") != "identity"]
    done = sum(1 for r in ops if r.get("tuned") is True)
    return (bool(ops) and done == len(ops)), f"{done} of {len(ops)} ops with a MetaSchedule database applied"


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
    """What a profile did: the table written (None when the store already held every wanted key), its
    path, the journal, the keys measured now, how many came from the journal, what the consistency
    check still finds and which ops it re-measured, how many wanted keys the store already held
    (``skipped``) and how many keys were asked for (``wanted``)."""

    table: LatencyTable | None
    path: Path | None
    journal: Path | None
    measured: list[str]
    resumed: int
    seconds: float
    check: Any = None  # hwnas.latency.table.TableCheck: what the consistency check still finds
    remeasured: list[str] = field(default_factory=list)
    skipped: int = 0
    wanted: int = 0


# ---------------------------------------------------------------------- which keys
@dataclass(frozen=True)
class KeyRequest:
    """The op keys a profile measures, with a ``label`` naming them (table file name and the table's
    ``space`` field), the input ``resolution``, and the space or architecture they came from (for
    calibration members)."""

    keys: list[OpKey]
    label: str
    resolution: int
    space: Any = None
    arch: Any = None


def space_label(space) -> str:
    """``mobilenetv2`` for the defaults (width 1, 3 channels, 1000 classes), else e.g.
    ``mobilenetv2-w0.5-c1-k10`` (width, input channels, classes)."""
    label = space.name
    if space.width_multiplier != 1.0:
        label += f"-w{space.width_multiplier:g}"
    if space.in_channels != 3:
        label += f"-c{space.in_channels}"
    if space.num_classes != 1000:
        label += f"-k{space.num_classes}"
    return label


def _unique(keys: Iterable[OpKey]) -> list[OpKey]:
    seen: set[str] = set()
    out = []
    for k in keys:
        if str(k) not in seen:
            seen.add(str(k))
            out.append(k)
    return out


def space_request(space, *, reference: bool = False) -> KeyRequest:
    """Every op key of ``space`` (sorted), then, with ``reference``, the keys of the zoo MobileNetV2 at
    the space's width/resolution/channels/classes that only it places: the architecture whose
    latency ``hwnas search`` uses as its default budget (:func:`hwnas.search.pipeline.reference_arch`)."""
    from hwnas.opkey import arch_op_keys

    keys = list(space.op_keys())
    if reference:
        from hwnas.search.pipeline import reference_arch

        keys += [k for _, k in arch_op_keys(reference_arch(space))]
    return KeyRequest(_unique(keys), space_label(space), space.resolution, space=space)


def arch_request(arch) -> KeyRequest:
    """The op keys of one architecture, in layer order."""
    import hashlib

    from hwnas.opkey import arch_op_keys

    digest = hashlib.sha1(arch.to_compact().encode()).hexdigest()[:8]
    name = "".join(c if c.isalnum() or c in "-." else "-" for c in (arch.name or "arch"))
    return KeyRequest(_unique(k for _, k in arch_op_keys(arch)), f"arch-{name}-{digest}", arch.resolution, arch=arch)


def search_space_of(space: str, *, resolution: int, width: float, data: str | None = None,
                    in_channels: int | None = None, classes: int | None = None, device=None):
    """The space ``hwnas search`` builds from the same options: ``in_channels``/``classes`` default to
    those of ``data`` (loaded once, nothing downloaded); restricted to what ``device`` runs, as the
    search restricts it. Raises what :func:`resolve_space` and :func:`hwnas.search.data.load_data` raise."""
    from hwnas.spaces import resolve_space

    if in_channels is None or classes is None:
        from hwnas.search.data import load_data

        bundle = load_data(data or "mnist5k", resolution=resolution, limit=64)
        in_channels = bundle.in_channels if in_channels is None else in_channels
        classes = bundle.num_classes if classes is None else classes
    return resolve_space(space, resolution=resolution, width=width, in_channels=in_channels, classes=classes,
                         device=device)


def run_request(run: str | Path, device=None) -> KeyRequest:
    """The keys a search run needs: its space (as :func:`space_request` with the reference when the run
    had no explicit budget), from the run folder's ``config.yaml``.

    Raises:
        ConfigError: no run folder / config there.
    """
    from hwnas.spaces import resolve_space

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run}: not a search run folder (no config.yaml)")
    from hwnas.io import load_structured

    conf = load_structured(path)
    cfg = conf.get("search") if isinstance(conf, dict) else None
    if not isinstance(cfg, dict) or "space" not in cfg:
        raise ConfigError(f"{path}: no 'search' section with 'space'")
    spec = conf.get("space_spec")
    if isinstance(spec, dict):
        sp = resolve_space(spec["name"], resolution=spec["resolution"], width=spec["width"],
                           in_channels=spec["in_channels"], classes=spec["classes"], device=device)
    else:  # runs written before space_spec was recorded
        sp = search_space_of(cfg["space"], resolution=cfg.get("resolution", 32), width=cfg.get("width", 0.5),
                             data=cfg.get("data"), device=device)
    return space_request(sp, reference=cfg.get("latency_ms") is None)


class TimeEstimate:
    """The remaining time of a profile, from the ops measured so far: after ``first`` ops, the mean
    time per op of ops 2..``first`` (the first op also pays for importing TensorFlow and warming the
    runtime) times the ops left. No figure is given before anything was measured.

    Call :meth:`tick` after each op (``now``: ``time.perf_counter()``); it returns the message once.
    """

    def __init__(self, total: int, first: int = 4):
        self.total, self.first = total, first
        self.times: list[float] = []
        self.done = 0
        self.said = False

    def tick(self, now: float) -> str | None:
        self.done += 1
        self.times.append(now)
        if self.said or self.done < self.first or self.done >= self.total or len(self.times) < 2:
            return None
        self.said = True
        per_op = (self.times[-1] - self.times[0]) / (len(self.times) - 1)
        left = self.total - self.done
        return (f"measured {self.done} of {self.total} ops; at {per_op:.1f} s per op (ops 2-{self.done}) the "
                f"remaining {left} take about {left * per_op / 60:.1f} min")


def preflight(device: Device) -> None:
    """Check what measuring on ``device`` needs before anything is announced or built: the Edge TPU's
    ``edgetpu_compiler`` (builder) and ``libedgetpu`` (runner), and the backend's Python package (a
    missing extra raises ``ModuleNotFoundError``, which the CLI turns into its one-line ``pip install``).

    Raises:
        ConfigError: naming the missing tool.
    """
    import shutil

    if device.backend == "tflite":
        import ai_edge_litert.interpreter  # noqa: F401 - the [tflite] extra
    else:
        import tvm  # noqa: F401 - the [tvm] extra
    if device.delegate == "edgetpu":
        if shutil.which("edgetpu_compiler") is None:
            raise ConfigError("device '%s' needs edgetpu_compiler on PATH (coral.ai/docs/edgetpu/compiler) to build "
                              "its ops; nothing was measured" % device.name)
        if device.transport.kind == "local":
            from ai_edge_litert.interpreter import load_delegate

            try:
                load_delegate("libedgetpu.so.1")
            except (ValueError, OSError) as err:
                raise ConfigError(f"device '{device.name}': cannot load libedgetpu.so.1 ({err}); nothing was "
                                  "measured") from None


def has_local_runner(device: Device) -> bool:
    """Whether hwnas can measure on ``device`` from here without anything to connect (``transport: local``:
    the host with LiteRT or TVM). adb phones and RPC boards are profiled only when asked."""
    return device.transport.kind == "local"


def profile_command(device: Device, space) -> str:
    """The ``hwnas profile`` command that measures what a search over ``space`` needs."""
    return (f"hwnas profile --device {device.name} --space {space.name} --resolution {space.resolution} "
            f"--width {space.width_multiplier:g} --in-channels {space.in_channels} --classes {space.num_classes}")


def ensure_keys(device: Device, request: KeyRequest, *, command: str, allow_profile: bool = True,
                say: Callable[[str], None] = lambda s: None, progress: bool = False,
                what: str | None = None, why_not: str = "--no-profile was given",
                refuse_hint: str | None = "--no-profile refuses") -> ProfileResult | None:
    """Make the device's key store price every key of ``request`` before a search or prediction.

    Keys neither the store nor the device's cost model price are measured first on a device with a
    local runner (:func:`has_local_runner`), after saying how many and roughly how long; otherwise,
    or with ``allow_profile=False`` (``--no-profile``), a :class:`~hwnas.latency.store.MissingKeysError`
    names them and ``command``, the ``hwnas profile`` command that measures them. ``refuse_hint``: how
    the calling command refuses the measurement (said in the announcement; None: it cannot).

    Returns:
        the :class:`ProfileResult` of the measurement, or None when nothing was missing.
    """
    from hwnas.latency.predict import Predictor
    from hwnas.latency.store import KeyStore

    if device.estimated:
        return None  # its cost model prices any key
    store = KeyStore.for_device(device)
    missing = Predictor(device, store=store).missing(request.keys)
    if not missing:
        return None
    what = what or request.label
    if not (allow_profile and has_local_runner(device)):
        why = why_not if has_local_runner(device) else \
            f"'{device.name}' has no local runner ({device.transport.kind}): profile it by hand"
        raise store.missing_error(missing, what=f"{what} ({why})", command=command)
    preflight(device)  # a missing compiler/delegate is said before any announcement or build
    say(f"{len(missing)} of the {len(request.keys)} op keys of {what} are not in {device.name}'s latency tables; "
        f"measuring them first (the time left is estimated after the first ops"
        + (f"; {refuse_hint}" if refuse_hint else "") + f"). Same as: {command}")
    eta = TimeEstimate(len(missing))

    def on_measured(key, m):
        msg = eta.tick(time.perf_counter())
        if msg:
            say(msg)

    res = profile(device, request=request, keys=missing, store=store, progress=progress, on_measured=on_measured)
    say(f"wrote {res.path}: {len(res.measured)} op(s) measured in {res.seconds:.0f} s")
    return res


def default_out(device: Device, label: str, resolution: int) -> Path:
    from hwnas.latency.table import table_filename, user_table_dir

    return user_table_dir() / table_filename(device.name, label, resolution)


def profile(device: str | Device, space: str | None = None, resolution: int | None = None, *,
            width: float = 1.0, in_channels: int = 3, classes: int = 1000, arch=None, request: KeyRequest | None = None,
            reference: bool = False, only_missing: bool = True, store=None,
            out: str | Path | None = None, builder: Builder | None = None, runner: Runner | None = None,
            keys: Iterable[OpKey | str] | None = None, limit: int | None = None, repeats: int | None = None,
            warmup: int | None = None, calibrate: int = 0, seed: int = 0, progress: bool = True, transport=None,
            on_measured: Callable[[OpKey, Measurement], None] | None = None) -> ProfileResult:
    """Measure the op keys of a space, an architecture or a request on ``device`` that its key store lacks,
    and write them as one table.

    Args:
        device: name/alias or :class:`Device`.
        space, resolution, width, in_channels, classes: the space (:func:`hwnas.spaces.resolve_space`,
            names literal) whose keys are wanted; ``reference`` adds the keys of the MobileNetV2 a search
            prices for its default budget (:func:`space_request`).
        arch: an :class:`~hwnas.arch.ArchSpec` instead: only its keys. ``request``: a ready
            :class:`KeyRequest` (e.g. :func:`run_request`).
        only_missing: measure only keys the device's :class:`~hwnas.latency.store.KeyStore` (``store``,
            default the device's tables on the table path) and the ``out`` table lack; ``False``
            re-measures every wanted key.
        out: table path (default ``$HWNAS_HOME/latency_tables/<device>-<label>-<res>.yaml``, the label
            naming the space and any non-default width/channels/classes); the journal is
            ``<out>.journal.jsonl``. Entries already in ``out`` are kept.
        builder, runner: override the defaults for the device (swappable components).
        keys: measure only these of the wanted keys (a slice); ``limit``: at most N keys to measure.
        repeats, warmup: override the device's counts.
        calibrate: measure this many random members (or the ``arch``) end to end and fit the calibration.
        on_measured: callback after each op is journalled (tests use it to inject interruptions).

    After measuring, the new entries pass the consistency check (:func:`recheck`: offenders re-measured
    once, what remains listed in the table's notes and ``ProfileResult.check``).

    Returns:
        :class:`ProfileResult`; ``table`` is None when the store already held every wanted key.

    Raises:
        TableError: a journal for another device/label/resolution at the same path; ``keys`` outside the
        wanted keys. ConfigError: neither space, arch nor request.
    """
    from hwnas.latency.store import KeyStore
    from hwnas.spaces import resolve_space

    t0 = time.perf_counter()
    dev = get_device(device)
    overrides = {k: v for k, v in (("repeats", repeats), ("warmup", warmup)) if v is not None}
    if overrides:
        dev = dev.model_copy(update=overrides)
    if request is None:
        if arch is not None:
            request = arch_request(arch)
        elif space is not None:
            request = space_request(resolve_space(space, resolution=resolution, width=width, in_channels=in_channels,
                                                  classes=classes, device=dev), reference=reference)
        else:
            raise ConfigError("profile needs a space, an architecture or a run (--space, --arch or --from-run)")
    label, resolution = request.label, request.resolution
    all_keys = list(request.keys)
    if keys is not None:
        wanted = {str(k) for k in keys}
        unknown = wanted - {str(k) for k in all_keys}
        if unknown:
            raise TableError(f"keys not among the {len(all_keys)} keys of {label} at {resolution}: "
                             f"{', '.join(sorted(unknown)[:3])}")
        all_keys = [k for k in all_keys if str(k) in wanted]
    out = Path(out) if out else default_out(dev, label, resolution)
    existing = LatencyTable.load(out) if out.exists() else None
    skipped = 0
    if only_missing:
        store = store if store is not None else KeyStore.for_device(dev)
        have = set(existing.entries) if existing is not None else set()
        known = {str(k) for k in all_keys if str(k) in store or str(k) in have}
        skipped = len(known)
        all_keys = [k for k in all_keys if str(k) not in known]
    else:
        store = None
    if limit is not None:
        all_keys = all_keys[:limit]
    if not all_keys and not calibrate:  # the store holds every wanted key: nothing to write
        return ProfileResult(existing, out if existing is not None else None, None, [], 0, time.perf_counter() - t0,
                             skipped=skipped, wanted=len(request.keys))
    journal_path = out.with_name(out.name + ".journal.jsonl")
    if existing is not None and _journal_spent(journal_path, existing):
        journal_path.unlink()  # every record already made it into `out`: a new profile, not a resume
    if runner is None and builder is None:
        preflight(dev)  # the compiler/delegate/backend it needs, before the journal or any build
    runner = runner or make_runner(dev, transport)
    builder = builder or make_builder(dev)
    journal = Journal(journal_path,
                      {"device": dev.name, "space": label, "resolution": int(resolution), "backend": dev.backend,
                       "env": journal_environment(dev)})
    resumed = sum(1 for k in all_keys if str(k) in journal.records)
    todo = [k for k in all_keys if str(k) not in journal.records]
    from hwnas.export.tflite import logging_to

    # TensorFlow/LiteRT/TVM chatter of the builders and runners goes to <out>.log, not into the progress bar
    log = out.with_name(out.name + ".log")
    try:  # the runner's session (adb, RPC) is closed whatever happens
        with logging_to(log):
            result = _measure_all(dev, request, all_keys, todo, builder, runner, journal, out, existing, store,
                                  progress, on_measured, calibrate, seed)
    finally:
        runner.close()
    table, measured, check, remeasured = result
    return ProfileResult(table, out, journal.path, measured, resumed, time.perf_counter() - t0, check, remeasured,
                         skipped, len(request.keys))


def _journal_spent(path: Path, table: LatencyTable) -> bool:
    """Whether the journal at ``path`` holds nothing that ``table`` lacks (its profile finished)."""
    if not path.exists():
        return False
    keys = []
    for line in path.read_text().splitlines()[1:]:
        try:
            keys.append(json.loads(line)["key"])
        except (json.JSONDecodeError, KeyError, TypeError):
            return False  # a torn or foreign line: leave it to Journal to judge
    return all(k in table.entries for k in keys)


def _measure_all(dev, request, all_keys, todo, builder, runner, journal, out, existing, store, progress, on_measured,
                 calibrate, seed):
    label, resolution, sp = request.label, request.resolution, request.space
    prepare = getattr(runner, "prepare", None)
    if prepare is not None and any(k.kind != "skip" for k in todo):
        prepare()  # fail fast (no adb, no RPC server) before building anything
    measured: list[str] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"profile {dev.name}/{label}@{resolution}", unit="op")
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
    tuned, tuned_how = table_tuned(journal.records[str(k)] for k in all_keys) if dev.backend == "tvm" else (None, "")
    provenance = "measured" if tuned is not False else "measured: untuned TVM schedules (not a latency model of " \
                                                       "the device's best code)"
    # the table's `space` names a registered space where there is one (its width/channels/classes are in
    # the keys and the file name), else the label (an architecture's keys)
    meta = TableMeta(device=dev.name, space=sp.name if sp is not None else label, resolutions=[int(resolution)],
                     backend=dev.backend,
                     backend_version=runner.version(), threads=dev.threads, governor=env.get("governor"),
                     frequency_khz=env.get("frequency_khz"), affinity=env.get("affinity"), date=now_iso(),
                     hwnas_version=__version__, provenance=provenance, machine=env.get("machine"), tuned=tuned,
                     precision=dev.precision, delegate=dev.delegate,
                     notes=f"runner {runner.name}, builder {builder.name}, warmup {dev.warmup}, repeats {dev.repeats}"
                           + (f", timer {runner.timer}" if getattr(runner, "timer", None) else "")
                           + (f", {tuned_how}" if tuned_how else ""))
    entries, check, remeasured = recheck({str(k): journal.entry(str(k)) for k in all_keys}, all_keys, builder,
                                         runner, dev, journal)
    if check:
        meta.notes += (f"; consistency check (after re-measuring {len(remeasured)} op(s) once): "
                       + "; ".join(check.lines()))
    merged = dict(existing.entries) if existing is not None else {}  # entries already in `out` are kept
    merged.update(entries)
    table = LatencyTable(meta, merged, existing.calibration if existing is not None else None)
    if calibrate:
        from hwnas.latency.predict import fit_calibration

        rng = random.Random(seed)
        points = []
        for i in range(calibrate):
            member = sp.decode(sp.sample(rng)) if sp is not None else request.arch
            m = runner.measure(builder.build_arch(member))
            points.append((f"member{i}", member, m.median_ms))
        fit_calibration(table, points, store=store)
    table.save(out)
    return table, measured, check, remeasured


def measurable(device: Device, *, tflite: bool = False) -> str | None:
    """Why hwnas cannot measure a whole model on ``device`` from here (None when it can): estimated
    devices and devices without a local runner are not measured; an exported ``.tflite`` (``tflite``)
    needs a LiteRT device."""
    if not has_local_runner(device):
        kind = "an estimated-only target (cost model)" if device.estimated else \
            f"reached over {device.transport.kind}, which hwnas does not drive unasked"
        return f"nothing was measured: '{device.name}' is {kind}"
    if tflite and device.backend != "tflite":
        return f"nothing was measured: '{device.name}' runs {device.backend}, not the exported .tflite"
    return None


def measure_model(device: Device, *, arch=None, path: str | Path | None = None, runner: Runner | None = None,
                  builder: Builder | None = None) -> Measurement:
    """End-to-end latency of one whole model on ``device`` with the same runner, warm-up and repeats as
    its tables: an exported ``.tflite`` (``path``) or ``arch`` built as the profiler builds its
    calibration members. Median/p10/p90 in ms over ``device.repeats`` runs.

    Raises:
        ConfigError: :func:`measurable` says no (estimated or remote-only device) or neither input given.
    """
    why = measurable(device, tflite=path is not None)
    if why is not None:
        raise ConfigError(why)
    runner = runner or make_runner(device)
    try:
        if path is not None:
            return runner.measure(Artifact(path=Path(path)))
        if arch is None:
            raise ConfigError("measure_model needs an architecture or a .tflite path")
        return runner.measure((builder or make_builder(device)).build_arch(arch))
    finally:
        runner.close()


def measurement_report(device: Device, predicted_ms: float, m: Measurement | None, *, budget_ms: float | None = None,
                       note: str | None = None) -> dict[str, Any]:
    """The fields written next to a prediction: ``measured_latency_ms`` (median), its spread
    (``measured_p10_ms``, ``measured_p90_ms``, ``measured_samples``), ``prediction_error_pct``
    (100·(predicted − measured)/measured) and, with a budget, ``within_budget_measured``. Without a
    measurement the fields are None and ``measurement_note`` says why."""
    if m is None:
        out = {"measured_latency_ms": None, "measured_p10_ms": None, "measured_p90_ms": None,
               "measured_samples": 0, "prediction_error_pct": None, "measurement_note": note}
        if budget_ms is not None:
            out["within_budget_measured"] = None
        return out
    out = {"measured_latency_ms": m.median_ms, "measured_p10_ms": m.p10_ms, "measured_p90_ms": m.p90_ms,
           "measured_samples": m.samples, "prediction_error_pct": 100 * (predicted_ms - m.median_ms) / m.median_ms,
           "measurement_note": f"{device.name}: warm-up {device.warmup}, {device.repeats} timed runs, "
                               f"{device.threads} thread(s), as its tables"}
    if budget_ms is not None:
        out["within_budget_measured"] = bool(m.median_ms <= budget_ms * (1 + 1e-9))
    return out


def _environment(dev: Device, runner) -> dict[str, Any]:
    env_fn = getattr(runner, "environment", None)
    if env_fn is not None:
        return env_fn()
    return {**read_cpu_state(dev.affinity), "machine": machine_info()}


__all__ = ["Artifact", "Measurement", "summarize", "Builder", "Runner", "TFLiteOpBuilder", "make_builder",
           "make_runner", "Journal", "ProfileResult", "profile", "default_out", "measure_key", "recheck",
           "journal_environment", "MeasurementError", "KeyRequest", "space_request", "arch_request", "run_request",
           "search_space_of", "space_label", "TimeEstimate", "preflight", "has_local_runner", "profile_command", "ensure_keys",
           "measurable", "measure_model", "measurement_report"]
