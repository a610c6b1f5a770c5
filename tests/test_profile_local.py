"""Profiling on this machine with LiteRT: a real slice of a space, kill + resume, interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hwnas.errors import TableError
from hwnas.latency.table import LatencyTable
from hwnas.profile import profile
from hwnas.profile.run import Journal
from hwnas.spaces import get_space

pytest.importorskip("ai_edge_litert")
pytest.importorskip("hwnas.export.keras")

ARGS = dict(device="host", space="mobilenetv2", resolution=32, repeats=3, warmup=1, progress=False)


@pytest.fixture(autouse=True)
def _own_store(tmp_path, monkeypatch):
    """A fresh user table folder: profile() skips keys the device's store already holds."""
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))


def _journal_keys(path):
    """Keys in journal order, without the consistency check's re-measurements of offenders."""
    lines = path.read_text().splitlines()[1:]
    return [rec["key"] for rec in map(json.loads, lines) if not rec.get("remeasured")]


@pytest.mark.slow
def test_profile_slice_measures_real_ops(tmp_path):
    space = get_space("mobilenetv2", resolution=32)
    keys = [k for k in space.op_keys(32) if k.kind != "skip"][:2] + [k for k in space.op_keys(32) if k.kind == "skip"][:1]
    res = profile(**ARGS, out=tmp_path / "t.yaml", keys=keys)
    table = LatencyTable.load(res.path, device="host", space="mobilenetv2", resolution=32)
    assert set(table.entries) == {str(k) for k in keys}
    for key in keys:
        e = table.get(str(key))
        if key.kind == "skip":
            assert e.median_ms == 0.0 and e.samples == 0
        else:
            assert e.samples == 3 and 0 < e.p10_ms <= e.median_ms <= e.p90_ms
            assert e.energy_source and e.energy_mj > 0  # RAPL or the declared power model, named
    m = table.meta
    assert m.provenance == "measured" and m.backend_version.startswith("ai-edge-litert")
    assert m.machine["cpu"] and m.threads == 1 and m.affinity


