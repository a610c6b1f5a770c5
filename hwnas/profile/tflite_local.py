"""LiteRT (``ai_edge_litert``) runner on this machine: XNNPACK, the device's thread count."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hwnas.export.tflite import random_input

from hwnas.errors import ConfigError
from hwnas.latency.devices import Device
from hwnas.latency.energy import choose_meter
from hwnas.profile.run import Artifact, Measurement, summarize


def litert_version() -> str:
    try:
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:  # noqa: BLE001
        return "ai-edge-litert (version unknown)"


class TFLiteLocalRunner:
    """Times a ``.tflite`` with the LiteRT interpreter: ``warmup`` untimed invocations, then
    ``repeats`` timed ones; returns median/p10/p90 in ms.

    Timer (``device.timer``): with one thread, the invoking thread's CPU time
    (``time.thread_time``, CLOCK_THREAD_CPUTIME_ID) — LiteRT runs single-threaded inference in the
    calling thread, and CPU time is not inflated when other processes share the cores (measured
    here: per-op sums / whole model = 0.95 with CPU time vs 0.62 with wall time under load 6.6 on 2
    cores); with more threads, wall-clock ``time.perf_counter``.

    Delegate: XNNPACK (LiteRT's default) unless the device says ``none`` (builtin kernels).
    Affinity: the process is pinned to ``device.affinity`` while measuring, where the OS allows it.
    """

    name = "tflite-local"

    def __init__(self, device: Device):
        self.device = device
        self.meter = choose_meter(device)
        self.timer = device.timer if device.timer != "auto" else ("thread-cpu" if device.threads == 1 else "wall")
        self._clock = time.thread_time if self.timer == "thread-cpu" else time.perf_counter

    def version(self) -> str:
        return litert_version()

    def measure(self, artifact: Artifact) -> Measurement:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kwargs = {"num_threads": self.device.threads}
        if self.device.delegate == "edgetpu":
            from ai_edge_litert.interpreter import load_delegate

            try:
                kwargs["experimental_delegates"] = [load_delegate("libedgetpu.so.1")]
            except (ValueError, OSError) as err:
                raise ConfigError(f"device '{self.device.name}': cannot load libedgetpu.so.1 ({err})") from None
        elif self.device.delegate == "none":
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        from hwnas.export.tflite import quiet

        with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." goes to the log, not the terminal
            interp = Interpreter(model_content=artifact.data, **kwargs) if artifact.data is not None else \
                Interpreter(model_path=str(artifact.path), **kwargs)
            interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], random_input(inp))
        old_aff = None
        if self.device.affinity and hasattr(os, "sched_setaffinity"):
            try:
                old_aff = os.sched_getaffinity(0)
                os.sched_setaffinity(0, set(self.device.affinity) & old_aff or old_aff)
            except OSError:
                old_aff = None
        try:
            for _ in range(self.device.warmup):
                interp.invoke()
            times = []
            self.meter.start()
            clock = self._clock
            for _ in range(self.device.repeats):
                t0 = clock()
                interp.invoke()
                times.append((clock() - t0) * 1e3)
        finally:
            if old_aff is not None:
                os.sched_setaffinity(0, old_aff)
        m = summarize(times)
        energy = self.meter.stop(len(times), m.median_ms)
        return m.with_energy(energy, self.meter.source if energy is not None else None)

    def close(self) -> None:
        pass


def measure_file(path: str | Path, device: Device) -> Measurement:
    """Time one ``.tflite`` file on this machine with the device's settings."""
    return TFLiteLocalRunner(device).measure(Artifact(path=Path(path)))
