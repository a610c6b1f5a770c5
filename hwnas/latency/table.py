"""Latency tables: per-op latency (and energy) of one device, keyed by :class:`hwnas.opkey.OpKey`.

File format (YAML or JSON, read with safe loaders only; written atomically)::

    schema_version: 1
    meta:
      device: pixel1                # device name (devices/*.yaml)
      space: mobilenetv2            # the search space whose op keys were enumerated
      resolutions: [224]
      backend: tflite
      backend_version: ai-edge-litert 2.3.0
      threads: 1
      governor: performance         # null where unreadable
      frequency_khz: null
      affinity: [0]
      date: 2026-11-30T14:00:00Z
      hwnas_version: 0.1.0
      provenance: measured          # or 'estimated: <how>'
      machine: {...}                # host details (measured tables)
      tuned: null                   # TVM: whether schedules were tuned
      notes: ''
    calibration:                    # optional: fit of per-op sums to whole-model measurements
      scale: 1.07
      offset_ms: 0.3
      points: [{name, arch, measured_ms, sum_ms}]
      report: {rmspe, max_abs_pct_error, n}
    entries:
      "ir_k3_e6_s1_c24_r6@56x56x24": {median_ms, p10_ms, p90_ms, samples, energy_mj, energy_source}

Entries are keyed by ``str(OpKey)`` only; the loader parses every key with :meth:`OpKey.parse`, so a
table written with ad-hoc keys is refused on load.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import platform
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas.errors import ConfigError, HwnasWarning, MissingOpError, SpecError, TableError
from hwnas.io import atomic_write_json, atomic_write_yaml, load_structured
from hwnas.opkey import OpKey

SCHEMA_VERSION = 1
_PROVENANCE = re.compile(r"^(measured|estimated)(: .+)?$", re.S)


class TableEnvironmentWarning(HwnasWarning, TableError):
    """A measured table was made in another environment than the device's now (threads, runtime
    version, precision, delegate, governor). A warning by default; ``--strict`` (or
    ``warnings.simplefilter("error", TableEnvironmentWarning)``) turns it into an error, which, being
    a :class:`TableError`, the CLI prints on one line with exit status 2."""


class Entry(BaseModel):
    """One op's measurement: latency in ms (median, 10th/90th percentile), sample count, energy in mJ.

    Values must be finite and not negative; a table refuses a median of 0 for any op but an
    identity (:meth:`LatencyTable.set`)."""

    model_config = ConfigDict(extra="forbid")

    median_ms: float = Field(ge=0)
    p10_ms: float | None = Field(default=None, ge=0)
    p90_ms: float | None = Field(default=None, ge=0)
    samples: int = Field(ge=0)
    energy_mj: float | None = Field(default=None, ge=0)
    energy_source: str | None = None
    note: str | None = None

    @field_validator("median_ms", "p10_ms", "p90_ms", "energy_mj")
    @classmethod
    def _finite(cls, v):
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class CalibrationPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arch: str  # compact string
    measured_ms: float = Field(gt=0)
    sum_ms: float = Field(ge=0)


class Calibration(BaseModel):
    """``latency = scale * sum(per-op entries) + offset_ms`` fitted on whole-model points."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0)
    offset_ms: float = 0.0
    points: list[CalibrationPoint] = Field(default_factory=list)
    report: dict[str, Any] = Field(default_factory=dict)


class TableMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str
    space: str
    resolutions: list[int]
    backend: str
    backend_version: str | None = None
    threads: int | None = None
    governor: str | None = None
    frequency_khz: int | None = None
    affinity: list[int] | None = None
    date: str
    hwnas_version: str
    provenance: str
    machine: dict[str, Any] | None = None
    tuned: bool | None = None
    precision: str | None = "float32"
    delegate: str | None = None
    source_file: str | None = None
    notes: str = ""
    # the last `hwnas table check` (hwnas.profile.check.check_table): share within ±10 %, RMSPE,
    # Spearman, Kendall τ of the predictor vs end-to-end measurements, with date, members and load
    fidelity: dict[str, Any] | None = None

    @field_validator("provenance")
    @classmethod
    def _prov(cls, v: str) -> str:
        if not _PROVENANCE.match(v):
            raise ValueError(f"provenance must be 'measured' or 'estimated: <how>' (optionally 'measured: <note>'), "
                             f"got {v!r}")
        return v

    @property
    def estimated(self) -> bool:
        return self.provenance.startswith("estimated")


