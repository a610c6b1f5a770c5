"""Float parity of every exporter vs PyTorch on real images: .tflite (LiteRT), ONNX (onnxruntime), TVM-llvm.

Nets are given non-trivial functions first (:func:`hwnas.export.checks.perturb_for_parity`: random BN
affine, BN statistics re-estimated on the images, logits scaled to std 2), otherwise a fresh net's
softmax is nearly uniform and any exporter would "match". Inputs are scikit-learn digits upsampled.

Scope chosen for the ~6 min test budget on 2 shared cores (a conversion costs 2-15 s here):
* one small net per activation and block kind, all three backends;
* every zoo net at 64 px (10 classes), all three backends;
* ``HWNAS_EXPORT_MEMBERS`` random members (default 1) of each space at 32 px, .tflite and ONNX
  (``HWNAS_EXPORT_BACKENDS=tflite,onnx,tvm`` adds TVM). The issue's 20 members per space:
  ``HWNAS_EXPORT_MEMBERS=20 pytest tests/test_export_parity.py -k members -s`` (~30-60 min here;
  ``HWNAS_EXPORT_LOG=file.jsonl`` writes each member's figures as it goes).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from hwnas.arch import ArchSpec
from hwnas.export.checks import perturb_for_parity, real_images, torch_probs
from hwnas.nn import build_model
from hwnas.spaces import get_space
from hwnas.zoo import ZOO

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")
pytest.importorskip("tvm")

TOL = 1e-4
MEMBERS = int(os.environ.get("HWNAS_EXPORT_MEMBERS", "1"))
# TVM compiles cost ~8 s a net here; the zoo nets already run every op type through TVM.
MEMBER_BACKENDS = tuple(os.environ.get("HWNAS_EXPORT_BACKENDS", "tflite,onnx").split(","))
FIGURES: dict[str, dict[str, float]] = {}


def _parity(arch: ArchSpec, seed: int = 0, n: int = 6, backends=("tflite", "onnx", "tvm")) -> dict[str, float]:
    """Max abs diff of softmax outputs per backend vs PyTorch on ``n`` real images."""
    from hwnas.export.keras import keras_model
    from hwnas.export.onnx import onnx_bytes, run_onnx
    from hwnas.export.tflite import convert, run_tflite
    from hwnas.export.tvm import compile_tvm, run_tvm

    images = real_images(32, arch.resolution, arch.in_channels, seed=seed)
    model = perturb_for_parity(build_model(arch, seed=seed), images, seed=seed)
    test = images[:n]
    ref = torch_probs(model, test)
    assert ref.max() > 2.0 / arch.classifier.num_classes  # not a flat softmax
    out = {"float32_floor": _float64_floor(model, test, ref)}
    if "tflite" in backends:
        out["tflite"] = float(np.abs(run_tflite(convert(keras_model(arch, model), route="frozen"), test) - ref).max())
    nchw = test.transpose(0, 3, 1, 2)
    data = onnx_bytes(model) if {"onnx", "tvm"} & set(backends) else None
    if "onnx" in backends:
        out["onnx"] = float(np.abs(run_onnx(data, nchw) - ref).max())
    if "tvm" in backends:
        art = compile_tvm(data, "llvm", out=None)
        out["tvm"] = float(np.abs(run_tvm(art, nchw) - ref).max())
    return out


def _float64_floor(model, test, ref) -> float:
    """How far PyTorch's own float32 softmax is from float64: the round-off this net amplifies."""
    import copy

    import torch

    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        r64 = torch.softmax(m64(torch.from_numpy(test.transpose(0, 3, 1, 2).copy()).double()), -1).numpy()
    return float(np.abs(ref - r64).max())


def _ok(diffs: dict[str, float]) -> bool:
    """Every backend within 1e-4, or (a net that amplifies float32 round-off) within 3x PyTorch's own
    float32-vs-float64 distance; a wrong lowering is off by 1e-2 or more either way."""
    limit = max(TOL, 3 * diffs["float32_floor"])
    return all(d <= limit for k, d in diffs.items() if k != "float32_floor")


def _arch(text: str) -> ArchSpec:
    return ArchSpec.from_compact(text)


