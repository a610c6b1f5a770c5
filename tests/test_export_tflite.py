"""TFLite route: single-op models for the profiler, MobileNetV2 vs keras.applications, op lint,
float16 / int8 (trained on real digits), LiteRT runner."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.arch import ArchSpec
from hwnas.errors import ExportError
from hwnas.opkey import OpKey
from hwnas.zoo import zoo_arch

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from hwnas.export.keras import keras_model, keras_op_model  # noqa: E402
from hwnas.export.tflite import convert, expected_suspect_ops, lint, op_counts, run_tflite  # noqa: E402


# ------------------------------------------------------------------------------------------- op models
@pytest.mark.parametrize("key, ops", [
    ("ir_k5_e6_s2_c40_se0.25_hs_semv3@28x28x24", {"CONV_2D": 4, "DEPTHWISE_CONV_2D": 1, "HARD_SWISH": 2, "MEAN": 1}),
    ("ir_k3_e1_s1_c32_g2_re@16x16x32", {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 1, "ADD": 1, "TRANSPOSE": 1, "RESHAPE": 2}),
    ("ds_k3_s1_c16_se0.25_sw@56x56x32", {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 1, "LOGISTIC": 3, "MUL": 3}),
    ("er_k3_e4_s2_c48_sw@32x32x24", {"CONV_2D": 2, "LOGISTIC": 1, "MUL": 1, "ADD": 0}),
    ("er_k5_e4_s1_c24_se0.25_hs_semv3@16x16x24", {"CONV_2D": 4, "DEPTHWISE_CONV_2D": 0, "HARD_SWISH": 1, "MEAN": 1,
                                                  "ADD": 1}),
    ("cn_k3_s2_c32_r6@224x224x3", {"CONV_2D": 1}),
    ("classifier_c1000_pl1280_hs@7x7x960", {"MEAN": 1, "FULLY_CONNECTED": 2, "HARD_SWISH": 1}),
    ("skip@14x14x96", {}),
])
def test_keras_op_model_shapes_and_ops(key, ops):
    """Every op kind builds as a one-op model with input (1, H, W, C) and converts to the expected ops."""
    k = OpKey.parse(key)
    model = keras_op_model(k, seed=0)
    assert tuple(model.inputs[0].shape) == (1, *k.input_shape)
    want_out = (1, k.output_shape[2]) if k.kind == "classifier" else (1, *k.output_shape)
    assert tuple(model.outputs[0].shape) == want_out
    if k.kind == "skip":  # an identity graph has no op to time
        return
    data = convert(model, route="frozen")
    counts = op_counts(data)
    for op, n in ops.items():
        assert counts.get(op, 0) == n, counts
    assert "PAD" not in counts
    x = np.random.default_rng(0).standard_normal((1, *k.input_shape)).astype(np.float32)
    assert run_tflite(data, x).shape == want_out


def test_keras_op_model_includes_the_residual_add():
    """An op model is the whole block as the whole-net lowering builds it, shortcut included."""
    model = keras_op_model("ir_k3_e6_s1_c24_r6@16x16x24", seed=3)
    assert any(layer.name == "op_add" for layer in model.layers)  # the residual is part of the op


# ------------------------------------------------------------------------------------------- MobileNetV2 graph
@pytest.fixture(scope="module")
def mnv2_graphs():
    import keras

    from hwnas.nn import build_model

    # Both through the same route; "frozen" gives from_keras_model's graph (test_conversion_routes_agree)
    # in a third of the time. benchmarks/export_overhead.py compares the from_keras_model outputs.
    arch = zoo_arch("mobilenetv2")
    ours = convert(keras_model(arch, build_model(arch, seed=0)), route="frozen")
    ref = convert(keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)), route="frozen")
    return ours, ref


@pytest.mark.slow
def test_mobilenetv2_graph_no_bigger_than_keras_applications(mnv2_graphs):
    ours, ref = (op_counts(g) for g in mnv2_graphs)
    print(f"\nhwnas MobileNetV2 ops {ours}\nkeras.applications ops {ref}")
    assert "TRANSPOSE" not in ours and "PAD" not in ours and "RESHAPE" not in ours
    for op, n in ours.items():
        assert n <= ref.get(op, 0), (op, n, ref.get(op, 0))
    assert sum(ours.values()) == 65
    assert lint(mnv2_graphs[0]).ok


# ------------------------------------------------------------------------------------------- lint
def test_lint_flags_unexpected_transpose():
    arch = ArchSpec.from_compact("res16 stem=cn_k3_s1_c16_re ir_k3_e1_s1_c16_g2_re classes=4")
    data = convert(keras_model(arch), route="frozen")
    with pytest.raises(ExportError, match="TRANSPOSE"):
        lint(data)  # nothing allowed
    with pytest.warns(UserWarning, match="TRANSPOSE"):
        assert not lint(data, strict=False).ok
    report = lint(data, expected_suspect_ops(arch))  # one shuffle: 1 TRANSPOSE + 2 RESHAPE allowed
    assert report.ok and report.ops["TRANSPOSE"] == 1


def test_float16_model_halves_size_and_stays_close():
    from hwnas.export.checks import perturb_for_parity, real_images, torch_probs
    from hwnas.nn import build_model

    arch = ArchSpec.from_compact("res32 stem=cn_k3_s2_c32_hs ir_k3_e4_s1_c32_se0.25_hs ir_k5_e4_s2_c48_hs "
                                 "head=cn_k1_s1_c256_hs classes=10")
    images = real_images(16, 32, 3)
    model = perturb_for_parity(build_model(arch, seed=0), images)
    km = keras_model(arch, model)
    f32, f16 = convert(km, route="frozen"), convert(km, quantize="float16", route="frozen")
    assert len(f16) < 0.6 * len(f32)
    assert np.abs(run_tflite(f16, images[:4]) - torch_probs(model, images[:4])).max() < 1e-2
    assert lint(f16, expected_suspect_ops(arch, "float16")).ok


def test_bad_quantize_and_calibration_shape():
    km = keras_op_model("cn_k3_s1_c8_re@8x8x3")
    with pytest.raises(ExportError, match="unknown quantization"):
        convert(km, quantize="int4")
    with pytest.raises(ExportError, match="representative data"):
        convert(km, quantize="int8")
    with pytest.raises(ExportError, match=r"shape \(2, 9, 9, 3\)"):
        convert(km, quantize="int8", representative_data=np.zeros((2, 9, 9, 3), np.float32))


# ------------------------------------------------------------------------------------------- int8 on real data
INT8_ARCHS = {
    # ReLU6 MobileNetV2-style and a MobileNetV3-style net (hswish + hard-sigmoid SE: the int8 trouble makers).
    "relu6": "res32 in=1 stem=cn_k3_s2_c16_r6 ir_k3_e4_s1_c16_r6 ir_k3_e4_s2_c24_r6 ir_k3_e4_s1_c24_r6 "
             "ir_k3_e4_s2_c32_r6 head=cn_k1_s1_c128_r6 classes=10",
    "hswish_se": "res32 in=1 se=mobilenetv3 stem=cn_k3_s2_c16_hs ir_k3_e4_s1_c16_se0.25_hs ir_k3_e4_s2_c24_hs "
                 "ir_k5_e4_s1_c24_se0.25_hs ir_k3_e4_s2_c32_se0.25_hs head=cn_k1_s1_c128_hs classes=10",
}


def _train_on_digits(arch: ArchSpec, epochs: int = 6):
    """Train briefly on 1,400 sklearn digits (upsampled to 32 px); returns model and the 397 held-out."""
    import torch

    from hwnas.export.checks import real_images
    from hwnas.nn import build_model

    x, y = real_images(1797, arch.resolution, arch.in_channels, seed=0, with_labels=True)
    xt, yt, xv, yv = x[:1400], y[:1400], x[1400:], y[1400:]
    torch.manual_seed(0)
    model = build_model(arch, train=True, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt_t = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
    yt_t = torch.from_numpy(yt).long()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xt_t), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt_t[idx]), yt_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), xt, (xv, yv)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INT8_ARCHS))
def test_int8_keeps_accuracy_on_held_out_digits(name):
    from hwnas.export.checks import quant_report, torch_probs

    arch = ArchSpec.from_compact(INT8_ARCHS[name])
    model, train_x, (xv, yv) = _train_on_digits(arch)
    km = keras_model(arch, model)
    q = convert(km, quantize="int8", representative_data=train_x[:128], route="frozen")
    ops = op_counts(q)
    assert ops.get("DEQUANTIZE") == 1 and ops.get("QUANTIZE") == 1 and "TRANSPOSE" not in ops  # float I/O only
    assert lint(q, expected_suspect_ops(arch, "int8")).ok
    report = quant_report(torch_probs(model, xv), run_tflite(q, xv), yv, max_drop_points=1.0)
    print(f"\nint8 {name}: float top-1 {report.float_accuracy:.4f}, int8 {report.int8_accuracy:.4f}, "
          f"drop {report.drop_points:+.2f} points, agreement {report.top1_agreement:.4f} on {len(yv)} images")
    assert report.float_accuracy > 0.9
    assert report.ok, report.to_dict()
    # int8 I/O: same predictions through quantized input/output tensors
    q_io = convert(km, quantize="int8", representative_data=train_x[:128], int8_io=True, route="frozen")
    assert "DEQUANTIZE" not in op_counts(q_io) and "QUANTIZE" not in op_counts(q_io)
    pred_io = run_tflite(q_io, xv[:50]).argmax(-1)
    assert (pred_io == run_tflite(q, xv[:50]).argmax(-1)).mean() >= 0.96
