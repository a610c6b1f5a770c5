"""ArchSpec forms, validation and TF-SAME shapes."""

from __future__ import annotations

import pytest

from hwnas.arch import ArchSpec, BlockSpec, make_divisible, same_output_size, same_padding
from hwnas.errors import SpecError
from hwnas.opkey import OpKey, arch_op_keys, op_key
from hwnas.zoo import ZOO, load_arch


@pytest.mark.parametrize("name", sorted(ZOO))
def test_yaml_and_compact_round_trip_exactly(name):
    arch = ZOO[name].arch
    assert ArchSpec.from_yaml(arch.to_yaml()) == arch
    assert ArchSpec.from_compact(arch.to_compact()) == arch
    assert ArchSpec.from_compact(arch.to_compact()).to_compact() == arch.to_compact()


@pytest.mark.parametrize("text", ["ir_k5_e6_s2_c40_se0.25_hs", "ds_k3_s1_c16_r6", "cn_k3_s2_c32_sw", "skip",
                                  "ir_k3_e1_s1_c16_g2_re", "ir_k3_e3.67_s1_c24_re_noskip"])
def test_block_compact_round_trip(text):
    assert BlockSpec.from_compact(text).to_compact() == text


def test_block_compact_fields():
    b = BlockSpec.from_compact("ir_k5_e6_s2_c40_se0.25_hs")
    assert (b.kind, b.kernel, b.expansion, b.stride, b.out_channels, b.se_ratio, b.activation) == \
        ("mbconv", 5, 6.0, 2, 40, 0.25, "hswish")


def test_tf_same_shapes_odd_sizes():
    assert same_output_size(7, 2) == 4
    assert same_output_size(224, 2) == 112
    assert same_padding(224, 3, 2) == (0, 1)  # TF puts the odd pixel bottom/right
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(7, 5, 1) == (2, 2)
    arch = ZOO["mobilenetv2"].arch.with_resolution(7)
    shapes = [out for _, _, out in arch.shapes()]
    assert shapes[0] == (4, 4, 32)  # 7 -> 4
    assert (1, 1, 320) in shapes
    arch = ZOO["mobilenetv2"].arch.with_resolution(225)
    assert arch.layers()[0].out_shape == (113, 113, 32)


def test_mobilenetv2_shapes_at_224():
    layers = ZOO["mobilenetv2"].arch.layers()
    assert layers[0].in_shape == (224, 224, 3)
    assert layers[-2].out_shape == (7, 7, 1280)
    assert layers[-1].out_shape == (1, 1, 1000)


def test_make_divisible():
    assert make_divisible(32 * 0.35) == 16
    assert make_divisible(72 * 0.25) == 24  # MobileNetV3 SE of 72 channels
    assert make_divisible(80 * 2.3) == 184


@pytest.mark.parametrize("text,field", [
    ("xx_k3_s1_c16", "kind"),
    ("ir_k4_e6_s1_c16_r6", "kernel"),
    ("ir_k3_e6_s3_c16_r6", "stride"),
    ("ir_k3_e6_s1_c16_se1.5_r6", "se_ratio"),
    ("skip_s2", "stride"),
    ("ir_k3_s1_c16_r6", "expansion"),
])
def test_block_errors_name_the_field(text, field):
    with pytest.raises(SpecError) as info:
        BlockSpec.from_compact(text)
    assert info.value.field == field
    assert text in str(info.value)


def test_malformed_compact_string():
    with pytest.raises(SpecError, match="malformed token 'zz'"):
        BlockSpec.from_compact("ir_k3_e6_s1_c16_zz")
    with pytest.raises(SpecError, match="stem"):
        ArchSpec.from_compact("ir_k3_e6_s1_c16_r6")


def test_skip_that_changes_shape_is_an_error():
    with pytest.raises(SpecError, match="skip block must keep the shape"):
        ArchSpec.from_compact("res32 stem=cn_k3_s2_c16_re skip_c24 classes=10")


def test_yaml_that_is_not_a_mapping():
    with pytest.raises(SpecError, match="expected a YAML mapping"):
        ArchSpec.from_yaml("- a\n- b\n", source="net.yaml")


def test_yaml_errors_name_the_file_and_block(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("stem: cn_k3_s2_c32_r6\nstages: [[ir_k3_e6_s1_c16_r6, ir_k2_e6_s1_c16_r6]]\n")
    with pytest.raises(SpecError) as info:
        ArchSpec.load(path)
    assert "net.yaml" in str(info.value) and "stages[0][1]" in str(info.value)


def test_load_arch_forms(tmp_path):
    arch = ZOO["mnasnet-a1"].arch
    path = tmp_path / "a1.yaml"
    arch.save(path)
    assert load_arch(str(path)) == arch
    assert load_arch(arch.to_compact()) == arch
    assert load_arch("mnasnet_a1") == arch
    assert load_arch("mnasnet-a1", width=0.5, resolution=160).layers()[0].in_shape == (160, 160, 3)


def test_op_keys_are_canonical_and_parse():
    arch = ZOO["mobilenetv3-large"].arch
    keys = [key for _, key in arch_op_keys(arch)]
    assert str(keys[0]) == "cn_k3_s2_c16_hs@224x224x3"
    assert str(keys[-1]) == "classifier_c1000_pl1280_hs@7x7x960"
    for key in keys:
        assert OpKey.parse(str(key)) == key
    se_keys = [k for k in keys if "se0.25" in k.op]
    assert se_keys and all(k.op.endswith("_semv3") for k in se_keys)


def test_op_key_residual_normalisation():
    # where the shape changes, 'noskip' carries no information and is dropped
    a = op_key(BlockSpec.from_compact("ir_k3_e6_s2_c24_r6_noskip"), (112, 112, 16))
    b = op_key(BlockSpec.from_compact("ir_k3_e6_s2_c24_r6"), (112, 112, 16))
    assert a == b and str(a) == "ir_k3_e6_s2_c24_r6@112x112x16"
    c = op_key(BlockSpec.from_compact("ir_k3_e6_s1_c24_r6_noskip"), (56, 56, 24))
    assert str(c).startswith("ir_k3_e6_s1_c24_r6_noskip@")


def test_op_key_macs_match_counter():
    from hwnas.nn import count

    arch = ZOO["efficientnet-b0"].arch
    assert sum(key.macs() for _, key in arch_op_keys(arch)) == count(arch).macs