@pytest.mark.slow
def test_kill_and_resume_measures_nothing_twice(tmp_path):
    out = tmp_path / "host.yaml"
    journal = tmp_path / "host.yaml.journal.jsonl"
    cmd = [sys.executable, "-m", "hwnas", "profile", "--device", "host", "--space", "mobilenetv2", "--resolution",
           "32", "--width", "1", "--in-channels", "3", "--classes", "1000", "--limit", "5", "--repeats", "3",
           "--warmup", "1", "--out", str(out), "--json"]
    env = {**os.environ, "HWNAS_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _journal_keys(journal)
    assert 2 <= len(before) < 5 and not out.exists()
    res = profile(**ARGS, out=out, limit=5)
    after = _journal_keys(journal)
    assert len(after) == len(set(after)) == 5  # none measured twice, none lost
    assert after[: len(before)] == before and res.resumed == len(before)
    assert set(res.measured) == set(after) - set(before)
    space_keys = [str(k) for k in get_space("mobilenetv2", resolution=32).op_keys(32)[:5]]
    assert sorted(LatencyTable.load(out).entries) == sorted(space_keys)


def test_injected_interruption_and_torn_journal_line(tmp_path):
    out = tmp_path / "t.yaml"

    class Stop(Exception):
        pass

    def stop_after_two(key, m, seen=[]):  # noqa: B006
        seen.append(key)
        if len(seen) == 2:
            raise Stop

    class FakeBuilder:
        name = "fake"

        def build(self, key):
            from hwnas.profile.run import Artifact

            return Artifact(data=b"x")

    class FakeRunner:
        name = "fake"
        calls = []

        def version(self):
            return "fake 1"

        def measure(self, artifact):
            from hwnas.profile.run import Measurement

            self.calls.append(1)
            return Measurement(1.0, 0.9, 1.1, 3)

        def close(self):
            pass

    space = get_space("mobilenetv2", resolution=32)
    keys = [k for k in space.op_keys(32) if k.kind != "skip"][:4]
    with pytest.raises(Stop):
        profile(**ARGS, out=out, keys=keys, builder=FakeBuilder(), runner=FakeRunner(), on_measured=stop_after_two)
    journal = tmp_path / "t.yaml.journal.jsonl"
    with open(journal, "a") as fh:  # a kill in the middle of a write
        fh.write('{"key": "ir_k3_e3_s1_c24_r6@32x32x16", "median_')
    runner = FakeRunner()
    runner.calls = []
    res = profile(**ARGS, out=out, keys=keys, builder=FakeBuilder(), runner=runner)
    assert res.resumed == 2 and len(runner.calls) == 2
    assert _journal_keys(journal) == [str(k) for k in keys]
    with pytest.raises(TableError, match="journal was written for device 'host'"):
        Journal(journal, {"device": "pixel1", "space": "mobilenetv2-cifar", "resolution": 32, "backend": "tflite"})


def test_edgetpu_builder_needs_its_compiler(monkeypatch):
    import shutil

    from hwnas.errors import ConfigError
    from hwnas.latency.devices import get_device
    from hwnas.opkey import OpKey
    from hwnas.profile.run import TFLiteOpBuilder

    if shutil.which("edgetpu_compiler"):
        pytest.skip("edgetpu_compiler is installed here")
    builder = TFLiteOpBuilder(get_device("edgetpu"))
    assert builder.quantize == "int8"
    with pytest.raises(ConfigError, match="edgetpu_compiler"):
        builder.build(OpKey.parse("cn_k1_s1_c16_re@8x8x8"))


def test_int8_op_models_time_no_quantize_dequantize():
    """An int8 single-op model takes and returns int8 tensors: a per-op sum must not count a
    QUANTIZE/DEQUANTIZE pair per layer that the whole int8 network does not run."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from hwnas.export.tflite import op_counts
    from hwnas.latency.devices import get_device
    from hwnas.opkey import OpKey
    from hwnas.profile.run import TFLiteOpBuilder

    device = get_device("host").model_copy(update={"precision": "int8"})
    art = TFLiteOpBuilder(device).build(OpKey.parse("ir_k3_e2_s1_c8_r6@8x8x8"))
    ops = op_counts(art.data)
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
    interp = Interpreter(model_content=art.data)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8


class _CountingRunner:
    name = "fake"

    def __init__(self):
        self.calls = 0

    def version(self):
        return "fake 1"

    def measure(self, artifact):
        from hwnas.profile.run import Measurement

        self.calls += 1
        return Measurement(1.0, 0.9, 1.1, 3)

    def close(self):
        pass


class _NoBuilder:
    name = "fake"

    def build(self, key):
        from hwnas.profile.run import Artifact

        return Artifact(data=b"x")


def test_profile_measures_only_what_the_store_lacks(tmp_path):
    """Fake builder/runner (the keys' selection is under test, not the timing)."""
    from hwnas.latency.table import TableMeta, user_table_dir
    from hwnas.profile.run import arch_request, run_request, space_request
    from hwnas.spaces import resolve_space

    space = resolve_space("mobilenetv2", resolution=16, width=0.35, in_channels=1, classes=10)
    request = space_request(space, reference=True)
    have = request.keys[::2]
    meta = TableMeta(device="host", space="other", resolutions=[16], backend="tflite", date="2026-12-01T00:00:00Z",
                     hwnas_version="0", provenance="measured: test fixture")
    LatencyTable(meta, {str(k): {"median_ms": 2.0, "samples": 3} for k in have}).save(user_table_dir() / "o.yaml")
    runner = _CountingRunner()
    res = profile("host", request=request, builder=_NoBuilder(), runner=runner, progress=False)
    assert res.skipped == len(have) and res.wanted == len(request.keys)
    assert set(res.measured) == {str(k) for k in request.keys} - {str(k) for k in have}
    assert res.path.name == "host-mobilenetv2-w0.35-c1-k10-16.yaml"
    assert runner.calls == sum(1 for k in request.keys[1::2] if k.kind != "skip")
    again = profile("host", request=request, builder=_NoBuilder(), runner=_CountingRunner(), progress=False)
    assert again.measured == [] and again.skipped == len(request.keys)
    # --arch: only that architecture's keys; --from-run: the run's space (from config.yaml's space_spec)
    arch = space.decode([0] * 21)
    assert {str(k) for k in arch_request(arch).keys} <= {str(k) for k in request.keys}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "search: {space: mobilenetv2, latency_ms: null}\n"
        "space_spec: {name: mobilenetv2, resolution: 16, width: 0.35, in_channels: 1, classes: 10}\n")
    assert run_request(run).keys == request.keys and run_request(run).label == request.label


@pytest.mark.slow
def test_profile_output_has_no_litert_chatter(tmp_path):
    """LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" goes to <out>.log, not into the progress display."""
    out = tmp_path / "host.yaml"
    cmd = [sys.executable, "-m", "hwnas", "profile", "--device", "host", "--space", "mobilenetv2", "--resolution",
           "16", "--limit", "1", "--repeats", "3", "--warmup", "1", "--out", str(out)]
    env = {**os.environ, "HWNAS_HOME": str(tmp_path / "home")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "XNNPACK" not in text and "oneDNN" not in text, text
    log = tmp_path / "host.yaml.log"
    assert "XNNPACK delegate" in log.read_text() and f"TensorFlow/LiteRT log: {log}" in proc.stdout


def test_edgetpu_prerequisites_are_checked_before_profiling_is_announced(monkeypatch, tmp_path):
    import shutil

    from hwnas.errors import ConfigError
    from hwnas.latency.devices import get_device
    from hwnas.profile.run import ensure_keys, space_request

    if shutil.which("edgetpu_compiler"):
        pytest.skip("edgetpu_compiler is installed here")
    said = []
    dev = get_device("edgetpu")
    request = space_request(get_space("mobilenetv2", resolution=32), reference=False)
    with pytest.raises(ConfigError, match="needs edgetpu_compiler on PATH.*nothing was measured"):
        ensure_keys(dev, request, command="hwnas profile ...", say=said.append)
    assert said == []  # no "measuring them first (...)" before the refusal
    with pytest.raises(ConfigError, match="edgetpu_compiler"):
        profile("edgetpu", "mobilenetv2", 32, out=tmp_path / "t.yaml", limit=1, progress=False)
    assert not list(tmp_path.iterdir())  # no journal, no table


def test_time_estimate_comes_from_measured_ops():
    from hwnas.profile.run import TimeEstimate

    eta = TimeEstimate(total=10, first=4)
    # op 1 ends at 20 s (imports), then 2 s per op: the estimate uses ops 2-4 only
    assert [eta.tick(t) for t in (20.0, 22.0, 24.0)] == [None, None, None]
    msg = eta.tick(26.0)
    assert msg == "measured 4 of 10 ops; at 2.0 s per op (ops 2-4) the remaining 6 take about 0.2 min"
    assert eta.tick(28.0) is None  # said once
    assert TimeEstimate(total=3).tick(1.0) is None  # nothing left to estimate
