"""Evaluators and the shared loop of the sample-based searchers (RL, evolution, random).

An *evaluator* turns a member of a space into an :class:`~hwnas.search.base.Evaluated`
(accuracy, latency, energy, params, MACs). Two kinds:

* :class:`SPOSEvaluator` — weight sharing, Single Path One-Shot style (Guo et al. 2020, §3): a
  supernet is trained once with *uniform* single-path sampling (every step draws one member
  uniformly and trains only its path), then a candidate's accuracy is the accuracy of its path in
  the shared weights on a few validation batches, after recomputing BatchNorm statistics on train
  batches (SPOS §3.3). MnasNet (Tan et al. 2019, §5) instead trained every child for 5 epochs on
  ImageNet; weight sharing is what makes an RL/evolution search fit on a CPU.
* :class:`hwnas.search.tabular.TabularEvaluator` — accuracy and latency from a table.

Latency comes from the target's predictor (``objective.predictor``), energy from the same
prediction, params/MACs from :func:`hwnas.nn.count`.

:class:`SampleSearcher` is the loop every sample-based searcher shares — same evaluator, same
budget accounting, same logging: a searcher is a *strategy* with ``ask(n)`` (propose ``n``
members) and ``tell(results)`` (learn from ``(Evaluated, reward)`` pairs). The budget
(``budget.samples``) counts *distinct* architectures evaluated — what costs an evaluation. A repeat
proposal is served from a cache, costs nothing, is still logged (``"repeat": true``) and told to the
strategy; proposals are capped at ``max_proposals`` (default 20 × the budget) so a collapsed policy
cannot loop forever. ``count_repeats=True`` counts every proposal instead. Each evaluated
architecture is appended to ``history.jsonl`` (``"kind": "eval"``) and a
checkpoint (strategy state, RNG, history length) is written after every round, so a killed run
resumes where it stopped and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from hwnas.errors import SearchError
from hwnas.search.base import Budget, Evaluated, RunDir, SearchResult, Searcher, pareto_front
from hwnas.search.sampling import DEFAULT_MAX_REJECTIONS, ConstrainedSampler

Choices = tuple[int, ...]
RewardFn = Callable[[Evaluated], float]


# ============================================================================ evaluator interface
class Evaluator:
    """Interface: ``evaluate(choices, step) -> Evaluated`` and a cheap ``latency(choices)`` (ms).

    ``evaluate_many`` evaluates a batch (serially here; :class:`hwnas.search.distributed.
    ParallelEvaluator` spreads it over worker processes). ``latency_bounds()`` is the space's
    achievable ``(min, max)`` latency in ms, or ``None`` when unknown.
    """

    cheap = False

    def evaluate(self, choices: Sequence[int], step: int = 0) -> Evaluated:
        raise NotImplementedError

    def evaluate_many(self, batch: Sequence[Sequence[int]], start_step: int = 0) -> list[Evaluated]:
        return [self.evaluate(c, start_step + i) for i, c in enumerate(batch)]

    def latency(self, choices: Sequence[int]) -> float:
        raise NotImplementedError

    def latency_bounds(self) -> tuple[float, float] | None:
        return None


class CachedEvaluator(Evaluator):
    """Wraps an evaluator; a repeated member is served from the cache (its ``step`` updated).

    Repeats still count as queries in :class:`SampleSearcher` — the cache saves time, not budget.
    """

    def __init__(self, inner: Evaluator):
        self.inner = inner
        self.cheap = getattr(inner, "cheap", False)
        self.cache: dict[Choices, Evaluated] = {}

    def evaluate(self, choices: Sequence[int], step: int = 0) -> Evaluated:
        return self.evaluate_many([choices], step)[0]

    def evaluate_many(self, batch: Sequence[Sequence[int]], start_step: int = 0) -> list[Evaluated]:
        batch = [tuple(int(x) for x in c) for c in batch]
        todo = list(dict.fromkeys(c for c in batch if c not in self.cache))
        if todo:
            for c, e in zip(todo, self.inner.evaluate_many(todo, start_step)):
                self.cache[c] = e
        return [replace(self.cache[c], step=start_step + i) for i, c in enumerate(batch)]

    def latency(self, choices: Sequence[int]) -> float:
        return self.inner.latency(choices)

    def latency_bounds(self):
        return self.inner.latency_bounds()


# ============================================================================ SPOS evaluator
class SPOSEvaluator(Evaluator):
    """Accuracy of a member's single path in a uniformly trained weight-sharing supernet.

    Args:
        space: a layer-wise space (``mobilenetv2``, ``fbnet`` and ``-cifar`` variants).
        data: a :class:`hwnas.search.data.DataBundle` (``batches(split, batch_size, ...)``).
        predictor: ``predict(arch) -> Prediction`` (latency ms, energy mJ) on the target.
        budget: :class:`Budget` — ``epochs``/``steps_per_epoch``/``batch_size`` size the supernet
            training.
        eval_batches: validation batches (of ``budget.batch_size``) scoring each candidate (default:
            ``budget.eval_batches``; ``None`` there: the whole validation split). The binomial standard error of a candidate's
            accuracy, ``sqrt(acc·(1 − acc)/n)``, is kept per candidate (:attr:`last_se`) and summarised
            by :meth:`scoring`; with 4 batches of 64 (the former fixed setting) it is ≈ 2.5 points at
            80 % accuracy, larger than the spread between candidates measured on the default run
            (docs/search.md), so candidates were ranked on noise.
        bn_batches: train batches (of ``budget.batch_size``) used to recompute BatchNorm statistics
            per candidate (SPOS §3.3; default 8).
        lr: SGD (Nesterov) learning rate of the supernet training, cosine-annealed.
        seed: seeds path sampling, weight init and batch order.
        measure: optional ``arch -> latency_ms`` measured on the device (``--measure``) used instead
            of the predictor for the reported latency (the predictor still drives constrained sampling).

    The supernet training checkpoints after every epoch to ``checkpoints/supernet.pt`` of the run
    folder, so a resumed search neither retrains nor changes it.
    """

    def __init__(self, space, data, predictor, budget: Budget | None = None, *, bn_batches: int = 8,
                 eval_batches: int | None = None, lr: float = 0.05, seed: int = 0,
                 measure: Callable[[Any], float] | None = None, progress: Callable[[dict], None] | None = None,
                 table=None, precision=None):
        if not hasattr(space, "slots"):
            raise SearchError(f"space '{space.name}' is stage-wise and has no weight-sharing supernet; "
                              "a TrainEvaluator (short training of each child) is used for it")
        self.space = space
        self.data = data
        self.predictor = predictor
        self.budget = budget or Budget()
        self.bn_batches = int(bn_batches)
        if self.bn_batches < 1 or (eval_batches is not None and int(eval_batches) < 1) or (
                self.budget.eval_batches is not None and int(self.budget.eval_batches) < 1):
            raise SearchError(f"SPOS scoring needs bn_batches ≥ 1 and eval_batches ≥ 1 (or none = the whole "
                              f"validation split); got bn_batches={bn_batches}, eval_batches={eval_batches}")
        eval_batches = self.budget.eval_batches if eval_batches is None else eval_batches
        self.eval_batches = None if eval_batches is None else int(eval_batches)
        self.precision = precision
        self.last_se: float | None = None
        self._scores: list[tuple[float, float, int]] = []  # (accuracy, standard error, images) per candidate
        self.lr = float(lr)
        self.seed = int(seed)
        self.measure = measure
        self.progress = progress
        self.table = table
        self.supernet = None
        self._lat_cache: dict[Choices, Any] = {}

    # ---------------------------------------------------------------- latency
    def _prediction(self, choices: Choices):
        choices = tuple(choices)
        if choices not in self._lat_cache:
            self._lat_cache[choices] = self.predictor.predict(self.space.decode(choices))
        return self._lat_cache[choices]

    def latency(self, choices: Sequence[int]) -> float:
        """Predicted latency (ms): from the per-layer table when given (exactly the predictor's
        value, without decoding), else from the predictor."""
        if self.table is not None:
            return float(self.table.latency(choices))
        return float(self._prediction(tuple(choices)).latency_ms)

    def latency_bounds(self) -> tuple[float, float] | None:
        if self.table is not None:
            t = self.table
            return (t.fixed_ms + sum(min(r) for r in t.per_layer), t.fixed_ms + sum(max(r) for r in t.per_layer))
        from hwnas.latency.predict import latency_bounds

        return tuple(float(x) for x in latency_bounds(self.predictor, self.space))

    # ---------------------------------------------------------------- supernet
    def build(self):
        import torch

        from hwnas.nn.supernet import Supernet

        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.supernet = Supernet(self.space, mode="spos")
        if self.precision is not None:
            self.precision.prepare(self.supernet)
        return self.supernet

    def train_supernet(self, run: RunDir | None = None) -> dict:
        """Train the supernet with uniform single-path sampling (SPOS §3.2), resuming from ``run``.

        Returns figures: ``supernet_steps``, ``supernet_loss`` (last epoch's mean CE), ``supernet_seconds``.
        """
        import torch
        import torch.nn.functional as F

        from hwnas.search.train import cosine_schedule, weight_optimizer

        from hwnas.search import distributed as D
        from hwnas.search.train import Precision, model_device

        if self.supernet is None:
            self.build()
        model = self.supernet
        prec = self.precision or Precision("fp32", model_device(model))
        scaler = prec.scaler()
        # under torchrun: data-parallel (DDP, global-batch BatchNorm); every rank draws the same paths
        net = D.wrap_ddp(model) if D.active() else model
        epochs = max(1, int(self.budget.epochs))
        steps = min(self.data.steps("train", self.budget.batch_size), self.budget.steps_per_epoch or 10**9)
        opt = weight_optimizer(model.parameters(), self.lr)
        sched = cosine_schedule(opt, epochs * steps)
        path = run.checkpoints / "supernet.pt" if run is not None else None
        start, figures = 0, {"supernet_steps": 0, "supernet_loss": None, "supernet_seconds": 0.0}
        if path is not None and path.exists():
            ck = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            start, figures = int(ck["epoch"]), dict(ck["figures"])
        t0 = time.time() - figures["supernet_seconds"]
        for epoch in range(start, epochs):
            model.train()
            rng = random.Random(f"{self.seed}-spos-{epoch}")  # per epoch: resumable
            total, n = 0.0, 0
            for x, y in self.data.batches("train", self.budget.batch_size, epoch=epoch, limit=steps, seed=self.seed):
                x, y = prec.batch(x, y)
                with prec.autocast():
                    loss = F.cross_entropy(net(x, self.space.sample(rng)), y).float()
                if not torch.isfinite(D.mean_over_ranks(loss)):
                    raise SearchError(f"SPOS supernet training diverged in epoch {epoch + 1} (loss {loss.item()}); "
                                      "try a lower --lr")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += float(loss.item())
                n += 1
                figures["supernet_steps"] += 1
                if self.progress is not None:
                    self.progress({"event": "supernet", "epoch": epoch, "step": figures["supernet_steps"],
                                   "ce": float(loss.item())})
            figures["supernet_loss"] = total / max(1, n)
            figures["supernet_seconds"] = time.time() - t0
            if path is not None and D.world()[0] == 0:
                _save_torch(path, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                   "epoch": epoch + 1, "figures": figures})
        if D.active():
            D.revert_sync_batchnorm(model)  # candidates are scored by each rank alone (same batches, same result)
            D.barrier()
        model.eval()
        return figures

    # ---------------------------------------------------------------- evaluation
    def accuracy(self, choices: Choices) -> float:
        """Validation accuracy in [0, 1] of ``choices``'s path after BN recalibration (SPOS §3.3).

        The supernet's own BatchNorm statistics are restored afterwards. Sets :attr:`last_se`, the
        binomial standard error of the returned accuracy.
        """
        import torch

        from hwnas.search.train import evaluate, recalibrate_bn

        model = self.supernet
        if model is None:
            raise SearchError("SPOSEvaluator: train_supernet() must run before evaluation")
        saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
        with torch.no_grad():
            recalibrate_bn(model, self.data.batches("train", self.budget.batch_size, limit=self.bn_batches,
                                                    augment=False, seed=self.seed, shard=False), choices)
            acc, _ = evaluate(model, self.data.batches("val", self.budget.batch_size, limit=self.eval_batches,
                                                       shard=False), choices)
        model.load_state_dict(saved, strict=False)
        n = self.val_images()
        self.last_se = math.sqrt(max(acc * (1 - acc), 0.0) / max(1, n))
        self._scores.append((float(acc), self.last_se, n))
        return float(acc)

    def val_images(self) -> int:
        """Validation images that score one candidate."""
        total = len(self.data.val)
        if self.eval_batches is None:
            return total
        return min(total, self.eval_batches * self.budget.batch_size)

    def scoring(self) -> dict[str, Any]:
        """How precise the ranking was: ``val_images``, ``bn_batches``, ``accuracy_se`` (median binomial
        standard error of a candidate's accuracy), ``accuracy_std`` (standard deviation of the
        accuracies of the scored candidates: the differences being ranked) and ``se_below_spread``."""
        import statistics

        accs = [a for a, _, _ in self._scores]
        ses = [e for _, e, _ in self._scores]
        spread = statistics.pstdev(accs) if len(accs) > 1 else None
        se = statistics.median(ses) if ses else None
        return {"val_images": self.val_images(), "bn_batches": self.bn_batches,
                "eval_batches": self.eval_batches, "candidates_scored": len(accs), "accuracy_se": se,
                "accuracy_std": spread, "se_below_spread": None if se is None or spread is None else se < spread}

    def evaluate(self, choices: Sequence[int], step: int = 0) -> Evaluated:
        from hwnas.nn import count

        choices = self.space.check(choices)
        arch = self.space.decode(choices)
        pred = self._prediction(choices)
        latency = float(self.measure(arch)) if self.measure is not None else float(pred.latency_ms)
        cost = count(arch)
        energy = getattr(pred, "energy_mj", None)
        return Evaluated(choices=choices, arch_compact=arch.to_compact(), accuracy=self.accuracy(choices),
                         latency_ms=latency, energy_mj=None if energy is None else float(energy),
                         params=int(cost.params), macs=int(cost.macs), step=int(step))

    def __getstate__(self):  # worker processes get weights, not caches or callbacks
        state = dict(self.__dict__)
        state["_lat_cache"] = {}
        state["progress"] = None
        return state


class TrainEvaluator(SPOSEvaluator):
    """For spaces without a supernet (stage-wise: ``mnasnet``, ``efficientnet``): each child is
    trained from scratch for ``child_steps`` SGD steps and scored on ``budget.eval_batches`` val
    batches — MnasNet's per-child training (5 ImageNet epochs in the paper), scaled down."""

    def __init__(self, space, data, predictor, budget: Budget | None = None, *, child_steps: int = 30,
                 lr: float = 0.05, seed: int = 0, measure: Callable[[Any], float] | None = None):
        self.space, self.data, self.predictor = space, data, predictor
        self.budget = budget or Budget()
        self.child_steps, self.lr, self.seed, self.measure = int(child_steps), float(lr), int(seed), measure
        self.progress = None
        self.table = None
        self.supernet = None
        self._lat_cache = {}

    def latency_bounds(self):
        return None  # stage-wise: the exact range is not enumerable; the sampler reports what it saw

    def train_supernet(self, run: RunDir | None = None) -> dict:
        return {}

    def accuracy(self, choices: Choices) -> float:
        import torch
        import torch.nn.functional as F

        from hwnas.nn import build_model
        from hwnas.search.train import Precision, cosine_schedule, evaluate, weight_optimizer, zero_init_residual

        seed = hash((self.seed,) + tuple(choices)) % 2**31
        model = zero_init_residual(build_model(self.space.decode(choices), train=True, seed=seed))
        prec = getattr(self, "precision", None) or Precision("fp32", torch.device("cpu"))
        prec.prepare(model)
        opt = weight_optimizer(model.parameters(), self.lr)
        sched = cosine_schedule(opt, self.child_steps)
        step = 0
        while step < self.child_steps:
            for x, y in self.data.batches("train", self.budget.batch_size, epoch=step, seed=self.seed, shard=False):
                x, y = prec.batch(x, y)
                with prec.autocast():
                    loss = F.cross_entropy(model(x), y).float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                step += 1
                if step >= self.child_steps:
                    break
        eb = self.budget.eval_batches
        acc, _ = evaluate(model, self.data.batches("val", self.budget.batch_size, limit=None if eb is None else max(1, eb)))
        return float(acc)


class DeviceMeasure:
    """``arch -> latency_ms`` measured on the target (``--measure``): the profiler's whole-network
    builder (``.tflite`` or TVM) and the device's runner (local, ``adb`` or TVM RPC), median of its
    runs. Needs the device reachable; builders and runners are created on first use.

    Raises:
        ConfigError: the device has no runner (e.g. an estimated-only target).
    """

    def __init__(self, device):
        self.device = device
        self._builder = self._runner = None

    def __call__(self, arch) -> float:
        from hwnas.profile.run import make_builder, make_runner

        if self._runner is None:
            self._builder, self._runner = make_builder(self.device), make_runner(self.device)
        return float(self._runner.measure(self._builder.build_arch(arch)).median_ms)

    def __getstate__(self):
        return {"device": self.device, "_builder": None, "_runner": None}


def _save_torch(path, obj) -> None:
    import io as _io

    import torch

    from hwnas.io import atomic_path

    buf = _io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


# ============================================================================ shared loop
class Strategy:
    """A sample-based search strategy: ``ask(n)`` members, ``tell([(Evaluated, reward)])``.

    Subclasses keep all their randomness in ``self.rng`` (a :class:`random.Random`) or in state
    returned by :meth:`state_dict`, so a resumed search repeats an uninterrupted one exactly.
    """

    def __init__(self, space, sampler: ConstrainedSampler, rng: random.Random, **options: Any):
        self.space = space
        self.sampler = sampler
        self.rng = rng
        self.options = options

    def ask(self, n: int) -> list[Choices]:
        raise NotImplementedError

    def tell(self, results: list[tuple[Evaluated, float]]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def drain_records(self) -> list[dict[str, Any]]:
        """Extra ``history.jsonl`` records produced since the last call (e.g. NSGA-II's per-generation
        hypervolume); written after the round's evaluations, before its checkpoint."""
        return []


class SampleSearcher(Searcher):
    """Base of RL / evolution / random search: the shared ask → evaluate → tell loop.

    Options (constructor keywords, also taken from the CLI):
        seed (int, 0): seeds the strategy.
        batch (int): members proposed per round (= evaluated in parallel by ``workers``).
        workers (int, 1): worker processes for evaluation (:class:`~hwnas.search.distributed.ParallelEvaluator`).
        reward: ``"soft"`` (α = β = −0.07) or ``"hard"`` (α = 0, β = −1), MnasNet eq. 2 (default: the
            objective's α/β — soft unless ``--hard`` — or hard without an objective).
        objective ("latency"): costs of the weighted-product reward, e.g. ``"latency,energy"``.
        constrained (bool, True): draw candidates (random members, mutations, controller samples)
            under the latency limit with bounded rejection sampling (latency is a predictor call;
            only accuracy evaluations count against the budget). ``False``: over-limit members are
            evaluated and only the reward penalises them, as in MnasNet.
        max_rejections (int, 10000): see :class:`~hwnas.search.sampling.ConstrainedSampler`.
        evaluator: an :class:`Evaluator` to use instead of building a :class:`SPOSEvaluator`.
        measure: ``True`` — report latencies measured on the target (:class:`DeviceMeasure`; the
            predictor still drives constrained sampling), or a callable ``arch -> ms``.
    """

    default_batch = 1
    strategy_cls: type[Strategy] = Strategy

    # ---------------------------------------------------------------- CLI entry (issue-5 pipeline)
    def run(self, space, objective, data, budget: Budget, run: RunDir) -> SearchResult:
        """The pipeline's entry: build the evaluator (SPOS supernet for layer-wise spaces, short
        per-child training for stage-wise ones), train it (resumable), then :meth:`search`.

        ``result.extra["supernet"]`` is the trained SPOS supernet (the pipeline fine-tunes the
        chosen path's inherited weights from it).
        """
        limit = _objective_limit(objective)
        evaluator = self.options.get("evaluator")
        figures: dict[str, Any] = {}
        supernet = None
        if evaluator is None:
            predictor = getattr(objective, "predictor", None)
            if predictor is None:
                raise SearchError(f"method '{self.name}' needs a latency predictor on the objective")
            measure = self.options.get("measure")
            if measure is True:  # --measure: time every evaluated child on the target itself
                measure = DeviceMeasure(predictor.device)
            measure = measure if callable(measure) else None
            seed = int(self.options.get("seed", 0))
            from hwnas.search.train import Precision, resolve_device

            precision = Precision(self.options.get("precision", "fp32"), resolve_device(self.options.get("device", "auto")))
            if hasattr(space, "slots"):
                evaluator = SPOSEvaluator(space, data, predictor, budget, seed=seed, measure=measure,
                                          lr=float(self.options.get("lr", 0.05)), progress=self.options.get("progress"),
                                          table=getattr(objective, "table", None), precision=precision,
                                          bn_batches=int(self.options.get("bn_batches", 8)),
                                          eval_batches=self.options.get("eval_batches"))
                figures = evaluator.train_supernet(run)
                supernet = evaluator.supernet
            else:
                evaluator = TrainEvaluator(space, data, predictor, budget, seed=seed, measure=measure,
                                           child_steps=int(self.options.get("child_steps", 30)))
                evaluator.precision = precision
        workers = int(self.options.get("workers", 1))
        if workers > 1 and not getattr(evaluator, "cheap", False):
            from hwnas.search.distributed import ParallelEvaluator

            evaluator = ParallelEvaluator(evaluator, workers)
        try:
            reward = self.make_reward(limit, objective)
            result = self.search(space, evaluator, reward, budget.samples, limit_ms=limit, run=run,
                                 max_seconds=budget.max_seconds)
        finally:
            close = getattr(evaluator, "close", None)
            if close is not None:
                close()
        result.extra.update(figures)
        result.extra["evaluator"] = type(getattr(evaluator, "inner", evaluator)).__name__
        inner = getattr(evaluator, "inner", evaluator)
        if isinstance(inner, SPOSEvaluator) and not isinstance(inner, TrainEvaluator):
            result.extra["scoring"] = inner.scoring()
        if supernet is not None:
            result.extra["supernet"] = supernet
        return result

    def make_reward(self, limit_ms: float | None, objective=None) -> RewardFn:
        """MnasNet's reward for this search: the ``reward`` option (``soft``/``hard``) if given, else
        the objective's ``alpha``/``beta`` (the pipeline's ``--hard`` selects MnasNet's hard
        setting), else ``hard``; costs from the ``objective`` option (``"latency,energy"``)."""
        from hwnas.search.rl import REWARD_SETTINGS, MnasNetReward

        targets: dict[str, float | None] = {}
        for name in str(self.options.get("objective", "latency")).split(","):
            name = name.strip()
            if not name:
                continue
            if name in ("latency", "latency_ms"):
                targets["latency"] = limit_ms
            elif name in ("energy", "energy_mj"):
                targets["energy"] = self.options.get("energy_mj")
            else:
                targets[name] = self.options.get(f"{name}_target")
        if "reward" in self.options:
            alpha, beta = REWARD_SETTINGS.get(str(self.options["reward"]).lower(), (None, None))
            if alpha is None:
                return MnasNetReward.setting(str(self.options["reward"]), targets)
        elif getattr(objective, "alpha", None) is not None and getattr(objective, "beta", None) is not None:
            alpha, beta = float(objective.alpha), float(objective.beta)
        else:
            alpha, beta = REWARD_SETTINGS["hard"]
        return MnasNetReward(targets, alpha, beta)

    # ---------------------------------------------------------------- the loop
    def search(self, space, evaluator: Evaluator, reward: RewardFn, samples: int, *, limit_ms: float | None = None,
               run: RunDir | None = None, max_seconds: float | None = None, plot: bool = True) -> SearchResult:
        """Evaluate ``samples`` members proposed by this searcher's strategy; return the best.

        Args:
            space: the space (``decisions``, ``sample``, ``decode``).
            evaluator: an :class:`Evaluator`.
            reward: ``Evaluated -> float`` (higher is better; ``accuracy is None`` must give the minimum).
            samples: the query budget: distinct architectures evaluated (every proposal with the
                ``count_repeats`` option).
            limit_ms: latency limit; the chosen member is the highest-reward one within it (if any).
            run: run folder for history, checkpoints and plots (``None``: in memory only).
            max_seconds: stop cleanly (after a checkpoint) once exceeded.

        Raises:
            SearchError: the constrained sampler could not meet ``limit_ms`` (message gives the range).
        """
        seed = int(self.options.get("seed", 0))
        batch = max(1, int(self.options.get("batch", self.default_batch)))
        if not isinstance(evaluator, CachedEvaluator):
            evaluator = CachedEvaluator(evaluator)
        constrained = bool(self.options.get("constrained", True)) and limit_ms is not None
        sampler = ConstrainedSampler(space, evaluator.latency, limit_ms if constrained else None,
                                     max_rejections=int(self.options.get("max_rejections", DEFAULT_MAX_REJECTIONS)),
                                     bounds=evaluator.latency_bounds() if constrained else None)
        rng = random.Random(seed)
        strategy = self.strategy_cls(space, sampler, rng, seed=seed, **{
            k: v for k, v in self.options.items() if k not in _LOOP_OPTIONS})
        history: list[Evaluated] = []
        rewards: list[float] = []
        state = run.load_checkpoint() if run is not None else None
        if state is not None and state.get("method") == self.name and "strategy" in state:
            strategy.load_state_dict(state["strategy"])
            rng.setstate(state["rng"])
            history = [Evaluated.from_dict(d) for d in state["history"]]
            rewards = list(state["rewards"])
            for e in history:
                evaluator.cache.setdefault(e.choices, e)
            run.truncate_history(state["history_lines"])
            reward(history[0])  # a reward that normalises by the first member (energy) sees the same one
        elif run is not None:
            # killed before its first checkpoint: drop the evaluations it logged, start over
            records = run.read_history()
            first = next((i for i, r in enumerate(records) if r.get("kind") == "eval"), None)
            if first is not None:
                run.truncate_history(first)
        progress = self.options.get("progress")
        count_repeats = bool(self.options.get("count_repeats", False))
        max_proposals = int(self.options.get("max_proposals", 20 * samples))
        seen = {e.choices for e in history}

        def used() -> int:
            return len(history) if count_repeats else len(seen)

        t0 = time.time()
        while used() < samples and len(history) < max_proposals:
            if max_seconds is not None and time.time() - t0 > max_seconds:
                break
            # full rounds (a strategy learns from whole batches); the round is cut where the budget ends
            n = min(batch, max_proposals - len(history))
            if count_repeats:
                n = min(n, samples - len(history))
            proposals, repeat = [], []
            for c in strategy.ask(n)[:n]:
                c = tuple(c)
                if not count_repeats and c not in seen and len(seen) >= samples:
                    break
                proposals.append(c)
                repeat.append(c in seen)
                seen.add(c)
            evals = evaluator.evaluate_many(proposals, start_step=len(history))
            rs = [float(reward(e)) for e in evals]
            strategy.tell(list(zip(evals, rs)))
            history += evals
            rewards += rs
            if progress is not None:
                progress({"event": "step", "step": used(), "expected_latency_ms": evals[-1].latency_ms})
            if run is not None:
                for e, r, rep in zip(evals, rs, repeat):
                    run.append_history({"kind": "eval", "method": self.name, **e.to_dict(), "reward": r,
                                        "within_limit": limit_ms is None or e.latency_ms <= limit_ms,
                                        "repeat": rep})
                for record in strategy.drain_records():
                    run.append_history(record)
                run.save_checkpoint({"method": self.name, "strategy": strategy.state_dict(), "rng": rng.getstate(),
                                     "history": [e.to_dict() for e in history], "rewards": rewards,
                                     "history_lines": run.history_lines()})
        if not history:
            raise SearchError(f"method '{self.name}': no architecture was evaluated (budget {samples})")
        best_i, feasible = select_best(history, rewards, limit_ms)
        best = history[best_i]
        result = SearchResult(best_choices=best.choices, best_arch=space.decode(best.choices), history=history,
                              pareto=pareto_front(history), extra={
                                  "method": self.name, "queries": used(), "proposals": len(history),
                                  "best_reward": rewards[best_i],
                                  "best_accuracy": best.accuracy, "best_latency_ms": best.latency_ms,
                                  "within_limit": feasible, "limit_ms": limit_ms,
                                  "unique_archs": len({e.choices for e in history}),
                                  "rejected_samples": sampler.rejections, "seconds": time.time() - t0,
                                  **strategy.summary()})
        if run is not None and plot and getattr(run, "writes", True):
            from hwnas.search.pareto import plot_front

            pts = [e.to_dict() for e in history]
            result.extra["plots"] = [str(plot_front(pts, run.plots / "pareto_latency.png", limit=limit_ms,
                                                    best=best_i, title=f"{self.name}: accuracy vs latency"))]
            if any(e.energy_mj is not None for e in history):
                from hwnas.latency.energy import energy_of

                est = energy_of(getattr(evaluator, "predictor", None), space, history[best_i].choices)
                what = "declared energy (power model × latency, not measured)" if est and est.declared else "energy"
                result.extra["plots"].append(str(plot_front(pts, run.plots / "pareto_energy.png", x="energy",
                                                            best=best_i, title=f"{self.name}: accuracy vs {what}")))
        return result


#: options consumed by the loop / evaluator, not passed to the strategy
_LOOP_OPTIONS = {"lr", "progress", "child_steps", "count_repeats", "max_proposals", "seed", "batch", "workers",
                 "reward", "objective", "constrained", "max_rejections", "evaluator", "measure", "energy_mj",
                 "device", "precision", "bn_batches", "eval_batches"}


def select_best(history: Sequence[Evaluated], rewards: Sequence[float], limit_ms: float | None) -> tuple[int, bool]:
    """Index of the highest-reward evaluated member with an accuracy and latency ≤ ``limit_ms``
    (earliest on ties); when none is within the limit, the highest-reward one overall.
    Returns ``(index, within_limit)``."""
    ok = [i for i, e in enumerate(history) if e.accuracy is not None and (limit_ms is None or e.latency_ms <= limit_ms)]
    if ok:
        return max(ok, key=lambda i: (rewards[i], -i)), True
    return max(range(len(history)), key=lambda i: (rewards[i] if math.isfinite(rewards[i]) else -math.inf, -i)), False


def _objective_limit(objective) -> float | None:
    """The latency limit (ms) of an issue-5 objective (or a number, or ``None``)."""
    if objective is None or isinstance(objective, (int, float)):
        return None if objective is None else float(objective)
    for attr in ("latency_ms", "target_ms", "budget_ms", "latency_budget_ms", "target"):
        value = getattr(objective, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


__all__ = ["Evaluator", "CachedEvaluator", "SPOSEvaluator", "TrainEvaluator", "DeviceMeasure", "Strategy",
           "SampleSearcher", "select_best"]
