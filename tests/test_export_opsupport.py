"""Op support per device (vendor lists in devices/*.yaml), graph partitions and the edgetpu_compiler log."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.export.checks import parse_edgetpu_log
from hwnas.latency.devices import get_device

HSWISH = "res16 in=1 stem=cn_k3_s2_c8_r6 ir_k3_e3_s1_c8_r6 ir_k3_e3_s2_c16_hs head=cn_k1_s1_c32_r6 classes=10"
RELU6 = "res16 in=1 stem=cn_k3_s2_c8_r6 ir_k3_e3_s1_c8_r6 ir_k3_e3_s2_c16_r6 head=cn_k1_s1_c32_r6 classes=10"

# edgetpu_compiler -s output in the format of Coral's compiler documentation (hand-written, no compiler here)
EDGETPU_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: model.tflite
Input size: 4.12MiB
Output model: model_edgetpu.tflite
Output size: 4.31MiB
On-chip memory used for caching model parameters: 3.90MiB
On-chip memory remaining for caching model parameters: 3.88MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 119
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 5
Number of operations that will run on CPU: 114

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
ADD                            10         More than one subgraph is not supported
HARD_SWISH                     19         Operation is otherwise supported, but not mapped due to some unspecified limitation
DEPTHWISE_CONV_2D              15         More than one subgraph is not supported
CONV_2D                        69         More than one subgraph is not supported
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_edgetpu_op_support_is_the_vendor_list_without_hard_swish():
    dev = get_device("edgetpu")
    assert "coral.ai/docs/edgetpu/models-intro" in dev.op_support.source
    assert "HARD_SWISH" not in dev.op_support.ops and dev.op_support.runs("CONV_2D", "int8")
    assert not dev.op_support.runs("CONV_2D", "float32")
    assert not dev.allows_activation("hswish") and dev.allows_activation("relu6")
    assert get_device("pixel").allows_activation("hswish")  # no op list: anything runs


def test_parse_edgetpu_compiler_log():
    part = parse_edgetpu_log(EDGETPU_LOG)
    assert (part.total, part.on_accelerator, part.on_cpu) == (119, 5, 114) and not part.ok
    assert part.first_unsupported[1] == "HARD_SWISH" and part.cpu_ops["CONV_2D"] == 69
    assert part.cpu_ops["HARD_SWISH"] == 19 and "QUANTIZE" not in part.cpu_ops


def test_export_device_edgetpu_names_the_partition_and_fails(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "q.tflite"
    code, text = run("export", HSWISH, "--device", "edgetpu", "--quantize", "int8", "--calib-data", "digits",
                     "--int8-io", "-o", out)
    assert code == 2 and "first unsupported op: HARD_SWISH" in text and "--allow-cpu-fallback" in text, text
    assert not out.exists()
    code, text = run("export", HSWISH, "--device", "edgetpu", "--quantize", "int8", "--calib-data", "digits",
                     "--int8-io", "--allow-cpu-fallback", "--min-agreement", "0", "--json", "-o", out)
    assert code == 0, text
    part = json.loads(text)["partition"]
    assert part["first_unsupported"]["op"] == "HARD_SWISH" and part["on_cpu"] > 0 and part["on_accelerator"] > 0
    # ReLU6 everywhere, int8 in and out: the whole graph maps
    code, text = run("export", RELU6, "--device", "edgetpu", "--quantize", "int8", "--calib-data", "digits",
                     "--int8-io", "--min-agreement", "0", "--json", "-o", out)
    assert code == 0, text
    part = json.loads(text)["partition"]
    assert part["on_cpu"] == 0 and part["ok"]
    # a float32 graph runs nowhere on the Edge TPU: the first op is refused for its dtype
    code, text = run("export", RELU6, "--device", "edgetpu", "-o", tmp_path / "f.tflite")
    assert code == 2 and "float32 tensors" in text, text


SE_HSWISH = "res16 in=1 stem=cn_k3_s2_c8_r6 ir_k3_e3_s1_c8_r6 ir_k3_e3_s2_c16_se0.25_hs head=cn_k1_s1_c32_r6 classes=10"


def test_gpu_delegate_device_op_list_names_its_source():
    gpu = get_device("mobile-gpu-tflite")
    assert (gpu.kind, gpu.backend, gpu.delegate, gpu.transport.kind) == ("gpu", "tflite", "gpu", "adb")
    sup = gpu.op_support
    assert "delegates/gpu/common/model_builder.cc" in sup.source and "9a5c30170e25" in sup.source
    assert sup.cpu_fallback == "largest-partition" and set(sup.dtypes) == {"float32", "float16"}
    # the delegate parses h-swish, sigmoid and MEAN: no activation is substituted in its spaces
    assert {"HARD_SWISH", "LOGISTIC", "MUL", "MEAN"} <= set(sup.ops) and gpu.activation_substitutes() == {}
    from hwnas.spaces import resolve_space

    assert any("_hs" in k.op for k in resolve_space("mobilenetv3", resolution=32, device=gpu).op_keys())


def test_export_device_gpu_delegate_partition(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "g.tflite"
    code, text = run("export", SE_HSWISH, "--device", "tflite-gpu", "--json", "-o", out)
    assert code == 0, text
    part = json.loads(text)["partition"]
    assert part["ok"] and part["on_cpu"] == 0 and part["on_accelerator"] == part["total"] == 20
    # float16 weights: their DEQUANTIZE ops are folded into the ops that read them
    code, text = run("export", SE_HSWISH, "--device", "tflite-gpu", "--quantize", "float16", "--json", "-o", out)
    assert code == 0 and json.loads(text)["partition"]["ok"], text
    # a fully int8 graph: the delegate takes none of it (float tensors only), the export says so and fails
    code, text = run("export", SE_HSWISH, "--device", "tflite-gpu", "--quantize", "int8", "--calib-data", "digits",
                     "-o", out)
    assert code == 2 and "first unsupported op: QUANTIZE" in text and "0 ops on the accelerator" in text, text


def test_partition_modes_first_unsupported_largest_partition_per_op(tmp_path):
    """The same graph under the three fallback rules, with HARD_SWISH taken off the GPU list: ops in order
    CONV CONV DW CONV ADD CONV [HS] DW [HS] MEAN CONV [HS] CONV LOGISTIC MUL CONV CONV MEAN FC SOFTMAX."""
    pytest.importorskip("tensorflow")
    from hwnas.export.checks import partition

    out = tmp_path / "g.tflite"
    code, text = run("export", SE_HSWISH, "-o", out)
    assert code == 0, text
    gpu = get_device("mobile-gpu-tflite")
    no_hs = gpu.op_support.model_copy(update={"ops": [o for o in gpu.op_support.ops if o != "HARD_SWISH"]})
    results = {}
    for mode in ("first-unsupported", "largest-partition", "per-op"):
        dev = gpu.model_copy(update={"op_support": no_hs.model_copy(update={"cpu_fallback": mode})})
        p = partition(out.read_bytes(), dev)
        assert p.total == 20 and p.first_unsupported[:2] == (6, "HARD_SWISH") and not p.ok
        results[mode] = (p.on_accelerator, p.on_cpu)
    assert results == {"first-unsupported": (6, 14), "largest-partition": (8, 12), "per-op": (17, 3)}
