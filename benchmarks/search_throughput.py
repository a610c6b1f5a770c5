"""Search throughput at full resolution: the data loader, a plain net and every supernet mode.

Prints one JSON object with, on the device present (``--device cpu`` here; ``--device cuda`` on a
GPU machine):

* ``loader``: images/s of the ImageFolder loader alone (JPEG decode + RandomResizedCrop + flip +
  normalise at ``--resolution``), with 0 and ``--workers`` worker processes;
* ``memory_vs_dataset_size``: peak RSS while streaming one epoch of two ImageFolders of different
  sizes, in a fresh process each (its own peak plus the largest loader worker's peak: Linux's
  ``RUSAGE_CHILDREN`` reports the largest child) — it must not grow with the dataset;
* ``train_step``: images/s and peak memory per image of one training step (forward, backward,
  optimizer) of a plain net (the space's largest member, every layer k7_e6) and of each supernet
  mode (fbnet all paths, proxyless one path + its arch step's two, singlepath superkernels, spos one
  path), each measured in a fresh process so its peak is its own (CUDA: ``max_memory_allocated``;
  CPU: peak RSS above the process's RSS before the first step);
* the goals of issue 9: loader faster than the plain step with ``--workers 2``, a ProxylessNAS step
  (weight step plus its share of the architecture steps, ``amortised_step_s``) ≤ 2× the plain step,
  RSS flat in the dataset size.

Synthetic JPEGs (smooth random colour fields, 500×375 like ImageNet's typical size) are written to
a temporary folder; nothing is downloaded. Figures taken on a shared machine are load-dependent:
the JSON carries ``os.getloadavg()`` at the start and the end.

    python benchmarks/search_throughput.py [--device cpu] [--resolution 224] [--batch 4] [--width 0.5]
        [--steps 3] [--workers 2] [--sizes 200,800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    """Peak RSS of this process plus the largest waited-for child's peak, MiB (Linux: ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    """``n`` synthetic 500×375 JPEGs in ``classes`` class folders (cached by size)."""
    import numpy as np
    from PIL import Image

    root = root / f"folder{n}"
    if root.exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # upsampled: a smooth, compressible image
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(d / f"{i}.jpg", quality=90)
    return root


def loader_rate(root: Path, args, workers: int) -> dict:
    from hwnas.search.data import load_data

    data = load_data(f"imagefolder:{root}", resolution=args.resolution, workers=workers, val_fraction=0.02,
                     test_fraction=0.02)
    bs = args.loader_batch
    it = data.batches("train", bs, epoch=0)
    next(it)  # start-up (workers, first batches) excluded
    t = time.perf_counter()
    n = 0
    for x, _ in it:
        n += len(x)
    dt = time.perf_counter() - t
    data.close()
    return {"workers": workers, "images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 1),
            "batch": bs, "shape": list(x.shape), "dtype": str(x.dtype)} if n else {"workers": workers, "images": 0}


def _child_rss(args) -> None:
    """(child) stream one epoch of the folder; print the peak RSS of this process + its workers."""
    import torch

    from hwnas.search.data import load_data

    torch.set_num_threads(1)
    data = load_data(f"imagefolder:{args.child_rss}", resolution=args.resolution, workers=args.workers,
                     val_fraction=0.02, test_fraction=0.02)
    n = sum(len(y) for _, y in data.batches("train", args.loader_batch, epoch=0))
    data.close()  # join the workers so RUSAGE_CHILDREN covers them
    import gc

    gc.collect()
    print(json.dumps({"images": n, "peak_rss_mib": round(_rss_mib(), 1)}))


