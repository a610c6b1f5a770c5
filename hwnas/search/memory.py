"""Pre-flight memory check: does a search's training step fit on the device before it starts?

The estimate is *computed*, not measured: the method's supernet is built on PyTorch's ``meta``
device (shapes and dtypes, no storage, no arithmetic) and one training forward of a batch of 2
runs there at the search resolution, while a ``saved_tensors_hooks`` pack hook adds up the bytes of
every tensor autograd keeps for the backward pass: those whose first dimension is the batch are the
activation memory *per image* (divided by 2); the batch-independent part (other saved tensors,
parameters, their gradients, SGD momentum and the architecture optimiser's state) is added once. Which forward is traced follows the method:

* ``fbnet``: the Gumbel-softmax mixture, every candidate of every layer runs (FBNet §3.3);
* ``proxyless``, ``spos`` (and the sample-based methods, which train an SPOS supernet), the final
  training: one path, taken as the widest candidate of every layer (the upper bound over sampled
  paths; ProxylessNAS' architecture step keeps one path's activations plus the gate, §3.2);
* ``singlepath``: the superkernel at its largest kernel and expansion (Stamoulis et al. 2019, §3).

It is an fp32 estimate (an upper bound under bf16/fp16 autocast, where most saved activations
halve) of what autograd saves; it leaves out the allocator's fragmentation and the transient
buffers of single kernels (e.g. cuDNN workspaces), for which :func:`check_memory` keeps a 10 %
margin of the free memory. The free memory is ``torch.cuda.mem_get_info`` on CUDA and psutil's
``available`` RAM on the CPU and on MPS (unified memory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from hwnas.errors import SearchError

#: share of the free memory the estimate may use (the rest is left for fragmentation and workspaces)
HEADROOM = 0.9


class MemoryBudgetError(SearchError):
    """The estimated peak memory of the training step exceeds what the device has free."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak-memory estimate of one training step (bytes).

    Attributes:
        per_image: activations autograd saves per image.
        fixed: batch-independent bytes (parameters, gradients, optimiser state).
        traced: which forward was traced (``"all paths"``, ``"widest path"``, ``"superkernel"``).
    """

    per_image: int
    fixed: int
    traced: str

    def peak(self, batch_size: int) -> int:
        return self.fixed + self.per_image * int(batch_size)

    def max_batch(self, available: int) -> int:
        """The largest batch whose estimated peak is within ``HEADROOM · available`` (0: none)."""
        room = HEADROOM * available - self.fixed
        return max(0, int(room // max(1, self.per_image)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _saved_bytes(fn, batch: int) -> tuple[int, int]:
    """``(batch-sized, other)`` bytes of the tensors autograd saves while ``fn()`` runs (each tensor
    counted once; parameters are not copies and are left out)."""
    seen: dict[int, tuple[bool, int]] = {}

    def pack(t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter):
            seen.setdefault(id(t), (t.dim() > 0 and t.shape[0] == batch, t.numel() * t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return (sum(n for per, n in seen.values() if per), sum(n for per, n in seen.values() if not per))


def _widest_path(net) -> tuple[int, ...]:
    """Per layer the candidate with the most expansion channels (then the largest kernel)."""
    out = []
    for lays in net.slot_layers:
        def size(j: int) -> tuple[int, int]:
            b = lays[j].block
            if b.kind == "skip":
                return (-1, -1)
            return (int(lays[j].mid_channels), int(getattr(b, "kernel", 0) or 0))

        out.append(max(range(len(lays)), key=size))
    return tuple(out)


def estimate_search_memory(space, method: str, *, in_channels: int, resolution: int,
                           weights: str = "shared") -> MemoryEstimate:
    """Estimate the training step's memory of ``method`` on ``space`` (see the module docstring).

    Args:
        space: a layer-wise space at the search resolution/width/classes (``space.slots``).
        method: ``fbnet`` | ``proxyless`` | ``singlepath`` | ``spos`` | a sample-based method
            (``mnasnet``/``evolution``/``random``: its SPOS supernet).
        in_channels, resolution: the input images (NCHW ``(N, in_channels, resolution, resolution)``).
        weights: the supernet's candidate weights (``shared`` | ``independent``).
    """
    from hwnas.nn.supernet import Supernet

    mode = method if method in ("fbnet", "proxyless", "singlepath") else "spos"
    with torch.random.fork_rng():
        net = Supernet(space, mode, weights=weights if mode != "singlepath" else "shared")
    net.to("meta").train()
    if mode == "fbnet":
        traced, choices = "all paths", None
    elif mode == "singlepath":
        traced, choices = "superkernel", None
    else:
        traced, choices = "widest path", _widest_path(net)

    n = 2  # BatchNorm in training needs 2+ values per channel
    x = torch.empty(n, in_channels, resolution, resolution, device="meta")
    y = torch.zeros(n, dtype=torch.long, device="meta")
    batched, other = _saved_bytes(lambda: F.cross_entropy(net(x, choices) if choices is not None else net(x), y), n)
    per_image = batched // n
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    arch = sum(p.numel() * p.element_size() for p in net.arch_parameters())
    fixed = 3 * params + 2 * arch + other  # weights + grads + SGD momentum; Adam's 2 moments of α
    return MemoryEstimate(per_image=int(per_image), fixed=int(fixed), traced=traced)


def available_memory(device: torch.device) -> tuple[int, str]:
    """``(bytes, what)``: free memory of a CUDA device, else the available RAM (psutil)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} ({torch.cuda.get_device_name(device)})"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM" + (" (MPS: unified memory)"
                                                                        if device.type == "mps" else "")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(estimate: MemoryEstimate, batch_size: int, device: torch.device, *, force: bool = False,
                 available: int | None = None, what: str = "") -> dict[str, Any]:
    """Compare the estimated peak at ``batch_size`` with the device's free memory.

    Returns a report (``per_image_mib``, ``peak_gib``, ``available_gib``, ``max_batch``, ``fits``,
    ``forced``) for ``result.json``.

    Raises:
        MemoryBudgetError: it does not fit and ``force`` is false; the message names the largest
            batch that fits.
    """
    if available is None:
        available, where = available_memory(device)
    else:
        where = "available"
    peak = estimate.peak(batch_size)
    max_batch = estimate.max_batch(available)
    fits = peak <= HEADROOM * available
    report = {"per_image_mib": estimate.per_image / 2**20, "fixed_mib": estimate.fixed / 2**20,
              "traced": estimate.traced, "batch_size": int(batch_size), "peak_gib": peak / 2**30,
              "available_gib": available / 2**30, "available_what": where, "max_batch": max_batch,
              "fits": fits, "forced": bool(force and not fits), "how": "computed (meta-device trace, fp32)"}
    if not fits and not force:
        hint = (f"the largest batch that fits is {max_batch}; use --batch-size {max_batch}" if max_batch else
                "not even one image fits; lower --resolution or --width")
        raise MemoryBudgetError(
            f"{what}estimated peak memory {_gib(peak)} at --batch-size {batch_size} "
            f"({estimate.per_image / 2**20:.1f} MiB per image, {estimate.traced}, + {_gib(estimate.fixed)} "
            f"weights/optimiser) exceeds {int(HEADROOM * 100)} % of the {_gib(available)} {where}; {hint}, "
            f"or pass --force to try anyway")
    return report


__all__ = ["MemoryEstimate", "MemoryBudgetError", "estimate_search_memory", "available_memory", "check_memory",
           "HEADROOM"]