def nearest_keys(key: OpKey | str, keys: Iterable[str], n: int = 3) -> list[str]:
    """The ``n`` of ``keys`` most similar to ``key``: same op kind (the token before the first ``_``)
    first, then by string similarity (``difflib``); all keys when none has the kind."""
    key, keys = str(key), list(keys)
    kind = key.split("_", 1)[0]
    same = [k for k in keys if k.split("_", 1)[0] == kind] or keys
    return difflib.get_close_matches(key, same, n=n, cutoff=0.0)


class LatencyTable:
    """A device's per-op table. ``entries`` maps ``str(OpKey)`` to :class:`Entry`.

    Args:
        meta: :class:`TableMeta`.
        entries: mapping ``OpKey | str -> Entry | dict``; string keys are parsed (must be canonical).
        calibration: optional :class:`Calibration`.
        path: where it was loaded from (for messages).
    """

    def __init__(self, meta: TableMeta | dict, entries: dict | None = None, calibration: Calibration | dict | None = None,
                 path: str | Path | None = None):
        self.meta = meta if isinstance(meta, TableMeta) else TableMeta(**meta)
        self.calibration = (calibration if isinstance(calibration, Calibration) or calibration is None
                            else Calibration(**calibration))
        self.path = Path(path) if path else None
        self.entries: dict[str, Entry] = {}
        self._keys: dict[str, OpKey] = {}
        for key, entry in (entries or {}).items():
            self.set(key, entry)

    # ------------------------------------------------------------------ entries
    def _where(self) -> str:
        return str(self.path) if self.path else f"table {self.meta.device}/{self.meta.space}"

    def set(self, key: OpKey | str, entry: Entry | dict) -> None:
        """Store ``entry`` under ``key``.

        Raises:
            TableError: ``key`` (string or :class:`OpKey`) is not the canonical form :func:`hwnas.opkey.op_key`
                writes (the message names this table's file, the key and its canonical form), or a
                non-identity op has a median of 0 ms or less (naming the op and the device).
        """
        okey = self._parse_key(str(key))
        if not isinstance(entry, Entry):
            try:
                entry = Entry(**entry)
            except ValidationError as err:
                first = err.errors()[0]
                raise TableError(f"{self._where()}: entry '{okey}' of device '{self.meta.device}': field "
                                 f"'{'.'.join(str(p) for p in first['loc'])}' {first['msg']} "
                                 f"(got {first.get('input')!r})") from None
        if okey.kind != "skip" and not entry.median_ms > 0:
            raise TableError(f"{self._where()}: entry '{okey}' of device '{self.meta.device}' has median_ms "
                             f"{entry.median_ms}: only an identity (skip) op takes 0 ms; re-measure it "
                             f"(hwnas profile --device {self.meta.device}) or delete the entry")
        self.entries[str(okey)] = entry
        self._keys[str(okey)] = okey

    def _parse_key(self, key: str) -> OpKey:
        try:
            return OpKey.parse(key)
        except SpecError as err:
            raise TableError(f"{self._where()}: bad entry key '{key}': {err}") from None

    def keys(self) -> list[OpKey]:
        return [self._keys[k] for k in self.entries]

    def __contains__(self, key: OpKey | str) -> bool:
        return str(key) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: OpKey | str) -> Entry:
        """The entry of ``key``.

        Raises:
            MissingOpError: naming the key, the table and the nearest keys present.
        """
        entry = self.entries.get(str(key))
        if entry is None:
            near = self.nearest(key, 3)
            raise MissingOpError(f"op key '{key}' is not in {self._where()} (device {self.meta.device}, space "
                                 f"{self.meta.space}, resolution(s) {self.meta.resolutions}); nearest keys: "
                                 f"{', '.join(near) if near else 'none'}; measure it with 'hwnas profile --device "
                                 f"{self.meta.device}' or price it from the nearest key with --fallback")
        return entry

    def nearest(self, key: OpKey | str, n: int = 3) -> list[str]:
        """The ``n`` keys of this table most similar to ``key`` (:func:`nearest_keys`)."""
        return nearest_keys(key, self.entries, n)

    # ------------------------------------------------------------------ checks
    def check(self, *, device: str | None = None, space: str | None = None, resolution: int | None = None,
              device_aliases: Iterable[str] = ()) -> "LatencyTable":
        """Refuse a table made for another device, space or resolution.

        Raises:
            TableError: naming the asked-for and the table's device/space/resolution.
        """
        names = {n.lower() for n in (device, *device_aliases) if n}
        if device is not None and self.meta.device.lower() not in names:
            raise TableError(f"{self._where()} was made for device '{self.meta.device}', not for '{device}'; "
                             f"profile '{device}' (hwnas profile --device {device}) or pick its table")
        if space is not None and self.meta.space != space:
            raise TableError(f"{self._where()} covers space '{self.meta.space}', not '{space}'")
        if resolution is not None and int(resolution) not in self.meta.resolutions:
            raise TableError(f"{self._where()} was made at resolution {self.meta.resolutions} "
                             f"but resolution {resolution} was asked for")
        return self

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "meta": self.meta.model_dump()}
        if self.calibration is not None:
            out["calibration"] = self.calibration.model_dump()
        out["entries"] = {k: {f: v for f, v in e.model_dump().items() if v is not None}
                          for k, e in sorted(self.entries.items())}
        return out

    def save(self, path: str | Path) -> Path:
        """Write atomically (``.json`` → JSON, else YAML)."""
        path = Path(path)
        (atomic_write_json if path.suffix == ".json" else atomic_write_yaml)(path, self.to_dict())
        self.path = path
        return path

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> "LatencyTable":
        where = str(path or "<table>")
        if not isinstance(data, dict) or "meta" not in data or "entries" not in data:
            raise TableError(f"{where}: not a latency table (expected a mapping with 'schema_version', 'meta', "
                             f"'entries')")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TableError(f"{where}: schema_version {version!r} is not supported (this hwnas reads "
                             f"{SCHEMA_VERSION})")
        if not isinstance(data["entries"], dict):
            raise TableError(f"{where}: 'entries' must be a mapping of op key -> entry")
        try:
            return cls(data["meta"], data["entries"], data.get("calibration"), path=path)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise TableError(f"{where}: invalid table field '{loc}': {first['msg']}") from None
        except TypeError as err:
            raise TableError(f"{where}: invalid table ({err})") from None

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, space: str | None = None,
             resolution: int | None = None, device_aliases: Iterable[str] = ()) -> "LatencyTable":
        """Load and validate a table file, optionally checking device/space/resolution.

        Raises:
            TableError: corrupt/truncated file, wrong schema, bad key or mismatch.
        """
        try:
            data = load_structured(path)
        except ConfigError as err:
            raise TableError(str(err)) from None
        table = cls.from_dict(data, path=path)
        return table.check(device=device, space=space, resolution=resolution, device_aliases=device_aliases)

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "device": self.meta.device, "space": self.meta.space,
                "resolutions": self.meta.resolutions, "provenance": self.meta.provenance,
                "backend": self.meta.backend, "entries": len(self.entries),
                "calibrated": self.calibration is not None}


