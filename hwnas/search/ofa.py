"""Once-for-all: train one elastic supernet, then specialise it for many devices and latency budgets
without retraining (Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020).

**Training** (:func:`train_ofa`, ``hwnas ofa train``). The elastic supernet of
:mod:`hwnas.nn.elastic` (kernel, expansion, depth, resolution) is trained with the *sandwich rule
and in-place distillation* instead of OFA's progressive shrinking: every step runs the largest
subnet on the ground truth (label smoothing 0.1), then the smallest and ``random_subnets`` uniformly
drawn subnets, each distilled from the largest subnet's soft predictions on the same images
(cross-entropy to the detached softmax); the gradients of all of them are summed before one SGD
step (BigNAS, Yu et al. ECCV 2020, §3.1 "sandwich rule" and "inplace distillation"; introduced for
slimmable networks by Yu & Huang, ICCV 2019, §3.2–3.3). Why not progressive shrinking (OFA §3.2,
Fig. 4): its four phases (full net, elastic kernel, depth, expansion), each with its own epochs and
learning rate, do not fit the few CPU epochs of a quick run; the sandwich rule trains every
dimension from the first step with one schedule. Resolution: the largest subnet sees the data's
resolution, every other subnet its own (the batch resized bilinearly with antialiasing), as OFA
samples a resolution per batch. Optimiser and schedule: :func:`hwnas.search.train.weight_optimizer`
(SGD Nesterov, no decay on BN/bias) with the cosine schedule over all steps. Under ``torchrun`` the
ranks draw the same subnets (same seed) and average their summed gradients
(:func:`hwnas.search.distributed.all_reduce_grads`); BatchNorm statistics stay per rank (every
subnet is BN-recalibrated before it is used). The run folder holds ``config.yaml``,
``history.jsonl`` (one record per epoch), ``checkpoints/last.pt`` (written after every epoch: the
same command resumes), ``supernet.pt`` and ``result.json``.

**Specialisation** (:func:`specialize`, ``hwnas ofa specialize``), OFA §3.3:

1. *Accuracy predictor.* ``samples`` subnets are drawn uniformly, extracted as plain networks,
   BN-recalibrated on train batches (OFA §3.2; :func:`hwnas.search.train.recalibrate_bn`) and scored
   on the validation split at their resolution; a small MLP (scikit-learn ``MLPRegressor``, two hidden
   layers of 128, ReLU, L2 penalty by cross-validation, clipped to the measured range) maps OFA's one-hot encoding (kernel and expansion per active layer,
   resolution) to accuracy. It is scored first on held-out subnets (a quarter of the samples:
   Spearman rank correlation and mean absolute error), then refitted on all. OFA's predictor is a
   3-layer MLP of 400 units trained on 16K subnets; the samples are kept in
   ``ofa/accuracy_samples.jsonl`` and reused by later calls.
2. *Evolution under each device's latency predictor.* For each ``(device, budget)``: regularized
   evolution (:class:`hwnas.search.evolution.EvolutionStrategy`) over the subnets with the bounded
   constrained sampler (:class:`hwnas.search.sampling.ConstrainedSampler`, latency from
   :func:`hwnas.latency.predict.load_predictor` for that device) and the predicted accuracy as
   fitness. Deviation: OFA runs a generational GA (population 100, 25 % parents, mutation probability
   0.1, crossover) for 500 generations; here aging evolution with one-decision mutation, the
   searcher hwnas already has. Ties in predicted accuracy go to the subnet using more of the budget.
3. *A plain subnet.* The best predicted member within the budget is extracted with its inherited
   weights (:meth:`hwnas.nn.elastic.ElasticSupernet.subnet`), BN-recalibrated, evaluated on the
   validation and test splits at its resolution, saved (``arch.yaml``, ``model.pt`` loadable by
   ``hwnas export``) and exported to ``.tflite`` through the export-check pipeline
   (:func:`hwnas.search.pipeline.export_tflite`). No retraining.

Everything lands in ``RUN/specialized/<device>-<budget>ms/`` and ``RUN/specialize.json`` (per
device a Pareto front of predicted accuracy vs predicted latency over the evaluated subnets, and the
chosen subnets).
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from hwnas.errors import ConfigError, SearchError

#: ``--quick``: the settings of the acceptance run (train + specialise within 30 CPU-minutes)
QUICK = {"epochs": 3, "steps_per_epoch": 25}
#: options that may change when a run is resumed (they do not change what is computed)
RESUME_FREE = ("out", "threads", "workers", "device", "precision")


@dataclass
class OFAConfig:
    """Everything ``hwnas ofa train`` can set."""

    space: str = "mobilenetv3"
    data: str = "mnist5k"
    resolution: int = 32                 # the largest resolution (the data's)
    resolutions: list[int] | None = None  # default: resolution − 8, − 4, + 0 (OFA: 128..224 in steps of 4)
    width: float = 0.5
    epochs: int = 6
    steps_per_epoch: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    random_subnets: int = 2              # sandwich rule: random subnets per step besides largest and smallest
    kernel_transform: bool = True        # OFA's kernel transformation matrices
    seed: int = 0
    threads: int = 1
    workers: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    data_limit: int | None = None
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OFAConfig":
        from hwnas.search.pipeline import config_from_dict

        return config_from_dict(cls, d, "once-for-all")

    def all_resolutions(self) -> list[int]:
        if self.resolutions:
            return sorted({int(r) for r in self.resolutions} | {int(self.resolution)})
        return sorted({max(8, self.resolution - 8), max(8, self.resolution - 4), self.resolution})


def default_out(cfg: OFAConfig) -> Path:
    """``runs/ofa-<space>-<data>``: fixed, so that rerunning the same command resumes."""
    data = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.data).strip("-")
    return Path("runs") / f"ofa-{cfg.space}-{data}"


def resize(x, resolution: int):
    """An NCHW batch at ``resolution`` × ``resolution`` (bilinear, antialiased; unchanged when it already is)."""
    import torch.nn.functional as F

    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=x.device.type != "meta")


def _build(cfg: OFAConfig, data):
    from hwnas.nn.elastic import ElasticSpace, ElasticSupernet
    from hwnas.spaces import resolve_space

    space = resolve_space(cfg.space, resolution=data.resolution, width=cfg.width, in_channels=data.in_channels,
                          classes=data.num_classes)
    es = ElasticSpace(space, cfg.all_resolutions())
    return es, ElasticSupernet(es, transform=cfg.kernel_transform)


def _check(cfg: OFAConfig) -> None:
    for opt, value, low in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1),
                            ("--resolution", cfg.resolution, 8), ("--random-subnets", cfg.random_subnets, 0),
                            ("--steps-per-epoch", cfg.steps_per_epoch, 1)):
        if value is not None and int(value) < low:
            raise ConfigError(f"{opt} must be at least {low}, got {value}")
    if cfg.resolutions and (min(cfg.resolutions) < 8 or max(cfg.resolutions) > cfg.resolution):
        raise ConfigError(f"--resolutions must lie in 8..{cfg.resolution} (--resolution is the largest), "
                          f"got {cfg.resolutions}")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be positive, got {cfg.lr}")


# ============================================================================ training
def train_ofa(cfg: OFAConfig, *, echo: Callable[[str], None] | None = None,
              stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train (or resume) an elastic supernet; returns ``result.json``'s dict (see the module docstring).

    A run folder that already holds this run resumes from its last epoch (only ``out``, ``threads``,
    ``workers``, ``device``, ``precision`` may differ); a finished run is returned as is.
    ``stop_after_epochs``: stop after that many epochs in total (to test resuming).

    Raises:
        ConfigError: bad options, or the folder holds a run with other settings (the message names them).
        SearchError: a space without an elastic supernet (see :class:`hwnas.nn.elastic.ElasticSpace`).
        NonFiniteError: the loss became NaN/Inf.
    """
    import torch

    from hwnas.search import distributed as D

    wanted = str(cfg.device or "auto")
    cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    started = D.init_from_env("cuda" if cuda else "cpu")
    try:
        return _train(cfg, echo=echo, stop_after_epochs=stop_after_epochs)
    finally:
        if started:
            D.shutdown()


