"""The export-check pipeline (:mod:`hwnas.export.checks`) on a trained run: training preprocessing,
disjoint calibration/evaluation images, a failing gate per format, per-layer int8 errors, QAT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from hwnas.arch import ArchSpec
from hwnas.cli import main
from hwnas.errors import ExportError
from hwnas.export import checks

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ARCH = "res16 in=1 stem=cn_k3_s2_c16_r6 ir_k3_e3_s1_c16_r6 ir_k3_e3_s2_c24_r6 head=cn_k1_s1_c64_r6 classes=10"


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder as ``hwnas search`` writes it (model.pt with data_mean/data_std, config.yaml), trained
    briefly on the digits train split at 16 px; returns (folder, PyTorch test accuracy)."""
    from hwnas.nn import build_model
    from hwnas.search.data import load_data
    from hwnas.search.train import evaluate

    torch.set_num_threads(1)  # module fixtures run before the autouse single-thread fixture
    root = tmp_path_factory.mktemp("run")
    arch = ArchSpec.from_compact(ARCH)
    data = load_data("digits", resolution=16, seed=3)
    torch.manual_seed(0)
    model = build_model(arch, train=True, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):  # ~1 s per epoch
        model.train()
        for x, y in data.batches("train", 32, epoch=epoch, augment=False):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    acc, _ = evaluate(model, data.batches("test", 256))
    arch.save(root / "arch.yaml")
    torch.save({"arch": arch.to_compact(), "state_dict": model.state_dict(), "data_mean": data.mean,
                "data_std": data.std}, root / "model.pt")
    (root / "config.yaml").write_text(yaml.safe_dump({"search": {"data": "digits", "seed": 3, "data_limit": None,
                                                                 "resolution": 16},
                                                      "data_mean": data.mean, "data_std": data.std}))
    return root, acc


def test_int8_of_a_trained_run_matches_pytorch_test_accuracy(tmp_path, trained_run):
    root, acc = trained_run
    assert acc > 0.9
    code, text = run("export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "int8",
                     "--calib-data", "digits", "--eval-samples", "1000", "--json", "-o", tmp_path / "q.tflite")
    assert code == 0, text
    q = json.loads(text)["quant"]
    # the run's own test split, normalised with its mean/std: float accuracy is PyTorch's test accuracy
    assert q["samples"] == 359 and abs(q["float_accuracy"] - acc) < 1e-6
    assert abs(q["int8_accuracy"] - acc) <= 0.01 and q["accuracy_gate"] == "passed" and q["ok"]


def test_run_export_without_calib_data_uses_the_runs_own_data(tmp_path, trained_run):
    """No --calib-data/--eval-data: a run's model is calibrated and checked on the data its config.yaml names
    (its own test split), and the export says so, instead of refusing int8 or falling back to digits."""
    root, acc = trained_run
    code, text = run("export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "int8", "--json",
                     "-o", tmp_path / "q.tflite")
    assert code == 0, text
    info = json.loads(text)
    assert any("the run's own data 'digits'" in n and "config.yaml" in n for n in info["notes"]), info["notes"]
    assert info["quant"]["samples"] == 359 and abs(info["quant"]["float_accuracy"] - acc) < 1e-6
    # a run on other data: that data, not digits (same weights; the check only reads config.yaml's data)
    other = tmp_path / "run2"
    other.mkdir()
    (other / "model.pt").write_bytes((root / "model.pt").read_bytes())
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["search"].update(data="mnist5k", data_limit=500)
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, text = run("export", root / "arch.yaml", "--weights", other / "model.pt", "--json", "-o",
                     tmp_path / "f.tflite")
    assert code == 0, text
    info = json.loads(text)
    assert "mnist5k" in info["data"] and "digits" not in info["data"] and info["parity"]["samples"] == 100, info


def test_int8_calibrated_on_constant_images_fails_the_gate(tmp_path, trained_run):
    root, _ = trained_run
    const = tmp_path / "const.npy"
    np.save(const, np.zeros((32, 16, 16, 1), np.float32))
    code, text = run("export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "int8",
                     "--calib-data", const, "--eval-data", "digits", "-o", tmp_path / "q.tflite")
    assert code == 2 and "int8 check failed" in text and "worst layers (RMSE/scale)" in text, text
    assert not (tmp_path / "q.tflite").exists()


def test_calibration_without_the_run_normalisation_is_not_what_training_saw(trained_run):
    """Built-in data follows model.pt's normalisation; a different one changes the images."""
    root, _ = trained_run
    arch = ArchSpec.from_compact(ARCH)
    prep = checks.run_preprocessing(root / "model.pt")
    assert prep.source.endswith("model.pt") and prep.data == "digits" and prep.seed == 3
    (tx, _), (ex, ey), how = checks.builtin_data("digits", arch, prep)
    assert "model.pt's mean/std" in how
    assert abs(float(tx.mean())) < 0.05 and abs(float(tx.std()) - 1) < 0.05  # normalised as in training
    # another run's normalisation is applied as given, on the same resized pixels
    from hwnas.search.data import load_data

    bundle = load_data("digits", resolution=16, seed=3)
    raw = tx * bundle.std[0] + bundle.mean[0]
    other = checks.builtin_data("digits", arch, checks.Preprocessing(mean=[0.5], std=[2.0], data="digits", seed=3))
    assert np.allclose(other[0][0], (raw - 0.5) / 2.0, atol=1e-5)
    seen = {img.tobytes() for img in tx}
    assert not any(img.tobytes() in seen for img in ex)  # evaluation images are never calibration images


