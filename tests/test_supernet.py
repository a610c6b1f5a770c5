"""Supernet modes: forward, gradients of every architecture parameter, subnets, expected latency."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwnas.errors import SearchError
from hwnas.latency.predict import layer_latency_table, load_predictor
from hwnas.nn.supernet import MODES, Supernet
from hwnas.search.pipeline import make_space


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenetv2", resolution=16, num_classes=10, in_channels=1, width=0.35)


@pytest.fixture(scope="module")
def fbspace():
    return make_space("fbnet", resolution=16, num_classes=10, in_channels=1, width=0.35)


@pytest.fixture(scope="module")
def table(space):
    return layer_latency_table(load_predictor("pixel"), space)


def _batch(n=8, res=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, res, res, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("mode", ["fbnet", "proxyless", "singlepath"])
@pytest.mark.parametrize("which", ["mobilenetv2", "fbnet"])
def test_every_arch_parameter_gets_a_finite_gradient(mode, which, space, fbspace):
    sp = space if which == "mobilenetv2" else fbspace
    torch.manual_seed(0)
    net = Supernet(sp, mode).train()
    tab = layer_latency_table(load_predictor("pixel"), sp)
    x, y = _batch()
    params = net.arch_parameters()
    assert params and all(p.requires_grad for p in params)
    with net.arch_step():
        loss = F.cross_entropy(net(x), y) + 0.1 * net.expected_latency(tab)
        loss.backward()
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    # weights get no gradient in an architecture step
    assert all(p.grad is None for p in net.weight_parameters())
    if mode == "fbnet":
        # the latency term reaches every candidate, including skip
        for a, cands in zip(params, net.slot_layers):
            assert (a.grad != 0).all(), "every candidate's α (skip included) must receive gradient"
    elif mode == "proxyless":
        # binary gates: exactly the two sampled paths of each layer receive gradient (reference code)
        for a, idx in zip(params, net._sampled):
            assert set(torch.nonzero(a.grad).flatten().tolist()) == set(idx)
    else:
        assert sum(int((p.grad != 0).sum()) for p in params) > 0


@pytest.mark.parametrize("mode,weights", [(m, "shared") for m in MODES] + [("proxyless", "independent")])
def test_subnet_matches_supernet_path(mode, weights, space):
    torch.manual_seed(1)
    net = Supernet(space, mode, weights=weights).train()
    x, y = _batch()
    # perturb BN so the comparison is non-trivial, then compare in eval mode
    F.cross_entropy(net(x), y).backward()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    net.eval()
    import random

    choices = space.sample(random.Random(3))
    sub = net.subnet(choices)
    with torch.no_grad():
        a, b = net(x, choices), sub(x)
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert sub.arch == space.decode(choices)


def test_derive_probabilities_and_expected_latency(space, table):
    for mode in ("fbnet", "proxyless", "singlepath"):
        net = Supernet(space, mode)
        probs = net.probabilities()
        assert len(probs) == len(space.slots)
        assert all(abs(float(p.sum()) - 1) < 1e-5 for p in probs)
        d = net.derive()
        space.check(d)
    # near-uniform α: expected latency is about the mean over candidates
    net = Supernet(space, "proxyless")
    exp = float(net.expected_latency(table).detach())
    mean = table.fixed_ms + sum(sum(r) / len(r) for r in table.per_layer)
    assert exp == pytest.approx(mean, rel=1e-3)  # α ~ N(0, 1e-3): near-uniform
    # singlepath: hard indicators make the expected latency that of the selected member
    sp = Supernet(space, "singlepath")
    assert float(sp.expected_latency(table).detach()) == pytest.approx(table.latency(sp.derive()), rel=1e-5)
    # it starts from the largest block everywhere (k7_e6)
    assert all(space.slots[i].candidates[c].startswith("ir_k7_e6") for i, c in enumerate(sp.derive()))


def test_proxyless_weight_step_runs_one_path(space):
    net = Supernet(space, "proxyless").train()
    calls = []
    for i, cands in enumerate(net.layers_):
        for j, op in enumerate(cands):
            op.register_forward_hook(lambda m, inp, out, i=i, j=j: calls.append((i, j)))
    x, y = _batch()
    F.cross_entropy(net(x), y).backward()
    assert len(calls) == len(space.slots)  # exactly one candidate per layer
    calls.clear()
    with net.arch_step():
        F.cross_entropy(net(x), y).backward()
    assert len(calls) == 2 * len(space.slots)  # two sampled paths in an architecture step
    before = [a.detach().clone() for a in net.alphas]
    with torch.no_grad():
        for a in net.alphas:
            a += torch.randn_like(a)  # pretend an optimizer step
    net._alpha_before = before
    net.after_arch_step()
    for a, old, idx in zip(net.alphas, before, net._sampled):
        ix = torch.tensor(idx)
        assert float(torch.logsumexp(a.detach()[ix], 0)) == pytest.approx(float(torch.logsumexp(old[ix], 0)), abs=1e-5)


def test_fbnet_temperature_schedule_and_noise(space):
    net = Supernet(space, "fbnet", noise="sample")
    assert net.set_epoch(0) == 5.0
    assert net.set_epoch(10) == pytest.approx(5.0 * torch.exp(torch.tensor(-0.45)).item())
    assert net.set_epoch(10_000) == 0.1  # floor
    x, y = _batch()
    net.train()
    assert net(x).shape == (8, 10)
    with pytest.raises(SearchError):
        Supernet(space, "fbnet", noise="per-pixel")


def test_fbnet_space_shares_ungrouped_candidates(fbspace):
    net = Supernet(fbspace, "proxyless").eval()
    layer = net.layers_[1]
    kinds = [r[0] for r in layer.route]
    assert kinds.count("shared") == 6 and kinds.count("module") == 2  # k3/k5 x e1/e3/e6 shared, g2 own
    x, _ = _batch()
    g2 = next(j for j, c in enumerate(fbspace.slots[1].candidates) if "_g2_" in c)
    c = tuple(g2 if i == 1 else 0 for i in range(len(fbspace.slots)))
    with torch.no_grad():
        assert torch.allclose(net(x, c), net.subnet(c)(x), atol=1e-5)


def test_stagewise_space_is_refused():
    sp = make_space("mnasnet", resolution=32, num_classes=10, in_channels=1, width=0.35)
    with pytest.raises(SearchError, match="stage-wise"):
        Supernet(sp, "fbnet")


def test_spos_runs_exact_paths(space):
    net = Supernet(space, "spos").eval()
    assert net.arch_parameters() == []
    x, _ = _batch()
    c = tuple(len(s.candidates) - 1 for s in space.slots)
    with torch.no_grad():
        assert torch.allclose(net(x, c), net.subnet(c)(x), atol=1e-5)
    with pytest.raises(SearchError):
        net.derive()


def test_proxyless_arch_gradient_is_the_binaryconnect_estimator(space, table):
    """ProxylessNAS §3.2: with two sampled paths S and p = softmax(α_S), the gradient is
    ∂L/∂α_i = Σ_{j∈S} ∂L/∂g_j · p_j (δ_ij − p_i) for i ∈ S and 0 elsewhere; the latency term weights
    only the two sampled paths (reference code: ``binarize`` → ``current_prob_over_ops``), so with
    Adam β1 = 0 the unsampled α do not move."""
    torch.manual_seed(5)
    net = Supernet(space, "proxyless").train()
    with torch.no_grad():
        for a in net.alphas:
            a.normal_(0, 0.5)
    x, y = _batch()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.1, betas=(0.0, 0.999))
    before = [a.detach().clone() for a in net.alphas]
    lam = 0.3
    with net.arch_step():
        out = net(x)
        for _, g in net._gates:
            g.retain_grad()
        lat = net.expected_latency(table)
        loss = F.cross_entropy(out, y) + lam * lat
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.after_arch_step()
    for a, old, (idx, g), row in zip(net.alphas, before, net._gates, table.per_layer):
        p = F.softmax(old[idx], -1)
        dldg = g.grad  # ∂L/∂g: the CE's (the latency term does not depend on the gates)
        ce = torch.stack([sum(dldg[j] * p[j] * ((1.0 if i == j else 0.0) - p[i]) for j in range(2)) for i in range(2)])
        lat2 = torch.tensor([row[j] for j in idx])
        lt = lam * p * (lat2 - (p * lat2).sum())  # ∂/∂α_i of λ·Σ_{j∈S} p_j lat_j
        expected = torch.zeros_like(old)
        expected[idx] = ce + lt
        assert torch.allclose(a.grad, expected, atol=1e-6), (a.grad, expected)
        unsampled = [j for j in range(len(a)) if j not in idx]
        assert unsampled and (a.grad[unsampled] == 0).all()
        # after the Adam (β1 = 0) step and the rescaling, the unsampled α are unchanged
        assert torch.equal(a.detach()[unsampled], old[unsampled])
