"""The op vocabulary (hwnas.ops): one entry per block kind, read by arch, count, nn, export and the cost model."""

from __future__ import annotations

import pytest

from hwnas.arch import BLOCK_KINDS, EXPANDING_KINDS, ArchSpec, BlockSpec
from hwnas.errors import SpecError
from hwnas.ops import OP_KINDS, kind_of_token, op_kind, torch_class

EXAMPLES = {"mbconv": "ir_k5_e6_s1_c16_se0.25_g2_hs", "fused_mbconv": "er_k3_e4_s1_c16_se0.25_sw",
            "dsconv": "ds_k5_s1_c16_se0.25_sw", "conv": "cn_k3_s1_c16_r6", "skip": "skip"}


def _layer(text: str, se_style: str = "efficientnet"):
    arch = ArchSpec(stem=BlockSpec.from_compact("cn_k3_s1_c16_re"), stages=((BlockSpec.from_compact(text),),),
                    resolution=8, se_style=se_style)
    return arch.layers()[1]


def test_every_kind_is_one_entry():
    assert {k.name for k in OP_KINDS} == set(EXAMPLES) == set(BLOCK_KINDS)
    assert set(EXPANDING_KINDS) == {k.name for k in OP_KINDS if k.expanding}
    for k in OP_KINDS:
        assert kind_of_token(k.token) is k and op_kind(k.name) is k
        b = BlockSpec.from_compact(EXAMPLES[k.name])
        assert b.kind == k.name and b.to_compact() == EXAMPLES[k.name]
    with pytest.raises(SpecError, match="unknown block kind 'xx'.*mbconv"):
        op_kind("xx")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_torch_module_has_the_declared_parts_and_the_counted_params(name):
    """The PyTorch class an entry names has exactly the parts the entry declares, and
    :func:`hwnas.nn.count.layer_cost` (which reads the same entry) counts its parameters."""
    from hwnas.nn.count import layer_cost

    layer = _layer(EXAMPLES[name])
    module = torch_class(name)(layer, "efficientnet")
    children = {n for n, m in module.named_children() if sum(p.numel() for p in m.parameters())}
    # the exporters' and supernets' weight map (a full k×k expansion conv is "expand")
    assert children == {"mbconv": {"expand", "depthwise", "se", "project"}, "fused_mbconv": {"expand", "se", "project"},
                        "dsconv": {"depthwise", "se", "project"}, "conv": {"conv", "bn"}, "skip": set()}[name]
    if name in ("mbconv", "fused_mbconv", "dsconv"):
        kxk = module.depthwise.conv.conv if name != "fused_mbconv" else module.expand.conv.conv
        assert kxk.groups == (1 if name == "fused_mbconv" else kxk.in_channels) and kxk.kernel_size[0] > 1
    assert sum(p.numel() for p in module.parameters()) == layer_cost(layer, "efficientnet")[0]


def test_block_validation_reads_the_entries():
    with pytest.raises(SpecError, match="fused-MBConv kernel must be 3, 5 or 7"):
        BlockSpec.from_compact("er_k1_e4_s1_c16")
    with pytest.raises(SpecError, match="depthwise kernel must be"):
        BlockSpec.from_compact("ds_k1_s1_c16")
    with pytest.raises(SpecError, match="plain conv block has no squeeze-excite"):
        BlockSpec.from_compact("cn_k3_s1_c16_se0.25")
    with pytest.raises(SpecError, match="grouped pointwise convs exist only in mbconv"):
        BlockSpec.from_compact("er_k3_e4_s1_c16_g2")
    assert BlockSpec.from_compact("cn_k1_s1_c16").kernel == 1  # a plain conv may be 1×1 (head)
