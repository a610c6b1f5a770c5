"""Device descriptors (``devices/*.yaml``), validated with pydantic.

A device says *where* and *how* ops are timed: backend (``tflite`` | ``tvm``), transport
(``local``, ``adb`` with a serial, ``tvm-rpc`` with host/port or a tracker key), thread count,
delegate, TVM target, how energy is obtained, and — for devices we cannot reach — an analytical
cost model (``cost_model``) whose parameters were fitted offline (see :mod:`hwnas.latency.costmodel`).

The shipped files live in ``hwnas/data/devices`` (a link to the repository's ``devices/``), so
:func:`get_device` works from any directory. Extra folders may be listed in ``$HWNAS_DEVICE_PATH``
(``os.pathsep``-separated); a device found there shadows a shipped one of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwnas.errors import ConfigError, UnknownNameError
from hwnas.io import load_structured

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transport(_Strict):
    """How the device is reached.

    ``local``: this machine. ``adb``: an Android device by ``serial`` (``None`` = the only one
    attached). ``tvm-rpc``: a TVM RPC server at ``host``:``port``, or a device pool behind a
    tracker (``tracker`` = ``host:port``, ``key`` = the pool's key).
    """

    kind: Literal["local", "adb", "tvm-rpc"] = "local"
    serial: str | None = None
    host: str | None = None
    port: int | None = None
    tracker: str | None = None
    key: str | None = None
    remote_dir: str = "/data/local/tmp/hwnas"

    @model_validator(mode="after")
    def _check(self) -> "Transport":
        if self.kind == "tvm-rpc" and not ((self.host and self.port) or (self.tracker and self.key)):
            raise ValueError("a tvm-rpc transport needs host+port or tracker+key")
        return self


class PowerModel(_Strict):
    """A declared (not measured) power draw while the op runs: ``energy_mJ = active_w * latency_ms``."""

    active_w: float = Field(gt=0)
    note: str = ""


class CostModelSpec(_Strict):
    """An analytical cost model standing in for measurements (estimated devices).

    ``kind`` names the model in :mod:`hwnas.latency.costmodel`; ``params`` its global parameters;
    ``fitted_on`` / ``refit`` say where they came from and how to reproduce them. ``mobile-cpu-v2``
    also names its fitting ``sources`` (:mod:`hwnas.latency.sources`), the ``anchor`` source whose
    setup the estimate ``represents`` (factor 1), the ``source_factors`` of the others and the
    ``held_out`` sources that are only evaluated.
    """

    kind: Literal["mobile-cpu-v1", "mobile-cpu-v2"] = "mobile-cpu-v1"
    params: dict[str, float]
    anchor: str = ""
    sources: list[str] = Field(default_factory=list)
    held_out: list[str] = Field(default_factory=list)
    source_factors: dict[str, float] = Field(default_factory=dict)
    fitted_on: str = ""
    represents: str = ""
    refit: str = ""
    fit_report: dict[str, Any] = Field(default_factory=dict)


class BenchmarkModel(_Strict):
    """TFLite ``benchmark_model`` settings for adb devices.

    The runner derives ``--num_threads`` (``threads``), the delegate flags (``delegate``),
    ``--warmup_runs``/``--num_runs`` (``warmup``/``repeats``) and ``--min_secs=0
    --warmup_min_secs=0`` from the device file; ``flags`` adds others (a flag that contradicts a
    derived one is refused). ``warmup_runs``/``num_runs`` are superseded by ``warmup``/``repeats`` (a
    warning when they differ).

    Attributes:
        binary: local path of the Android ``benchmark_model`` build to push, or a bare name already
            in the device folder.
        version: the TensorFlow Lite / LiteRT release the binary was built from (recorded in tables:
            ``benchmark_model`` prints no version of its own).
        cooldown_s: seconds to wait before each op (lets a phone cool down between ops; 0 = none).
        temperature_path: the thermal zone read before and after each op (millidegrees Celsius).
    """

    binary: str = "benchmark_model"
    flags: list[str] = Field(default_factory=list)
    warmup_runs: int = Field(5, ge=0)
    num_runs: int = Field(50, ge=1)
    version: str | None = None
    cooldown_s: float = Field(0.0, ge=0)
    temperature_path: str = "/sys/class/thermal/thermal_zone0/temp"


class OpSupport(_Strict):
    """Which TFLite builtin ops, with which tensor dtypes, a device's accelerator runs — written from the
    vendor's published list, named in ``source``. An op outside ``ops`` (or a tensor of another dtype)
    is not mapped: on the Edge TPU the compiler stops at the first such op and everything after it
    runs on the CPU (:func:`hwnas.export.checks.partition`).

    Attributes:
        source: the vendor document (URL and section) the list was written from.
        dtypes: tensor dtypes the accelerator computes in (e.g. ``[int8, uint8]`` for the Edge TPU).
        ops: TFLite builtin op names (``CONV_2D``, ``DEPTHWISE_CONV_2D`` …).
        limitations: per-op remarks copied from the vendor list (not checked).
        cpu_fallback: ``first-unsupported`` (everything from the first unsupported op on runs on
            the CPU: Edge TPU), ``largest-partition`` (only the largest run of consecutive supported
            ops is delegated, the rest runs on the CPU: the TFLite GPU delegate with its default
            ``max_delegated_partitions=1``) or ``per-op`` (only the unsupported ops run on the CPU).
        fold_fp16_dequantize: a ``DEQUANTIZE`` of a float16 constant (the float16 weights of a
            ``--quantize float16`` model) is folded into the op that reads it, not run on its own (the
            GPU delegate's ``FP16GraphPartitionHelper``).
    """

    source: str
    dtypes: list[Literal["int8", "uint8", "int16", "float16", "float32"]]
    ops: list[str]
    limitations: dict[str, str] = Field(default_factory=dict)
    cpu_fallback: Literal["first-unsupported", "largest-partition", "per-op"] = "first-unsupported"
    fold_fp16_dequantize: bool = False

    def runs(self, op: str, dtype: str | None = None) -> bool:
        """Whether the accelerator runs builtin ``op`` (on tensors of ``dtype``, when given)."""
        return op.upper() in self.ops and (dtype is None or dtype in self.dtypes)


#: The TFLite op an activation of the op vocabulary becomes when it is not fused into the conv before it
#: (ReLU/ReLU6 are fused; see hwnas.export.keras).
ACTIVATION_OPS = {"relu": (), "relu6": (), "hswish": ("HARD_SWISH",), "swish": ("LOGISTIC", "MUL")}


class Device(_Strict):
    """One device descriptor. See ``devices/*.yaml`` and docs/latency.md."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    kind: Literal["cpu", "gpu", "edgetpu", "host"]
    backend: Literal["tflite", "tvm"]
    transport: Transport = Field(default_factory=Transport)
    threads: int = Field(1, ge=1)
    affinity: list[int] | None = None
    delegate: Literal["xnnpack", "gpu", "nnapi", "edgetpu", "none"] = "xnnpack"
    precision: Literal["float32", "float16", "int8"] = "float32"
    tvm_target: dict[str, Any] | None = None
    tvm_host: dict[str, Any] | None = None
    tuned: bool = False  # ignored (kept so older files load): tables record tuning from the database applied
    tune_trials: int = Field(0, ge=0)  # TVM MetaSchedule trials per op (0 = untuned; minutes per op)
    energy: Literal["rapl", "android-battery", "power-model", "none"] = "none"
    power_model: PowerModel | None = None
    cost_model: CostModelSpec | None = None
    benchmark_model: BenchmarkModel = Field(default_factory=BenchmarkModel)
    supported_ops: list[str] | None = None  # legacy flat list; prefer op_support
    op_support: OpSupport | None = None
    warmup: int = Field(5, ge=0)
    repeats: int = Field(30, ge=1)
    # Local runs: 'thread-cpu' times the invoking thread's CPU time (single-threaded inference runs in
    # that thread), which a shared, oversubscribed machine does not inflate; 'wall' is wall-clock;
    # 'auto' = thread-cpu with 1 thread, wall otherwise.
    timer: Literal["auto", "wall", "thread-cpu"] = "auto"
    source: str | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"device name must be alphanumeric with - or _, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Device":
        if self.backend == "tvm" and not self.tvm_target:
            raise ValueError("a tvm device needs tvm_target")
        if self.energy == "power-model" and self.power_model is None:
            raise ValueError("energy 'power-model' needs power_model")
        if self.supported_ops is not None and self.op_support is not None:
            raise ValueError("give op_support (with its source) or the legacy supported_ops, not both")
        return self

    def accelerator_ops(self) -> list[str] | None:
        """The builtin ops the accelerator runs (``op_support.ops``, else ``supported_ops``; None: any)."""
        return list(self.op_support.ops) if self.op_support is not None else self.supported_ops

    def allows_activation(self, activation: str | None) -> bool:
        """Whether the accelerator runs ``activation`` (``relu``/``relu6``/``hswish``/``swish``) natively;
        True for devices without an op list. Spaces offering h-swish are filtered by it (MobileNetV3's
        "minimalistic" idea: ReLU instead of h-swish where the hardware lacks it)."""
        ops = self.accelerator_ops()
        if ops is None or activation is None:
            return True
        return all(op in ops for op in ACTIVATION_OPS.get(activation, ()))

    def activation_substitutes(self) -> dict[str, str]:
        """``{activation: "relu"}`` for every activation the accelerator does not run (Edge TPU:
        ``{"hswish": "relu"}``, HARD_SWISH being absent from Coral's supported-operations table); empty
        for devices without an op list. Every space a search or profile builds for this device uses it
        (:meth:`hwnas.spaces.SearchSpace.restricted`)."""
        return {a: "relu" for a in ACTIVATION_OPS if not self.allows_activation(a)}

    @property
    def estimated(self) -> bool:
        """True when the device is priced by a cost model (no hardware here)."""
        return self.cost_model is not None

    def names(self) -> list[str]:
        return [self.name, *self.aliases]


def device_dirs() -> list[Path]:
    """Folders searched for ``*.yaml`` devices: ``$HWNAS_DEVICE_PATH`` then the shipped ones."""
    extra = [Path(p) for p in os.environ.get("HWNAS_DEVICE_PATH", "").split(os.pathsep) if p]
    return [*extra, PACKAGE_DATA / "devices"]


def load_device(path: str | Path) -> Device:
    """Load and validate one device file.

    Raises:
        ConfigError: unreadable, corrupt, or failing validation (message names file and field).
    """
    data = load_structured(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of device fields")
    try:
        return Device(**data, source=str(path))
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: field '{loc}': {first['msg']}") from None


def list_devices() -> list[Device]:
    """Every known device (first definition of a name wins), sorted by name."""
    found: dict[str, Device] = {}
    for folder in device_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            dev = load_device(path)
            found.setdefault(dev.name, dev)
    return sorted(found.values(), key=lambda d: d.name)


def get_device(name: str | Device) -> Device:
    """The device called ``name`` or having it as an alias (case-insensitive), or a device file path.

    Raises:
        UnknownNameError: listing the known names and aliases.
    """
    if isinstance(name, Device):
        return name
    if str(name).endswith((".yaml", ".yml")) and Path(name).is_file():
        return load_device(name)
    key = str(name).lower()
    devices = list_devices()
    for dev in devices:
        if key in (n.lower() for n in dev.names()):
            return dev
    raise UnknownNameError("device", str(name), [n for d in devices for n in d.names()])


__all__ = ["Device", "OpSupport", "ACTIVATION_OPS", "Transport", "PowerModel", "CostModelSpec", "BenchmarkModel", "get_device", "list_devices",
           "load_device", "device_dirs", "PACKAGE_DATA"]
