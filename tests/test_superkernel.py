"""Single-Path superkernels beyond the paper's plain MBConv: squeeze-excite (both SE styles),
h-swish, fused-MBConv (``er``) and depthwise-separable (``ds``) layers, and skip (depth).

Each configuration of a superkernel must compute exactly the block that :meth:`Superkernel.load_into`
fills: the masked forward (the search path), the sliced ``run_path`` (weight-sharing path) and the
plain ``hwnas.nn.blocks`` module with the copied weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwnas.arch import ArchSpec, BlockSpec
from hwnas.nn.blocks import build_layer
from hwnas.nn.supernet import DSSuperkernel, FusedSuperkernel, Superkernel, Supernet, make_superkernel

RES = 8


def _layers(candidates: list[str], se_style: str, cin: int = 16) -> list:
    """The resolved layers of ``candidates`` placed after a ``cin``-channel stem (an 8×8, ``cin`` input)."""
    out = []
    for text in candidates:
        arch = ArchSpec(stem=BlockSpec.from_compact(f"cn_k3_s1_c{cin}_re"), stages=((BlockSpec.from_compact(text),),),
                        resolution=RES, in_channels=3, se_style=se_style)
        out.append(arch.layers()[1])
    return out


# (candidates, se_style, superkernel class, has SE)
CASES = {
    "mbconv_se_hswish_mbv3": ([f"ir_k{k}_e{e}_s1_c16_se0.25_hs" for k in (3, 5) for e in (3, 6)] + ["skip"],
                              "mobilenetv3", Superkernel, True),
    "mbconv_se_swish_effnet": ([f"ir_k{k}_e{e}_s2_c24_se0.25_sw" for k in (3, 5, 7) for e in (4, 6)],
                               "efficientnet", Superkernel, True),
    "fused": ([f"er_k{k}_e{e}_s1_c16_sw" for k in (3, 5) for e in (4, 6)] + ["skip"], "efficientnet",
              FusedSuperkernel, False),
    "fused_se_stride2": ([f"er_k{k}_e{e}_s2_c24_se0.25_sw" for k in (3, 5) for e in (2, 4)], "efficientnet",
                         FusedSuperkernel, True),
    # MnasNet: every (kernel, expansion) with and without SE (and a no-skip duplicate, never selected)
    "mbconv_se_decision_mnasnet": ([f"ir_k{k}_e{e}_s1_c16{se}_re" for k in (3, 5) for e in (3, 6)
                                    for se in ("", "_se0.25")] + ["ir_k3_e3_s1_c16_re_noskip", "skip"],
                                   "efficientnet", Superkernel, True),
    "ds_se": ([f"ds_k{k}_s1_c16_se0.25_sw" for k in (3, 5)] + ["skip"], "efficientnet", DSSuperkernel, True),
}


def _randomise(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_configuration_is_its_block(case):
    texts, se_style, cls, has_se = CASES[case]
    layers = _layers(texts, se_style)
    torch.manual_seed(0)
    sk = make_superkernel(layers, se_style)
    assert type(sk) is cls and (sk.se is not None) == has_se
    _randomise(sk)
    sk.eval()
    x = torch.randn(2, 16, RES, RES)
    outs = {}
    for lay in layers:
        b = lay.block
        if b.kind == "skip" or not b.residual:
            continue
        kidx, groups = sk.kernels.index(b.kernel), sk.expansions.index(b.expansion) + 1
        block = build_layer(lay, se_style).eval()
        sk.load_into(block, b.kernel, groups - 1)
        sk.forced = (kidx, groups, int(b.se_ratio > 0))
        with torch.no_grad():
            masked = sk(x)
            sliced = sk.run_path(x, kidx, groups, int(b.se_ratio > 0))
            ref = block(x)
        sk.forced = None
        assert torch.allclose(masked, ref, atol=1e-5), (b.to_compact(), float((masked - ref).abs().max()))
        assert torch.allclose(sliced, ref, atol=1e-5), (b.to_compact(), float((sliced - ref).abs().max()))
        outs[b.to_compact()] = ref
    # the configurations are different functions (the comparison above is not vacuous)
    vals = list(outs.values())
    assert all(not torch.allclose(a, b) for i, a in enumerate(vals) for b in vals[i + 1:])
    if sk.has_skip:
        sk.forced = (0, 0, 0)
        assert torch.equal(sk(x), x) and torch.equal(sk.run_path(x, 0, 0), x)


def test_superkernel_without_its_se_is_another_function():
    """The SE is part of every candidate of an SE layer: dropping it from the superkernel changes the
    block (guards against a superkernel that ignores squeeze-excite)."""
    texts, se_style, _, _ = CASES["mbconv_se_hswish_mbv3"]
    layers = _layers(texts, se_style)
    sk = make_superkernel(layers, se_style).eval()
    _randomise(sk)
    x = torch.randn(2, 16, RES, RES)
    sk.forced = (1, 2, 1)
    with torch.no_grad():
        with_se = sk(x)
        se, sk.se = sk.se, None
        without = sk(x)
        sk.se = se
    assert not torch.allclose(with_se, without, atol=1e-3)
    # mobilenetv3 style: squeeze width follows the expansion (make_divisible(mid/4, 8)), nested
    assert sk.se_ends == [lay.se_channels(se_style) for lay in layers[:2]] and sk.se_ends[0] < sk.se_ends[1]


def test_candidates_that_disagree_on_se_are_refused():
    from hwnas.errors import SearchError

    layers = _layers(["ir_k3_e3_s1_c16_se0.25_sw", "ir_k5_e3_s1_c16_sw"], "efficientnet")
    with pytest.raises(SearchError, match="disagree on squeeze-excite"):
        make_superkernel(layers)


@pytest.mark.parametrize("case", ["mbconv_se_hswish_mbv3", "fused_se_stride2", "ds_se"])
def test_thresholds_get_gradients_through_se_and_fused_parts(case):
    texts, se_style, _, _ = CASES[case]
    sk = make_superkernel(_layers(texts, se_style), se_style).train()
    x = torch.randn(4, 16, RES, RES)
    ws = sk.candidate_weights()
    loss = sk(x).pow(2).mean() + sum(w for w in ws.values()) * 0
    loss.backward()
    grads = [p.grad for p in (sk.t_kernel, sk.t_expand) if p.numel()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if sk.se is not None:
        assert sk.se.reduce.weight.grad is not None and float(sk.se.reduce.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", ["mobilenetv3-cifar", "efficientnetv2-cifar", "efficientnet-cifar"])
def test_singlepath_on_meta_device_with_se_and_fused_layers(name):
    """Forward, expected latency and backward of the extended superkernels on the ``meta`` device:
    a mask or SE slice created on the CPU would fail here as on CUDA."""
    from hwnas.latency.predict import layer_latency_table, load_predictor
    from hwnas.search.pipeline import make_space

    space = make_space(name, resolution=16, num_classes=10, in_channels=1, width=0.25)
    space = space.relaxed() if hasattr(space, "relaxed") else space
    table = layer_latency_table(load_predictor("pixel"), space)
    torch.manual_seed(0)
    net = Supernet(space, "singlepath").to("meta").train()
    assert any(isinstance(m, (FusedSuperkernel, DSSuperkernel)) or m.se is not None for m in net.layers_)
    x = torch.randn(2, 1, 16, 16, device="meta")
    y = torch.zeros(2, dtype=torch.long, device="meta")
    F.cross_entropy(net(x), y).backward()
    with net.arch_step():
        loss = F.cross_entropy(net(x), y) * torch.log(net.expected_latency(table))
        loss.backward()
    assert loss.device.type == "meta"
    # (a layer with one channel group and no skip has no expansion decision: its threshold gets no gradient)
    grads = [p.grad for p in net.arch_parameters() if p.grad is not None]
    assert len(grads) >= len(net.layers_) and all(g.device.type == "meta" for g in grads)
    assert all(p.device.type == "meta" for p in net.probabilities())
    # a fixed path (the sliced run_path) runs there too
    assert net(x, tuple(0 for _ in space.slots)).device.type == "meta"


def test_se_decision_of_a_mnasnet_layer():
    """Where a layer offers every (kernel, expansion) with and without SE, SE is a threshold decision:
    it starts on, turns off above the threshold, and its threshold gets the relaxed gradient."""
    from hwnas.errors import SearchError

    texts, se_style, _, _ = CASES["mbconv_se_decision_mnasnet"]
    sk = make_superkernel(_layers(texts, se_style), se_style).train()
    assert sk.se_choice and sk.t_se is not None and sk.selection() == (1, 2, 1)  # largest block, SE on
    weights = sk.candidate_weights()
    assert sorted(k for k, w in weights.items() if float(w.detach()) == 1.0) == [(1, 2, 1)]
    assert {(1, 2, 0), (0, 1, 1), (0, 0, 0)} <= set(weights)
    x = torch.randn(4, 16, RES, RES)
    (sk(x).pow(2).mean() + weights[(1, 2, 1)]).backward()
    assert sk.t_se.grad is not None and float(sk.t_se.grad.abs()) > 0
    with torch.no_grad():
        sk.t_se += 100.0
    assert sk.selection() == (1, 2, 0)
    # a layer offering SE for some (kernel, expansion) only is refused
    with pytest.raises(SearchError, match="disagree on squeeze-excite"):
        make_superkernel(_layers(["ir_k3_e3_s1_c16_re", "ir_k3_e3_s1_c16_se0.25_re", "ir_k5_e3_s1_c16_re"],
                                 "efficientnet"))


def test_singlepath_on_mnasnet_derives_se_members():
    from hwnas.search.pipeline import make_space

    space = make_space("mnasnet-cifar", resolution=16, num_classes=10, in_channels=1, width=0.25).relaxed()
    net = Supernet(space, "singlepath")
    assert sum(m.t_se is not None for m in net.layers_) == len(net.layers_)
    arch = space.decode(net.derive())  # starts at the largest block with SE everywhere
    assert all(b.se_ratio > 0 for stage in arch.stages for b in stage if b.kind == "mbconv")
    assert len(net.arch_parameters()) == 3 * len(net.layers_)
