"""Once-for-all's elastic supernet (hwnas.nn.elastic): a plain subnet with inherited weights computes
what the supernet computes for that member; kernel, expansion, depth and resolution really switch;
device-agnostic (meta device)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from hwnas.errors import SearchError
from hwnas.nn.batchnorm import recalibrate_batchnorm
from hwnas.nn.build import HwnasNet
from hwnas.nn.elastic import ElasticSE, ElasticSpace, ElasticSupernet
from hwnas.spaces import resolve_space


def _space(name="mobilenetv3", res=16):
    base = resolve_space(name, resolution=res, width=0.25, in_channels=1, classes=10)
    return ElasticSpace(base, (res - 4, res))


def _perturbed(es, transform=True):
    torch.manual_seed(0)
    net = ElasticSupernet(es, transform=transform)
    with torch.no_grad():  # non-trivial BN statistics and kernel transformation matrices
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.6)
                m.bias.uniform_(-0.05, 0.05)
                m.running_mean.uniform_(-0.01, 0.01)
                m.running_var.uniform_(0.5, 1.0)
            if isinstance(m, ElasticSE):  # keep the hard-sigmoid gates off saturation
                for conv in (m.reduce, m.expand):
                    conv.weight.normal_(0, 0.3)
                    conv.bias.zero_()
        net.classifier.fc.weight.normal_(0, 1.0)
        for name, p in net.named_parameters():
            if "ks_matrix" in name:
                p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _recalibrated(net, c, r):
    """BatchNorm statistics of member ``c`` on random inputs (keeps the signal alive through the eval-mode net)."""
    gen = torch.Generator().manual_seed(5)
    recalibrate_batchnorm(net, [torch.randn(8, 1, r, r, generator=gen) for _ in range(2)], forward=lambda x: net(x, c))
    return net


@pytest.mark.parametrize("name", ["mobilenetv3", "mobilenetv3-cifar"])
def test_extracted_subnet_equals_supernet_member(name):
    es = _space(name)
    net = _perturbed(es)
    rng = random.Random(1)
    members = [es.largest(), es.smallest()] + [es.sample(rng) for _ in range(3)]
    for c in members:
        r = es.config(c).resolution
        x = torch.randn(2, 1, r, r)
        _recalibrated(net, c, r)
        sub = net.subnet(c)
        assert type(sub) is HwnasNet and sub.arch == es.arch(c) and sub.arch.resolution == r
        # a plain net: only the member's layers, skip blocks for the layers past each stage's depth
        assert sum(b.kind == "skip" for s in sub.arch.stages for b in s) == sum(not a for a in es.active_layers(c))
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x, c), rtol=1e-5, atol=1e-5)
        # the subnet is a member of the base space, priced and exported like any other
        assert es.space_at(r).encode(sub.arch) == es.base_choices(c)


def test_kernel_expansion_depth_and_resolution_switch_the_function():
    es = _space()
    net = _perturbed(es)
    x = torch.randn(2, 1, 16, 16)
    big = es.largest()
    _recalibrated(net, big, 16)

    def with_(i, v):
        c = list(big)
        c[i] = v
        return tuple(c)

    n = len(es.layer_names)
    with torch.no_grad():
        ref = net(x, big)
        kernel = net(x, with_(2, 0))        # layer 1: k3 instead of k7
        expansion = net(x, with_(3, 0))     # layer 1: e3 instead of e6
        depth = net(x, with_(2 * n, 0))     # stage 0: depth 2 instead of 4
    for other in (kernel, expansion, depth):
        assert (other - ref).abs().max() > 1e-4
    # the depth really drops layers: a stage at depth 2 ignores its layers 2 and 3
    c = with_(2 * n, 0)
    assert es.active_layers(c)[:4] == [True, True, False, False]
    assert es.arch(c).stages[1][2].kind == "skip"
    assert es.config(with_(len(big) - 1, 0)).resolution == 12


def test_kernel_transformation_matrices_are_used():
    es = _space()
    a, b = _perturbed(es, transform=True), _perturbed(es, transform=False)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "ks_matrix" not in k}, strict=False)
    x = torch.randn(2, 1, 16, 16)
    _recalibrated(a, es.largest(), 16)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "ks_matrix" not in k}, strict=False)
    with torch.no_grad():
        assert torch.equal(a(x, es.largest()), b(x, es.largest()))  # no transform at the largest kernel
        assert (a(x, es.smallest()[:-1] + (1,)) - b(x, es.smallest()[:-1] + (1,))).abs().max() > 1e-4
    w7 = a.blocks[0].depthwise.conv.weight
    w3 = a.blocks[0].depthwise.kernel_weight(3, w7.shape[0])
    assert w3.shape[-1] == 3 and not torch.allclose(w3, w7[:, :, 2:5, 2:5])


def test_members_and_encoding_roundtrip():
    es = _space()
    rng = random.Random(0)
    for _ in range(20):
        c = es.sample(rng)
        assert es.encode(es.config(c)) == c
        assert len(es.features(c)) == len(es.layer_names) * 6 + len(es.resolutions)
    assert es.size > 10 ** 10


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnetv2", "mnasnet"])
def test_other_spaces_are_refused_with_the_reason(name):
    base = resolve_space(name, resolution=32, width=0.25, in_channels=1, classes=10)
    with pytest.raises(SearchError, match="once-for-all"):
        ElasticSpace(base)


def test_forward_backward_on_meta_device():
    es = _space()
    torch.manual_seed(0)
    net = ElasticSupernet(es).to("meta").train()
    for c in (es.largest(), es.smallest(), es.sample(random.Random(3))):
        r = es.config(c).resolution
        x = torch.randn(4, 1, r, r, device="meta")
        y = torch.zeros(4, dtype=torch.long, device="meta")
        loss = F.cross_entropy(net(x, c), y)
        loss.backward()
        assert loss.device.type == "meta"
    assert all(p.grad is None or p.grad.device.type == "meta" for p in net.parameters())
    assert any(p.grad is not None for n, p in net.named_parameters() if "ks_matrix" in n)


def test_bf16_autocast_on_cpu():
    es = _space()
    net = ElasticSupernet(es).train()
    x = torch.randn(4, 1, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, es.smallest())
    assert out.dtype == torch.bfloat16
    F.cross_entropy(out.float(), torch.zeros(4, dtype=torch.long)).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