def test_float16_gate_fails_over_its_tolerance(tmp_path, trained_run):
    root, _ = trained_run
    args = ["export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "float16",
            "--eval-data", "digits", "-o", tmp_path / "h.tflite"]
    code, text = run(*args)
    assert code == 0 and "(0.01 x logit scale" in text, text
    code, text = run(*args, "--float16-tolerance", "1e-9")
    assert code == 2 and "tflite parity failed" in text, text


def test_eval_images_equal_to_calibration_images_are_refused(tmp_path):
    arch = ArchSpec.from_compact(ARCH)
    x = np.random.default_rng(0).standard_normal((10, 16, 16, 1)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    np.savez(tmp_path / "e.npz", x=x, y=np.zeros(10, np.int64))
    with pytest.raises(ExportError, match="every evaluation image is also a calibration image"):
        checks.check_data(arch, tmp_path / "c.npy", tmp_path / "e.npz", calib_samples=10)
    d = checks.check_data(arch, tmp_path / "c.npy", None, calib_samples=10)  # holds out the last quarter
    assert len(d.calib) == 8 and len(d.eval_x) == 2 and d.notes


def test_gates_agreement_and_near_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    good = np.eye(10)[labels] * 0.9 + 0.01
    flipped = good.copy()
    flipped[:100] = np.roll(flipped[:100], 1, axis=1)  # 20 % disagreement
    rep = checks.quant_report(good, flipped, labels, max_drop_points=100, min_agreement=0.95)
    assert rep.accuracy_gate == "passed" and not rep.agreement_ok and not rep.ok
    with pytest.raises(ExportError, match="agrees with float on 0.800"):
        checks.check(rep)
    chance = np.eye(10)[rng.integers(0, 10, 500)]
    rep = checks.quant_report(chance, chance, labels, max_drop_points=1.0, min_agreement=0.95)
    assert rep.accuracy_gate == "refused" and not rep.ok and "near chance" in rep.message
    assert checks.near_chance(0.12, 10, 500) and not checks.near_chance(0.9, 10, 500)


def test_qat_leaves_int8_grid_weights_and_a_fully_int8_tflite(tmp_path, trained_run):
    from hwnas.export.qat import _fold_scale
    from hwnas.nn.blocks import ConvBnAct

    root, acc = trained_run
    arch = ArchSpec.from_compact(ARCH)
    model = checks.load_weights(arch, root / "model.pt")
    d = checks.check_data(arch, "digits", None, prep=checks.run_preprocessing(root / "model.pt"))
    from hwnas.export.qat import qat_finetune

    qat_finetune(model, d.train_x[:256], d.train_y[:256], epochs=1)
    unit = next(m for m in model.modules() if isinstance(m, ConvBnAct))
    folded = (unit.conv.conv.weight * _fold_scale(unit.bn).view(-1, 1, 1, 1)).detach().flatten(1)
    steps = folded / (folded.abs().amax(1, keepdim=True) / 127)
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # BN-folded weights sit on the int8 grid
    assert not any(n.startswith("parametrizations") for n, _ in model.named_parameters())
    code, text = run("export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "int8", "--qat", "1",
                     "--calib-data", "digits", "--json", "-o", tmp_path / "q.tflite")
    assert code == 0, text
    info = json.loads(text)
    assert info["qat"]["epochs"] == 1 and info["quant"]["ok"]
    assert info["ops"].get("QUANTIZE") == 1 and info["ops"].get("DEQUANTIZE") == 1  # int8 inside, float I/O


def test_missing_extra_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ModuleNotFoundError
    code, text = run("export", ARCH, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert code == 2 and "pip install 'hwnas[onnx]'" in text and "Traceback" not in text, text


def test_int8_parity_row_is_labelled(tmp_path, trained_run):
    root, _ = trained_run
    code, text = run("export", root / "arch.yaml", "--weights", root / "model.pt", "--quantize", "int8",
                     "--calib-data", "digits", "--eval-samples", "100", "-o", tmp_path / "q.tflite")
    assert code == 0, text
    assert "int8 tflite parity vs PyTorch on 100 held-out images" in text and "no limit: int8 is gated" in text
    from hwnas.search.pipeline import summary_rows

    res = {"artifacts": {"arch": "a", "model_tflite": "m", "result": "r"}, "target": "t", "method": "m", "space": "s",
           "arch": "x", "predicted_latency_ms": 1.0, "latency_budget_ms": 1.0, "latency_range_ms": (0.5, 2.0),
           "params": 1, "macs": 1, "test_accuracy": 0.9, "tflite_test_accuracy": 0.89, "quantize": "int8",
           "search_seconds": 1, "final_train_seconds": 1, "total_seconds": 2}
    rows = dict(summary_rows({**res, "measured_latency_ms": None}))
    assert "test accuracy (.tflite int8)" in rows


def test_float32_parity_gate_is_relative_to_the_logit_scale():
    """Round-off in the logits grows with their magnitude; softmax moves by at most half the logit error."""
    z = np.array([[0.0, 10.0, -10.0], [1.0, 0.5, -0.5]], np.float32)
    ref = checks.softmax(z)
    assert checks.logit_scale(ref) == pytest.approx(10.0, rel=1e-4)
    assert checks.logit_scale(checks.softmax(z * 0.01)) == 1.0  # small logits: the absolute limit
    bumped = checks.softmax(z * (1 + 2e-3))  # a relative logit error of 2e-3 (float32 round-off is ~1e-7)
    rep = checks.parity("tflite", ref, bumped, 1e-4)
    assert 1e-4 < rep.max_abs_diff < rep.limit == pytest.approx(1e-3, rel=1e-4) and rep.ok
    wrong = ref.copy()
    wrong[:, [0, 1]] = wrong[:, [1, 0]]  # a real bug (swapped outputs) stays far over the limit
    assert not checks.parity("tflite", ref, wrong, 1e-4).ok
