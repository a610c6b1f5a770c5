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
