"""Device- and dtype-agnostic supernets.

CPU-only CI has no GPU, so the guard is the ``meta`` device: a supernet moved there fails on the first
op that meets a tensor created on the CPU (a mask, a gate, a latency vector), exactly as it would on
CUDA or MPS. Plus a bf16 autocast smoke run on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwnas.latency.predict import layer_latency_table, load_predictor
from hwnas.nn.supernet import Supernet
from hwnas.search.pipeline import make_space

CASES = [("fbnet", "shared"), ("fbnet", "independent"), ("proxyless", "shared"), ("proxyless", "independent"),
         ("singlepath", "shared"), ("spos", "shared"), ("spos", "independent")]


@pytest.fixture(scope="module")
def setup():
    space = make_space("mobilenetv2", resolution=16, num_classes=10, in_channels=1, width=0.35)
    return space, layer_latency_table(load_predictor("pixel"), space)


@pytest.mark.parametrize("mode,weights", CASES)
def test_forward_latency_backward_on_meta_device(mode, weights, setup):
    space, table = setup
    torch.manual_seed(0)
    net = Supernet(space, mode, weights=weights).to("meta").train()
    x = torch.randn(4, 1, 16, 16, device="meta")
    y = torch.zeros(4, dtype=torch.long, device="meta")
    if mode in ("proxyless", "spos"):  # their weight step runs another path than the arch step (one sampled path)
        loss = F.cross_entropy(net(x), y) + 0.1 * net.expected_latency(table)
        loss.backward()
        assert loss.device.type == "meta"
        assert all(p.grad is None or p.grad.device.type == "meta" for p in net.parameters())
    if not net.arch_parameters():
        # spos: the evaluator's fixed-path forward
        out = net(x, tuple(0 for _ in space.slots))
        assert out.device.type == "meta"
        return
    # architecture step (proxyless: two sampled paths with binary gates)
    with net.arch_step():
        a_loss = F.cross_entropy(net(x), y) * torch.log(net.expected_latency(table))
        a_loss.backward()
    net.after_arch_step()
    assert all(p.grad.device.type == "meta" for p in net.arch_parameters())
    for p in net.probabilities():
        assert p.device.type == "meta"


@pytest.mark.parametrize("mode", ["fbnet", "proxyless", "singlepath"])
def test_bf16_autocast_step_on_cpu(mode, setup):
    space, table = setup
    torch.manual_seed(0)
    net = Supernet(space, mode).train()
    x = torch.randn(4, 1, 16, 16)
    y = torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        loss = F.cross_entropy(out, y)
    assert out.dtype == torch.bfloat16
    lat = net.expected_latency(table)
    (loss + 0.01 * lat).backward()
    assert torch.isfinite(loss) and torch.isfinite(lat)
    grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
