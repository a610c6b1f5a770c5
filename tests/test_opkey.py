"""Op keys that cannot lie: the effective residual is part of the key, and only canonical keys parse."""

from __future__ import annotations

import pytest

from hwnas.arch import ArchSpec, BlockSpec
from hwnas.errors import SpecError, TableError
from hwnas.latency.table import Entry, LatencyTable, TableMeta, now_iso
from hwnas.opkey import OpKey, arch_op_keys, op_key

# a stem conv that keeps its shape (16 input channels, stride 1, 16 out) followed by a stage conv
# of the same op and shape, which adds the identity
_ARCH = "res8 in=16 stem=cn_k3_s1_c16_r6 cn_k3_s1_c16_r6 | ir_k3_e2_s1_c16_r6_noskip head=cn_k1_s1_c16_r6 classes=4"


def test_shape_keeping_stem_and_head_never_share_a_key_with_a_residual_stage_conv():
    arch = ArchSpec.from_compact(_ARCH)
    by_name = {layer.name: (layer, key) for layer, key in arch_op_keys(arch)}
    stem_layer, stem = by_name["stem"]
    stage_layer, stage = by_name["stages.0.0"]
    head_layer, head = by_name["head"]
    assert not stem_layer.has_residual and stage_layer.has_residual
    assert stem != stage
    assert str(stem) == "cn_k3_s1_c16_r6_noskip@8x8x16"
    assert str(stage) == "cn_k3_s1_c16_r6@8x8x16"
    assert str(head) == "cn_k1_s1_c16_r6_noskip@8x8x16"
    # the key rebuilds exactly the op the network runs: an Add only where the network adds one
    for layer, key in ((stem_layer, stem), (stage_layer, stage), (head_layer, head)):
        assert key.layer().has_residual == layer.has_residual
        assert OpKey.parse(str(key)) == key


def test_rebuilt_op_prices_the_add_only_when_the_network_runs_it():
    from hwnas.latency.costmodel import kernels

    arch = ArchSpec.from_compact(_ARCH)
    keys = dict((layer.name, key) for layer, key in arch_op_keys(arch))
    assert not any(k.name == "add" for k in kernels(keys["stages.1.0"]))  # noskip mbconv
    residual = op_key(BlockSpec.from_compact("ir_k3_e2_s1_c16_r6"), (8, 8, 16))
    assert any(k.name == "add" for k in kernels(residual))


def test_keras_op_model_has_an_add_only_for_the_residual_key():
    pytest.importorskip("keras")
    from hwnas.export.keras import keras_op_model

    arch = ArchSpec.from_compact(_ARCH)
    keys = dict((layer.name, key) for layer, key in arch_op_keys(arch))

    def adds(key):
        return sum(1 for layer in keras_op_model(key).layers if type(layer).__name__ == "Add")

    assert adds(keys["stem"]) == 0
    assert adds(keys["stages.0.0"]) == 1


@pytest.mark.parametrize("text, canonical", [
    ("ir_s1_k3_e6_c24_r6@56x56x24", "ir_k3_e6_s1_c24_r6@56x56x24"),       # token order
    ("ir_k3_e6.0_s1_c24_r6@56x56x24", "ir_k3_e6_s1_c24_r6@56x56x24"),     # e6.0
    ("ir_k3_e6_s1_c24@56x56x24", "ir_k3_e6_s1_c24_re@56x56x24"),          # default activation omitted
    ("ir_k3_e6_s2_c24_r6_noskip@56x56x16", "ir_k3_e6_s2_c24_r6@56x56x16"),  # noskip where the shape changes
    ("ir_k3_e6_s1_c24_r6_semv3@56x56x24", "ir_k3_e6_s1_c24_r6@56x56x24"),  # SE style without SE
    ("skip_c24@56x56x24", "skip@56x56x24"),
    ("ir_k3_e4_s1_c40_se0.250_hs_semv3@28x28x40", "ir_k3_e4_s1_c40_se0.25_hs_semv3@28x28x40"),
])
def test_parse_refuses_non_canonical_keys_naming_the_canonical_form(text, canonical):
    with pytest.raises(SpecError, match="not canonical") as err:
        OpKey.parse(text, source="my-table.yaml")
    assert "my-table.yaml" in str(err.value) and text in str(err.value) and canonical in str(err.value)
    assert str(OpKey.parse(canonical)) == canonical


def test_every_op_key_of_the_zoo_round_trips():
    from hwnas.zoo import ZOO

    for entry in ZOO.values():
        for _, key in arch_op_keys(entry.arch):
            assert OpKey.parse(str(key)) == key


def _meta():
    return TableMeta(device="host", space="mobilenetv2", resolutions=[56], backend="tflite", date=now_iso(),
                     hwnas_version="test", provenance="measured")


def test_table_refuses_a_non_canonical_key_naming_file_and_key(tmp_path):
    good = "ir_k3_e6_s1_c24_r6@56x56x24"
    table = LatencyTable(_meta(), {good: Entry(median_ms=1.0, samples=3)})
    path = table.save(tmp_path / "t.yaml")
    path.write_text(path.read_text().replace(good, "ir_k3_e6.0_s1_c24_r6@56x56x24"))
    with pytest.raises(TableError) as err:
        LatencyTable.load(path)
    assert str(path) in str(err.value) and "ir_k3_e6.0_s1_c24_r6@56x56x24" in str(err.value)
    assert good in str(err.value)
    # an OpKey built by hand (not through op_key) is checked as well
    with pytest.raises(TableError, match="not canonical"):
        table.set(OpKey("ir_s1_k3_e6_c24_r6", 56, 56, 24), Entry(median_ms=1.0, samples=3))