def _train(cfg: OFAConfig, *, echo, stop_after_epochs) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from hwnas import __version__
    from hwnas.io import atomic_write_bytes
    from hwnas.search import distributed as D
    from hwnas.search.base import rng_state, seed_everything, set_rng_state
    from hwnas.search.data import load_data
    from hwnas.search.train import (NonFiniteError, Precision, cosine_schedule, resolve_device, weight_optimizer)

    rank, world = D.world()
    say = (echo or (lambda s: None)) if rank == 0 else (lambda s: None)
    _check(cfg)
    torch.set_num_threads(max(1, int(cfg.threads)))
    precision = Precision(cfg.precision, resolve_device(cfg.device))
    out = Path(D.from_rank0(str(cfg.out or default_out(cfg))))
    cfg.out = str(out)
    if (out / "config.yaml").exists():
        saved = D.run_dir(out).read_config()
        if "ofa" not in saved:
            raise ConfigError(f"{out} holds another kind of run (no 'ofa' section in config.yaml); choose another --out")
        old = OFAConfig.from_dict(saved["ofa"]).to_dict()
        diff = [k for k, v in cfg.to_dict().items() if k not in RESUME_FREE and old.get(k) != v]
        if diff:
            raise ConfigError(f"{out} holds a once-for-all run with other settings (" +
                              ", ".join(f"{k}: {old.get(k)!r} there, {cfg.to_dict()[k]!r} now" for k in diff) +
                              "); rerun with the same options to resume it, or choose another --out")
    run = D.run_dir(out)
    supernet_path = out / "supernet.pt"
    if run.result.exists() and supernet_path.exists():
        say(f"{out}: already trained (remove the folder to train again)")
        return json.loads(run.result.read_text())

    seed_everything(cfg.seed)
    pin = torch.cuda.is_available() and precision.device.type == "cuda"
    data = load_data(cfg.data, resolution=cfg.resolution, seed=cfg.seed, limit=cfg.data_limit,
                     workers=cfg.workers, pin_memory=pin)
    es, net = _build(cfg, data)
    precision.prepare(net)
    steps = min(data.steps("train", cfg.batch_size), cfg.steps_per_epoch or 10 ** 9)
    opt = weight_optimizer(net.parameters(), cfg.lr, cfg.weight_decay)
    sched = cosine_schedule(opt, cfg.epochs * steps, warmup_steps=min(steps, 20))
    scaler = precision.scaler()
    if not run.config.exists():
        run.write_config({"ofa": cfg.to_dict(), "hwnas_version": __version__, "space": es.base.name,
                          "elastic": {"kernels": list(es.kernels), "expansions": list(es.expansions),
                                      "depths": [list(x) for x in zip(es.min_depths, es.stage_depths)],
                                      "resolutions": list(es.resolutions), "subnets": float(es.size)},
                          "rule": "sandwich rule + in-place distillation (BigNAS, Yu et al. 2020, §3.1)",
                          "data": data.describe(), "data_mean": data.mean, "data_std": data.std})
    start = 0
    ck = run.load_checkpoint()
    if ck is not None:
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        run.truncate_history(int(ck["history_lines"]))
        start = int(ck["epoch"])
        say(f"resuming {out} after epoch {start}")
    say(f"run folder: {out}")
    say(f"space {es.base.name}: {es.size:.3g} subnets (kernels {es.kernels}, expansions {es.expansions}, depths "
        f"{list(zip(es.min_depths, es.stage_depths))}, resolutions {list(es.resolutions)}); data {data.describe()}")
    say(f"training on {precision.device}, precision {precision.name}; sandwich rule: largest + smallest + "
        f"{cfg.random_subnets} random subnets per step, {steps} steps per epoch")
    largest, smallest = es.largest(), es.smallest()
    t0 = time.perf_counter()
    seconds_before = float(ck.get("seconds", 0.0)) if ck else 0.0
    for epoch in range(start, cfg.epochs):
        rng = random.Random(cfg.seed * 1_000_003 + epoch)
        net.train()
        tot = {"ce": 0.0, "kd": 0.0, "n": 0}
        t_epoch = time.perf_counter()
        for x, y in data.batches("train", cfg.batch_size, epoch=epoch, limit=steps, seed=cfg.seed):
            x, y = precision.batch(x, y)
            members = [largest, smallest] + [es.sample(rng) for _ in range(cfg.random_subnets)]
            opt.zero_grad(set_to_none=True)
            with precision.autocast():
                logits = net(x, largest)
                ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            scaler.scale(ce).backward()
            soft = logits.detach().float().softmax(1)
            kd_sum = 0.0
            for c in members[1:]:
                with precision.autocast():
                    o = net(resize(x, es.config(c).resolution), c)
                    kd = -(soft * F.log_softmax(o.float(), 1)).sum(1).mean()  # in-place distillation
                scaler.scale(kd).backward()
                kd_sum += float(kd.detach())
            if not (torch.isfinite(D.mean_over_ranks(ce.detach())) and all(
                    p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())):
                raise NonFiniteError(f"once-for-all training diverged (NaN/Inf) in epoch {epoch + 1}; "
                                     f"try a lower --lr than {cfg.lr}")
            D.all_reduce_grads(list(net.parameters()))
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            tot["ce"] += float(ce.detach())
            tot["kd"] += kd_sum / max(1, len(members) - 1)
            tot["n"] += 1
        accs = {}
        for label, c in (("largest", largest), ("smallest", smallest)):
            r = es.config(c).resolution
            accs[label] = subnet_accuracy(net, es, c, _resized(data, r), split="val", bn_batches=4)[0]
        rec = {"kind": "epoch", "epoch": epoch + 1, "ce_largest": tot["ce"] / max(1, tot["n"]),
               "kd_others": tot["kd"] / max(1, tot["n"]), "val_acc_largest": accs["largest"],
               "val_acc_smallest": accs["smallest"], "lr": opt.param_groups[0]["lr"],
               "epoch_seconds": time.perf_counter() - t_epoch}
        run.append_history(rec)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        run.save_checkpoint({"state_dict": state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": epoch + 1, "rng": rng_state(),
                             "history_lines": run.history_lines(),
                             "seconds": seconds_before + time.perf_counter() - t0})
        say(f"epoch {epoch + 1}/{cfg.epochs}: CE(largest) {rec['ce_largest']:.3f}, KD(others) {rec['kd_others']:.3f}, "
            f"val acc largest {accs['largest']:.4f} / smallest {accs['smallest']:.4f} "
            f"({rec['epoch_seconds']:.0f} s)")
        if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs and epoch + 1 < cfg.epochs:
            return {"stopped_after_epoch": epoch + 1, "run": str(out)}
    seconds = seconds_before + time.perf_counter() - t0
    history = [r for r in run.read_history() if r.get("kind") == "epoch"]
    if rank == 0:
        buf = io.BytesIO()
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "ofa": cfg.to_dict(),
                    "data_mean": data.mean, "data_std": data.std}, buf)
        atomic_write_bytes(supernet_path, buf.getvalue())
    result = {"run": str(out), "space": es.base.name, "subnets": float(es.size), "resolutions": list(es.resolutions),
              "epochs": cfg.epochs, "steps_per_epoch": steps, "train_seconds": seconds,
              "val_acc_largest": history[-1]["val_acc_largest"] if history else None,
              "val_acc_smallest": history[-1]["val_acc_smallest"] if history else None,
              "history": history, "world_size": world, **precision.to_dict(),
              "rule": "sandwich rule + in-place distillation (BigNAS §3.1)",
              "artifacts": {"supernet": str(supernet_path), "config": str(run.config), "history": str(run.history),
                            "checkpoint": str(run.checkpoint), "result": str(run.result)}}
    run.write_result(result)
    if rank:  # torchrun: rank 0 alone reports
        return {"rank": rank, "world_size": world, "run": str(out)}
    return result