# One small net per activation / block kind: a wrong lowering fails here, at its own name.
KIND_CASES = {
    "relu": "res32 stem=cn_k3_s2_c16_re ir_k3_e3_s1_c16_re ir_k5_e3_s2_c24_re head=cn_k1_s1_c64_re classes=10",
    "relu6": "res32 stem=cn_k3_s2_c16_r6 ir_k3_e3_s1_c16_r6 ir_k3_e6_s2_c24_r6 head=cn_k1_s1_c64_r6 classes=10",
    "hswish": "res32 stem=cn_k3_s2_c16_hs ir_k3_e3_s1_c16_hs ir_k5_e3_s2_c24_hs head=cn_k1_s1_c64_hs classes=10",
    "swish": "res32 stem=cn_k3_s2_c16_sw ir_k3_e3_s1_c16_sw ir_k3_e6_s2_c24_sw head=cn_k1_s1_c64_sw classes=10",
    "se_efficientnet": "res32 stem=cn_k3_s2_c16_sw ds_k3_s1_c16_se0.25_sw ir_k5_e6_s2_c24_se0.25_sw "
                       "ir_k3_e6_s1_c24_se0.25_sw head=cn_k1_s1_c64_sw classes=10",
    "se_mobilenetv3": "res32 se=mobilenetv3 stem=cn_k3_s2_c16_hs ds_k3_s2_c16_se0.25_re ir_k5_e4_s1_c24_se0.25_hs "
                      "ir_k5_e3_s1_c24_se0.25_hs head=cn_k1_s1_c96_hs prelogits=c128_hs classes=10",
    "group_conv": "res32 stem=cn_k3_s2_c16_re ir_k3_e1_s1_c16_g2_re ir_k5_e1_s2_c32_g2_re ir_k3_e3_s1_c32_g2_re "
                  "head=cn_k1_s1_c64_re classes=10",
    "fused_mbconv": "res32 stem=cn_k3_s2_c16_sw er_k3_e4_s1_c16_sw er_k5_e4_s2_c24_se0.25_sw er_k3_e1_s1_c24_sw "
                    "head=cn_k1_s1_c64_sw classes=10",
    "skip": "res32 stem=cn_k3_s2_c16_r6 ir_k3_e6_s1_c24_r6 skip ir_k3_e6_s1_c24_r6 skip "
            "head=cn_k1_s1_c64_r6 classes=10",
    "dsconv_noskip": "res32 stem=cn_k3_s1_c16_re ds_k3_s1_c16_re_noskip ds_k5_s2_c24_re ds_k7_s1_c24_re "
                     "head=cn_k1_s1_c64_re classes=10",
    "conv_residual": "res32 stem=cn_k3_s2_c16_r6 cn_k3_s1_c16_r6 cn_k5_s1_c16_r6_noskip cn_k3_s2_c24_r6 "
                     "classes=10",
    "odd_size_stride2": "res27 stem=cn_k3_s2_c16_r6 ir_k5_e3_s2_c24_r6 ir_k7_e3_s2_c32_r6 ds_k3_s2_c32_r6 "
                        "head=cn_k1_s1_c64_r6 classes=10",
}


@pytest.mark.parametrize("case", list(KIND_CASES))
def test_block_kind_parity(case):
    diffs = _parity(_arch(KIND_CASES[case]))
    FIGURES[f"kind:{case}"] = diffs
    assert all(d <= TOL for k, d in diffs.items() if k != "float32_floor"), diffs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_parity(name):
    arch = ZOO[name].arch.with_resolution(64).with_classes(10)
    diffs = _parity(arch)
    FIGURES[f"zoo:{name}"] = diffs
    assert all(d <= TOL for k, d in diffs.items() if k != "float32_floor"), diffs


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["mobilenetv2", "fbnet", "mnasnet", "efficientnet", "efficientnet-lite",
                                        "mobilenetv3", "efficientnetv2"])
def test_space_members_parity(space_name):
    space = get_space(f"{space_name}-cifar", resolution=32, num_classes=10)  # the small-input skeletons at 32 px
    rng = random.Random(1234)
    worst: dict[str, float] = {}
    for i in range(MEMBERS):
        arch = space.decode(space.sample(rng))
        diffs = _parity(arch, seed=i, backends=MEMBER_BACKENDS)
        if os.environ.get("HWNAS_EXPORT_LOG"):  # one JSON line per member, for long runs
            import json

            with open(os.environ["HWNAS_EXPORT_LOG"], "a") as f:
                f.write(json.dumps({"space": space_name, "member": i, "arch": arch.to_compact(), **diffs}) + "\n")
        for k, v in diffs.items():
            worst[k] = max(worst.get(k, 0.0), v)
        assert _ok(diffs), (i, arch.to_compact(), diffs)
    FIGURES[f"space:{space_name}x{MEMBERS}"] = worst


def test_conversion_routes_agree():
    """``route="frozen"`` (used above for speed) gives the same ops and outputs as ``from_keras_model``."""
    from hwnas.export.keras import keras_model
    from hwnas.export.tflite import convert, op_counts, run_tflite

    arch = _arch(KIND_CASES["se_mobilenetv3"])
    images = real_images(16, 32, 3)
    model = perturb_for_parity(build_model(arch, seed=0), images)
    km = keras_model(arch, model)
    a, b = convert(km), convert(km, route="frozen")
    assert op_counts(a) == op_counts(b)
    np.testing.assert_allclose(run_tflite(a, images[:4]), run_tflite(b, images[:4]), atol=1e-6)


def test_report_figures(capsys):
    """Prints the max abs diffs measured above (run with -s to see them)."""
    if FIGURES:
        with capsys.disabled():
            print("\nparity max abs diff (softmax) per case:")
            for k, v in FIGURES.items():
                print(f"  {k}: " + ", ".join(f"{b} {d:.2e}" for b, d in v.items()))
