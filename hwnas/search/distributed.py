"""Beyond one process: DDP supernet training (``torchrun``, gloo on CPU) and parallel evaluation.

**Supernet training under DistributedDataParallel.** :func:`train_supernet_ddp` trains a SPOS
supernet (uniform single-path sampling, Guo et al. 2020) with :class:`torch.nn.parallel.
DistributedDataParallel` on the ``gloo`` backend. Every rank takes its slice of the same global
batch and draws the *same* path (the path RNG is seeded identically on every rank), so the ranks
compute gradients of one network; DDP averages them. BatchNorm is synchronised across ranks by
:class:`GlooSyncBatchNorm` (PyTorch's ``SyncBatchNorm`` only runs on GPUs): batch statistics are
the global batch's, computed with a differentiable ``all_reduce`` (two passes: mean, then the
centred second moment), so one step on ``W`` ranks × ``B/W`` images equals one step of a single
process on the summed batch ``B`` up to float rounding (``tests/test_ddp.py`` checks it).

Launch::

    torchrun --standalone --nproc_per_node 2 -m hwnas.search.distributed \
        --space mobilenetv2-cifar --data mnist5k --epochs 2 --out runs/spos-ddp

(or :func:`spawn` for ``torch.multiprocessing`` without torchrun). Rank 0 writes
``supernet.pt`` in the same format :class:`~hwnas.search.evaluator.SPOSEvaluator` resumes from, so
a search can use a supernet trained on several processes (``--out RUN/checkpoints``).

**Parallel candidate evaluation.** :class:`ParallelEvaluator` evaluates a batch of candidates of
the RL and evolution searchers in worker processes (``workers`` option); each worker holds a copy
of the evaluator (the trained supernet travels once, at start-up) and returns the same
:class:`~hwnas.search.base.Evaluated` as a serial evaluation.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from hwnas.search.base import Evaluated


# ============================================================================ parallel evaluation
_WORKER_EVALUATOR = None


def _init_worker(blob: bytes, threads: int) -> None:
    global _WORKER_EVALUATOR
    torch.set_num_threads(max(1, threads))
    _WORKER_EVALUATOR = pickle.loads(blob)


def _evaluate_in_worker(choices: tuple[int, ...], step: int) -> Evaluated:
    return _WORKER_EVALUATOR.evaluate(choices, step)


class ParallelEvaluator:
    """Evaluate candidates in ``workers`` processes, each with its own copy of ``evaluator``.

    Args:
        evaluator: any picklable evaluator (``evaluate(choices, step)``; ``latency``).
        workers: number of worker processes (≥ 1).
        start_method: multiprocessing start method (``spawn`` by default: safe with torch threads).
        threads: torch threads per worker.

    ``latency``/``latency_bounds`` run in this process (they are cheap). Call :meth:`close` (or use
    it as a context manager) to stop the workers.
    """

    def __init__(self, evaluator, workers: int = 2, *, start_method: str = "spawn", threads: int = 1):
        import multiprocessing as mp

        self.inner = evaluator
        self.workers = max(1, int(workers))
        self.cheap = False
        blob = pickle.dumps(evaluator)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(start_method),
                                         initializer=_init_worker, initargs=(blob, threads))

    def evaluate(self, choices: Sequence[int], step: int = 0) -> Evaluated:
        return self.evaluate_many([choices], step)[0]

    def evaluate_many(self, batch: Sequence[Sequence[int]], start_step: int = 0) -> list[Evaluated]:
        futures = [self._pool.submit(_evaluate_in_worker, tuple(c), start_step + i) for i, c in enumerate(batch)]
        return [f.result() for f in futures]

    def latency(self, choices: Sequence[int]) -> float:
        return self.inner.latency(choices)

    def latency_bounds(self):
        return self.inner.latency_bounds()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ============================================================================ synchronised BatchNorm
class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks.

    Works on CPU with any backend (gloo): the per-channel sum and centred sum of squares are
    reduced with :func:`torch.distributed.nn.functional.all_reduce`, which is differentiable (its
    backward all-reduces the gradients), so gradients also match a single process on the whole
    batch. Outside training, or without an initialised process group of ≥ 2 ranks, it is a plain
    BatchNorm2d. Running statistics use the unbiased global variance, as ``nn.BatchNorm2d`` does.
    """

    process_group = None

    def _sync_active(self) -> bool:
        return (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._sync_active():
            return super().forward(x)
        return self.sync_forward(x, None, functional=False)

    def sync_forward(self, x: torch.Tensor, n: int | None, functional: bool = True) -> torch.Tensor:
        """Synchronised batch norm of ``x`` with the first ``n`` channels' parameters and buffers
        (``None``: all) — the sliced form the supernet's superkernels use. ``functional``: update the
        running statistics as ``F.batch_norm`` does (no batch counting; momentum ``None`` → 0)."""
        with warnings.catch_warnings():  # deprecated in 2.13, but the replacement is not differentiable
            warnings.simplefilter("ignore", FutureWarning)
            return self._sync_forward(x, n, functional)

    def _sync_forward(self, x: torch.Tensor, n: int | None, functional: bool) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        group = self.process_group
        c = x.shape[1]
        sl = slice(0, n)
        count = torch.tensor([float(x.numel() // c)], dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]), group=group)
        total = stats[c]
        mean = stats[:c] / total
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3)), group=group) / total
        if self.track_running_stats:
            with torch.no_grad():
                if not functional:  # module path: as nn.BatchNorm2d (counts batches; momentum None = average)
                    self.num_batches_tracked += 1
                    m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                else:  # sliced functional path: as Superkernel._bn's F.batch_norm
                    m = self.momentum if self.momentum is not None else 0.0
                self.running_mean[sl].mul_(1 - m).add_(m * mean.detach())
                self.running_var[sl].mul_(1 - m).add_(m * var.detach() * total / (total - 1))
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight[sl].view(1, c, 1, 1) + self.bias[sl].view(1, c, 1, 1)
        return y


def _patch_superkernel_bn() -> None:
    """Route the SPOS supernet's sliced BatchNorm (``Superkernel._bn``, a functional
    ``F.batch_norm`` on channel slices) through :meth:`GlooSyncBatchNorm.sync_forward` when its BN
    is synchronised and training; unchanged otherwise. Idempotent."""
    from hwnas.nn.supernet import Superkernel

    original = Superkernel.__dict__["_bn"].__func__
    if getattr(original, "_hwnas_sync", False):
        return

    def _bn(y, bn, n, training):
        if training and isinstance(bn, GlooSyncBatchNorm) and bn._sync_active():
            return bn.sync_forward(y, n)
        return original(y, bn, n, training)

    _bn._hwnas_sync = True
    Superkernel._bn = staticmethod(_bn)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by :class:`GlooSyncBatchNorm` (weights and
    buffers kept), in place; returns the module."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.process_group = process_group
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, process_group)
    return module


