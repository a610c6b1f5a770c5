"""TFLite over adb, exercised through LocalShellTransportForTests and recorded benchmark_model text.

The two outputs below follow benchmark_model's printed format (2.x, with and without the
percentile fields); the numbers are sample values for the parser, not measurements of any device.
"""

from __future__ import annotations

import json
import stat
import sys

import pytest

from hwnas.latency.devices import get_device
from hwnas.profile import profile
from hwnas.profile.run import Artifact
from hwnas.profile.tflite_adb import (BenchmarkOutputError, LocalShellTransportForTests, TFLiteAdbRunner,
                                      measurement_from_output, parse_benchmark_output)

RECORDED_PERCENTILES = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/hwnas/op.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/hwnas/op.tflite
INFO: The input model file size (MB): 0.0712
INFO: Initialized session in 3.125ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=412 first=1587 curr=1204 min=1189 max=1587 avg=1212.4 std=31 p5=1194 median=1206 p95=1262

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=829 first=1211 curr=1199 min=1185 max=1490 avg=1207.9 std=22 p5=1191 median=1203 p95=1244

INFO: Inference timings in us: Init: 3125, First inference: 1587, Warmup (avg): 1212.4, Inference (avg): 1207.9
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=1.625 overall=2.0
"""

RECORDED_PLAIN = """\
Loaded model /data/local/tmp/hwnas/op.tflite
Initialized session in 9.120ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=25733

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=24910 curr=24312 min=23876 max=26120 avg=2.43618e+04 std=412

Inference timings in us: Init: 9120, First inference: 25733, Warmup (avg): 2.5733e+04, Inference (avg): 2.43618e+04
"""


def test_parse_recorded_outputs():
    p = parse_benchmark_output(RECORDED_PERCENTILES)
    assert p["count"] == 829 and p["median_us"] == 1203 and p["p5_us"] == 1191 and p["avg_us"] == 1207.9
    m = measurement_from_output(RECORDED_PERCENTILES)
    assert m.median_ms == pytest.approx(1.203) and m.p10_ms == pytest.approx(1.191) and m.samples == 829
    assert "p5/p95" in m.note
    q = measurement_from_output(RECORDED_PLAIN)
    assert q.median_ms == pytest.approx(24.3618) and q.samples == 50 and q.p10_ms is None
    assert "avg" in q.note
    with pytest.raises(BenchmarkOutputError, match="no 'Inference timings in us' summary"):
        parse_benchmark_output("ERROR: Could not open '/data/local/tmp/hwnas/op.tflite'.\nAborted\n")


@pytest.fixture()
def fake_phone(tmp_path):
    """A fake benchmark_model that checks its arguments and prints the recorded output."""
    recorded = tmp_path / "recorded.txt"
    recorded.write_text(RECORDED_PERCENTILES)
    script = tmp_path / "benchmark_model"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
graph = [a for a in args if a.startswith('--graph=')][0].split('=', 1)[1]
assert os.path.getsize(graph) > 0, graph
with open(os.path.join(os.path.dirname(graph), 'calls.jsonl'), 'a') as fh:
    fh.write(json.dumps(args) + '\\n')
sys.stdout.write(open({str(recorded)!r}).read())
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    device = get_device("pixel1").model_copy(update={
        "affinity": None, "energy": "none", "power_model": None,
        "benchmark_model": get_device("pixel1").benchmark_model.model_copy(update={"binary": str(script)})})
    transport = LocalShellTransportForTests(tmp_path / "phone")
    return device, transport


def test_adb_runner_pushes_runs_and_parses(fake_phone):
    device, transport = fake_phone
    runner = TFLiteAdbRunner(device, transport)
    m = runner.measure(Artifact(data=b"TFL3-fake-model"))
    assert m.median_ms == pytest.approx(1.203) and m.samples == 829
    remote = device.transport.remote_dir
    # every step is an argument list; the binary was pushed and made executable
    assert transport.commands[0] == ["mkdir", "-p", remote]
    assert ["chmod", "755", f"{remote}/benchmark_model"] in transport.commands
    run = [c for c in transport.commands if c[0].endswith("benchmark_model")][0]
    assert run[1] == f"--graph={remote}/op.tflite" and "--num_threads=1" in run and "--use_xnnpack=false" in run
    assert not (transport.root / remote.lstrip("/") / "op.tflite").exists()  # removed after the run
    calls = (transport.root / remote.lstrip("/") / "calls.jsonl").read_text().splitlines()
    assert len(calls) == 1 and "--num_runs=50" in json.loads(calls[0])


def test_adb_command_pins_the_big_cores():
    device = get_device("pixel1")
    runner = TFLiteAdbRunner(device, LocalShellTransportForTests("/nonexistent"))
    cmd = runner.command("/data/local/tmp/hwnas/op.tflite")
    assert cmd[:2] == ["taskset", "c"]  # cpus 2 and 3


def test_profile_over_the_adb_runner_writes_a_measured_pixel1_table(fake_phone, tmp_path):
    device, transport = fake_phone

    class BytesBuilder:  # stands in for the converter: the fake phone only checks a file arrives
        name = "bytes"

        def build(self, key):
            return Artifact(data=str(key).encode())

    res = profile(device, "mobilenetv2", 32, out=tmp_path / "pixel1.yaml", limit=3, builder=BytesBuilder(),
                  runner=TFLiteAdbRunner(device, transport), progress=False)
    t = res.table
    assert t.meta.device == "pixel1" and t.meta.provenance == "measured"
    assert t.meta.machine["transport"] == "local-shell-for-tests"
    assert all(e.median_ms == pytest.approx(1.203) for e in t.entries.values() if e.samples)


def test_profile_without_adb_fails_fast_with_one_line(tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from hwnas.cli import main

    if shutil.which("adb"):
        pytest.skip("adb is installed here")
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    res = CliRunner().invoke(main, ["profile", "--device", "pixel", "--space", "fbnet", "--resolution", "224",
                                    "--limit", "2"])
    assert res.exit_code == 2 and "'adb' not found" in res.output


# ---------------------------------------------------------------- recorded-format fixtures (hand-written)
DATA = __import__("pathlib").Path(__file__).parent / "data" / "benchmark_model"


def _fixture(name: str) -> str:
    """A fixture's text without its '# ' header (which says it was written by hand)."""
    text = (DATA / name).read_text()
    assert text.startswith("# Hand-written fixture, NOT recorded from a device")
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# "))