# ---------------------------------------------------------------------- helpers
def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def machine_info() -> dict[str, Any]:
    """Host details recorded with measured tables (CPU model, cores, kernel, Python)."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info["cpus"] = os.cpu_count()
    return info


def read_cpu_state(cpus: Iterable[int] | None = None) -> dict[str, Any]:
    """Governor and current frequency (kHz) of the first of ``cpus`` where readable, and affinity.

    Returns ``{"governor": str|None, "frequency_khz": int|None, "affinity": list[int]|None}``.
    """
    import os

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    cpu = next(iter(cpus), 0) if cpus else (affinity[0] if affinity else 0)
    base = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq")
    governor = freq = None
    try:
        governor = (base / "scaling_governor").read_text().strip()
    except OSError:
        pass
    try:
        freq = int((base / "scaling_cur_freq").read_text().strip())
    except (OSError, ValueError):
        pass
    return {"governor": governor, "frequency_khz": freq, "affinity": affinity}


def table_dirs() -> list[Path]:
    """Folders searched for tables: ``$HWNAS_TABLE_PATH`` entries, the user folder, the shipped folder."""
    import os

    from hwnas.latency.devices import PACKAGE_DATA

    extra = [Path(p) for p in os.environ.get("HWNAS_TABLE_PATH", "").split(os.pathsep) if p]
    return [*extra, user_table_dir(), PACKAGE_DATA / "latency_tables"]


def user_table_dir() -> Path:
    """Where ``hwnas profile`` writes by default: ``$HWNAS_HOME/latency_tables`` (default ~/.hwnas)."""
    import os

    return Path(os.environ.get("HWNAS_HOME", Path.home() / ".hwnas")) / "latency_tables"


def table_filename(device: str, space: str, resolution: int) -> str:
    return f"{device}-{space}-{int(resolution)}.yaml"


def _claimed_device(path: Path) -> str | None:
    """The device a table file that failed to load says it belongs to: its ``meta.device`` when the
    file still parses that far, else the file name's ``<device>-<space>-<res>`` prefix."""
    try:
        data = load_structured(path)
        dev = data.get("meta", {}).get("device") if isinstance(data, dict) else None
        if isinstance(dev, str) and dev:
            return dev
    except Exception:  # noqa: BLE001 - a corrupt file: fall back on its name
        pass
    return None


