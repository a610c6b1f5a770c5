"""Published parameter counts and MACs of the zoo, and the counter against an independent one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.nn import build_model, count
from hwnas.spaces import get_space
from hwnas.zoo import ZOO, get_zoo

# FBNet-B: the paper's 4.5 M params / 295 M MACs are not reproduced by the public definition
# (facebookresearch/mobile-vision fbnet_b: 4.86 M / 306 M, which is what we build). Kept as a strict
# xfail so the gap stays visible and the test fails loudly if the definition changes to match.
KNOWN_GAPS = {"fbnet-b": "paper 4.5M/295M vs public mobile-vision definition 4.86M/306M"}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_published_params_and_macs(name):
    if name in KNOWN_GAPS:
        pytest.xfail(KNOWN_GAPS[name])
    entry = ZOO[name]
    cost = count(entry.arch)
    assert cost.params == pytest.approx(entry.params, rel=0.01), f"{name}: {cost.params} params"
    assert cost.macs == pytest.approx(entry.macs, rel=0.03), f"{name}: {cost.macs} MACs"


def test_fbnet_b_gap_is_what_we_recorded():
    cost = count(ZOO["fbnet-b"].arch)
    assert cost.params == pytest.approx(4.86e6, rel=0.005)
    assert cost.macs == pytest.approx(306e6, rel=0.005)


@pytest.mark.parametrize("name,params", [("mobilenetv2", 3_504_872), ("efficientnet-b0", 5_288_548),
                                         ("mobilenetv3-large", 5_483_032), ("mnasnet-a1", 3_887_038)])
def test_exact_timm_parameter_counts(name, params):
    """timm's exact counts for the nets it defines identically (mobilenetv2_100, efficientnet_b0, ...)."""
    assert count(ZOO[name].arch).params == params


@pytest.mark.parametrize("name", sorted(ZOO))
def test_counter_matches_built_module(name):
    arch = ZOO[name].arch
    cost = count(arch)
    model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == cost.params
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1000)
    # flop_counter counts 2 FLOPs per multiply-accumulate of convs and matmuls
    assert counter.get_total_flops() / 2 == pytest.approx(cost.macs, rel=0.01)


@pytest.mark.parametrize("name", [n for n, e in ZOO.items() if e.space])
def test_zoo_nets_encode_into_their_space(name):
    entry = ZOO[name]
    space = get_space(entry.space)
    choices = space.encode(entry.arch)
    decoded = space.decode(choices)
    # spaces with a depth range place skip blocks where a stage is shallower than its deepest form
    def no_skip(arch):
        return [[b for b in s if b.kind != "skip"] for s in arch.stages]

    assert no_skip(decoded) == no_skip(entry.arch)
    assert decoded.stem == entry.arch.stem and decoded.head == entry.arch.head


def test_per_block_breakdown_sums_to_total():
    cost = count(get_zoo("mobilenetv2").arch)
    assert sum(r.params for r in cost.layers) == cost.params
    assert sum(r.macs for r in cost.layers) == cost.macs
    assert [r.name for r in cost.layers][:2] == ["stem", "stages.0.0"]
    assert cost.layers[-1].name == "classifier" and cost.layers[-1].macs == 1280 * 1000


def test_width_multiplier_follows_mobilenetv2_rounding():
    # MobileNetV2 0.5: first conv 16, last conv stays 1280 (MobileNetV2 paper, Sec. 4)
    arch = get_zoo("mobilenetv2").arch.with_width(0.5)
    layers = arch.layers()
    assert layers[0].out_shape[2] == 16
    assert layers[-2].out_shape[2] == 1280
    # 0.35 / 1.4 widths match timm's mobilenetv2_035 / 140 parameter counts
    assert count(get_zoo("mobilenetv2").arch.with_width(1.4)).params == pytest.approx(6.11e6, rel=0.01)


@pytest.mark.parametrize("name,width,params,macs", [
    # timm results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv (@aa4b5850): semnasnet_140 6.11 M,
    # mobilenetv3_large_075 3.99 M / 0.16 GMACs; Howard et al. 2019 Table 3: V3-Large 0.75 4.0 M, 155 M MAdds
    ("mnasnet-a1", 1.4, 6.11e6, None),
    ("mobilenetv3-large", 0.75, 3.99e6, 155e6),
])
def test_published_width_multiplier_param_counts(name, width, params, macs):
    cost = count(get_zoo(name).arch.with_width(width))
    assert cost.params == pytest.approx(params, rel=0.002)
    if macs:
        assert cost.macs == pytest.approx(macs, rel=0.01)


def test_head_width_rules_per_network():
    # MnasNet keeps its 1280 head at every width; MobileNetV3 scales its 960 conv (prelogits stay 1280);
    # MobileNetV2 grows, never shrinks
    def head(name, width):
        return get_zoo(name).arch.with_width(width).layers()[-2].out_shape[2]

    assert head("mnasnet-a1", 1.4) == 1280 and head("mnasnet-a1", 0.5) == 1280
    assert head("mobilenetv3-large", 0.75) == 720 and head("mobilenetv3-large", 1.25) == 1200
    assert head("mobilenetv2", 1.4) == 1792 and head("mobilenetv2", 0.5) == 1280
    arch = get_zoo("mnasnet-a1").arch.with_width(1.4)
    assert type(arch).from_compact(arch.to_compact()) == arch
    assert type(arch).from_yaml(arch.to_yaml()) == arch
