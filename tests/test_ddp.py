"""Beyond one process: a 2-process DDP (gloo) SPOS supernet step equals one process on the summed
batch. (Parallel candidate evaluation in worker processes: tests/test_rl_spos.py.)"""

from __future__ import annotations

import random

import pytest
import torch

from hwnas.nn.supernet import Supernet
from hwnas.search.distributed import ddp_step, parity_rank, spawn
from hwnas.spaces import get_space


@pytest.mark.slow
def test_two_process_ddp_step_matches_single_process_summed_batch(tmp_path):
    space = get_space("mobilenetv2-cifar", resolution=32, num_classes=10, in_channels=1, width_multiplier=0.25)
    torch.manual_seed(0)
    net = Supernet(space, mode="spos").train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    rng = random.Random(0)
    choices = [space.sample(rng) for _ in range(2)]  # two steps on two different paths
    lr = 0.1

    # one process, summed batch of 8
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for c in choices:
        ddp_step(net, opt, x, y, c)
    ref = net.state_dict()

    # two processes (gloo), 4 images each
    out = tmp_path / "rank0.pt"
    spawn(parity_rank, 2, space, state, x, y, choices, lr, str(out))
    got = torch.load(out)

    assert set(got) == set(ref)
    moved = max(float((ref[k] - state[k]).abs().max()) for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3  # the step did change the weights
    diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
    print(f"DDP parity: max |Δ| over {len(ref)} tensors = {diff:.3g} (weights moved up to {moved:.3g})")
    assert diff < 2e-5

