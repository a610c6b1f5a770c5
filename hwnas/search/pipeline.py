"""The whole job behind ``hwnas search``: data → feasibility → search → final training → export → report.

:func:`run_search` takes a :class:`SearchConfig` and writes the run folder (see
:mod:`hwnas.search.base`): ``config.yaml``, ``history.jsonl``, ``checkpoints/``, ``arch.yaml``,
``model.pt``, ``model.tflite``, ``result.json`` and ``plots/*.png``.

Defaults (chosen so the bare ``hwnas search --target pixel`` finishes in ≤ 15 min on 2 CPU cores,
see docs/search.md for the measured time): data ``mnist5k`` at 32×32 (MNIST's 28×28 resized),
space ``mobilenetv2`` (the ProxylessNAS space with its ImageNet strides: a 32×32 input ends at
2×2 in the last stage; ``mobilenetv2-cifar`` is the small-input variant with 4× the compute), width
0.5, method ``proxyless``, 6 search epochs (2 weight-only warm-up), 6 final epochs fine-tuning the
inherited weights, batch 64, one PyTorch thread (on shared 2-core machines PyTorch is 5–20× slower
with 2 threads under load; ``--threads`` changes it). The latency is predicted for the deployed
model: the searched architecture at the data resolution, width and classes.

The space name is taken literally, as everywhere (:func:`hwnas.spaces.resolve_space`): ``mobilenetv2``
keeps the ImageNet skeleton at any resolution, ``mobilenetv2-cifar`` selects the small-input skeleton.

Default latency budget: the predicted latency of MobileNetV2 (the zoo's, at the same width,
resolution, input channels and classes) on the target — the "same latency as MobileNetV2" setting
of the ProxylessNAS/FBNet papers — or, when that lies outside the space's achievable range (a
``-cifar`` skeleton costs far more than the ImageNet-stride MobileNetV2), the middle of the range.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwnas.errors import ConfigError, SearchError

DIFFERENTIABLE = ("fbnet", "proxyless", "singlepath")

#: The default ProxylessNAS objective of ``hwnas search`` (without ``--objective``/``--soft``): the
#: paper's additive form (Cai et al. 2019, eq. 4, ``CE + λ·(E[LAT] − T)/T``) as a hard constraint
#: (no latency pressure below the budget), λ = 1. Why not the reference code's ``mul_log`` (α 0.2,
#: β 0.3): measured on the default run's supernet after warm-up (docs/search.md), its latency
#: gradient on α is 7 % of the CE gradient, which is mostly batch noise; the reference code makes up
#: for that with ~10^5 architecture updates, the 5-minute default run has ~100. With ``add`` at λ = 1
#: the ratio is 0.8, and the expected latency reached the budget before any repair.
PROXYLESS_DEFAULT_OBJECTIVE = {"form": "add", "lam": 1.0, "hard": True}


def config_from_dict(cls, d: dict[str, Any], what: str):
    """Build the config dataclass ``cls`` from a run's saved ``config.yaml`` mapping ``d``.

    Raises ``ConfigError`` naming the unknown keys (a folder written by another hwnas version)."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what} config keys: {', '.join(sorted(unknown))}")
    return cls(**d)


@dataclass
class SearchConfig:
    """Everything ``hwnas search`` can set (the CLI maps its options onto these fields)."""

    target: str = "pixel"
    space: str = "mobilenetv2"
    method: str = "proxyless"
    latency_ms: float | None = None
    data: str = "mnist5k"
    resolution: int = 32
    width: float = 0.5
    epochs: int = 6
    warmup_epochs: int = 2
    steps_per_epoch: int | None = None
    batch_size: int = 64
    final_epochs: int = 6
    final: str = "finetune"            # finetune (inherited weights + BN recalibration) | scratch
    final_lr: float | None = None      # default: 0.02 finetune, 0.05 scratch
    lr: float | None = None            # search weight lr (searcher default)
    arch_lr: float | None = None       # architecture lr (searcher default)
    objective: str | None = None       # proxyless: mul_log | add; sample-based: reward costs (latency,energy)
    hard: bool | None = None           # None: hard for the default proxyless objective, soft otherwise
    quantize: str | None = None        # None (float32) | int8
    seed: int = 0
    threads: int = 1
    workers: int | None = None         # DataLoader worker processes (None: 0 in-memory data, min(4, cores) image folders)
    augment: str = "auto"              # transforms: auto | imagenet | small (hwnas.search.data)
    recipe: str | None = None          # the --recipe preset these values came from (hwnas.search.recipes)
    device: str = "auto"               # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"            # fp32 | bf16 | fp16 (autocast; fp16 with loss scaling on CUDA)
    force: bool = False                # skip the pre-flight memory check
    data_limit: int | None = None
    samples: int = 100                 # sample-based searchers (mnasnet/evolution/random)
    max_seconds: float | None = None
    out: str | None = None
    profile: bool = True               # measure missing op keys first on a device with a local runner
    options: dict[str, Any] = field(default_factory=dict)  # extra searcher options

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchConfig":
        return config_from_dict(cls, d, "search")


