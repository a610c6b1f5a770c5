"""Spaces restricted to what a device's accelerator runs (issue: no h-swish on the Edge TPU)."""

from __future__ import annotations

import random

import pytest

from hwnas.latency.devices import get_device
from hwnas.spaces import resolve_space


def _activations(arch):
    blocks = [arch.stem, *arch.blocks, arch.head.conv]
    acts = {b.activation for b in blocks if b is not None and b.kind != "skip"}
    if arch.head.prelogits_channels:
        acts.add(arch.head.prelogits_activation)
    return acts


def test_edgetpu_space_never_offers_hswish():
    edgetpu = get_device("edgetpu")
    assert edgetpu.activation_substitutes() == {"hswish": "relu"}
    free = resolve_space("mobilenetv3", resolution=64)
    assert any("_hs" in k.op for k in free.op_keys())  # the unrestricted space does offer it
    sp = resolve_space("mobilenetv3", resolution=64, device=edgetpu)
    assert sp.size == free.size and len(sp.decisions) == len(free.decisions)
    assert not any("_hs" in c for slot in sp.slots for c in slot.candidates)
    assert not any("_hs" in k.op for k in sp.op_keys())
    rng = random.Random(0)
    for _ in range(10):
        c = sp.sample(rng)
        arch = sp.decode(c)
        assert "hswish" not in _activations(arch)
        assert sp.encode(arch) == c
    # copies at another input keep the restriction; the relaxation of a stage-wise space too
    assert not any("_hs" in k.op for k in sp.at(resolution=32).op_keys())
    assert sp.at(resolution=32).activation_map == {"hswish": "relu"}
    relaxed = resolve_space("mnasnet", resolution=64, device=edgetpu).relaxed()
    assert relaxed.activation_map == {"hswish": "relu"}


def test_devices_without_op_list_keep_the_space():
    sp = resolve_space("mobilenetv3", resolution=64, device=get_device("pixel"))
    assert sp.activation_map == {}
    assert "hswish" in _activations(sp.decode(sp.sample(random.Random(0))))


def test_supernet_of_restricted_space_has_no_hardswish():
    torch = pytest.importorskip("torch")
    from hwnas.nn.supernet import Supernet

    sp = resolve_space("mobilenetv3", resolution=32, width=0.25, in_channels=1, classes=10,
                       device=get_device("edgetpu"))
    net = Supernet(sp, mode="proxyless")
    assert not any(isinstance(m, torch.nn.Hardswish) for m in net.modules())
    free = Supernet(resolve_space("mobilenetv3", resolution=32, width=0.25, in_channels=1, classes=10),
                    mode="proxyless")
    assert any(isinstance(m, torch.nn.Hardswish) for m in free.modules())


def test_profile_measures_the_restricted_keys():
    from hwnas.profile.run import search_space_of

    sp = search_space_of("mobilenetv3", resolution=16, width=0.25, in_channels=1, classes=10,
                         device=get_device("edgetpu"))
    assert sp.activation_map and not any("_hs" in k.op for k in sp.op_keys())


def test_unknown_activation_is_refused():
    from hwnas.errors import SpecError

    with pytest.raises(SpecError, match="unknown activation 'gelu'"):
        resolve_space("mobilenetv3", resolution=64).restricted({"hswish": "gelu"})
