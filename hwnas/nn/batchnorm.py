"""BatchNorm statistics recalibration, the one implementation shared by search and export."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor],
                          forward: Callable[[torch.Tensor], object] | None = None,
                          max_batches: int | None = None) -> int:
    """Reset every BatchNorm's running mean/variance and re-estimate them on ``inputs`` (in place).

    Statistics accumulate as a plain average over the batches (``momentum=None``), with no
    gradient and no weight change. A subnet taken from a supernet inherits statistics of the
    supernet's mixture of paths; re-estimating them on its own path is what makes it usable
    (once-for-all, Cai et al. 2020 §3.2; SPOS, Guo et al. 2020 §3.2).

    Args:
        model: the module whose BatchNorms are recalibrated; left in eval mode.
        inputs: NCHW float batches (moved to the model's device).
        forward: how to run one batch (default ``model(x)``; e.g. a supernet path).
        max_batches: use at most this many batches.

    Returns:
        The number of batches used (0 means nothing was re-estimated; callers raise their error).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    run = forward or model
    dev = next((t.device for t in model.parameters()), None)
    n = 0
    try:
        for x in inputs:
            if max_batches is not None and n >= max_batches:
                break
            run(x if dev is None else x.to(dev, non_blocking=True))
            n += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    return n