def make_space(name: str, *, resolution: int, num_classes: int, in_channels: int, width: float, device=None):
    """:func:`hwnas.spaces.resolve_space` with the data's keyword names (kept for callers)."""
    from hwnas.spaces import resolve_space

    return resolve_space(name, resolution=resolution, width=width, in_channels=in_channels, classes=num_classes,
                         device=device)


def space_bounds(predictor, space, samples: int = 256) -> tuple[tuple[float, float], str]:
    """``((min_ms, max_ms), how)``: exact for layer-wise spaces, sampled for others."""
    import random

    from hwnas.latency.predict import latency_bounds

    if hasattr(space, "slots"):
        return latency_bounds(predictor, space), "exact"
    rng = random.Random(0)
    lats = [predictor.predict(space.decode(space.sample(rng))).latency_ms for _ in range(samples)]
    return (min(lats), max(lats)), f"sampled ({samples} members)"


def reference_arch(space):
    """The zoo MobileNetV2 at the space's width, resolution, input channels and classes (the default budget's
    reference)."""
    from dataclasses import replace

    from hwnas.zoo import zoo_arch

    arch = zoo_arch("mobilenetv2").with_width(space.width_multiplier).with_resolution(space.resolution)
    return replace(arch.with_classes(space.num_classes, space.in_channels), name="mobilenetv2")


def reference_latency(predictor, space, data=None) -> float:
    """Predicted latency of :func:`reference_arch` (``data`` is unused: the space carries its channels and
    classes)."""
    return predictor.predict(reference_arch(space)).latency_ms


def check_energy_objective(objective: str | None, predictor, space, device) -> None:
    """Refuse an ``energy`` cost the target cannot tell apart from latency.

    Raises:
        ConfigError: the objective names energy and the device's energy is unknown, or is its declared
            power model (``energy = active_w × latency``: exactly proportional to latency, so a second
            objective that adds nothing; the message names the power model).
    """
    import random

    names = [p.strip().lower() for p in (objective or "").split(",")]
    if not any(n in ("energy", "energy_mj") for n in names):
        return
    pred = predictor.predict(space.decode(space.sample(random.Random(0))))
    energy = pred.energy
    if energy.value_mj is None:
        raise ConfigError(f"--objective {objective}: target '{device.name}' has no energy (no measured energy in its "
                          f"tables and no power model in devices/{device.name}.yaml); drop 'energy'")
    if energy.declared:
        pm = device.power_model
        note = f" ({pm.note})" if pm is not None and pm.note else ""
        raise ConfigError(f"--objective {objective}: energy on '{device.name}' is its declared power model "
                          f"({energy.source}{note}): energy = power × latency, exactly proportional to latency, so "
                          "it is no second objective; drop 'energy', or profile the device with an energy meter "
                          "(hwnas profile on the device) so that its tables hold measured energy")


def _default_out(cfg: SearchConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.method}-{cfg.target}-{stamp}"


class _Progress:
    """tqdm progress bar fed by searcher events (disabled when stderr is not a terminal)."""

    def __init__(self, total: int, desc: str, enabled: bool | None, unit: str = "step"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None if enabled is None else not enabled,
                        dynamic_ncols=True, leave=True)
        self.quiet = enabled is False
        self.last = 0

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "step":
            n = int(ev.get("step", self.last))
            if n > self.last:
                self.bar.update(n - self.last)
                self.last = n
            post = {"lat": f"{ev.get('expected_latency_ms', 0):.3f}ms"}
            if ev.get("ce") is not None:
                post = {"ce": f"{ev['ce']:.3f}", **post}
            if ev.get("temperature") is not None:
                post["tau"] = f"{ev['temperature']:.2f}"
            self.bar.set_postfix(post, refresh=False)
        elif self.quiet:
            return
        elif ev.get("event") == "eval" and ev.get("accuracy") is not None:
            self.bar.write(f"  epoch {ev.get('epoch', '?')}: derived arch val acc {ev['accuracy']:.4f}, "
                           f"{ev.get('latency_ms', 0):.3f} ms" + (" (repaired to budget)" if ev.get("repaired") else ""))
        elif ev.get("event") in ("resumed", "rollback"):
            self.bar.write(f"  {ev['event']} at step {ev.get('step', '?')}")

    def close(self) -> None:
        self.bar.close()