def _child_step(args) -> None:
    """(child) time ``--steps`` train steps of one mode; print images/s and peak memory per image."""
    import torch
    import torch.nn.functional as F

    from hwnas.nn import build_model
    from hwnas.nn.supernet import Supernet
    from hwnas.search.pipeline import make_space
    from hwnas.search.train import weight_optimizer

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    space = make_space(args.space, resolution=args.resolution, num_classes=1000, in_channels=3, width=args.width)
    mode = args.child_step
    torch.manual_seed(0)
    if mode == "plain":
        model = build_model(space.decode(_largest(space)), train=True, seed=0)
    else:
        model = Supernet(space, mode)
    model = model.to(dev).train()
    params = model.weight_parameters() if hasattr(model, "weight_parameters") else list(model.parameters())
    opt = weight_optimizer(params, 0.01)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=1e-3) if getattr(model, "arch_parameters", None) and \
        model.arch_parameters() else None
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=dev)
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    import random

    rng = random.Random(0)

    def step() -> None:
        out = model(x, space.sample(rng)) if mode == "spos" else model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def arch_step() -> None:
        with model.arch_step():
            loss = F.cross_entropy(model(x), y)
            a_opt.zero_grad(set_to_none=True)
            loss.backward()
            a_opt.step()
        model.after_arch_step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base = _current_rss_mib()
    step()  # warm-up
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = time.perf_counter() - t
    res = {"mode": mode, "images_per_s": round(args.steps * args.batch / dt, 2),
           "step_s": round(dt / args.steps, 4)}
    if a_opt is not None:
        arch_step()
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            arch_step()
        sync()
        res["arch_step_s"] = round((time.perf_counter() - t) / args.steps, 4)
    if dev.type == "cuda":
        res["peak_mib_per_image"] = round(torch.cuda.max_memory_allocated() / 2**20 / args.batch, 1)
        res["peak_measure"] = "torch.cuda.max_memory_allocated / batch"
    else:
        res["peak_mib_per_image"] = round((_rss_mib() - base) / args.batch, 1)
        res["peak_measure"] = "(peak RSS - RSS before the first step) / batch"
    res["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
    print(json.dumps(res))


def _largest(space) -> tuple[int, ...]:
    """The member with the most MACs in every layer (MACs are additive over layers)."""
    from hwnas.nn.count import count

    choices = [0] * len(space.decisions)
    for i, n in enumerate(len(d.options) for d in space.decisions):
        def macs(j, i=i):
            c = list(choices)
            c[i] = j
            return count(space.decode(tuple(c))).macs
        choices[i] = max(range(n), key=macs)
    return tuple(choices)


def _run_child(args, flag: str, value: str) -> dict:
    cmd = [sys.executable, __file__, flag, value, "--device", args.device, "--resolution", str(args.resolution),
           "--batch", str(args.batch), "--width", str(args.width), "--steps", str(args.steps), "--workers",
           str(args.workers), "--space", args.space, "--threads", str(args.threads), "--loader-batch",
           str(args.loader_batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=4, help="train-step batch (per process)")
    p.add_argument("--loader-batch", type=int, default=32)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--space", default="mobilenetv2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sizes", default="200,800", help="two ImageFolder sizes for the memory check")
    p.add_argument("--modes", default="plain,proxyless,spos,singlepath,fbnet")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--child-rss", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-step", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        return _child_rss(args)
    if args.child_step:
        return _child_step(args)

    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="hwnas-throughput-"))
    folders = {n: make_folder(tmp, n) for n in sizes}
    big = folders[max(sizes)]
    loader = [loader_rate(big, args, 0), loader_rate(big, args, args.workers)]
    memory = [{"dataset_images": n, **_run_child(args, "--child-rss", str(folders[n]))} for n in sizes]
    steps = [_run_child(args, "--child-step", m) for m in args.modes.split(",")]
    by_mode = {s.get("mode"): s for s in steps}
    plain = by_mode.get("plain", {}).get("images_per_s")
    prox = by_mode.get("proxyless", {}).get("step_s")
    if prox is not None and by_mode["proxyless"].get("arch_step_s") is not None:
        # a search step as the default run takes it: every weight step, plus an architecture step every
        # `arch_every` weight steps (ProxylessSearcher's default)
        from hwnas.search.differentiable import ProxylessSearcher

        every = ProxylessSearcher.defaults["arch_every"]
        prox = prox + by_mode["proxyless"]["arch_step_s"] / every
        by_mode["proxyless"]["amortised_step_s"] = round(prox, 4)
        by_mode["proxyless"]["amortised_over"] = f"weight step + arch step / {every}"
    goals = {
        "loader_not_bottleneck": None if plain is None else loader[1].get("images_per_s", 0) > plain,
        "proxyless_step_le_2x_plain": None if prox is None or "plain" not in by_mode
        else prox <= 2 * by_mode["plain"]["step_s"],
        "rss_flat_in_dataset_size": None if any("error" in m for m in memory) else
        memory[-1]["peak_rss_mib"] <= 1.1 * memory[0]["peak_rss_mib"],
    }
    out = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(0),
        "host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "threads": args.threads, "resolution": args.resolution,
        "space": args.space, "width": args.width, "train_batch": args.batch,
        "loader": loader, "memory_vs_dataset_size": memory, "train_step": steps, "goals": goals,
        "loadavg_start": [round(v, 2) for v in load0], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