def _belongs_to(path: Path, names: set[str]) -> bool:
    claimed = _claimed_device(path)
    if claimed is not None:
        return claimed.lower() in names
    stem = path.stem.lower()
    return any(stem == n or stem.startswith(n + "-") for n in names)


def find_tables(device: str | None = None, space: str | None = None, resolution: int | None = None,
                aliases: Iterable[str] = (), errors: list[str] | None = None) -> list[LatencyTable]:
    """Tables on the search path matching the filters (earlier folders first).

    A corrupt or unreadable file is never skipped silently: when ``device`` is given and the file
    belongs to it (its ``meta.device``, or its file name ``<device>-…`` when even that is unreadable),
    :class:`TableError` is raised — a prediction must not quietly fall back on a shipped table or a
    cost model; any other corrupt file is skipped with its message appended to ``errors`` when given
    (``hwnas devices`` and ``hwnas table show`` print them), else with a :class:`HwnasWarning`.
    Each measured table of a registered ``device`` is compared with that device's environment
    (:func:`check_environment`: a :class:`TableEnvironmentWarning`, an error under ``--strict``).

    Raises:
        TableError: a table of the requested device is corrupt (names the file and the problem).
    """
    names = {n.lower() for n in (device, *aliases) if n}
    out = []
    seen: set[str] = set()
    dev = None
    if device is not None:
        from hwnas.errors import UnknownNameError
        from hwnas.latency.devices import get_device

        try:
            dev = get_device(device)
        except UnknownNameError:
            dev = None
    for folder in table_dirs():
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.json")]):
            try:
                table = LatencyTable.load(path)
            except TableError as err:
                if names and _belongs_to(path, names):
                    raise TableError(f"{err} (this table belongs to device '{device}': fix or delete it; it is not "
                                     f"replaced by another table or a cost model)") from None
                if errors is not None:
                    errors.append(str(err))
                else:
                    warnings.warn(f"skipped a corrupt latency table: {err}", HwnasWarning, stacklevel=2)
                continue
            m = table.meta
            if names and m.device.lower() not in names:
                continue
            if space is not None and m.space != space:
                continue
            if resolution is not None and int(resolution) not in m.resolutions:
                continue
            ident = f"{m.device}/{m.space}/{m.resolutions}/{path.name}"
            if ident in seen:
                continue
            seen.add(ident)
            if dev is not None:
                check_environment(table, dev)
            out.append(table)
    return out


