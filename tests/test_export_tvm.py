"""ONNX export and TVM: host library loaded in a fresh process, cross/GPU targets compile-only."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.arch import ArchSpec
from hwnas.errors import ExportError, UnknownNameError

pytest.importorskip("onnxruntime")
pytest.importorskip("tvm")

from hwnas.export.checks import perturb_for_parity, real_images, torch_probs  # noqa: E402
from hwnas.export.onnx import export_onnx, onnx_bytes, run_onnx  # noqa: E402
from hwnas.export.tvm import compile_tvm  # noqa: E402
from hwnas.nn import build_model  # noqa: E402

ARCH = ArchSpec.from_compact("res32 se=mobilenetv3 stem=cn_k3_s2_c16_hs ir_k3_e4_s1_c16_se0.25_hs "
                             "ir_k5_e3_s2_c24_re head=cn_k1_s1_c64_hs prelogits=c96_hs classes=10")


@pytest.fixture(scope="module")
def net():
    images = real_images(16, 32, 3)
    model = perturb_for_parity(build_model(ARCH, seed=0), images)
    return model, images, onnx_bytes(model)


def test_onnx_file_checked_and_matches(net, tmp_path):
    import onnx

    model, images, _ = net
    path = export_onnx(model, tmp_path / "m.onnx")
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert "Pad" not in ops and "Identity" not in ops  # constant-folded, pads fused into Conv
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    diff = np.abs(run_onnx(path, images[:4].transpose(0, 3, 1, 2)) - torch_probs(model, images[:4])).max()
    assert diff < 1e-5


@pytest.mark.parametrize("target", ["android", "opencl-adreno"])
def test_cross_targets_compile_to_tar(net, tmp_path, target):
    art = compile_tvm(net[2], target, tmp_path / f"net-{target}")
    assert art.kind == "tar" and art.path.suffix == ".tar" and art.path.stat().st_size > 1000


def test_cuda_compiles_only():
    from hwnas.export.tvm import compile_tvm as ct

    data = onnx_bytes(build_model(ArchSpec.from_compact("res16 stem=cn_k3_s2_c8_re ir_k3_e2_s1_c8_re classes=4")))
    try:
        art = ct(data, "cuda", out=None)
    except ExportError as err:  # a wheel or machine without a CUDA device compiler: the error says so
        assert "cuda" in str(err)
    else:
        assert art.kind == "none" and "compile-only" in art.notes


def test_vulkan_without_codegen_is_a_clear_error(net):
    import tvm

    if tvm.support.libinfo().get("USE_VULKAN", "OFF") not in ("OFF", "", None):
        pytest.skip("this TVM has Vulkan codegen")
    with pytest.raises(ExportError, match="vulkan"):
        compile_tvm(net[2], "vulkan", out=None)


def test_unknown_target_and_unlinkable_suffix(net, tmp_path):
    with pytest.raises(UnknownNameError, match="opencl-adreno"):
        compile_tvm(net[2], "tpu")
    with pytest.raises(ExportError, match="TVM_NDK_CC"):
        compile_tvm(net[2], "android", tmp_path / "x.so")
    assert not list(tmp_path.iterdir())