class _resized:
    """A data bundle whose batches are resized to ``resolution`` (monitoring during training)."""

    def __init__(self, data, resolution: int):
        self.data, self.resolution = data, resolution

    def batches(self, split, batch_size, **kw):
        for x, y in self.data.batches(split, batch_size, **kw):
            yield resize(x, self.resolution), y


def subnet_accuracy(net, es, choices, data, *, split: str = "val", bn_batches: int = 8,
                    batch_size: int = 64, seed: int = 0):
    """``(accuracy, subnet)``: the member extracted as a plain network, its BatchNorm statistics
    re-estimated on ``bn_batches`` unaugmented train batches (OFA §3.2), evaluated on ``split``.
    The supernet's training mode is restored."""
    from hwnas.search.train import evaluate, recalibrate_bn

    was = net.training
    sub = net.subnet(choices)
    net.train(was)
    recalibrate_bn(sub, data.batches("train", batch_size, limit=bn_batches, augment=False, seed=seed, shard=False))
    acc, _ = evaluate(sub, data.batches(split, 256))
    return acc, sub


# ============================================================================ specialisation
def load_run(path: str | Path):
    """``(cfg, config dict, supernet state)`` of a finished ``hwnas ofa train`` run folder.

    Raises:
        ConfigError: no such folder, not a once-for-all run, or training not finished (the message says
            how to finish it).
    """
    import torch

    from hwnas.io import load_structured

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such run folder (expected the --out folder of `hwnas ofa train`)")
    cfg_path = root / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{root}: not a run folder (no config.yaml); expected the --out folder of `hwnas ofa train`")
    saved = load_structured(cfg_path)
    if not isinstance(saved, dict) or "ofa" not in saved:
        raise ConfigError(f"{cfg_path}: not a once-for-all run (no 'ofa' section); `hwnas ofa specialize` needs the "
                          f"folder of `hwnas ofa train`")
    cfg = OFAConfig.from_dict(saved["ofa"])
    sp = root / "supernet.pt"
    if not sp.exists():
        raise ConfigError(f"{root}: training is not finished (no supernet.pt); rerun `hwnas ofa train` with the same "
                          f"options and --out {root} to resume it")
    try:
        state = torch.load(sp, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a torn file
        raise ConfigError(f"{sp}: unreadable ({type(err).__name__}: {err})") from None
    return cfg, saved, state


@dataclass
class Target:
    """One ``--target D --latency-ms T`` pair."""

    device: str
    latency_ms: float


def parse_targets(devices: Sequence[str], budgets: Sequence[float]) -> list[Target]:
    """Pair ``--target`` and ``--latency-ms`` in order.

    Raises:
        ConfigError: no target, unequal counts, or a non-positive budget.
    """
    if not devices:
        raise ConfigError("give at least one --target DEVICE --latency-ms MS pair")
    if len(devices) != len(budgets):
        raise ConfigError(f"every --target needs its --latency-ms (in the same order): got {len(devices)} --target and "
                          f"{len(budgets)} --latency-ms")
    for d, t in zip(devices, budgets):
        if not t > 0:
            raise ConfigError(f"--latency-ms for {d} must be positive, got {t}")
    return [Target(d, float(t)) for d, t in zip(devices, budgets)]


class AccuracyPredictor:
    """OFA's accuracy predictor (§3.3): an MLP from the one-hot subnet encoding
    (:meth:`hwnas.nn.elastic.ElasticSpace.features`) to validation accuracy (scikit-learn
    ``MLPRegressor``, hidden layers (128, 128), ReLU, Adam, centred targets; the L2 penalty chosen among
    :attr:`ALPHAS` by 4-fold cross-validated MAE on the training subnets).

    Deviation from OFA (3 × 400 units on 16K subnets): a few dozen samples here, so the penalty is chosen by
    cross-validation and predictions are clipped to the measured accuracy range (an MLP with L2 1e-3
    fitted on 45 subnets predicted 142 % for members far from its samples, and the evolution chased
    that)."""

    def __init__(self, es, seed: int = 0):
        self.es = es
        self.seed = seed
        self.model = None
        self.mean = 0.0
        self.alpha = None

    #: L2 penalties tried; the one with the lowest 4-fold cross-validated MAE on the training subnets is used
    ALPHAS = (0.01, 0.1, 1.0, 10.0)

    def _make(self, alpha: float):
        from sklearn.neural_network import MLPRegressor

        return MLPRegressor(hidden_layer_sizes=(128, 128), alpha=alpha, learning_rate_init=1e-3, max_iter=1000,
                            random_state=self.seed, tol=1e-7, n_iter_no_change=50)

    def fit(self, choices: Sequence[Sequence[int]], accs: Sequence[float]) -> "AccuracyPredictor":
        import warnings

        import numpy as np
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import GridSearchCV, KFold
        from threadpoolctl import threadpool_limits

        x = np.array([self.es.features(c) for c in choices], dtype=np.float64)
        y = np.array(accs, dtype=np.float64)
        self.mean = float(y.mean())
        self.range = (float(y.min()), float(y.max()))
        # a few dozen samples: Adam stops at max_iter, as intended; one BLAS thread (a multi-threaded BLAS
        # on tiny matrices was 10x slower on the shared 2-core machine)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            grid = GridSearchCV(self._make(self.ALPHAS[0]), {"alpha": list(self.ALPHAS)},
                                scoring="neg_mean_absolute_error",
                                cv=KFold(min(4, len(y)), shuffle=True, random_state=self.seed))
            grid.fit(x, y - self.mean)
        self.alpha = float(grid.best_params_["alpha"])
        self.model = grid.best_estimator_
        return self

    def predict(self, choices: Sequence[Sequence[int]]) -> list[float]:
        import numpy as np

        from threadpoolctl import threadpool_limits

        x = np.array([self.es.features(c) for c in choices], dtype=np.float64)
        with threadpool_limits(1):
            raw = np.atleast_1d(self.model.predict(x)) + self.mean
        # never beyond the measured range: with a few dozen samples an MLP extrapolates to > 100 %, and the
        # evolution would chase that extrapolation instead of the measured accuracies
        return [float(v) for v in np.clip(raw, *self.range)]

    def held_out_report(self, choices, accs, fraction: float = 0.25) -> dict[str, Any]:
        """Fit on the first ``1 − fraction`` of the samples, score on the rest: Spearman ρ, MAE (points)."""
        from scipy.stats import spearmanr

        n_test = max(2, int(round(len(accs) * fraction)))
        tr_c, te_c = list(choices[:-n_test]), list(choices[-n_test:])
        tr_a, te_a = list(accs[:-n_test]), list(accs[-n_test:])
        fitted = AccuracyPredictor(self.es, self.seed).fit(tr_c, tr_a)
        pred = fitted.predict(te_c)
        rho = spearmanr(pred, te_a).statistic
        mae = sum(abs(p - a) for p, a in zip(pred, te_a)) / len(te_a)
        return {"train_subnets": len(tr_a), "held_out_subnets": len(te_a),
                "spearman": None if rho != rho else float(rho), "mae_points": 100 * mae, "alpha": fitted.alpha,
                "held_out_accuracy_range": [min(te_a), max(te_a)]}


