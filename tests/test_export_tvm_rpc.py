"""TVM export on the device: refusal to tune a cross target locally, plain cross compilers for non-Android
aarch64, and MetaSchedule tuning through a local RPC tracker + server (as tests/test_profile_tvm.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("tvm")

from hwnas.cli import main  # noqa: E402
from hwnas.errors import ExportError  # noqa: E402
from hwnas.export.tvm import _library_kind, make_target, parse_tracker  # noqa: E402

TINY = "res8 in=1 stem=cn_k3_s2_c8_r6 ir_k3_e2_s1_c8_r6 head=cn_k1_s1_c16_r6 classes=4"


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_tuning_a_cross_target_locally_is_refused(tmp_path):
    code, text = run("export", TINY, "--format", "tvm", "--target", "android", "--tune-trials", "8",
                     "-o", tmp_path / "m")
    assert code == 2 and "refusing to tune 'android' on this machine" in text and "--rpc-tracker" in text, text
    with pytest.raises(ExportError, match="HOST:PORT"):
        parse_tracker("localhost", "k")
    with pytest.raises(ExportError, match="both"):
        parse_tracker("127.0.0.1:9190", None)


def test_non_android_aarch64_uses_a_plain_cross_compiler(monkeypatch):
    linux = make_target("aarch64-linux")
    monkeypatch.delenv("TVM_CROSS_CC", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _library_kind(linux)[0] == "tar"  # no cross compiler: object files to link on the board
    monkeypatch.setenv("TVM_CROSS_CC", "/opt/cross/bin/aarch64-linux-gnu-g++")
    assert _library_kind(linux)[0] == "so"
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    assert _library_kind(make_target("android"))[0] == "tar"  # Android still needs the NDK, not TVM_CROSS_CC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(port)


def _start(args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HWNAS_TVM_TUNING_TESTS"),
                    reason="MetaSchedule tuning takes minutes here (STACK.md): set HWNAS_TVM_TUNING_TESTS=1")
def test_tune_through_a_local_tracker(tmp_path):
    tport = _free_port()
    tracker = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end",
                      str(tport + 1)])
    server = None
    try:
        _wait_port(tport)
        sport = _free_port()
        server = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport), "--port-end",
                         str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", "hwnas-test"])
        time.sleep(3)
        code, text = run("export", TINY, "--format", "tvm", "--target", "llvm", "--tune-trials", "4",
                         "--rpc-tracker", f"127.0.0.1:{tport}", "--rpc-key", "hwnas-test", "--json",
                         "-o", tmp_path / "m.so")
        assert code == 0, text
        info = json.loads(text)
        assert any("via the tracker" in n for n in info["notes"]), info["notes"]
        assert info["tvm"]["tuned"] and info["tvm"]["tuning_records"] > 0
        assert info["parity"]["ok"]
    finally:
        if server is not None:
            _stop(server)
        _stop(tracker)
