"""Apache TVM (Relax) builder and runner, local or over TVM RPC (``tvm.rpc``, tracker keys).

Builder: the op's PyTorch module (``hwnas.nn.blocks.build_layer`` / ``Classifier`` — the modules the
exporters convert) → ONNX with the exporter's settings → ``hwnas.export.tvm.compile_tvm`` for the
device's target (Relax default pipeline: dlight's default schedules on GPU targets, naive loops on
CPU; a ``.so`` where a linker exists, else a ``.tar``); ``build_arch`` compiles whole models through
``hwnas.export.onnx.onnx_bytes`` → ``compile_tvm`` — exactly the shipped TVM artifact.

Runner: loads the library locally (``tvm.runtime.load_module``) or uploads it to an RPC server
(``tvm.rpc.connect(host, port)``) or a device pool (``tvm.rpc.connect_tracker(host, port)
.request(key)``), builds a ``relax.VirtualMachine`` and times ``main`` with ``time_evaluator``
(``number`` runs per repeat; median/p10/p90 over the repeats, in ms).

Untuned TVM on a CPU target runs naive loops (~20× slower than LiteRT, ../shared/STACK.md). A device
with ``tune_trials: N`` has every op MetaSchedule-tuned by ``compile_tvm`` (minutes per op). Whether
an op is tuned is what ``compile_tvm`` reports for it — a MetaSchedule database with tuning records
was applied — never the device file: each measurement carries ``tuned`` (and the database's records
and folder in its note), and a table is labelled ``tuned: true`` only when every op in it was
(:func:`hwnas.profile.run.table_tuned`); otherwise its provenance says "untuned".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hwnas.errors import ConfigError
from hwnas.latency.devices import Device
from hwnas.latency.energy import choose_meter
from hwnas.opkey import OpKey
from hwnas.profile.run import Artifact, Measurement, summarize


def op_module(key: OpKey):
    """``(torch module in eval mode, example NCHW input)`` of one op key."""
    import torch

    from hwnas.nn.blocks import Classifier, build_layer

    h, w, c = key.input_shape
    if key.kind == "classifier":
        classes, prelogits, act = key.classifier_parts()
        module = Classifier(c, classes, 0.0, prelogits, act or "hswish")
    else:
        module = build_layer(key.layer(), key.se_style)
    torch.manual_seed(0)
    return module.eval(), torch.randn(1, c, h, w)


def _onnx_op_bytes(module, example) -> bytes:
    """The op as ONNX, with the exporter's settings (legacy exporter, its opset, constant folding)."""
    import contextlib
    import io
    import warnings

    import torch

    from hwnas.export.onnx import DEFAULT_OPSET, fold_constants

    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=DEFAULT_OPSET, input_names=["input"],
                          output_names=["output"], do_constant_folding=True)
    # the exporter's own folding pass: asymmetric ZeroPad2d becomes a constant Pad TVM can import
    return fold_constants(buf.getvalue())


def _target_arg(device: Device):
    """A target name of :data:`hwnas.export.tvm.TARGETS` when the device's target+host match one,
    else the device's target dict."""
    from hwnas.export.tvm import TARGETS

    for name, (spec, host) in TARGETS.items():
        if spec == device.tvm_target and host == device.tvm_host:
            return name
    if device.tvm_host:
        raise ConfigError(f"device '{device.name}': target {device.tvm_target} with host {device.tvm_host} is not "
                          f"one of hwnas.export.tvm.TARGETS ({', '.join(TARGETS)})")
    return device.tvm_target


class TVMOpBuilder:
    """Compiles single ops (and whole models) for the device's TVM target through the exporters:
    op → ONNX → ``hwnas.export.tvm.compile_tvm`` (whole models: ``hwnas.export.onnx.onnx_bytes``)."""

    name = "onnx-relax"

    def __init__(self, device: Device, workdir: str | Path | None = None):
        self.device = device
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-tvm-") if workdir is None else None
        self.workdir = Path(workdir or self._tmp.name)
        self._n = 0

    def _compile(self, onnx: bytes, shape: tuple, stem: str) -> Artifact:
        from hwnas.export.tvm import compile_tvm

        self._n += 1
        t = self.device.transport
        rpc = (t.tracker, t.key) if t.kind == "tvm-rpc" and t.tracker and t.key else (None, None)
        art = compile_tvm(onnx, _target_arg(self.device), self.workdir / f"{stem}{self._n}",
                          tune_trials=self.device.tune_trials, rpc_tracker=rpc[0], rpc_key=rpc[1])
        # the artifact keeps the builder's temporary folder alive as long as it is referenced; "tuned"
        # is what the MetaSchedule database applied to it held, not what the device file says
        extra = {"shape": tuple(shape), "_workdir": self._tmp, "notes": art.notes, "tuned": art.tuned}
        if art.tuned:
            extra["note"] = f"MetaSchedule database {art.database}: {art.tuning_records} tuning records applied"
        return Artifact(path=art.path, format="tvm", extra=extra)

    def build(self, key: OpKey) -> Artifact:
        module, example = op_module(key)
        return self._compile(_onnx_op_bytes(module, example), tuple(example.shape), "op")

    def build_arch(self, arch) -> Artifact:
        from hwnas.export.onnx import onnx_bytes

        shape = (1, arch.in_channels, arch.resolution, arch.resolution)
        return self._compile(onnx_bytes(arch, softmax=False), shape, "model")