class SubnetLatency:
    """Predicted latency (ms) of the subnets of an :class:`~hwnas.nn.elastic.ElasticSpace` on one device,
    from the predictor's per-layer table at each resolution
    (:func:`hwnas.latency.predict.layer_latency_table`): ``fixed + Σ active layers``, equal to
    ``predictor.predict(es.arch(c)).latency_ms`` (a layer past its stage's depth is ``skip``, 0 ms) at a
    table look-up per layer instead of a decode and a prediction.

    Attributes:
        bounds: exact ``(min, max)`` over all subnets (per stage the best depth prefix, per layer the
            cheapest/dearest kernel × expansion, per resolution).
    """

    def __init__(self, predictor, es):
        from hwnas.latency.predict import layer_latency_table

        self.es = es
        self.tables = {r: layer_latency_table(predictor, es.space_at(r)) for r in es.resolutions}
        lo, hi = [], []
        for r, table in self.tables.items():
            rows = [[v for j, v in enumerate(row) if j != es.skip_index[i]] for i, row in enumerate(table.per_layer)]
            mins, maxs = table.fixed_ms, table.fixed_ms
            i = 0
            for s, n in enumerate(es.stage_depths):
                stage_min = [sum(min(rows[i + li]) for li in range(d)) for d in range(es.min_depths[s], n + 1)]
                stage_max = [sum(max(rows[i + li]) for li in range(d)) for d in range(es.min_depths[s], n + 1)]
                mins += min(stage_min)
                maxs += max(stage_max)
                i += n
            lo.append(mins)
            hi.append(maxs)
        self.bounds = (min(lo), max(hi))

    def __call__(self, choices) -> float:
        return self.tables[self.es.config(choices).resolution].latency(self.es.base_choices(choices))