# ============================================================================ DDP training
def path_rng(seed: int, epoch: int):
    """The path sampler's RNG for an epoch — identical on every rank (same seed, same draws)."""
    import random

    return random.Random(f"{seed}-spos-{epoch}")


def ddp_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             choices: Sequence[int], *, clip: float | None = None) -> float:
    """One SPOS weight step on this rank's slice ``x, y`` of the global batch (model may be DDP).

    Returns this rank's mean cross-entropy.
    """
    import torch.nn.functional as F

    loss = F.cross_entropy(model(x, tuple(choices)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.item())


def rank_slice(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous part of a global batch of ``n`` (``n`` divisible by ``world``)."""
    if n % world:
        raise ValueError(f"global batch {n} is not divisible by the world size {world}")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


def wrap_ddp(model: nn.Module) -> nn.Module:
    """Synchronise BatchNorm (own process group) and wrap in DDP (gloo, CPU, unused paths allowed)."""
    bn_group = dist.new_group(backend="gloo")
    convert_sync_batchnorm(model, bn_group)
    _patch_superkernel_bn()
    with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; the old name keeps init-time sync off
        warnings.simplefilter("ignore", FutureWarning)
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)


def train_supernet_ddp(space, data, *, epochs: int = 1, batch_size: int = 64, steps_per_epoch: int | None = None,
                       lr: float = 0.05, seed: int = 0, out: str | None = None,
                       progress: Callable[[dict[str, Any]], None] | None = None) -> nn.Module:
    """Train a SPOS supernet on this rank (call on every rank of an initialised gloo group).

    ``batch_size`` is the *global* batch (divided over the ranks). The schedule and checkpoint
    format follow :meth:`hwnas.search.evaluator.SPOSEvaluator.train_supernet`; rank 0 writes
    ``out/supernet.pt`` after every epoch. Returns the (unwrapped) supernet.
    """
    from hwnas.nn.supernet import Supernet
    from hwnas.search.evaluator import _save_torch
    from hwnas.search.train import cosine_schedule, weight_optimizer

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    net = Supernet(space, mode="spos")
    model = wrap_ddp(net)
    steps = min(data.steps("train", batch_size), steps_per_epoch or 10**9)
    opt = weight_optimizer(net.parameters(), lr)
    sched = cosine_schedule(opt, epochs * steps)
    figures = {"supernet_steps": 0, "supernet_loss": None, "supernet_seconds": 0.0, "world_size": world}
    import time

    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        rng = path_rng(seed, epoch)
        total = 0.0
        n = 0
        for x, y in data.batches("train", batch_size, epoch=epoch, limit=steps, seed=seed):
            part = rank_slice(len(y), rank, world)
            total += ddp_step(model, opt, x[part], y[part], space.sample(rng), clip=5.0)
            sched.step()
            n += 1
            figures["supernet_steps"] += 1
            if progress is not None and rank == 0:
                progress({"event": "supernet", "epoch": epoch, "step": figures["supernet_steps"]})
        figures["supernet_loss"] = total / max(1, n)
        figures["supernet_seconds"] = time.time() - t0
        if out is not None and rank == 0:
            _save_torch(os.path.join(out, "supernet.pt"), {
                "model": _plain_state(net), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "epoch": epoch + 1, "figures": figures})
    return net


def _plain_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of a network with GlooSyncBatchNorm layers (same keys as plain BatchNorm2d)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def spawn(fn: Callable[..., Any], world: int, *args, port: int | None = None) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes with an initialised gloo group
    (``torch.multiprocessing.spawn``; for tests and machines without torchrun)."""
    import socket

    import torch.multiprocessing as mp

    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    mp.spawn(_spawned, args=(world, port, fn, args), nprocs=world, join=True)


def _spawned(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def parity_rank(rank: int, world: int, space, state: dict, x: torch.Tensor, y: torch.Tensor,
                choices: Sequence[Sequence[int]], lr: float, out: str) -> None:
    """One rank of the DDP parity check: load ``state`` into a SPOS supernet, take one SGD step per
    entry of ``choices`` on this rank's slice of ``x, y``; rank 0 saves the resulting state to ``out``."""
    from hwnas.nn.supernet import Supernet

    net = Supernet(space, mode="spos")
    net.load_state_dict(state)
    model = wrap_ddp(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    part = rank_slice(len(y), rank, world)
    for c in choices:
        ddp_step(model, opt, x[part], y[part], c)
    if rank == 0:
        torch.save(_plain_state(net), out)


def main(argv: Sequence[str] | None = None) -> int:
    """``torchrun --nproc_per_node N -m hwnas.search.distributed ...``: DDP SPOS supernet training."""
    p = argparse.ArgumentParser(prog="python -m hwnas.search.distributed", description=main.__doc__)
    p.add_argument("--space", default="mobilenetv2-cifar")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split over the ranks)")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for supernet.pt (e.g. RUN/checkpoints)")
    a = p.parse_args(argv)
    from hwnas.search.data import load_data
    from hwnas.search.pipeline import make_space

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        data = load_data(a.data, resolution=a.resolution, seed=a.seed)
        space = make_space(a.space, resolution=data.resolution, num_classes=data.num_classes,
                           in_channels=data.in_channels, width=a.width)
        train_supernet_ddp(space, data, epochs=a.epochs, batch_size=a.batch_size, steps_per_epoch=a.steps_per_epoch,
                           lr=a.lr, seed=a.seed, out=a.out,
                           progress=lambda ev: print(f"epoch {ev['epoch']} step {ev['step']}", flush=True))
        if dist.get_rank() == 0:
            print(f"rank 0: trained on {dist.get_world_size()} processes" + (f"; wrote {a.out}/supernet.pt"
                                                                            if a.out else ""))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ParallelEvaluator", "GlooSyncBatchNorm", "convert_sync_batchnorm", "ddp_step", "rank_slice", "wrap_ddp",
           "train_supernet_ddp", "spawn", "path_rng", "parity_rank", "main"]
