"""ONNX → Apache TVM (Relax, 0.27) → deployable library, for the host CPU, Android CPUs and GPUs.

Import is ``tvm.relax.frontend.onnx.from_onnx`` (Relay is gone since TVM 0.20); the module is
compiled with ``relax.get_default_pipeline(target)`` (legalization, fusion and, for GPU targets,
dlight's default GPU schedules) and ``tvm.compile``. The executable is exported with
``export_library``: a shared object ``.so`` where a linker for the target is available (the host
C++ compiler for ``llvm``; ``TVM_NDK_CC`` pointing at the Android NDK clang for Android), a ``.tar``
of object files otherwise (link it on the device side).

Targets (``TARGETS``):

* ``llvm`` — the host CPU (``{"kind": "llvm"}``); the only one that can run here.
* ``android`` / ``aarch64`` — ``{"kind": "llvm", "mtriple": "aarch64-linux-android", "mcpu": "cortex-a76"}``.
* ``opencl-adreno`` / ``opencl-mali`` / ``opencl`` — OpenCL kernels with an aarch64-android host.
* ``vulkan`` — SPIR-V (needs a TVM built with Vulkan codegen; the pip wheel is not).
* ``cuda`` — CUDA (device code compiled with NVRTC/nvcc: needs the CUDA toolkit).

Untuned TVM code on CPU is ~20× slower than LiteRT/ORT (``../shared/STACK.md``): numbers from an
untuned ``llvm`` library are no latency model. ``tune_trials > 0`` runs MetaSchedule with that trial
budget (minutes; needs ``apache-tvm-ffi==0.1.14.post1``); off by default.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import ExportError, UnknownNameError
from hwnas.io import atomic_path

_ANDROID_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-android", "mcpu": "cortex-a76"}

#: Named targets: TVM target dict and host dict (None = same process host).
TARGETS: dict[str, tuple[dict, dict | None]] = {
    "llvm": ({"kind": "llvm"}, None),
    "android": (_ANDROID_HOST, None),
    "aarch64": (_ANDROID_HOST, None),
    # a non-Android aarch64 Linux board (Raspberry Pi 4, Jetson CPU): linked with a plain cross compiler
    "aarch64-linux": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}, None),
    "opencl": ({"kind": "opencl"}, _ANDROID_HOST),
    "opencl-adreno": ({"kind": "opencl", "device": "adreno"}, _ANDROID_HOST),
    "opencl-mali": ({"kind": "opencl", "device": "mali"}, _ANDROID_HOST),
    "vulkan": ({"kind": "vulkan"}, _ANDROID_HOST),
    "cuda": ({"kind": "cuda"}, {"kind": "llvm"}),
}


def make_target(target: str | dict):
    """A ``tvm.target.Target`` from a name in :data:`TARGETS` or a TVM target dict.

    Raises:
        UnknownNameError: unknown name. ExportError: TVM rejects the dict.
    """
    import tvm

    if isinstance(target, str):
        if target not in TARGETS:
            raise UnknownNameError("TVM target", target, TARGETS)
        spec, host = TARGETS[target]
    else:
        spec, host = dict(target), None
    try:
        return tvm.target.Target(spec, host=host) if host else tvm.target.Target(spec)
    except Exception as err:
        raise ExportError(f"TVM rejects target {spec}: {str(err).splitlines()[0]}") from None


def is_host_target(target) -> bool:
    """Whether a Target's code runs on this machine (plain ``llvm`` without a foreign triple)."""
    return target.kind.name == "llvm" and "android" not in str(target.attrs.get("mtriple", ""))