@pytest.mark.parametrize("name, median, samples, p10, note", [
    ("v2.4-style.txt", 2.64732, 50, None, "avg (no median printed)"),
    ("v2.16-style.txt", 1.203, 50, 1.191, "p5/p95"),
])
def test_fixtures_of_two_benchmark_model_versions_parse(name, median, samples, p10, note):
    m = measurement_from_output(_fixture(name))
    assert m.median_ms == pytest.approx(median) and m.samples == samples
    assert (m.p10_ms is None) if p10 is None else m.p10_ms == pytest.approx(p10)
    assert note in m.note


def test_zero_time_is_refused():
    text = _fixture("v2.4-style.txt").replace("avg=2647.32", "avg=0").replace("Inference (avg): 2647.32",
                                                                            "Inference (avg): 0")
    with pytest.raises(BenchmarkOutputError, match="avg=0 us"):
        measurement_from_output(text)


def test_op_profile_of_the_regular_runs_is_parsed():
    from hwnas.profile.tflite_adb import parse_op_profile

    text = _fixture("v2.16-style_op_profiling.txt")
    rows = parse_op_profile(text)
    assert len(rows) == 10 and rows[0]["node_type"] == "CONV_2D" and rows[-1]["node_type"] == "FULLY_CONNECTED"
    assert sum(r["avg_ms"] for r in rows) == pytest.approx(0.730)
    assert measurement_from_output(text).median_ms == pytest.approx(0.759)
    assert parse_op_profile(_fixture("v2.16-style.txt")) == []


def test_command_flags_come_from_the_device_file():
    from hwnas.errors import ConfigError, HwnasWarning
    from hwnas.profile.tflite_adb import benchmark_flags

    dev = get_device("pixel1")
    cmd = TFLiteAdbRunner(dev, LocalShellTransportForTests("/nonexistent")).command("/d/op.tflite")
    for flag in ("--num_threads=1", "--warmup_runs=5", "--num_runs=50", "--min_secs=0", "--warmup_min_secs=0",
                 "--use_xnnpack=false"):
        assert cmd.count(flag) == 1, flag
    gpu = dev.model_copy(update={"threads": 4, "delegate": "gpu", "repeats": 20, "warmup": 2,
                                 "benchmark_model": dev.benchmark_model.model_copy(update={"flags": [], "num_runs": 20,
                                                                                   "warmup_runs": 2})})
    flags = benchmark_flags(gpu)
    assert {"--num_threads=4", "--use_gpu=true", "--num_runs=20", "--warmup_runs=2"} <= set(flags)
    assert not any(f.startswith("--use_xnnpack") for f in flags)
    clash = dev.model_copy(update={"threads": 2})  # pixel1's flags still say --num_threads=1
    with pytest.raises(ConfigError, match="'--num_threads=1' but the device file gives '--num_threads=2'"):
        benchmark_flags(clash)
    runs = dev.model_copy(update={"benchmark_model": dev.benchmark_model.model_copy(update={"num_runs": 10})})
    runs.benchmark_model.model_fields_set.add("num_runs")
    with pytest.warns(HwnasWarning, match="num_runs is 10 but repeats is 50; hwnas passes --num_runs=50"):
        assert "--num_runs=50" in benchmark_flags(runs)