class TVMRunner:
    """Times TVM libraries locally or over RPC (see the module docstring)."""

    name = "tvm"

    def __init__(self, device: Device, *, number: int | None = None):
        self.device = device
        self.number = number or 3
        self.meter = choose_meter(device)
        self._remote = None

    def version(self) -> str:
        import tvm

        return f"apache-tvm {tvm.__version__}"

    def prepare(self) -> None:
        """Connect to the RPC server or tracker now (fail fast before compiling anything)."""
        self._session()

    def _session(self):
        import tvm.rpc

        t = self.device.transport
        if t.kind == "local":
            return None
        if self._remote is None:
            where = f"tracker {t.tracker} key '{t.key}'" if t.tracker and t.key else f"server {t.host}:{t.port}"
            try:
                if t.tracker and t.key:
                    host, port = t.tracker.rsplit(":", 1)
                    self._remote = tvm.rpc.connect_tracker(host, int(port)).request(t.key, session_timeout=600)
                else:
                    self._remote = tvm.rpc.connect(t.host, int(t.port), session_timeout=600)
            except Exception as err:  # noqa: BLE001 - TVM raises its own error types
                first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                raise ConfigError(f"device '{self.device.name}': cannot reach the TVM RPC {where} ({first[:200]})") \
                    from None
        return self._remote

    def _device(self, remote):
        import tvm

        kind = (self.device.tvm_target or {}).get("kind", "llvm")
        if remote is None:
            return tvm.device(kind if kind != "llvm" else "cpu", 0)
        return remote.device(kind if kind != "llvm" else "cpu", 0)

    def measure(self, artifact: Artifact) -> Measurement:
        import numpy as np
        import tvm
        from tvm import relax

        if artifact.format != "tvm" or artifact.path is None:
            raise ConfigError(f"the TVM runner needs a compiled library, got a {artifact.format} artifact")
        remote = self._session()
        # the device's thread count on TVM's pool, on whichever side runs the op (mode 1 = big cores)
        config = tvm.get_global_func("runtime.config_threadpool") if remote is None else \
            remote.get_function("runtime.config_threadpool")
        config(1, int(self.device.threads))
        if remote is None:
            lib = tvm.runtime.load_module(str(artifact.path))
        else:
            remote.upload(str(artifact.path))
            lib = remote.load_module(artifact.path.name)
        dev = self._device(remote)
        vm = relax.VirtualMachine(lib, dev)
        shape = artifact.extra.get("shape")
        x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"), device=dev)
        repeat = max(self.device.repeats, 3)
        timer = vm.time_evaluator("main", dev, number=self.number, repeat=repeat,
                                  min_repeat_ms=0, cooldown_interval_ms=0)
        for _ in range(max(self.device.warmup, 0)):
            vm["main"](x)
        self.meter.start()
        res = timer(x)
        m = summarize([t * 1e3 for t in res.results])
        m = Measurement(m.median_ms, m.p10_ms, m.p90_ms, m.samples,
                        note=f"time_evaluator: {repeat} repeats x {self.number} runs"
                             + ("" if artifact.extra.get("tuned") else "; untuned schedules"))
        energy = self.meter.stop(repeat * self.number, m.median_ms)
        return m.with_energy(energy, self.meter.source if energy is not None else None)

    def environment(self) -> dict:
        from hwnas.latency.table import machine_info, read_cpu_state

        t = self.device.transport
        if t.kind == "local":
            return {**read_cpu_state(self.device.affinity), "machine": machine_info()}
        where = t.tracker and f"tracker {t.tracker} key {t.key}" or f"rpc {t.host}:{t.port}"
        return {"governor": None, "frequency_khz": None, "affinity": None,
                "machine": {"transport": where, "target": str(self.device.tvm_target)}}

    def close(self) -> None:
        self._remote = None


__all__ = ["TVMOpBuilder", "TVMRunner", "op_module"]