def import_onnx(onnx_path_or_module: Any):
    """Relax IRModule from an ``.onnx`` path, ONNX bytes or an ``onnx.ModelProto`` (weights as constants)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(onnx_path_or_module, (str, Path)):
        model = onnx.load(str(onnx_path_or_module))
    elif isinstance(onnx_path_or_module, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(onnx_path_or_module))
    else:
        model = onnx_path_or_module
    try:
        return from_onnx(model, keep_params_in_input=False)
    except Exception as err:
        raise ExportError(f"TVM cannot import the ONNX model: {str(err).splitlines()[0]}") from err


@dataclass
class TVMArtifact:
    """What :func:`compile_tvm` produced: the library path, its kind (``so``/``tar``) and the target."""

    path: Path | None
    kind: str
    target: str
    executable: Any = None
    notes: list[str] = field(default_factory=list)
    tuned: bool = False
    tuning_records: int = 0
    database: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "kind": self.kind, "target": self.target,
                "tuned": self.tuned, "tuning_records": self.tuning_records, "database": self.database,
                "notes": self.notes}


def compile_tvm(onnx_path_or_module: Any, target: str | dict = "llvm", out: str | Path | None = None, *,
                tune_trials: int = 0, work_dir: str | Path | None = None, rpc_tracker: str | None = None,
                rpc_key: str | None = None) -> TVMArtifact:
    """Compile an ONNX model (path, bytes, ModelProto or a Relax IRModule) with TVM for ``target``.

    Args:
        onnx_path_or_module: the model; a Relax ``IRModule`` is compiled as is.
        target: a name in :data:`TARGETS` or a TVM target dict.
        out: library to write (atomically). The suffix is chosen by what can be linked: ``.so`` for
            the host target (and Android when ``TVM_NDK_CC`` is set), ``.tar`` otherwise; a given
            ``out`` whose suffix cannot be honoured raises. ``None`` compiles without exporting
            (a compile-only check).
        tune_trials: MetaSchedule trials (0 = untuned, the default).
        work_dir: MetaSchedule database folder (default: a temporary one).
        rpc_tracker, rpc_key: ``HOST:PORT`` of a TVM RPC tracker and the device key: candidates are
            timed on that device through MetaSchedule's RPC runner. Needed to tune any target that
            is not this machine (a cross target timed here would measure the wrong CPU).

    Returns:
        :class:`TVMArtifact` (``executable`` is the in-memory ``tvm.runtime.Executable``). ``tuned`` is
        True only when a MetaSchedule database with at least one tuning record was applied to the
        module (``tuning_records``, ``database`` = its folder); an untuned compile records False.

    Raises:
        ExportError: import or compilation failure (e.g. a GPU target whose device compiler is
            missing), an ``out`` suffix that cannot be produced, tuning a cross target without
            ``rpc_tracker``/``rpc_key``, or a malformed ``rpc_tracker``.
        UnknownNameError: unknown target name.
    """
    import tvm
    from tvm import relax

    tgt = make_target(target)
    name = target if isinstance(target, str) else json.dumps(target, sort_keys=True)
    mod = onnx_path_or_module if isinstance(onnx_path_or_module, tvm.IRModule) else import_onnx(onnx_path_or_module)
    notes: list[str] = []
    records, database = 0, None
    rpc = parse_tracker(rpc_tracker, rpc_key) if (rpc_tracker or rpc_key) else None
    if tune_trials > 0 and rpc is None and not is_host_target(tgt):
        raise ExportError(f"refusing to tune '{name}' on this machine: its candidates would be timed on this CPU, "
                          "not on the device; pass --rpc-tracker HOST:PORT --rpc-key KEY of a TVM RPC tracker the "
                          "device is registered with (or --tune-trials 0)")
    try:
        if tune_trials > 0:
            from hwnas.export.tflite import quiet

            with quiet():  # MetaSchedule logs its task table and progress to stdout
                mod, records, database = _tune(mod, tgt, tune_trials, work_dir, rpc)
            where = f"on '{rpc[2]}' via the tracker {rpc[0]}:{rpc[1]}" if rpc else "on this machine"
            notes.append(f"MetaSchedule-tuned with {tune_trials} trials {where}: the database {database} "
                         f"({records} tuning records) applied" if records else
                         f"MetaSchedule ran {tune_trials} trials {where} but its database {database} holds no "
                         "tuning record: untuned schedules")
        ex = tvm.compile(mod, target=tgt, relax_pipeline=relax.get_default_pipeline(tgt))
    except Exception as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ExportError(f"TVM compilation for '{name}' failed: {first[:300]}") from err
    tuned = records > 0
    if out is None:
        return TVMArtifact(None, "none", name, ex, notes + ["compile-only"], tuned, records, database)
    out = Path(out)
    kind, fcompile = _library_kind(tgt)
    want = out.suffix.lstrip(".")
    if want in ("so", "tar") and want != kind:
        raise ExportError(f"cannot write a .{want} for target '{name}' here: "
                          + ("set TVM_NDK_CC to the NDK's clang to link an Android .so" if want == "so"
                             else "use .so for the host target"))
    if want not in ("so", "tar"):
        out = out.with_name(out.name + f".{kind}")
    with atomic_path(out, suffix=f".{kind}") as tmp:
        try:
            if fcompile is None:
                ex.export_library(str(tmp))
            else:
                ex.export_library(str(tmp), fcompile=fcompile)
        except Exception as err:
            raise ExportError(f"export_library failed for '{name}': {str(err).strip().splitlines()[-1][:300]}") \
                from err
    if kind == "tar":
        notes.append("object files in a .tar: link them on/for the device (no linker for this target here)")
    return TVMArtifact(out, kind, name, ex, notes, tuned, records, database)


def parse_tracker(tracker: str | None, key: str | None) -> tuple[str, int, str]:
    """``(host, port, key)`` from ``HOST:PORT`` and a key.

    Raises:
        ExportError: one of the two missing, or not ``HOST:PORT``.
    """
    if not tracker or not key:
        raise ExportError("RPC tuning needs both --rpc-tracker HOST:PORT and --rpc-key KEY")
    host, _, port = str(tracker).rpartition(":")
    if not host or not port.isdigit():
        raise ExportError(f"--rpc-tracker must be HOST:PORT, got '{tracker}'")
    return host, int(port), str(key)


def cross_compiler_for(triple: str) -> str | None:
    """A plain cross compiler for a non-Android ``triple``: ``$TVM_CROSS_CC``, else ``<triple>-g++`` or
    ``aarch64-linux-gnu-g++`` on PATH; None when there is none."""
    cc = os.environ.get("TVM_CROSS_CC")
    if cc:
        return cc
    for name in (f"{triple}-g++", f"{triple}-gcc", "aarch64-linux-gnu-g++"):
        if triple and shutil.which(name):
            return shutil.which(name)
    return None


def _library_kind(tgt) -> tuple[str, Any]:
    """``("so", fcompile)`` where a linker for the target's host is available, else ``("tar", tar)``."""
    from tvm.support import tar as tar_mod

    host = tgt.host or tgt
    triple = str(host.attrs.get("mtriple", "")) if host.kind.name == "llvm" else ""
    if "android" in triple:
        cc = os.environ.get("TVM_NDK_CC")
        if cc:
            from tvm.support import ndk

            return "so", ndk.create_shared
        return "tar", tar_mod.tar
    if triple and not triple.startswith(("x86_64", "i686")):  # e.g. aarch64-linux-gnu: a plain cross compiler
        cross = cross_compiler_for(triple)
        if cross:
            from tvm.support import cc as cc_mod

            return "so", cc_mod.cross_compiler(cross)
        return "tar", tar_mod.tar
    if shutil.which("g++") or shutil.which("clang++") or shutil.which("gcc"):
        return "so", None
    return "tar", tar_mod.tar


