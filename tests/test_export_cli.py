"""``hwnas export`` end to end (in-process click runner), bad input, weights and BN recalibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hwnas.arch import ArchSpec
from hwnas.cli import main
from hwnas.errors import ExportError
from hwnas.export.checks import load_calibration, load_weights, perturb_for_parity, real_images, recalibrate_bn
from hwnas.nn import build_model

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

TINY = "res32 stem=cn_k3_s2_c16_r6 ir_k3_e4_s1_c16_r6 ir_k3_e4_s2_c24_se0.25_r6 head=cn_k1_s1_c64_r6 classes=10"


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture()
def weights(tmp_path):
    arch = ArchSpec.from_compact(TINY)
    model = perturb_for_parity(build_model(arch, seed=1), real_images(32, 32, 3))  # non-flat softmax
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    return path


def test_export_tflite_with_weights_json(tmp_path, weights):
    out = tmp_path / "m.tflite"
    code, text = run("export", TINY, "--weights", weights, "--format", "tflite", "--json", "-o", out)
    assert code == 0, text
    info = json.loads(text)
    assert info["fresh_init"] is False and out.exists() and info["size_bytes"] == out.stat().st_size
    assert info["ops"]["CONV_2D"] >= 6 and "PAD" not in info["ops"] and info["lint"]["problems"] == []
    assert info["parity"]["max_abs_diff"] < 1e-4 and info["parity"]["ok"]


def test_export_without_weights_says_fresh(tmp_path):
    code, text = run("export", TINY, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert code == 0, text
    assert "no --weights: random weights" in text and "parity vs PyTorch" in text and (tmp_path / "m.onnx").exists()
    # the fresh net is given a non-trivial function, so the parity figure is not a flat-softmax 0
    diff = float(text.split("max abs diff ")[1].split(",")[0])
    assert 0 < diff < 1e-4
    ops_line = next(line for line in text.splitlines() if line.startswith("ops"))
    assert "Conv" in ops_line and "Pad" not in ops_line  # torch.export-based exporter folds pads into Conv


def test_export_int8_untrained_weights_refuse_the_accuracy_gate(tmp_path, weights):
    """Random (perturbed) weights score chance: the accuracy gate refuses instead of passing a 0-point drop."""
    code, text = run("export", TINY, "--weights", weights, "--quantize", "int8", "--calib-data", "digits",
                     "--eval-data", "digits", "--max-int8-drop", "100", "-o", tmp_path / "q.tflite")
    assert code == 2 and "near chance" in text and "accuracy gate cannot vouch" in text, text
    assert "worst layers" in text and not (tmp_path / "q.tflite").exists()


def test_export_tvm_host_library(tmp_path, weights):
    """Host .so, loaded in a fresh process for the parity check; no temporary file left behind."""
    out_dir = tmp_path / "out"
    code, text = run("export", TINY, "--weights", weights, "--format", "tvm", "--json", "-o", out_dir / "m.so")
    assert code == 0, text
    info = json.loads(text)
    assert info["parity"]["backend"] == "tvm" and info["parity"]["ok"] and info["parity"]["max_abs_diff"] < 1e-4
    assert [p.name for p in out_dir.iterdir()] == ["m.so"]


@pytest.mark.parametrize("args, message", [
    (["--format", "caffe"], "unknown export format 'caffe'"),
    (["--quantize", "int4"], "unknown quantization 'int4'"),
    (["--quantize", "int8"], "needs representative data"),
    (["--format", "onnx", "--quantize", "int8"], "tflite format only"),
    (["--calib-data", "imagenet"], "no such file and not a built-in name"),
])
def test_bad_options_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "m.tflite"
    code, text = run("export", TINY, *args, "-o", out)
    assert code == 2 and message in text and len(text.strip().splitlines()) == 1, text
    assert not out.exists() and not list(tmp_path.iterdir())


def test_mismatching_weights_name_tensor_and_shapes(tmp_path):
    other = ArchSpec.from_compact(TINY.replace("c24", "c32"))
    path = tmp_path / "w.pt"
    torch.save(build_model(other).state_dict(), path)
    out = tmp_path / "m.tflite"
    code, text = run("export", TINY, "--weights", path, "-o", out)
    assert code == 2
    assert "stages.0.1.project.conv.0.weight" in text and "(32, 64, 1, 1)" in text and "(24, 64, 1, 1)" in text
    assert not out.exists()


def test_wrong_calibration_shape_and_unwritable_output(tmp_path):
    bad = tmp_path / "calib.npy"
    np.save(bad, np.zeros((4, 28, 28, 1), np.float32))
    out = tmp_path / "m.tflite"
    code, text = run("export", TINY, "--quantize", "int8", "--calib-data", bad, "-o", out)
    assert code == 2 and "(4, 28, 28, 1)" in text and "(N, 32, 32, 3)" in text and not out.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where the output folder should be: unwritable even for root
    code, text = run("export", TINY, "-o", blocker / "sub" / "m.tflite")
    assert code == 2 and "cannot write" in text and len(text.strip().splitlines()) == 1
    code, text = run("export", TINY, "-o", tmp_path)  # a folder, not a file
    assert code == 2 and "is a directory" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "calib.npy"]


def test_load_weights_checkpoint_forms_and_errors(tmp_path):
    arch = ArchSpec.from_compact(TINY)
    sd = build_model(arch, seed=2).state_dict()
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pt")
    model = load_weights(arch, tmp_path / "ckpt.pt")
    assert torch.equal(model.stem.conv.conv.weight, sd[next(k for k in sd if k.startswith("stem.conv."))])
    with pytest.raises(ExportError, match="not found"):
        load_weights(arch, tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ExportError, match="cannot read weights"):
        load_weights(arch, tmp_path / "junk.pt")
    extra = dict(sd, **{"extra.weight": torch.zeros(3)})
    with pytest.raises(ExportError, match="unexpected tensor 'extra.weight'"):
        load_weights(arch, extra)
    missing = {k: v for k, v in sd.items() if k != "head.bn.running_var"}
    with pytest.raises(ExportError, match="'head.bn.running_var' .* missing"):
        load_weights(arch, missing)


def test_recalibrate_bn_matches_batch_statistics():
    arch = ArchSpec.from_compact(TINY)
    model = build_model(arch, seed=0)
    x = torch.from_numpy(real_images(64, 32, 3).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        stem_out = model.stem.conv(x)
    recalibrate_bn(model, [x[:32], x[32:]])
    bn = model.stem.bn
    assert not model.training and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean, stem_out.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, stem_out.var((0, 2, 3)), atol=1e-3, rtol=2e-2)
    with pytest.raises(ExportError):
        recalibrate_bn(model, [])


def test_load_calibration_npz_and_builtin(tmp_path):
    arch = ArchSpec.from_compact(TINY)
    np.savez(tmp_path / "c.npz", images=np.ones((5, 32, 32, 3), np.float32))
    assert load_calibration(tmp_path / "c.npz", arch).shape == (5, 32, 32, 3)
    imgs = load_calibration("mnist", arch, n=6)
    assert imgs.shape == (6, 32, 32, 3) and imgs.std() > 0.5