def run_search(cfg: SearchConfig | None = None, *, resume: str | Path | None = None, progress: bool | None = None,
               echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the ``result.json`` dict.

    Under ``torchrun --nproc_per_node N -m hwnas search ...`` (``WORLD_SIZE`` > 1 in the
    environment) the process group is joined here (NCCL on CUDA, gloo on CPU) and search and final
    training run data-parallel (:mod:`hwnas.search.distributed`); rank 0 writes the run folder and
    returns the result (``world_size`` recorded), the other ranks return ``{"rank": r, ...}``.

    Args:
        cfg: the configuration (ignored when resuming: the run's ``config.yaml`` is used).
        resume: a run folder to continue.
        progress: show progress bars (``None``: when stderr is a terminal).
        echo: where to print status lines (default: nothing).

    Raises:
        SearchError: infeasible budget, stage-wise space with a differentiable method, …
        ConfigError: bad data path, corrupt run folder, changed latency table on resume.
        UnknownNameError: unknown target, space, method or dataset.
    """
    from hwnas.search import distributed as D

    wanted = str(getattr(cfg, "device", None) or "auto")
    import torch

    cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    started = D.init_from_env("cuda" if cuda else "cpu")
    try:
        return _run_search(cfg, resume=resume, progress=progress, echo=echo)
    finally:
        if started:
            D.shutdown()


def _run_search(cfg: SearchConfig | None, *, resume: str | Path | None, progress: bool | None,
                echo: Callable[[str], None] | None) -> dict[str, Any]:
    import torch

    from hwnas.search import distributed as D

    from hwnas.search.base import Budget, RunDir, get_searcher, searcher_names
    from hwnas.search.data import load_data
    from hwnas.search.objective import Objective, check_feasible, log_unit

    rank, world = D.world()
    if rank:  # data-parallel: rank 0 alone prints
        echo, progress = None, False
    say = echo or (lambda s: None)
    t0 = time.perf_counter()
    if resume is not None:
        run = D.run_dir(resume)
        saved = run.read_config()
        cfg = SearchConfig.from_dict(saved["search"])
        cfg.out = str(run.root)
        say(f"resuming {run.root}")
    else:
        cfg = cfg or SearchConfig()
    method = cfg.method.lower()
    if method not in searcher_names():
        from hwnas.errors import UnknownNameError

        raise UnknownNameError("method", cfg.method, searcher_names())
    if cfg.quantize not in (None, "int8", "float16"):
        raise ConfigError(f"--quantize must be int8 or float16, got '{cfg.quantize}'")
    if cfg.final not in ("finetune", "scratch"):
        raise ConfigError(f"--final must be finetune or scratch, got '{cfg.final}'")
    for opt, value, low in (("--epochs", cfg.epochs, 1), ("--warmup-epochs", cfg.warmup_epochs, 0),
                            ("--final-epochs", cfg.final_epochs, 0), ("--batch-size", cfg.batch_size, 1),
                            ("--samples", cfg.samples, 1), ("--resolution", cfg.resolution, 8)):
        if value is not None and int(value) < low:
            raise ConfigError(f"{opt} must be at least {low}, got {value}")
    torch.set_num_threads(max(1, int(cfg.threads)))
    from hwnas.search.train import Precision, resolve_device

    precision = Precision(cfg.precision, resolve_device(cfg.device))  # bad --device/--precision fail here

    # -- target and data (fast) -------------------------------------------------------------
    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import layer_latency_table, load_predictor

    device = get_device(cfg.target)
    wanted = str(getattr(cfg, "device", None) or "auto")
    pin = torch.cuda.is_available() and (wanted == "auto" or wanted.startswith("cuda"))  # page-locked for H2D copies
    data = load_data(cfg.data, resolution=cfg.resolution, seed=cfg.seed, limit=cfg.data_limit, augment=cfg.augment,
                     workers=cfg.workers, pin_memory=pin)
    space = make_space(cfg.space, resolution=data.resolution, num_classes=data.num_classes,
                       in_channels=data.in_channels, width=cfg.width, device=device)
    if space.activation_map:
        say(f"{device.name} does not run " + ", ".join(space.activation_map) + " (op support: " +
            (device.op_support.source if device.op_support else "supported_ops") + "): wherever the space offers it, " +
            ", ".join(f"{v} is used instead of {k}" for k, v in space.activation_map.items()))
    if method in DIFFERENTIABLE and hasattr(space, "relaxed"):
        space = space.relaxed()  # stage-wise space: one decision per layer, depth by skip (hwnas.spaces.mobile)
    if method in DIFFERENTIABLE and not hasattr(space, "slots"):
        raise SearchError(f"--method {method} needs a layer-wise space (mobilenetv2, fbnet and their -cifar "
                          f"variants); space '{space.name}' is stage-wise: use --method mnasnet|evolution|random")
    from hwnas.profile.run import ensure_keys, profile_command, space_request

    # missing op keys: measured first on a device with a local runner, else the command that adds them
    ensure_keys(device, space_request(space, reference=cfg.latency_ms is None),
                command=profile_command(device, space), allow_profile=cfg.profile and world == 1, say=say,
                progress=bool(progress), what=f"space {space.name} at {space.resolution}px",
                why_not="--no-profile was given" if world == 1 else "not under torchrun: profile first")
    predictor = load_predictor(device)
    (lo, hi), bounds_how = space_bounds(predictor, space)
    budget_ms, budget_source = cfg.latency_ms, "--latency-ms"
    if budget_ms is None:
        ref = reference_latency(predictor, space, data)
        if lo <= ref <= hi:
            budget_ms = ref
            budget_source = f"MobileNetV2 x{cfg.width:g} at {space.resolution}px ({ref:.3f} ms)"
        else:  # e.g. a -cifar skeleton, far costlier than the ImageNet-stride MobileNetV2
            budget_ms = (lo + hi) / 2
            budget_source = (f"middle of the space's range (MobileNetV2 x{cfg.width:g} at {space.resolution}px, "
                             f"{ref:.3f} ms, is outside it)")
    check_feasible(budget_ms, (lo, hi), device.name, space.name)
    check_energy_objective(cfg.objective, predictor, space, device)
    table = layer_latency_table(predictor, space) if hasattr(space, "slots") else None
    obj_kwargs: dict[str, Any] = {"unit_ms": log_unit(lo)}
    if cfg.objective and method == "proxyless":
        obj_kwargs["form"] = cfg.objective
    elif method == "proxyless":  # the default search objective (see PROXYLESS_DEFAULT_OBJECTIVE)
        obj_kwargs.update(PROXYLESS_DEFAULT_OBJECTIVE)
    elif cfg.objective and method in DIFFERENTIABLE:
        raise ConfigError(f"--objective applies to proxyless (mul_log|add) and to the sample-based methods "
                          f"(e.g. latency,energy), not to {method}")
    obj_kwargs["hard"] = bool(obj_kwargs.pop("hard", False) if cfg.hard is None else cfg.hard)
    # sample-based methods (mnasnet/rl, evolution, random) rank by MnasNet's reward
    objective = Objective(method if method in DIFFERENTIABLE else "mnasnet", latency_budget_ms=budget_ms, predictor=predictor, table=table, latency_range_ms=(lo, hi),
                          **obj_kwargs)

    warmup = min(cfg.warmup_epochs, max(0, cfg.epochs - 1))
    budget = Budget(epochs=cfg.epochs, warmup_epochs=warmup,
                    steps_per_epoch=cfg.steps_per_epoch, batch_size=cfg.batch_size, samples=cfg.samples,
                    max_seconds=cfg.max_seconds)
    options: dict[str, Any] = {"seed": cfg.seed, "device": str(precision.device), "precision": precision.name,
                               **cfg.options}
    if cfg.objective and method not in DIFFERENTIABLE:
        options["objective"] = cfg.objective
    if cfg.lr is not None:
        options["lr"] = cfg.lr
    if cfg.arch_lr is not None:
        options["arch_lr"] = cfg.arch_lr
    searcher = get_searcher(method, **options)
    searcher.validate_options()  # bad -o keys fail before any run folder exists

    # -- pre-flight memory check (before any run folder exists) ----------------------------------
    memory_report = None
    if hasattr(space, "slots"):
        from hwnas.search.memory import check_memory, estimate_search_memory

        estimate = estimate_search_memory(space, method, in_channels=data.in_channels, resolution=space.resolution,
                                          weights=str(options.get("weights", "shared")))
        memory_report = check_memory(estimate, cfg.batch_size, precision.device, force=cfg.force,
                                     what=f"--method {method} at {space.resolution} px, width {cfg.width:g}: ")

    # -- run folder ------------------------------------------------------------------------------
    if resume is None:
        out = Path(D.from_rank0(str(cfg.out) if cfg.out else str(_default_out(cfg))))  # one folder for all ranks
        run = D.run_dir(out)
        if run.checkpoint.exists() or run.result.exists():
            raise ConfigError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
        D.barrier()  # every rank has checked before rank 0 writes
        cfg.out = str(out)
        from hwnas import __version__

        run.write_config({"search": cfg.to_dict(), "hwnas_version": __version__, "device": device.name,
                          "latency_provenance": predictor.provenance, "space": space.name,
                          "space_spec": {"name": space.name, "resolution": space.resolution,
                                         "width": space.width_multiplier, "in_channels": space.in_channels,
                                         "classes": space.num_classes},
                          "space_size": float(space.size), "latency_range_ms": [lo, hi],
                          "latency_range_how": bounds_how, "latency_budget_ms": budget_ms,
                          "latency_budget_source": budget_source, "objective": objective.to_dict(),
                          "data": data.describe(), "data_mean": data.mean, "data_std": data.std})
    say(f"run folder: {run.root}")
    say(f"target {device.name} ({predictor.provenance.split('(')[0].strip()}); space {space.name} "
        f"({space.size:.3g} members), latency range {lo:.3f}–{hi:.3f} ms, budget {budget_ms:.3f} ms")
    say(f"data {data.describe()}")
    say(f"training on {precision.device} ({precision.to_dict()['device_name']}), precision {precision.name}")
    if method in DIFFERENTIABLE and warmup < cfg.warmup_epochs:
        say(f"note: --warmup-epochs {cfg.warmup_epochs} lowered to {warmup} so that architecture steps run "
            f"in the last of the {cfg.epochs} epochs")

    steps = min(data.steps("train", cfg.batch_size), cfg.steps_per_epoch or 10**9)
    bar = _Progress(budget.epochs * steps if method in DIFFERENTIABLE else budget.samples, f"search ({method})",
                    progress)
    searcher.options["progress"] = bar
    t_search = time.perf_counter()
    try:
        result = searcher.run(space, objective, data, budget, run)
    finally:
        bar.close()
    search_seconds = float(result.extra.get("search_seconds", time.perf_counter() - t_search))

    arch = result.best_arch
    from dataclasses import replace

    arch = replace(arch, name=f"{method}-{device.name}")
    if rank == 0:
        arch.save(run.arch)
    best_eval = next((e for e in result.history if tuple(e.choices) == tuple(result.best_choices)), None)

    # -- final model -----------------------------------------------------------------------------
    from hwnas.nn import build_model, count
    from hwnas.search.base import seed_everything
    from hwnas.search.train import evaluate, recalibrate_bn, train_model, zero_init_residual

    supernet = result.extra.get("supernet")
    seed_everything(cfg.seed + 1)
    if cfg.final == "finetune" and supernet is not None:
        model = supernet.subnet(result.best_choices)
        recalibrate_bn(model, data.batches("train", 64, limit=8, augment=False, seed=cfg.seed, shard=False))
        final_lr = cfg.final_lr or 0.02
    else:
        model = zero_init_residual(build_model(arch, train=True, seed=cfg.seed))
        final_lr = cfg.final_lr or 0.05
    model.arch = arch
    precision.prepare(model)
    inherited_acc, _ = evaluate(model, data.batches("test", 256)) if supernet is not None else (None, None)
    fbar = _Progress(cfg.final_epochs, "final training", progress, unit="epoch")

    def on_epoch(rec: dict[str, Any]) -> None:
        run.append_history({"kind": "final", **rec})
        fbar.bar.update(1)
        fbar.bar.set_postfix({"loss": f"{rec['loss']:.3f}", "val": f"{rec['val_acc']:.4f}"}, refresh=False)

    t_final = time.perf_counter()
    try:
        final_records = train_model(model, data, epochs=cfg.final_epochs, lr=final_lr, batch_size=cfg.batch_size,
                                    seed=cfg.seed + 1, steps_per_epoch=cfg.steps_per_epoch, progress=on_epoch,
                                    precision=precision)
    finally:
        fbar.close()
    final_seconds = time.perf_counter() - t_final
    test_acc, _ = evaluate(model, data.batches("test", 256))
    if rank:  # the other ranks trained the same model; rank 0 writes and exports it
        return {"rank": rank, "world_size": world, "test_accuracy": test_acc}
    model.cpu().to(memory_format=torch.contiguous_format)  # saving and the Keras/TFLite export work on CPU tensors
    import io

    import torch as _torch

    from hwnas.io import atomic_write_bytes

    buf = io.BytesIO()
    _torch.save({"arch": arch.to_compact(), "state_dict": model.state_dict(), "data_mean": data.mean,
                 "data_std": data.std}, buf)
    atomic_write_bytes(run.model_pt, buf.getvalue())

    # -- export ----------------------------------------------------------------------------------
    say("exporting .tflite")
    from hwnas.errors import ExportError

    export_error = None
    try:
        export = export_tflite(arch, model, data, run.model_tflite, quantize=cfg.quantize,
                               log=run.root / "export.log")
    except ExportError as err:  # a failed gate: keep the trained model and the report, then fail
        export_error = str(err)
        export = {"tflite_test_accuracy": None, "parity": None, "quant": None}

    # -- report ----------------------------------------------------------------------------------
    pred = predictor.predict(arch)
    measured = measure_export(device, run.model_tflite, pred.latency_ms, budget_ms, say)
    cost = count(arch)
    labels = [list(slot.candidates) for slot in space.slots] if hasattr(space, "slots") else None
    plots = make_plots(run, budget_ms, result, labels=labels)
    convergence = result.extra.get("convergence") or {}
    result_dict = {
        "target": device.name,
        "method": method,
        "space": space.name,
        "arch": arch.to_compact(),
        "choices": list(result.best_choices),
        "latency_budget_ms": budget_ms,
        "latency_budget_source": budget_source,
        "predicted_latency_ms": pred.latency_ms,
        "predicted_energy_mj": pred.energy_mj,
        "predicted_energy": pred.energy.to_dict(),
        "latency_range_ms": [lo, hi],
        "latency_provenance": predictor.provenance,
        "within_budget": pred.latency_ms <= budget_ms * (1 + 1e-9),
        **measured,
        "params": cost.params,
        "macs": cost.macs,
        "expected_latency_before_repair_ms": convergence.get("expected_latency_before_repair_ms"),
        "op_entropy": convergence.get("op_entropy"),
        "op_entropy_uniform": convergence.get("op_entropy_uniform"),
        "repair_needed": convergence.get("repair_needed"),
        "reached_budget_before_repair": convergence.get("reached_budget_before_repair"),
        "mean_max_probability": convergence.get("mean_max_probability"),
        "search_val_accuracy": None if best_eval is None else best_eval.accuracy,
        "inherited_test_accuracy": inherited_acc,
        "test_accuracy": test_acc,
        "tflite_test_accuracy": export["tflite_test_accuracy"],
        "tflite_parity": export["parity"],
        "tflite_int8": export["quant"],
        "quantize": cfg.quantize,
        "search_seconds": search_seconds,
        "final_train_seconds": final_seconds,
        "total_seconds": time.perf_counter() - t0,
        "final_training": {"mode": cfg.final if supernet is not None else "scratch", "epochs": cfg.final_epochs,
                           "lr": final_lr, "records": final_records},
        "evaluated": len(result.history),
        "pareto": [e.to_dict() for e in result.pareto],
        "seed": cfg.seed,
        "data": data.describe(),
        "resolution": space.resolution,
        "width": cfg.width,
        "threads": cfg.threads,
        "world_size": world,
        "global_batch_size": cfg.batch_size * world,
        **precision.to_dict(),
        "memory_check": memory_report,
        "artifacts": {"run": str(run.root), "config": str(run.config), "history": str(run.history),
                      "checkpoint": str(run.checkpoint), "arch": str(run.arch), "model_pt": str(run.model_pt),
                      "model_tflite": str(run.model_tflite), "result": str(run.result),
                      "plots": [str(p) for p in plots]},
    }
    extra = {k: v for k, v in result.extra.items() if k not in ("supernet",) and _jsonable(v)}
    result_dict["search_extra"] = extra
    result_dict["export_error"] = export_error
    run.write_result(result_dict)
    if export_error is not None:
        raise ExportError(f"{export_error} — no model.tflite written; the trained model and result.json are in "
                          f"{run.root} (re-export with: hwnas export {run.arch} --weights {run.model_pt} "
                          f"--calib-data ... and the gate options of docs/export.md)")
    return result_dict


def measure_export(device, path: Path, predicted_ms: float, budget_ms: float,
                   say: Callable[[str], None]) -> dict[str, Any]:
    """Close the loop: time the exported ``.tflite`` end to end on the target when hwnas can run it
    (:func:`hwnas.profile.run.measurable`: same runner, warm-up and repeats as the target's tables) and
    return :func:`hwnas.profile.run.measurement_report`'s fields (``measured_latency_ms``, its spread,
    ``prediction_error_pct``, ``within_budget_measured``); on other targets the fields are None and
    ``measurement_note`` says that nothing was measured."""
    from hwnas.profile.run import measurable, measure_model, measurement_report

    why = measurable(device, tflite=True)
    if why is not None:
        say(why)
        return measurement_report(device, predicted_ms, None, budget_ms=budget_ms, note=why)
    say(f"measuring {path.name} on {device.name} end to end")
    m = measure_model(device, path=path)
    rep = measurement_report(device, predicted_ms, m, budget_ms=budget_ms)
    say(f"measured {m.median_ms:.3f} ms (p10 {m.p10_ms:.3f}, p90 {m.p90_ms:.3f}); predicted {predicted_ms:.3f} ms "
        f"is {rep['prediction_error_pct']:+.1f} % off")
    return rep


def _jsonable(v: Any) -> bool:
    import json

    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def export_tflite(arch, model, data, path: Path, *, quantize: str | None = None, log: Path | None = None,
                  qat_epochs: int = 0) -> dict[str, Any]:
    """Export ``model`` to ``.tflite`` through :func:`hwnas.export.export` — the same export checks as
    ``hwnas export`` — on the run's own splits: calibration from the train split, the gates on the
    whole test split (already preprocessed as in training).

    Gates (:class:`hwnas.export.checks.Gates` defaults): float32/float16 max abs softmax diff vs
    PyTorch; int8 top-1 agreement with float and accuracy drop. TensorFlow/LiteRT logs go to ``log``.
    Returns ``tflite_test_accuracy``, ``parity`` (dict), ``quant`` (int8), ``ops``, ``bytes``.

    Raises:
        ExportError: a gate failed (the message names it; no ``.tflite`` is written).
    """
    from hwnas.export import checks, export
    from hwnas.export.tflite import log_to

    check_data = checks.bundle_check_data(data, calib_samples=200)
    log_to(log)
    try:
        res = export(arch, path, fmt="tflite", torch_model=model, quantize=quantize, data=check_data, lint="warn",
                     qat_epochs=qat_epochs, eval_samples=len(check_data.eval_x))
    finally:
        log_to(None)
    return {"tflite_test_accuracy": res.parity.get("accuracy"), "parity": res.parity, "quant": res.quant,
            "ops": res.ops, "bytes": res.size_bytes}


def op_label(compact: str) -> str:
    """Short name of a candidate op for plots: kind, kernel, expansion, groups, SE (``ir_k5_e6``,
    ``ir_k3_e1_g2``, ``skip``); stride, channels and activation are the layer's, not the choice's."""
    toks = compact.split("_")
    keep = [toks[0]] + [t for t in toks[1:] if t[:1] in ("k", "e", "g") and t[1:2].isdigit() or t.startswith("se")]
    return "_".join(keep)


def make_plots(run, budget_ms: float | None, result, labels: list[list[str]] | None = None) -> list[Path]:
    """PNG plots: expected latency over steps, per-layer operator probabilities, accuracy vs latency.

    ``labels``: per layer the candidates' compact strings (decision order); the probability plot then
    has one column per candidate op (named by :func:`op_label`), blank where a layer lacks it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hwnas.io import atomic_path

    out: list[Path] = []
    hist = run.read_history()
    steps = [r for r in hist if r.get("kind") == "step" and r.get("expected_latency_ms") is not None]

    def save(fig, name: str) -> None:
        path = run.plots / name
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        out.append(path)

    if steps:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in steps], [r["expected_latency_ms"] for r in steps], label="expected latency")
        if budget_ms:
            ax.axhline(budget_ms, color="r", ls="--", label=f"budget {budget_ms:.3f} ms")
        ax.set_xlabel("step")
        ax.set_ylabel("ms")
        ax.set_title("Expected latency during search")
        ax.legend()
        save(fig, "expected_latency.png")
    probs = result.extra.get("probabilities")
    if probs:
        if labels is None or len(labels) != len(probs):
            labels = [[str(j) for j in range(len(p))] for p in probs]
        names = [[op_label(c) for c in row] for row in labels]
        columns: list[str] = []
        for row in sorted(names, key=len, reverse=True):
            columns += [n for n in row if n not in columns]
        col = {n: k for k, n in enumerate(columns)}
        mat = np.full((len(probs), len(columns)), np.nan)
        for i, (p, row) in enumerate(zip(probs, names)):
            for v, n in zip(p, row):
                mat[i, col[n]] = v
        fig, ax = plt.subplots(figsize=(0.75 * len(columns) + 2.5, 0.3 * len(probs) + 1.8))
        # the colour scale spans the observed range, so near-uniform distributions still show their differences
        lo, hi = float(np.nanmin(mat)), float(np.nanmax(mat))
        im = ax.imshow(mat, aspect="auto", cmap="magma", vmin=lo, vmax=max(hi, lo + 1e-6))
        for i in range(mat.shape[0]):
            for k in range(mat.shape[1]):
                if not np.isnan(mat[i, k]):
                    ax.text(k, i, f"{mat[i, k]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if mat[i, k] < (lo + hi) / 2 else "black")
        ax.set_yticks(range(len(probs)))
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("candidate op")
        ax.set_ylabel("searchable layer")
        ax.set_title(f"Operator probabilities per layer (end of search; scale {lo:.2f}–{hi:.2f})")
        for i, c in enumerate(result.best_choices):
            if c < len(names[i]):
                ax.plot(col[names[i][c]], i, "s", mfc="none", mec="cyan", ms=9, mew=1.2)
        fig.colorbar(im, ax=ax, label="probability")
        save(fig, "op_probabilities.png")
    evals = [e for e in result.history if e.accuracy is not None]
    if evals:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter([e.latency_ms for e in evals], [e.accuracy for e in evals], s=14, label="evaluated")
        front = sorted(result.pareto, key=lambda e: e.latency_ms)
        if front:
            ax.plot([e.latency_ms for e in front], [e.accuracy for e in front], "g-", lw=1, label="Pareto front")
        best = next((e for e in evals if tuple(e.choices) == tuple(result.best_choices)), None)
        if best:
            ax.scatter([best.latency_ms], [best.accuracy], c="r", s=40, label="chosen")
        if budget_ms:
            ax.axvline(budget_ms, color="r", ls="--", lw=1)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("validation accuracy")
        ax.set_title("Accuracy vs latency of evaluated architectures")
        ax.legend(fontsize=8)
        save(fig, "accuracy_vs_latency.png")
    return out


def _measured_summary(res: dict[str, Any]) -> str:
    if res.get("measured_latency_ms") is None:
        return res.get("measurement_note") or "nothing was measured"
    ok = "within" if res.get("within_budget_measured") else "over"
    return (f"{res['measured_latency_ms']:.3f} ms (p10 {res['measured_p10_ms']:.3f}, p90 {res['measured_p90_ms']:.3f}; "
            f"{ok} budget); prediction error {res['prediction_error_pct']:+.1f} %")


def summary_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, value)`` rows of the final summary table."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    a = res["artifacts"]
    return [
        ("target / method / space", f"{res['target']} / {res['method']} / {res['space']}"),
        ("arch", res["arch"]),
        ("predicted latency", f"{res['predicted_latency_ms']:.3f} ms (budget {res['latency_budget_ms']:.3f} ms, "
                              f"space {res['latency_range_ms'][0]:.3f}–{res['latency_range_ms'][1]:.3f} ms)"),
        ("measured latency", _measured_summary(res)),
        ("params / MACs", f"{res['params'] / 1e6:.3f} M / {res['macs'] / 1e6:.2f} M"),
        *([("search convergence", f"expected latency before repair {res['expected_latency_before_repair_ms']:.3f} ms; "
                                  f"mean op entropy {res['op_entropy']:.2f} nats (uniform "
                                  f"{res['op_entropy_uniform']:.2f}); mean max op probability "
                                  f"{res.get('mean_max_probability') or 0:.2f}; repair needed: "
                                  f"{'yes' if res['repair_needed'] else 'no'}")]
          if res.get("expected_latency_before_repair_ms") is not None else []),
        ("device / precision", f"{res.get('device', 'cpu')} ({res.get('device_name', '')}) / "
                               f"{res.get('precision', 'fp32')}"),
        ("test accuracy (PyTorch)", pct(res["test_accuracy"])),
        (f"test accuracy (.tflite{' ' + res['quantize'] if res.get('quantize') else ''})",
         pct(res["tflite_test_accuracy"])),
        ("search / final training", f"{res['search_seconds']:.0f} s / {res['final_train_seconds']:.0f} s "
                                    f"(total {res['total_seconds']:.0f} s)"),
        ("arch.yaml", a["arch"]),
        ("model.tflite", a["model_tflite"]),
        ("result.json", a["result"]),
    ]


__all__ = ["SearchConfig", "run_search", "check_energy_objective", "make_space", "space_bounds", "reference_arch",
           "reference_latency", "export_tflite",
           "make_plots", "summary_rows"]