def test_binary_missing_on_the_device_is_a_clear_error(tmp_path):
    from hwnas.errors import ConfigError

    dev = get_device("pixel1").model_copy(update={"affinity": None, "energy": "none", "power_model": None})
    runner = TFLiteAdbRunner(dev, LocalShellTransportForTests(tmp_path / "phone"))  # bare name, nothing pushed
    with pytest.raises(ConfigError, match="benchmark_model is not on the device at /data/local/tmp/hwnas"):
        runner.prepare()


@pytest.fixture()
def instrumented_phone(fake_phone, tmp_path, monkeypatch):
    """The fake phone with a getprop, a cpufreq folder and a thermal zone (paths under its root)."""
    device, transport = fake_phone
    root = transport.root
    for rel, text in (("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n"),
                      ("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "2150400\n"),
                      ("sys/class/thermal/thermal_zone0/temp", "38500\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    getprop = bindir / "getprop"
    getprop.write_text("#!/bin/sh\n[ \"$1\" = ro.build.fingerprint ] && echo google/sailfish/sailfish:10/QP1A/1:user/"
                       "release-keys || echo Pixel\n")
    getprop.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    bm = device.benchmark_model.model_copy(update={"version": "2.16.1", "cooldown_s": 0.25})
    return device.model_copy(update={"benchmark_model": bm}), transport


def test_runner_records_fingerprint_version_and_state_around_each_op(instrumented_phone, monkeypatch):

    device, transport = instrumented_phone
    slept = []
    runner = TFLiteAdbRunner(device, transport)
    runner.sleep = slept.append
    m1 = runner.measure(Artifact(data=b"op1"))
    m2 = runner.measure(Artifact(data=b"op2"))
    assert slept == [0.25]  # a cooldown before every op but the first
    assert m1.env["before"] == {"governor": "performance", "frequency_khz": 2150400, "temperature_c": 38.5}
    assert m1.env["after"] == m1.env["before"] and m2.env is not None
    assert "governor performance" in m1.note and "38.5→38.5 °C" in m1.note
    assert "benchmark_model ran 829 runs, 50 asked" in m1.note  # RECORDED_PERCENTILES ran for 1 s
    env = runner.environment()
    assert env["machine"]["build_fingerprint"].startswith("google/sailfish")
    assert env["machine"]["benchmark_model_version"] == "2.16.1"
    assert len(env["machine"]["benchmark_model_sha256"]) == 64
    assert runner.version() == "benchmark_model 2.16.1 via local-shell-for-tests"


def test_a_zero_time_fails_naming_op_and_device_and_the_session_is_closed(fake_phone, tmp_path):
    from hwnas.profile.run import MeasurementError

    device, transport = fake_phone
    recorded = tmp_path / "recorded.txt"
    recorded.write_text(_fixture("v2.16-style.txt").replace("median=1203", "median=0"))

    class BytesBuilder:
        name = "bytes"

        def build(self, key):
            return Artifact(data=str(key).encode())

    runner = TFLiteAdbRunner(device, transport)
    with pytest.raises(MeasurementError, match=r"device 'pixel1', op '[^']+': benchmark_model reported median=0"):
        profile(device, "mobilenetv2", 32, out=tmp_path / "t.yaml", limit=3, builder=BytesBuilder(), runner=runner,
                progress=False)
    remote = transport.root / device.transport.remote_dir.lstrip("/")
    assert not (remote / "op.tflite").exists() and not runner._ready


def test_check_reports_per_op_sum_against_the_op_profiled_whole_model(fake_phone, tmp_path):
    """``--check`` over adb: whole model with --enable_op_profiling; the fake phone prints the fixture."""
    from hwnas.latency.table import Entry, LatencyTable, TableMeta, now_iso
    from hwnas.profile.check import check_per_op_sum
    from hwnas.spaces import get_space

    device, transport = fake_phone
    (tmp_path / "recorded.txt").write_text(_fixture("v2.16-style_op_profiling.txt"))
    sp = get_space("mobilenetv2", resolution=32)
    meta = TableMeta(device="pixel1", space=sp.name, resolutions=[32], backend="tflite", date=now_iso(),
                     hwnas_version="test", provenance="measured")
    table = LatencyTable(meta, {str(k): Entry(median_ms=0.0 if k.kind == "skip" else 0.04, samples=5)
                                for k in sp.op_keys(32)})

    class BytesBuilder:
        name = "bytes"

        def build_arch(self, arch):
            return Artifact(data=arch.to_compact().encode())

    res = check_per_op_sum(device, table, members=2, builder=BytesBuilder(), runner=TFLiteAdbRunner(device, transport))
    assert len(res.members) == 2
    m = res.members[0]
    assert m.measured_ms == pytest.approx(0.759) and m.op_profile_sum_ms == pytest.approx(0.730)
    assert m.op_profile_nodes == 10
    assert m.error_pct == pytest.approx(100 * (m.per_op_sum_ms - 0.759) / 0.759)
    run = [c for c in transport.commands if c[0].endswith("benchmark_model")][-1]
    assert "--enable_op_profiling=true" in run
    assert "per-op sum vs end to end on pixel1" in res.lines()[-1]
