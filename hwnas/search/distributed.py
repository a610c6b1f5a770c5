"""Beyond one process: data-parallel search and training (``torchrun``), and parallel evaluation.

**``torchrun -m hwnas search``.** ``torchrun --standalone --nproc_per_node N -m hwnas search ...``
runs the whole pipeline data-parallel (:func:`init_from_env`: NCCL on CUDA, gloo on CPU): each rank
reads only its shard of every shuffled pass (:meth:`hwnas.search.data.DataBundle.batches`), weight
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, architecture
gradients by :func:`all_reduce_grads`, BatchNorm statistics are those of the global batch
(:class:`GlooSyncBatchNorm`), and every rank draws the same paths (same seed, same RNG
consumption), so all ranks hold the same supernet and architecture parameters. ``--batch-size`` is
per process: N ranks × B take the step one process takes with N·B (``tests/test_ddp.py``). Rank 0
alone writes the run folder (:class:`DistRunDir`) and prints; in-order evaluation is not sharded
(every rank computes the same accuracy and so makes the same decision).

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
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from hwnas.search.base import Evaluated, RunDir


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
        count = x.new_tensor([float(x.numel() // c)])
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
            new = new.to(next(iter([*child.parameters(), *child.buffers()])).device)
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


def wrap_ddp(model: nn.Module, ignore: Sequence[nn.Parameter] = (), find_unused: bool = True) -> nn.Module:
    """Synchronise BatchNorm and wrap ``model`` in DDP (unused paths allowed); returns the DDP module.

    ``ignore``: parameters DDP must leave alone (architecture parameters: their gradients are
    averaged by :func:`all_reduce_grads` after the architecture step). On gloo the BatchNorm
    reductions get their own process group; on NCCL they use the default one. BatchNorm is
    :class:`GlooSyncBatchNorm` on every backend (``nn.SyncBatchNorm`` cannot follow the channel
    slices of the supernets' superkernels).
    """
    sync_batchnorm(model)
    if ignore:
        ids = {id(p) for p in ignore}
        names = [n for n, p in model.named_parameters() if id(p) in ids]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    p0 = next(model.parameters())
    device_ids = [p0.device] if p0.device.type == "cuda" else None
    with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; the old name keeps init-time sync off
        warnings.simplefilter("ignore", FutureWarning)
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused,
                                                   broadcast_buffers=False)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make ``model``'s BatchNorm statistics those of the global batch (:class:`GlooSyncBatchNorm`,
    superkernel slices included), in place; for models whose gradients :func:`all_reduce_grads`
    averages (the differentiable supernets: Single-Path NAS's latency term uses the weights outside
    ``forward``, which DDP's unused-parameter detection does not allow)."""
    bn_group = dist.new_group(backend="gloo") if dist.get_backend() == "gloo" else None
    convert_sync_batchnorm(model, bn_group)
    _patch_superkernel_bn()
    return model


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every :class:`GlooSyncBatchNorm` in ``module`` by a plain ``nn.BatchNorm2d`` (weights and
    buffers kept), in place: exporters and single-process evaluation see an ordinary network."""
    for name, child in list(module.named_children()):
        if isinstance(child, GlooSyncBatchNorm):
            new = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new = new.to(next(iter([*child.parameters(), *child.buffers()])).device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            revert_sync_batchnorm(child)
    return module


# ============================================================================ torchrun helpers
def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    from hwnas.search.data import dist_info

    return dist_info()


def active() -> bool:
    """Whether a process group of two or more ranks is running."""
    return world()[1] > 1


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the ``torchrun`` process group described by the environment (``WORLD_SIZE`` > 1):
    NCCL when ``device_type`` is ``cuda``, else gloo. Returns True when this call initialised it
    (the caller then calls :func:`shutdown`); False without torchrun or when already initialised."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def shutdown() -> None:
    """Leave the process group (after a barrier, so rank 0 finishes writing first)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """``dist.barrier()`` under a process group of ≥ 2 ranks; nothing otherwise."""
    if active():
        dist.barrier()


def from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value; identity in one process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the ranks, in place (one flat all-reduce; a missing
    gradient counts as zero — ranks draw the same paths, so they miss the same ones)."""
    if not active():
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def any_rank(flag: bool, like: torch.Tensor | None = None) -> bool:
    """True when ``flag`` is true on any rank (a collective: call it on every rank)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=like.device if like is not None else "cpu")
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over the ranks (identity in one process)."""
    if not active():
        return value
    t = value.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def run_dir(path) -> RunDir:
    """The run folder for this rank: a :class:`DistRunDir` under a process group, else a RunDir."""
    return DistRunDir(path) if active() else RunDir(path)


class DistRunDir(RunDir):
    """A :class:`~hwnas.search.base.RunDir` shared by the ranks: rank 0 writes, the others only read;
    checkpoint saves and loads end with a barrier (every rank calls them at the same point), so no
    rank reads a checkpoint that rank 0 is about to replace. Ranks share one file system
    (``torchrun --standalone``: one machine)."""

    def __init__(self, path):
        self.rank = world()[0]
        self.writes = self.rank == 0
        if self.writes:
            super().__init__(path)
        else:
            self.root = Path(path)

    def write_config(self, config):
        if self.writes:
            super().write_config(config)

    def append_history(self, record):
        if self.writes:
            super().append_history(record)

    def history_lines(self) -> int:
        return super().history_lines() if self.writes else 0

    def truncate_history(self, lines: int) -> None:
        if self.writes:
            super().truncate_history(lines)

    def save_checkpoint(self, state):
        if self.writes:
            super().save_checkpoint(state)
        barrier()
        return self.checkpoint

    def load_checkpoint(self):
        barrier()
        ck = super().load_checkpoint()
        barrier()
        return ck

    def write_result(self, result):
        if self.writes:
            super().write_result(result)


def train_supernet_ddp(space, data, *, epochs: int = 1, batch_size: int = 64, steps_per_epoch: int | None = None,
                       lr: float = 0.05, seed: int = 0, out: str | None = None,
                       progress: Callable[[dict[str, Any]], None] | None = None) -> nn.Module:
    """Train a SPOS supernet on this rank (call on every rank of an initialised gloo group).

    ``batch_size`` is the *global* batch (divided over the ranks; each reads its shard). The schedule and checkpoint
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
    per_rank = batch_size // world
    if per_rank * world != batch_size:
        raise ValueError(f"global batch {batch_size} is not divisible by the world size {world}")
    steps = min(data.steps("train", per_rank), steps_per_epoch or 10**9)
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
        for x, y in data.batches("train", per_rank, epoch=epoch, limit=steps, seed=seed):  # this rank's shard
            total += ddp_step(model, opt, x, y, space.sample(rng), clip=5.0)
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
