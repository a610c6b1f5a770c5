"""Property tests over every space: sampled members decode, validate, round-trip, build and run."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwnas.arch import ArchSpec
from hwnas.errors import UnknownNameError
from hwnas.nn import build_model, count
from hwnas.opkey import arch_op_keys
from hwnas.spaces import get_space, space_names

SPACES = space_names()


def members(space):
    return st.tuples(*[st.integers(0, len(d.options) - 1) for d in space.decisions])


@pytest.mark.parametrize("name", SPACES)
def test_members_round_trip_and_encode(name):
    space = get_space(name, num_classes=10)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(members(space))
    def check(choices):
        arch = space.decode(choices)
        arch.validate()
        assert ArchSpec.from_yaml(arch.to_yaml()) == arch
        assert ArchSpec.from_compact(arch.to_compact()) == arch
        assert space.encode(arch) == choices
        keys = set(space.op_keys())
        assert {k for _, k in arch_op_keys(arch)} <= keys  # op_keys covers every member

    check()


@pytest.mark.parametrize("name", SPACES)
def test_members_build_and_run(name):
    """Forward passes at the space's resolution (224 for the ImageNet forms: few examples)."""
    small = name.endswith("-cifar")
    space = get_space(name, num_classes=10, in_channels=1 if small else 3)

    @settings(max_examples=6 if small else 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(members(space))
    def check(choices):
        arch = space.decode(choices)
        model = build_model(arch)
        assert sum(p.numel() for p in model.parameters()) == count(arch).params
        x = torch.randn(2, space.in_channels, space.resolution, space.resolution)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 10)
        assert torch.isfinite(y).all()
        model.train()
        model(x).sum().backward()  # train mode works too

    check()


def test_space_sizes_match_their_definitions():
    assert get_space("fbnet").size == 9 ** 16 * 8 ** 6  # skip only where the shape is kept
    assert len(get_space("fbnet").decisions) == 22
    assert get_space("mobilenetv2").size == 7 ** 15 * 6 ** 6
    assert len(get_space("mobilenetv2").decisions) == 21


def test_space_names_are_literal_at_every_resolution():
    from hwnas.search.pipeline import make_space
    from hwnas.spaces import resolve_space

    assert resolve_space("fbnet", resolution=32).name == "fbnet"  # no silent switch to -cifar
    assert get_space("fbnet", resolution=32).name == "fbnet"
    assert resolve_space("fbnet-cifar", resolution=32).name == "fbnet-cifar"
    small = make_space("mobilenetv2", resolution=32, num_classes=10, in_channels=1, width=0.5)
    same = resolve_space("mobilenetv2", resolution=32, width=0.5, in_channels=1, classes=10)
    assert small.name == "mobilenetv2" and small.op_keys() == same.op_keys()
    arch = get_space("mobilenetv2-cifar").decode(get_space("mobilenetv2-cifar").sample(random.Random(0)))
    assert arch.layers()[0].out_shape[:2] == (32, 32)  # stem at stride 1
    assert arch.layers()[-2].out_shape[:2] == (4, 4)


def test_op_keys_include_stem_head_and_classifier():
    keys = [str(k) for k in get_space("mobilenetv2").op_keys()]
    assert "cn_k3_s2_c32_r6@224x224x3" in keys
    assert "cn_k1_s1_c1280_r6@7x7x320" in keys
    assert "classifier_c1000@7x7x1280" in keys
    assert "ir_k7_e6_s2_c40_r6@56x56x24" in keys
    assert all("skip" not in k or "@" in k for k in keys)
    # resolution changes the keys: no table keyed at 224 can serve 192
    assert set(get_space("mobilenetv2").op_keys(192)).isdisjoint(get_space("mobilenetv2").op_keys(224))


def test_unknown_space_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid spaces: .*fbnet"):
        get_space("nasnet")


def test_out_of_range_choice_names_the_decision():
    from hwnas.errors import SpecError

    space = get_space("fbnet")
    with pytest.raises(SpecError, match="stage1.layer0"):
        space.decode((0, 8) + (0,) * 20)  # skip is not offered where the layer changes shape
