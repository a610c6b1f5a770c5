"""Training loops shared by the searchers and the final model: evaluation, BN recalibration,
plain (child) training with checkpoints, finiteness guards.

Conventions: batches come from :meth:`hwnas.search.data.DataBundle.batches` (NCHW float32);
accuracies are fractions in [0, 1]; the weight optimiser is SGD with Nesterov momentum 0.9 and a
cosine schedule over all steps (the recipe of MobileNetV2/ProxylessNAS training, shortened).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import SearchError


class NonFiniteError(SearchError):
    """A loss, weight or architecture parameter became NaN/Inf."""


# ---------------------------------------------------------------------------------------- devices
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``--device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``,
    ``cuda:N``, ``mps`` (or a ``torch.device``, returned as is).

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (naming what it has).
    """
    from hwnas.errors import ConfigError

    if isinstance(name, torch.device):
        return name
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(key)
    except RuntimeError:
        raise ConfigError(f"--device '{name}': expected auto, cpu, cuda, cuda:N or mps") from None
    have = "cpu" + (f", cuda:0..{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "") + (
        ", mps" if torch.backends.mps.is_available() else "")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this PyTorch has no usable CUDA device (available: {have})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) (available: {have})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: MPS is not available here (available: {have})")
    elif dev.type != "cpu":
        raise ConfigError(f"--device '{name}': expected auto, cpu, cuda, cuda:N or mps")
    return dev


