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
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas.errors import ConfigError, MissingOpError, SpecError, TableError
from hwnas.io import atomic_write_json, atomic_write_yaml, load_structured
from hwnas.opkey import OpKey

SCHEMA_VERSION = 1
_PROVENANCE = re.compile(r"^(measured|estimated)(: .+)?$", re.S)


class Entry(BaseModel):
    """One op's measurement: latency in ms (median, 10th/90th percentile), sample count, energy in mJ."""

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
    source_file: str | None = None
    notes: str = ""

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
                writes; the message names this table's file, the key and its canonical form.
        """
        okey = self._parse_key(str(key))
        self.entries[str(okey)] = entry if isinstance(entry, Entry) else Entry(**entry)
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
        """The ``n`` keys most similar to ``key``: same op kind first, then by string similarity."""
        key = str(key)
        kind = key.split("_", 1)[0]
        same = [k for k in self.entries if k.split("_", 1)[0] == kind] or list(self.entries)
        return difflib.get_close_matches(key, same, n=n, cutoff=0.0)

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


def find_tables(device: str | None = None, space: str | None = None, resolution: int | None = None,
                aliases: Iterable[str] = (), errors: list[str] | None = None) -> list[LatencyTable]:
    """Tables on the search path matching the filters (earlier folders first). Unreadable or corrupt
    files are skipped; their messages are appended to ``errors`` when given (``hwnas devices`` and
    ``hwnas table show`` print them)."""
    names = {n.lower() for n in (device, *aliases) if n}
    out = []
    seen: set[str] = set()
    for folder in table_dirs():
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.json")]):
            try:
                table = LatencyTable.load(path)
            except TableError as err:
                if errors is not None:
                    errors.append(str(err))
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
            out.append(table)
    return out


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


__all__ = ["SCHEMA_VERSION", "Entry", "Calibration", "CalibrationPoint", "TableMeta", "LatencyTable", "find_tables",
           "table_dirs", "user_table_dir", "table_filename", "diff_tables", "machine_info", "read_cpu_state",
           "now_iso"]
