"""Run folder, searcher registry, Pareto front."""

from __future__ import annotations

import pytest

from hwnas.errors import ConfigError, UnknownNameError
from hwnas.search.base import Evaluated, RunDir, get_searcher, pareto_front, searcher_names


def test_registry_lists_methods():
    names = searcher_names()
    assert {"fbnet", "proxyless", "singlepath"} <= set(names)
    assert get_searcher("FBNet", lr=0.1).options["lr"] == 0.1
    with pytest.raises(UnknownNameError, match="valid methods: .*proxyless"):
        get_searcher("darts")


def test_run_dir_history_and_checkpoints(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.load_checkpoint() is None
    for i in range(5):
        run.append_history({"step": i, "loss": float("nan") if i == 3 else 1.0 / (i + 1)})
    with open(run.history, "a") as fh:
        fh.write('{"step": 5, "lo')  # torn line of a killed process
    assert [r["step"] for r in run.read_history()] == [0, 1, 2, 3, 4]
    run.truncate_history(2)
    assert run.history_lines() == 2
    import torch

    run.save_checkpoint({"w": torch.ones(3), "epoch": 4})
    ck = run.load_checkpoint()
    assert ck["epoch"] == 4 and torch.equal(ck["w"], torch.ones(3))
    run.checkpoint.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="corrupt checkpoint"):
        run.load_checkpoint()
    with pytest.raises(ConfigError, match="not a run folder"):
        run.read_config()


def test_pareto_front():
    def ev(acc, lat, arch):
        return Evaluated((0,), arch, acc, lat, None, 1, 1, 0)

    items = [ev(0.9, 10, "a"), ev(0.8, 5, "b"), ev(0.85, 12, "c"), ev(0.95, 20, "d"), ev(0.9, 10, "a"),
             ev(None, 1, "e")]
    front = pareto_front(items)
    assert [e.arch_compact for e in front] == ["b", "a", "d"]
    assert Evaluated.from_dict(items[0].to_dict()) == items[0]


def test_checkpoint_bookkeeping_does_not_reparse_the_history(tmp_path, monkeypatch):
    """Searchers store ``history_lines()`` in every checkpoint: it must not re-read history.jsonl
    (that made checkpoint cost grow with the run's length)."""
    run = RunDir(tmp_path / "r")
    for i in range(20):
        run.append_history({"step": i})
    reads = []
    original = RunDir.read_history
    monkeypatch.setattr(RunDir, "read_history", lambda self: reads.append(1) or original(self))
    for i in range(20, 200):
        run.append_history({"step": i})
        assert run.history_lines() == i + 1
    assert reads == []
    assert RunDir(tmp_path / "r").history_lines() == 200  # a new RunDir (resume) counts once
    assert len(reads) == 1