def _tune(mod, tgt, trials: int, work_dir, rpc: tuple[str, int, str] | None = None):
    """MetaSchedule-tune ``mod`` (``tvm.s_tir.meta_schedule``) and apply the best schedules found;
    returns ``(module, tuning records in the database, database folder)``. With ``rpc = (host, port, key)`` candidates
    run on the device behind that tracker (MetaSchedule's ``RPCRunner``), else on this machine.

    Experimental: the stock local builder re-imports ``tvm.s_tir.tensor_intrin`` in each worker
    (~60 s here, ``../shared/STACK.md``) and times out, so candidates are built with
    :func:`_ms_build` (plain ``tvm.tirx.build`` of the TIR module) in one long-lived worker.
    """
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    import tvm

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="hwnas-ms-"))
    if tgt.kind.name == "llvm" and "num-cores" not in tgt.attrs:  # MetaSchedule needs the core count
        spec = {str(k): v for k, v in dict(tgt.export()).items() if str(k) not in ("keys", "tag")}
        spec["num-cores"] = os.cpu_count() or 1
        tgt = tvm.target.Target(spec)
    with tgt:
        mod = relax.get_pipeline("zero")(mod)
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=300.0, f_build=_ms_build)
    runner = "local"
    if rpc is not None:
        runner = ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=rpc[0], tracker_port=rpc[1], tracker_key=rpc[2],
                                                         session_timeout_sec=300), max_workers=1)
    db = ms.relax_integration.tune_relax(mod=mod, params={}, target=tgt, work_dir=str(work), max_trials_global=trials,
                                         num_trials_per_iter=min(64, max(1, trials)), builder=builder, runner=runner,
                                         cost_model="random")  # XGBoost's model needs xgboost (not a dependency)
    records = len(db.get_all_tuning_records()) if db is not None else 0
    with tgt:
        return relax.transform.MetaScheduleApplyDatabase(str(work))(mod), records, str(work)


def _ms_build(mod, target, _params):  # pragma: no cover - runs in MetaSchedule's builder worker
    """MetaSchedule builder function: compile one candidate TIR module without the stock builder's imports."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def run_tvm(library_or_executable: Any, inputs_nchw: np.ndarray) -> np.ndarray:
    """Run a host library (path) or in-memory executable on the CPU, sample by sample (NCHW in)."""
    import tvm
    from tvm import relax

    ex = library_or_executable
    if isinstance(ex, TVMArtifact):
        ex = ex.executable if ex.executable is not None else ex.path
    if isinstance(ex, (str, Path)):
        ex = tvm.runtime.load_module(str(ex))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.asarray(inputs_nchw, dtype=np.float32)
    outs = []
    for s in x:
        y = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(s[None])))
        outs.append(np.asarray(y.numpy())[0])
    return np.stack(outs)


_FRESH_RUNNER = r"""
import sys, numpy as np, tvm
from tvm import relax
lib, inp, out = sys.argv[1:4]
vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
x = np.load(inp)
np.save(out, np.stack([vm["main"](tvm.runtime.tensor(np.ascontiguousarray(s[None]))).numpy()[0] for s in x]))
"""


def run_tvm_fresh_process(library: str | Path, inputs_nchw: np.ndarray, timeout: float = 300) -> np.ndarray:
    """Load ``library`` (a host ``.so``) in a *new* Python process and run it (the deployment check).

    Raises:
        ExportError: the subprocess failed (its last stderr line is in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(inp, np.asarray(inputs_nchw, dtype=np.float32))
        proc = subprocess.run([sys.executable, "-c", _FRESH_RUNNER, str(library), inp, out], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            raise ExportError(f"loading {library} in a fresh process failed: {tail}")
        return np.load(out)


__all__ = ["parse_tracker", "cross_compiler_for", "compile_tvm", "run_tvm", "run_tvm_fresh_process", "make_target", "import_onnx", "TVMArtifact",
           "TARGETS", "is_host_target"]