def device_name(device: torch.device) -> str:
    """A human name of ``device`` for reports (GPU model for CUDA, the processor for CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return platform.processor() or platform.machine() or "cpu"


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a module with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


class Precision:
    """Mixed precision for training on ``device``: ``fp32`` (off), ``bf16`` (autocast to bfloat16;
    CPU, CUDA and MPS), ``fp16`` (autocast to float16 with a dynamic loss scaler; CUDA only: CPU
    float16 kernels are slow and unscaled fp16 gradients underflow).

    ``with prec.autocast(): ...`` wraps the forward passes and losses; :meth:`scaler` gives a
    ``torch.amp.GradScaler`` that is enabled only for fp16 on CUDA (a no-op pass-through otherwise).
    ``channels_last`` is true where the NHWC layout helps: reduced precision on CUDA (tensor-core
    convolutions); elsewhere NCHW is kept.

    Raises:
        ConfigError: unknown precision, or fp16 on the CPU.
    """

    def __init__(self, name: str, device: torch.device):
        from hwnas.errors import ConfigError

        self.name = (name or "fp32").lower()
        if self.name not in PRECISIONS:
            raise ConfigError(f"--precision '{name}': expected one of {', '.join(PRECISIONS)}")
        if self.name == "fp16" and device.type != "cuda":
            raise ConfigError(f"--precision fp16 needs a CUDA device (loss scaling); on {device.type} use "
                              f"--precision bf16")
        self.device = device
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]
        self.channels_last = device.type == "cuda" and self.name != "fp32"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.name != "fp32")

    def scaler(self) -> "torch.amp.GradScaler":
        return torch.amp.GradScaler("cuda" if self.device.type == "cuda" else "cpu", enabled=self.name == "fp16")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (and memory format); returns it."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device (non-blocking copies; pinned host memory makes them asynchronous)."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def to_dict(self) -> dict[str, Any]:
        return {"device": str(self.device), "device_name": device_name(self.device), "precision": self.name,
                "channels_last": self.channels_last}


def on_model_device(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]):
    """``batches`` moved to ``model``'s device."""
    dev = model_device(model)
    for x, y in batches:
        yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every tensor is free of NaN/Inf."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def model_finite(model: nn.Module) -> bool:
    """True when every parameter and BN statistic of ``model`` is finite."""
    return all_finite(p.detach() for p in model.parameters()) and all_finite(
        b for b in model.buffers() if b.is_floating_point())


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             choices: Sequence[int] | None = None) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` (eval mode) over ``batches``.

    ``choices``: passed to a supernet's ``forward(x, choices)``.
    """
    was = model.training
    model.eval()
    correct = total = 0
    loss = 0.0
    for x, y in on_model_device(model, batches):
        out = model(x, choices) if choices is not None else model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was)
    return (correct / max(1, total), loss / max(1, total))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   choices: Sequence[int] | None = None) -> nn.Module:
    """Re-estimate BatchNorm running statistics as a plain average over ``batches`` (in place).

    The statistics a subnet inherits from a supernet belong to the supernet's mixture of paths
    (once-for-all, Cai et al. 2020 §3.2; SPOS, Guo et al. 2020 §3.2); this resets and re-estimates
    them. For a supernet, ``choices`` selects the path whose BNs are recalibrated. Returns the model
    in eval mode.
    """
    from hwnas.nn.batchnorm import recalibrate_batchnorm

    forward = (lambda x: model(x, choices)) if choices is not None else None
    if recalibrate_batchnorm(model, (x for x, _ in batches), forward=forward) == 0:
        raise SearchError("BatchNorm recalibration needs at least one batch")
    return model


def zero_init_residual(model: nn.Module) -> nn.Module:
    """Zero the last BatchNorm γ of every residual block, so each starts as the identity
    (Goyal et al. 2017, §5.1; torchvision's ``zero_init_residual``): deep MobileNet-style nets then
    train from the first steps instead of diverging for tens of steps. In place; returns the model."""
    for m in model.modules():
        if getattr(m, "has_residual", False) and hasattr(m, "project"):
            nn.init.zeros_(m.project.bn.weight)
        elif getattr(m, "residual", False) and hasattr(m, "bn3"):  # singlepath superkernel
            nn.init.zeros_(m.bn3.weight)
    return model


def weight_optimizer(params, lr: float, weight_decay: float = 4e-5) -> torch.optim.Optimizer:
    """SGD, Nesterov momentum 0.9; no weight decay on BN/bias (1-D) parameters."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0 over ``total_steps`` (per-step schedule)."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_model(model: nn.Module, data, *, epochs: int, lr: float = 0.05, batch_size: int = 64,
                weight_decay: float = 4e-5, label_smoothing: float = 0.1, seed: int = 0,
                steps_per_epoch: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
                max_seconds: float | None = None, precision: Precision | None = None) -> list[dict[str, Any]]:
    """Train a plain model (the final architecture) on ``data.train``; returns per-epoch records.

    ``precision``: device and mixed precision (default: fp32 on the model's device).

    Each record: ``epoch``, ``loss`` (train CE, mean), ``train_acc``, ``val_acc``, ``lr``, ``seconds``.
    With ``epochs == 0`` nothing happens. NaN/Inf: the epoch is retried once from its start with
    half the learning rate; a second failure raises :class:`NonFiniteError`. Under ``torchrun``
    (a process group of ≥ 2 ranks) training is data-parallel: each rank reads its shard with
    ``batch_size`` images per step, DDP averages the gradients, BatchNorm uses the global batch;
    the model is an ordinary module again (plain BatchNorm) when this returns.

    Raises:
        NonFiniteError: the loss stays non-finite after the retry.
    """
    if epochs <= 0:
        return []
    from hwnas.search import distributed as D

    steps = min(data.steps("train", batch_size), steps_per_epoch or 10**9)
    prec = precision or Precision("fp32", model_device(model))
    prec.prepare(model)  # on the device before DDP wraps it
    scaler = prec.scaler()
    net = D.wrap_ddp(model, find_unused=False) if D.active() else model  # converts BN first: optimiser after
    opt = weight_optimizer(model.parameters(), lr, weight_decay)
    sched = cosine_schedule(opt, epochs * steps, warmup_steps=min(steps, 20) if lr >= 0.05 else 0)
    records = []
    t0 = time.perf_counter()
    retried = False
    epoch = 0
    while epoch < epochs:
        snapshot = ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict(), sched.state_dict())
        model.train()
        tot_loss = correct = seen = 0
        ok = True
        for x, y in data.batches("train", batch_size, epoch=epoch, limit=steps, seed=seed):
            x, y = prec.batch(x, y)
            with prec.autocast():
                out = net(x)
                loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            if not torch.isfinite(D.mean_over_ranks(loss)):
                ok = False
                break
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            tot_loss += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
        if not ok or not model_finite(model):
            if retried:
                raise NonFiniteError(f"final training diverged (NaN/Inf) in epoch {epoch + 1} even after halving "
                                     f"the learning rate; try a lower --lr")
            retried = True
            model.load_state_dict(snapshot[0])
            opt.load_state_dict(snapshot[1])
            sched.load_state_dict(snapshot[2])
            for g in opt.param_groups:
                g["lr"] *= 0.5
            sched.base_lrs = [b * 0.5 for b in sched.base_lrs]
            continue
        val_acc, _ = evaluate(model, data.batches("val", 256))
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(1, seen), "train_acc": correct / max(1, seen),
               "val_acc": val_acc, "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        records.append(rec)
        if progress:
            progress(rec)
        epoch += 1
        if max_seconds is not None and D.any_rank(time.perf_counter() - t0 > max_seconds):
            break
    if D.active():
        D.revert_sync_batchnorm(model)
    model.eval()
    return records


__all__ = ["resolve_device", "device_name", "model_device", "Precision", "PRECISIONS", "on_model_device",
           "zero_init_residual", "evaluate", "recalibrate_bn", "train_model", "weight_optimizer", "cosine_schedule", "all_finite",
           "model_finite", "NonFiniteError"]
