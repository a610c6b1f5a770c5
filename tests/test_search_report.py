"""Search report pieces: op names in the probability plot, device/precision resolution, memory check."""

from __future__ import annotations

import pytest
import torch

from hwnas.errors import ConfigError
from hwnas.search.base import RunDir, SearchResult
from hwnas.search.pipeline import make_plots, make_space, op_label
from hwnas.search.train import Precision, resolve_device


def test_op_labels_name_the_choice_not_the_layer():
    assert op_label("ir_k5_e6_s2_c24_r6") == "ir_k5_e6"
    assert op_label("ir_k3_e1_s2_c24_g2_re") == "ir_k3_e1_g2"
    assert op_label("ir_k3_e6_s1_c40_se0.25_hs") == "ir_k3_e6_se0.25"
    assert op_label("skip") == "skip"


def test_probability_plot_is_written_with_named_columns(tmp_path):
    space = make_space("mobilenetv2", resolution=16, num_classes=10, in_channels=1, width=0.35)
    labels = [list(s.candidates) for s in space.slots]
    probs = [[1.0 / len(r) + (0.01 if j == 0 else 0.0) for j in range(len(r))] for r in labels]
    res = SearchResult(best_choices=tuple(0 for _ in labels), best_arch=space.decode(tuple(0 for _ in labels)),
                       extra={"probabilities": probs})
    paths = make_plots(RunDir(tmp_path), 1.0, res, labels=labels)
    assert any(p.name == "op_probabilities.png" and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_device_and_precision_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no usable CUDA"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        Precision("fp16", torch.device("cpu"))
    p = Precision("bf16", torch.device("cpu"))
    with p.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    assert p.to_dict()["precision"] == "bf16" and not p.channels_last


def test_memory_estimate_follows_the_method_and_refuses_with_the_largest_batch():
    from hwnas.search.memory import MemoryBudgetError, check_memory, estimate_search_memory

    space = make_space("mobilenetv2", resolution=32, num_classes=10, in_channels=1, width=0.35)
    one = estimate_search_memory(space, "proxyless", in_channels=1, resolution=32)
    every = estimate_search_memory(space, "fbnet", in_channels=1, resolution=32)
    assert one.traced == "widest path" and every.traced == "all paths"
    assert every.per_image > 2 * one.per_image > 0  # FBNet keeps the activations of every candidate
    # activations of the widest path: at least the input image and the 32×32 stem output in fp32
    assert one.per_image > 4 * (32 * 32 + 32 * 32 * 8)
    avail = one.fixed + 100 * one.per_image
    fits = one.max_batch(avail)
    assert 80 <= fits <= 100
    rep = check_memory(one, fits, torch.device("cpu"), available=avail)
    assert rep["fits"] and rep["max_batch"] == fits
    with pytest.raises(MemoryBudgetError, match=f"largest batch that fits is {fits}"):
        check_memory(one, fits + 1, torch.device("cpu"), available=avail)
    assert check_memory(one, 10 * fits, torch.device("cpu"), available=avail, force=True)["forced"]


def test_cli_refuses_a_batch_that_cannot_fit(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", "from hwnas.cli import main; main()", "search", "--target", "pixel",
                           "--data", "digits", "--resolution", "16", "--width", "0.35", "--batch-size", str(10**9),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "largest batch that fits is" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # refused before any run folder is written