def _slug(value: float) -> str:
    return f"{value:g}".replace(".", "p")


def specialize(run_path: str | Path, targets: Sequence[Target], *, samples: int = 60, evaluations: int = 300,
               population: int = 32, sample_size: int = 8, bn_batches: int = 8, fallback: bool = False,
               quantize: str | None = None, export: bool = True, seed: int = 0,
               echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Specialise a trained supernet for each target (see the module docstring); returns the summary
    (also written to ``RUN/specialize.json``).

    Args:
        run_path: the folder of a finished ``hwnas ofa train``.
        targets: ``(device, latency budget in ms)`` pairs; the same device may appear with several budgets.
        samples: subnets measured for the accuracy predictor (a quarter is held out for its score).
        evaluations: predicted-accuracy evaluations of the evolution per target.
        population, sample_size: aging evolution's population and tournament size.
        bn_batches: train batches (of 64) re-estimating BatchNorm statistics per subnet.
        fallback: price op keys a device's tables lack by the nearest key scaled by MACs (reported per
            target as ``latency_fallback_share``).
        quantize: ``None`` (float32), ``int8`` or ``float16`` for the ``.tflite``.
        export: write the ``.tflite`` (through the export checks).

    Raises:
        ConfigError: a bad run folder or option. UnknownNameError: an unknown device.
        SearchError: a budget below the smallest subnet's predicted latency on its device.
        MissingKeysError: a device's tables lack op keys of the space (and ``fallback`` is off).
    """
    import torch

    from hwnas.errors import HwnasError
    from hwnas.io import atomic_write_bytes, atomic_write_json
    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import load_predictor
    from hwnas.nn import count
    from hwnas.search.base import Evaluated, pareto_front, seed_everything
    from hwnas.search.data import load_data
    from hwnas.search.evolution import EvolutionStrategy
    from hwnas.search.sampling import ConstrainedSampler
    from hwnas.search.train import evaluate

    say = echo or (lambda s: None)
    if samples < 8:
        raise ConfigError(f"--samples must be at least 8 (a quarter is held out to score the predictor), got {samples}")
    if evaluations < 1 or population < 1 or sample_size < 1 or bn_batches < 1:
        raise ConfigError("--evaluations, --population and --bn-batches must be at least 1")
    if quantize not in (None, "int8", "float16"):
        raise ConfigError(f"--quantize must be int8 or float16, got '{quantize}'")
    root = Path(run_path)
    cfg, saved, state = load_run(root)
    targets = list(targets)
    devices = {t.device: get_device(t.device) for t in targets}  # unknown device: fails before any work
    t0 = time.perf_counter()
    seed_everything(seed)
    torch.set_num_threads(max(1, int(cfg.threads)))
    bundles: dict[int, Any] = {}

    def data_at(r: int):
        if r not in bundles:
            bundles[r] = load_data(cfg.data, resolution=r, seed=cfg.seed, limit=cfg.data_limit, workers=cfg.workers)
        return bundles[r]

    data = data_at(cfg.resolution)
    es, net = _build(cfg, data)
    net.load_state_dict(state["state_dict"])
    net.eval()

    # -- latency per device, and budgets against the smallest subnet ----------------------------------
    predictors = {name: load_predictor(dev, fallback=fallback) for name, dev in devices.items()}
    latency: dict[str, SubnetLatency] = {}
    for name, dev in devices.items():
        try:
            latency[name] = SubnetLatency(predictors[name], es)
        except HwnasError as err:
            if not fallback and "not in any latency table" in str(err):
                raise type(err)(f"{err} — profile or import tables for {dev.name}, or pass --fallback to price missing "
                                f"keys by the nearest key scaled by MACs (reported)") from None
            raise
    for t in targets:
        lo, hi = latency[t.device].bounds
        if t.latency_ms < lo:
            raise SearchError(f"--latency-ms {t.latency_ms:g} for {devices[t.device].name} is below the smallest "
                              f"subnet's predicted latency ({lo:.4g} ms; the largest: {hi:.4g} ms)")

    # -- accuracy predictor ----------------------------------------------------------------------------
    ofa_dir = root / "ofa"
    ofa_dir.mkdir(exist_ok=True)
    samples_path = ofa_dir / "accuracy_samples.jsonl"
    have: list[dict[str, Any]] = []
    if samples_path.exists():
        for line in samples_path.read_text().splitlines():
            try:
                rec = json.loads(line)
                es.check(rec["choices"])
                have.append(rec)
            except (json.JSONDecodeError, KeyError, SearchError):
                break
    rng = random.Random(cfg.seed + 7)
    draws = [es.sample(rng) for _ in range(max(samples, len(have)))]
    t_acc = time.perf_counter()
    if len(have) < samples:
        say(f"measuring {samples - len(have)} subnets for the accuracy predictor (BN recalibration + validation)")
    with open(samples_path, "a", encoding="utf-8") as fh:
        for c in draws[len(have):samples]:
            r = es.config(c).resolution
            acc, _ = subnet_accuracy(net, es, c, data_at(r), split="val", bn_batches=bn_batches, seed=cfg.seed)
            rec = {"choices": list(c), "resolution": r, "val_acc": acc}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            have.append(rec)
    used = have[:samples]
    acc_seconds = time.perf_counter() - t_acc
    choices = [tuple(r["choices"]) for r in used]
    accs = [float(r["val_acc"]) for r in used]
    predictor = AccuracyPredictor(es, seed)
    report = predictor.held_out_report(choices, accs)
    predictor.fit(choices, accs)


    # -- per target: evolution, extraction, evaluation, export -----------------------------------------
    results = []
    fronts: dict[str, list[dict[str, Any]]] = {}
    evaluated_by_device: dict[str, list[Evaluated]] = {}
    for ti, t in enumerate(targets):
        dev = devices[t.device]
        t_search = time.perf_counter()
        srng = random.Random(seed * 7919 + ti)

        lat = latency[t.device]
        sampler = ConstrainedSampler(es, lat, t.latency_ms, bounds=lat.bounds)
        strategy = EvolutionStrategy(es, sampler, srng, population=population, sample_size=sample_size)
        seen: dict[tuple[int, ...], float] = {}
        best, best_acc, best_fit = None, float("-inf"), float("-inf")
        n_eval = 0
        while n_eval < evaluations:
            batch = strategy.ask(min(8, evaluations - n_eval))
            preds = predictor.predict(batch)
            told = []
            for c, p in zip(batch, preds):
                c = tuple(c)
                seen[c] = p
                # ties in predicted accuracy (e.g. a predictor clipped at its measured range) go to the subnet
                # that uses more of the budget: fitness = accuracy + 1e-6 · latency / budget
                fitness = p + 1e-6 * lat(c) / t.latency_ms
                told.append((Evaluated(c, es.describe(c), p, lat(c), None, 0, 0, n_eval), fitness))
                if fitness > best_fit and lat(c) <= t.latency_ms:
                    best, best_acc, best_fit = c, p, fitness
                n_eval += 1
            strategy.tell(told)
        ev = [Evaluated(c, es.describe(c), p, lat(c), None, 0, 0, 0) for c, p in seen.items()]
        evaluated_by_device.setdefault(t.device, []).extend(ev)
        search_seconds = time.perf_counter() - t_search
        if best is None:  # unreachable: the sampler only proposes members within the budget
            raise SearchError(f"no subnet within {t.latency_ms:g} ms on {dev.name}")
        # extract, recalibrate, evaluate
        cfg_best = es.config(best)
        r = cfg_best.resolution
        d_r = data_at(r)
        val_acc, sub = subnet_accuracy(net, es, best, d_r, split="val", bn_batches=max(bn_batches, 16), seed=cfg.seed)
        test_acc, _ = evaluate(sub, d_r.batches("test", 256))
        name = f"ofa-{dev.name}-{_slug(t.latency_ms)}ms"
        arch = replace(sub.arch, name=name)
        sub.arch = arch
        folder = root / "specialized" / f"{dev.name}-{_slug(t.latency_ms)}ms"
        folder.mkdir(parents=True, exist_ok=True)
        arch.save(folder / "arch.yaml")
        sub.cpu()
        buf = io.BytesIO()
        torch.save({"arch": arch.to_compact(), "state_dict": sub.state_dict(), "data_mean": d_r.mean,
                    "data_std": d_r.std}, buf)
        atomic_write_bytes(folder / "model.pt", buf.getvalue())
        exported = {"tflite_test_accuracy": None, "parity": None, "quant": None}
        export_error = None
        if export:
            from hwnas.errors import ExportError
            from hwnas.search.pipeline import export_tflite

            say(f"{dev.name} ≤ {t.latency_ms:g} ms: exporting {folder / 'model.tflite'}")
            try:
                exported = export_tflite(arch, sub, d_r, folder / "model.tflite", quantize=quantize,
                                         log=folder / "export.log")
            except ExportError as err:
                export_error = str(err)
        pred = predictors[t.device].predict(arch)  # the full prediction (per-op sources, fallback share)
        cost = count(arch)
        res = {"target": dev.name, "latency_budget_ms": t.latency_ms, "predicted_latency_ms": pred.latency_ms,
               "latency_fallback_share": pred.fallback_share, "latency_provenance": predictors[t.device].provenance,
               "subnet": es.describe(best), "choices": list(best), "resolution": r, "arch": arch.to_compact(),
               "predicted_accuracy": best_acc, "val_accuracy": val_acc, "test_accuracy": test_acc,
               "tflite_test_accuracy": exported.get("tflite_test_accuracy"), "export_error": export_error,
               "params": cost.params, "macs": cost.macs, "evaluations": n_eval,
               "search_seconds": search_seconds,
               "artifacts": {"folder": str(folder), "arch": str(folder / "arch.yaml"),
                             "model_pt": str(folder / "model.pt"),
                             "model_tflite": str(folder / "model.tflite") if export and not export_error else None}}
        from hwnas.io import atomic_write_json as _w

        _w(folder / "result.json", res)
        results.append(res)
        say(f"{dev.name} ≤ {t.latency_ms:g} ms: {es.describe(best)}, predicted {pred.latency_ms:.4g} ms, "
            f"test accuracy {test_acc:.4f}")
    for name, ev in evaluated_by_device.items():
        front = sorted(pareto_front(ev), key=lambda e: e.latency_ms)
        if len(front) > 12:  # evenly spaced along the front
            idx = sorted({round(i * (len(front) - 1) / 11) for i in range(12)})
            front = [front[i] for i in idx]
        fronts[devices[name].name] = [{"predicted_latency_ms": e.latency_ms, "predicted_accuracy": e.accuracy,
                                       "subnet": es.describe(e.choices), "choices": list(e.choices)} for e in front]
    summary = {"run": str(root), "space": es.base.name, "accuracy_predictor": {**report, "samples": len(used),
                                                                               "measure_seconds": acc_seconds},
               "targets": results, "pareto": fronts, "fallback": fallback, "total_seconds": time.perf_counter() - t0}
    atomic_write_json(root / "specialize.json", summary)
    return summary


__all__ = ["OFAConfig", "QUICK", "train_ofa", "specialize", "parse_targets", "Target", "AccuracyPredictor",
           "load_run", "subnet_accuracy", "default_out", "resize", "SubnetLatency"]
