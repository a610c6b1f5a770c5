"""TVM runner: local vs a real RPC server on 127.0.0.1, tracker keys, untuned labelling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hwnas.latency.devices import Transport, get_device
from hwnas.opkey import OpKey
from hwnas.profile import profile
from hwnas.profile.tvm_runner import TVMOpBuilder, TVMRunner

pytest.importorskip("tvm")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _start(args: list[str]) -> subprocess.Popen:
    # own session: the server forks workers; the whole group is ended by its id at teardown
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def rpc_server():
    port = _free_port()
    proc = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)])
    try:
        _wait_port(port)
        yield port
    finally:
        _stop(proc)


def _device(**transport):
    dev = get_device("host-tvm").model_copy(update={"repeats": 10, "warmup": 2})
    if transport:
        dev = dev.model_copy(update={"transport": Transport(**transport)})
    return dev


@pytest.mark.slow
def test_rpc_medians_match_local(rpc_server):
    local = _device()
    remote = _device(kind="tvm-rpc", host="127.0.0.1", port=rpc_server)
    builder = TVMOpBuilder(local)
    for key in ("ir_k3_e3_s1_c24_r6@16x16x24", "cn_k1_s1_c128_r6@8x8x64"):
        art = builder.build(OpKey.parse(key))
        # Up to 3 rounds: on 2 shared cores one round's medians can differ by >25 % from load alone (seen in
        # full-suite runs); a runner that reports another quantity (per repeat instead of per run, s for ms)
        # differs by the same factor in every round and still fails.
        rounds = []
        for _ in range(3):
            a = TVMRunner(local).measure(art)
            b = TVMRunner(remote).measure(art)
            assert "untuned" in a.note and "untuned" in b.note
            rounds.append((a.median_ms, b.median_ms))
            if b.median_ms == pytest.approx(a.median_ms, rel=0.25):
                break
        else:
            pytest.fail(f"{key}: RPC medians never within 25 % of local ones (local, rpc ms): {rounds}")


@pytest.mark.slow
def test_profile_over_rpc_completes_and_is_labelled_untuned(rpc_server, tmp_path):
    dev = _device(kind="tvm-rpc", host="127.0.0.1", port=rpc_server).model_copy(update={"repeats": 3})
    res = profile(dev, "mobilenetv2", 32, out=tmp_path / "tvm.yaml", limit=3, progress=False)
    meta = res.table.meta
    assert len(res.table) == 3 and meta.backend == "tvm" and meta.backend_version.startswith("apache-tvm")
    assert meta.tuned is False and "untuned" in meta.provenance
    assert meta.machine["transport"] == f"rpc 127.0.0.1:{rpc_server}"
    assert all(e.median_ms > 0 for e in res.table.entries.values())


@pytest.mark.slow
def test_tracker_key(tmp_path):
    tport = _free_port()
    tracker = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end",
                      str(tport + 1)])
    server = None
    try:
        _wait_port(tport)
        sport = _free_port()
        server = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport), "--port-end",
                         str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", "hwnas-test"])
        dev = _device(kind="tvm-rpc", tracker=f"127.0.0.1:{tport}", key="hwnas-test").model_copy(update={"repeats": 3})
        art = TVMOpBuilder(dev).build(OpKey.parse("cn_k1_s1_c32_r6@8x8x16"))
        deadline = time.time() + 60
        while True:  # the server registers with the tracker asynchronously
            try:
                m = TVMRunner(dev).measure(art)
                break
            except Exception:  # noqa: BLE001
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert m.median_ms > 0 and m.samples == 3
    finally:
        if server is not None:
            _stop(server)
        _stop(tracker)


def test_gpu_template_compiles_for_its_opencl_target():
    """The Adreno template builds through the exporters' TVM path (no OpenCL runtime here to run it)."""
    art = TVMOpBuilder(get_device("adreno-opencl")).build(OpKey.parse("cn_k1_s1_c32_r6@8x8x16"))
    assert art.path.suffix in (".tar", ".so") and art.path.stat().st_size > 0


def test_tuned_label_comes_from_the_database_applied_not_the_device_file(tmp_path):
    """A device file saying ``tuned: true`` without tuning: no database was applied, so the table says untuned."""
    dev = _device().model_copy(update={"repeats": 3, "tuned": True, "tune_trials": 0})
    res = profile(dev, "mobilenetv2", 16, out=tmp_path / "tvm.yaml", limit=2, progress=False)
    meta = res.table.meta
    assert meta.tuned is False and "untuned" in meta.provenance
    assert "0 of 2 ops with a MetaSchedule database applied" in meta.notes
    assert all("untuned" in e.note for e in res.table.entries.values())


def test_table_tuned_needs_every_op_tuned():
    from hwnas.profile.run import table_tuned

    assert table_tuned([{"tuned": True}, {"tuned": True}, {"energy_source": "identity"}]) == (
        True, "2 of 2 ops with a MetaSchedule database applied")
    assert table_tuned([{"tuned": True}, {"tuned": False}])[0] is False
    assert table_tuned([{"tuned": True}, {}])[0] is False  # an older journal line: not known to be tuned
    assert table_tuned([])[0] is False


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HWNAS_TVM_TUNING_TESTS"),
                    reason="MetaSchedule tuning takes minutes here (STACK.md): set HWNAS_TVM_TUNING_TESTS=1")
def test_tuned_op_records_its_database(tmp_path):
    dev = _device().model_copy(update={"repeats": 3, "tune_trials": 2})
    art = TVMOpBuilder(dev).build(OpKey.parse("cn_k1_s1_c16_r6@8x8x8"))
    assert art.extra["tuned"] and "MetaSchedule database" in art.extra["note"]
    from hwnas.profile.run import measure_key

    m = measure_key(OpKey.parse("cn_k1_s1_c16_r6@8x8x8"), TVMOpBuilder(dev), TVMRunner(dev), dev)
    assert m.tuned is True and "tuning records applied" in m.note and "untuned" not in m.note
