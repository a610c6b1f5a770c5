"""Compound scaling: rounding rules, the B0..B7 table, timm's parameter counts, the ``hwnas scale`` CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.arch import ArchSpec, BlockSpec
from hwnas.cli import main
from hwnas.errors import SpecError
from hwnas.export.scaling import (EFFICIENTNET, efficientnet_variant, round_filters, round_repeats, scale,
                                  scale_coefficients, scale_stage_depth)
from hwnas.nn.count import count
from hwnas.zoo import zoo_arch


@pytest.mark.parametrize("filters, width, expected", [
    (32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (32, 1.4, 48), (16, 1.1, 16), (24, 1.4, 32), (1280, 1.1, 1408),
    (1280, 1.4, 1792), (40, 1.2, 48), (112, 1.1, 120), (320, 2.0, 640), (16, 0.35, 8), (96, 0.75, 72),
])
def test_round_filters(filters, width, expected):
    assert round_filters(filters, width) == expected
    assert expected >= 0.9 * filters * width and expected % 8 == 0


def test_round_filters_never_below_90_percent():
    for filters in range(8, 400, 4):
        for width in (0.35, 0.5, 0.75, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0):
            assert round_filters(filters, width) >= 0.9 * filters * width


@pytest.mark.parametrize("repeats, depth, expected", [(1, 1.1, 2), (2, 1.1, 3), (3, 1.2, 4), (4, 1.8, 8),
                                                      (1, 1.0, 1), (3, 3.1, 10)])
def test_round_repeats(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


def test_table_is_the_papers():
    assert EFFICIENTNET["b0"] == (1.0, 1.0, 224, 0.2)
    assert EFFICIENTNET["b4"] == (1.4, 1.8, 380, 0.4)
    assert EFFICIENTNET["b7"] == (2.0, 3.1, 600, 0.5)
    assert len(EFFICIENTNET) == 8


# timm efficientnet_b1..b4 parameter counts (M): 7.79, 9.11, 12.23, 19.34.
@pytest.mark.parametrize("variant, params_m", [("b1", 7.79), ("b2", 9.11), ("b3", 12.23), ("b4", 19.34)])
def test_efficientnet_params_within_1_percent(variant, params_m):
    arch = efficientnet_variant(zoo_arch("efficientnet-b0"), variant)
    params = count(arch).params / 1e6
    assert abs(params / params_m - 1) < 0.01, params
    assert arch.width_multiplier == 1.0 and arch.resolution == EFFICIENTNET[variant][2]
    assert arch.classifier.dropout == EFFICIENTNET[variant][3]


def test_b4_shape_details():
    arch = efficientnet_variant(zoo_arch("efficientnet-b0"), "b4")
    assert arch.stem.out_channels == 48  # timm rounds the stem
    assert arch.head.conv.out_channels == 1792  # and the head
    assert [len(s) for s in arch.stages] == [2, 4, 4, 6, 6, 8, 2]


def test_phi_zero_keeps_the_net_and_phi_grows_it():
    b0 = zoo_arch("efficientnet-b0")
    same = scale(b0, 0)
    assert count(same).params == count(b0).params and same.resolution == 224
    p = [count(scale(b0, phi)).macs for phi in (0, 1, 2)]
    assert p[0] < p[1] < p[2]
    # alpha * beta^2 * gamma^2 = 1.92: one phi step ~doubles MACs; ceil() on single-block stages (1 -> 2
    # blocks) pushes B0's step to ~2.6x.
    assert 1.2 * 1.1 ** 2 * 1.15 ** 2 == pytest.approx(1.92, abs=0.01)
    assert 1.9 < p[1] / p[0] < 2.8


def test_materialises_an_input_width_multiplier():
    arch = zoo_arch("mobilenetv2").with_width(0.5)
    scaled = scale_coefficients(arch, 1.0, 1.0, 1.0)
    assert scaled.width_multiplier == 1.0
    assert [lay.out_shape for lay in scaled.layers()] == [lay.out_shape for lay in arch.layers()]


def test_mixed_stage_depth_follows_timm_allocation():
    a = BlockSpec.from_compact("ir_k3_e6_s2_c40_re")
    b = BlockSpec.from_compact("ir_k5_e3_s1_c40_hs")
    stage = (a, b, b, b)  # runs: a x1, b x3
    scaled = scale_stage_depth(stage, 1.5)  # ceil(6) = 6 -> b gets round(3/4*6)=4 (reversed), a gets 2
    assert len(scaled) == 6
    assert scaled[0] == a and scaled[1] == BlockSpec.from_compact("ir_k3_e6_s1_c40_re")
    assert all(x == b for x in scaled[2:])


def test_bad_coefficients():
    with pytest.raises(SpecError):
        scale_coefficients(zoo_arch("efficientnet-b0"), 0, 1, 1)
    with pytest.raises(SpecError, match="b0"):
        efficientnet_variant(zoo_arch("efficientnet-b0"), "b9")


def test_scale_cli_variant_yaml_roundtrip(tmp_path):
    out = tmp_path / "b2.yaml"
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--variant", "b2", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert abs(info["params"] / 9.11e6 - 1) < 0.01 and info["resolution"] == 260
    assert ArchSpec.load(out) == efficientnet_variant(zoo_arch("efficientnet-b0"), "b2")


def test_scale_cli_coefficients_and_errors():
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--coefficients", "1.0,1.1,240", "--json"])
    assert res.exit_code == 0 and abs(json.loads(res.output)["params"] / 7.79e6 - 1) < 0.01
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--coefficients", "1.0,x"])
    assert res.exit_code == 2 and "w,d,r" in res.output
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0"])
    assert res.exit_code == 2 and "exactly one" in res.output
    res = CliRunner().invoke(main, ["scale", "mobilenetv2", "--phi", "1"])
    assert res.exit_code == 0 and "scaled" in res.output


def test_fit_to_a_latency_budget_on_pixel_is_within_one_phi_step():
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--target", "pixel", "--latency-ms", "120", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["predicted_latency_ms"] <= 120 < info["next_phi_latency_ms"]  # closest under, one step above is over
    assert info["phi"] % info["step"] == 0 and info["provenance"].startswith("estimated")
    assert info["measured_latency_ms"] is None  # no phone here: predicted only
    # a larger budget picks a larger phi, and the printed resolution is the scaled net's
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--target", "pixel", "--latency-ms", "400", "--json"])
    big = json.loads(res.output)
    assert big["phi"] > info["phi"] and big["resolution"] > info["resolution"] and big["predicted_latency_ms"] <= 400


def test_fit_refuses_an_impossible_budget_and_half_options():
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--target", "pixel", "--latency-ms", "0.001"])
    assert res.exit_code == 2 and "over the 0.001 ms budget" in res.output
    res = CliRunner().invoke(main, ["scale", "efficientnet-b0", "--latency-ms", "10"])
    assert res.exit_code == 2 and "needs both --target and --latency-ms" in res.output


def test_measure_latency_only_on_a_local_tflite_device():
    pytest.importorskip("tensorflow")
    from hwnas.export.scaling import measure_latency

    tiny = ArchSpec.from_compact("res16 in=1 stem=cn_k3_s2_c8_r6 ir_k3_e3_s1_c8_r6 head=cn_k1_s1_c32_r6 classes=10")
    assert measure_latency(tiny, "pixel") is None
    ms = measure_latency(tiny, "host")
    assert ms is not None and 0 < ms < 1000
