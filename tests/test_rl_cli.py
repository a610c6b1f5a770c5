"""`hwnas search --method mnasnet` end to end on the built-in data: the run folder, the
weighted-product objective over two costs (`--objective latency,params`; `latency,energy` is refused on
pixel, whose energy is a declared power model), and resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

HWNAS = [sys.executable, "-c", "from hwnas.cli import main; main()"]
ARGS = ["search", "--target", "pixel", "--method", "mnasnet", "--data", "digits", "--resolution", "16",
        "--width", "0.35", "--epochs", "1", "--steps-per-epoch", "4", "--samples", "24", "--final-epochs", "1",
        "--objective", "latency,params", "--seed", "2", "--json"]


@pytest.mark.slow
def test_mnasnet_cli_run_folder_and_resume_after_kill(tmp_path):
    pytest.importorskip("ai_edge_litert")
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.run([*HWNAS, *ARGS, "--out", str(full)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["method"] == "mnasnet" and res["within_budget"]
    extra = res["search_extra"]
    assert extra["evaluator"] == "SPOSEvaluator" and extra["queries"] == 24 and extra["within_limit"]
    for name in ("config.yaml", "history.jsonl", "arch.yaml", "model.tflite", "result.json", "checkpoints/last.pt",
                 "checkpoints/supernet.pt", "plots/pareto_latency.png", "plots/pareto_energy.png"):
        assert (full / name).is_file(), name
    evals = [json.loads(s) for s in (full / "history.jsonl").read_text().splitlines() if '"eval"' in s]
    assert len({tuple(e["choices"]) for e in evals}) == 24
    assert all(e["energy_mj"] is not None and e["latency_ms"] > 0 and e["params"] > 0 for e in evals)

    # kill a second run once it has evaluated architectures, then resume it
    p = subprocess.Popen([*HWNAS, *ARGS, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:
        hist = killed / "history.jsonl"
        if hist.exists() and '"eval"' in hist.read_text():
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "result.json").exists()
    proc = subprocess.run([*HWNAS, "search", "--resume", str(killed), "--json"], capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (killed / "arch.yaml").read_text() == (full / "arch.yaml").read_text()
    evals2 = [json.loads(s) for s in (killed / "history.jsonl").read_text().splitlines() if '"eval"' in s]
    assert [e["choices"] for e in evals2] == [e["choices"] for e in evals]