def installed_backend_version(device) -> str | None:
    """The runtime this machine would time ``device`` with, spelled as the profiler records it in
    ``meta.backend_version`` (``ai-edge-litert 2.3.0``, ``apache-tvm 0.27.0``); None for a remote
    transport (adb, RPC: the runtime is on the other side) or when the package is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    if device.transport.kind != "local":
        return None
    dist = {"tflite": "ai-edge-litert", "tvm": "apache-tvm"}.get(device.backend)
    try:
        return f"{dist} {version(dist)}" if dist else None
    except PackageNotFoundError:
        return None


def _same_version(a: str, b: str) -> bool:
    """``apache-tvm 0.27.0`` (``tvm.__version__``) matches ``apache-tvm 0.27.0.post1`` (the wheel)."""
    a, b = a.strip().lower(), b.strip().lower()
    return a.startswith(b) or b.startswith(a)


def environment_mismatches(table: LatencyTable, device, *, backend_version: str | None = None,
                           governor: str | None = None) -> list[str]:
    """How a *measured* table's recorded environment differs from ``device`` (its device file) and
    the runtime installed here: threads, backend, backend version, precision, delegate, governor.

    A field is compared only where both sides are known (an old table without ``delegate``, a
    governor that was unreadable, a remote runtime). Estimated tables describe no environment and
    give no mismatch.

    Args:
        backend_version: the runtime to compare with (default :func:`installed_backend_version`).
        governor: the CPU governor now (default: read here for local devices, unknown otherwise).

    Returns:
        One ``"<field>: table X, device Y"`` string per mismatch (empty when all known fields agree).
    """
    m = table.meta
    if m.estimated:
        return []
    local = device.transport.kind == "local"
    now = backend_version if backend_version is not None else installed_backend_version(device)
    if governor is None and local:
        governor = read_cpu_state(device.affinity).get("governor")
    out = []
    pairs = [("threads", m.threads, device.threads), ("backend", m.backend, device.backend),
             ("precision", m.precision, device.precision), ("delegate", m.delegate, device.delegate),
             ("governor", m.governor, governor)]
    for name, have, want in pairs:
        if have is not None and want is not None and have != want:
            out.append(f"{name}: table {have}, device {want}")
    if m.backend_version and now and not _same_version(m.backend_version, now):
        out.append(f"backend version: table {m.backend_version}, installed {now}")
    return out


def check_environment(table: LatencyTable, device, *, strict: bool = False, **now) -> list[str]:
    """Warn (:class:`TableEnvironmentWarning`) when a measured table was made in another environment than the
    device's (:func:`environment_mismatches`); with ``strict`` refuse it.

    Returns:
        The mismatches (empty when none).

    Raises:
        TableError: ``strict`` and a mismatch; the message names the file and every differing field.
    """
    diffs = environment_mismatches(table, device, **now)
    if diffs:
        msg = (f"{table._where()} was measured in another environment than device '{device.name}' now: "
               f"{'; '.join(diffs)}; its figures may not hold: re-profile with hwnas profile --device {device.name}")
        if strict:
            raise TableError(msg + " (refused by --strict)")
        warnings.warn(msg + " (--strict refuses such a table)", TableEnvironmentWarning, stacklevel=2)
    return diffs


@dataclass
class TableCheck:
    """Result of :func:`check_table_consistency`.

    Attributes:
        inversions: ``(smaller_key, bigger_key, detail)``: the bigger op was measured faster than the
            smaller one by more than the entries' spread.
        high_spread: ``(key, relative_spread)`` of entries whose ``(p90 - p10) / median`` exceeds the limit.
    """

    inversions: list[tuple[str, str, str]] = field(default_factory=list)
    high_spread: list[tuple[str, float]] = field(default_factory=list)

    @property
    def offenders(self) -> list[str]:
        """Every key named by an inversion or a high spread (sorted)."""
        keys = {k for a, b, _ in self.inversions for k in (a, b)} | {k for k, _ in self.high_spread}
        return sorted(keys)

    def __bool__(self) -> bool:
        return bool(self.inversions or self.high_spread)

    def lines(self) -> list[str]:
        """One human line per finding (for the table notes and the command output)."""
        out = [f"inversion: {big} measured faster than {small} ({detail})" for small, big, detail in self.inversions]
        out += [f"high spread: {key} (p90-p10 = {100 * r:.0f} % of the median)" for key, r in self.high_spread]
        return out


_SIZE_FIELDS = ("kernel", "expansion", "out_channels")


def _spread(e: Entry) -> float:
    return (e.p90_ms - e.p10_ms) if e.p10_ms is not None and e.p90_ms is not None else 0.0


def check_table_consistency(entries: dict[str, Entry] | LatencyTable, *, spread_limit: float = 0.5,
                            tolerance: float = 0.05) -> TableCheck:
    """Check measured entries for inversions and high spread.

    *Monotonicity*: two ops of the same kind on the same input shape (NHWC) that differ in exactly
    one of kernel, expansion ratio or output channels — everything else equal (stride, SE, groups,
    activation, SE style, whether an identity is added) — should not have the bigger one faster.
    An inversion is reported when ``median(smaller) - median(bigger)`` exceeds both entries'
    spread (``p90 - p10``) and ``tolerance`` × the smaller op's median (padding to SIMD tiles can
    make e.g. 24 and 32 channels cost the same, and that is not an error).

    *Spread*: ``(p90 - p10) / median > spread_limit`` flags an entry (a busy or throttling device).

    Identity (``skip``) and classifier entries are not compared.
    """
    from dataclasses import asdict

    if isinstance(entries, LatencyTable):
        entries = entries.entries
    result = TableCheck()
    groups: dict[tuple, list[tuple[OpKey, Entry]]] = {}
    for text, entry in entries.items():
        key = OpKey.parse(text)
        if key.kind in ("skip", "classifier"):
            continue
        if entry.median_ms > 0 and _spread(entry) / entry.median_ms > spread_limit:
            result.high_spread.append((text, _spread(entry) / entry.median_ms))
        fields_ = asdict(key.block())
        rest = tuple(sorted((k, v) for k, v in fields_.items() if k not in _SIZE_FIELDS))
        groups.setdefault((key.input_shape, key.se_style, key.layer().has_residual, rest), []).append((key, entry))
    for members in groups.values():
        for ka, ea in members:
            ba = ka.block()
            for kb, eb in members:
                bb = kb.block()
                diff = [f for f in _SIZE_FIELDS if getattr(ba, f) != getattr(bb, f)]
                if len(diff) != 1 or getattr(bb, diff[0]) < getattr(ba, diff[0]):
                    continue  # (ka smaller, kb bigger) in exactly one size field
                gap = ea.median_ms - eb.median_ms
                if gap > max(_spread(ea), _spread(eb), tolerance * ea.median_ms):
                    result.inversions.append((str(ka), str(kb), f"{diff[0]}: {eb.median_ms:.4g} ms < "
                                                                f"{ea.median_ms:.4g} ms"))
    result.inversions.sort()
    result.high_spread.sort()
    return result


def diff_tables(a: LatencyTable, b: LatencyTable) -> dict[str, Any]:
    """Compare two tables: keys only in one, and per-key ratio ``b/a`` of the medians for shared keys."""
    ka, kb = set(a.entries), set(b.entries)
    shared = sorted(ka & kb)
    ratios = {k: (b.entries[k].median_ms / a.entries[k].median_ms) if a.entries[k].median_ms > 0 else None
              for k in shared}
    valid = [r for r in ratios.values() if r is not None]
    import statistics

    return {"only_a": sorted(ka - kb), "only_b": sorted(kb - ka), "shared": len(shared), "ratios": ratios,
            "median_ratio": statistics.median(valid) if valid else None,
            "min_ratio": min(valid) if valid else None, "max_ratio": max(valid) if valid else None}


__all__ = ["SCHEMA_VERSION", "nearest_keys", "Entry", "Calibration", "CalibrationPoint", "TableMeta", "LatencyTable", "find_tables",
           "table_dirs", "user_table_dir", "table_filename", "diff_tables", "machine_info", "read_cpu_state",
           "now_iso", "TableEnvironmentWarning", "environment_mismatches", "check_environment", "installed_backend_version",
           "check_table_consistency", "TableCheck"]
