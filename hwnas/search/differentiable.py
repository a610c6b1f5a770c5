"""Differentiable hardware-aware searchers: FBNet, ProxylessNAS, Single-Path NAS.

All three train a :class:`hwnas.nn.supernet.Supernet` bilevel-style (Liu et al. 2019, DARTS §2.3's
first-order alternation, as FBNet §3.3 and ProxylessNAS §3.2): per step one weight update on a
train batch, and every ``arch_every`` steps (after ``budget.warmup_epochs`` weight-only epochs)
one architecture update on a val batch. The architecture step minimises the method's objective
(:mod:`hwnas.search.objective`) with the differentiable expected latency of
:meth:`Supernet.expected_latency` over the target's ``LayerLatencyTable``; the weight step
minimises the cross-entropy (the latency term does not depend on the weights), except for
Single-Path NAS, whose indicators depend on the weights' norms and which trains on the whole
objective as in the paper.

At the end of every search epoch the current architecture is derived (argmax; for Single-Path the
thresholds' selection), repaired to the budget if needed (:func:`repair_to_budget`), its subnet
taken with inherited weights, its BatchNorm statistics recalibrated on train batches, and its
validation accuracy measured. The result's best architecture is the most accurate of these on
validation among those within the budget — not the last sample.

Defaults (paper → ours, where the budgets here are ~100× smaller than the papers' 90–200 epochs):

* weights: SGD Nesterov 0.9, lr 0.05 cosine, wd 4e-5 (FBNet: 0.1; ProxylessNAS: 0.025·batch/256 → ours 0.05);
* architecture: Adam, wd 0; FBNet lr 0.01 (paper: 0.01, wd 5e-4 on θ); ProxylessNAS lr 0.3, betas (0, 0.999),
  every 2 weight steps (reference code: 1e-3 every 5 steps over 120 ImageNet epochs, ~1.15·10^5
  updates, so an Adam "travel budget" lr × updates ≈ 115; the default CPU run has ~110 updates, and
  lr 0.3 gives ≈ 32 where lr 0.01 every 5 steps gave 0.4 — its expected latency moved 1.52 → 1.48 ms
  against a 1.127 ms budget — and lr 0.1 every 2 gave 11, ending with op distributions barely peaked:
  docs/search.md "Does the default search converge?"; use the paper's values for long runs, as the
  ``--recipe`` presets do);
  Single-Path thresholds lr 0.02 (joint training in the paper; here alternated on val like the others).

Every step can resume: the run folder's checkpoint holds the supernet, both optimisers, the
schedule, the RNG states, the position (epoch, step), the evaluated architectures and the table
hash; batches are drawn deterministically from (seed, epoch, step), so a resumed run makes the
same decisions as an uninterrupted one. A NaN/Inf in the loss, weights or architecture parameters
rolls back to the last checkpoint once with half the learning rates; a second one stops with
:class:`hwnas.search.train.NonFiniteError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from hwnas.errors import ConfigError, SearchError
from hwnas.nn.count import count
from hwnas.nn.supernet import Supernet
from hwnas.search import distributed as D
from hwnas.search.base import (Budget, Evaluated, RunDir, SearchResult, Searcher, pareto_front, register_searcher,
                               rng_state, seed_everything, set_rng_state)
from hwnas.search.train import (NonFiniteError, Precision, all_finite, cosine_schedule, evaluate, model_device,
                                recalibrate_bn, resolve_device, weight_optimizer)


def table_hash(table) -> str:
    """Short hash of a ``LayerLatencyTable`` (stored in checkpoints; resume refuses a changed table)."""
    blob = json.dumps([round(float(table.fixed_ms), 9), [[round(float(v), 9) for v in r] for r in table.per_layer]])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def repair_to_budget(choices: Sequence[int], probs: Sequence[torch.Tensor], table, budget_ms: float | None
                     ) -> tuple[int, ...]:
    """Make ``choices`` fit ``budget_ms`` with the fewest probability lost.

    Greedy: while over budget, take the single-layer change to a cheaper candidate that saves the
    most latency per unit of log-probability given up (``Δlat / (log p_cur − log p_new + ε)``).
    Terminates (each move lowers the latency) and, when the budget is feasible, ends within it.
    """
    choices = list(choices)
    if budget_ms is None:
        return tuple(choices)
    logp = [torch.log(p.clamp_min(1e-9)).tolist() for p in probs]
    while table.latency(choices) > budget_ms * (1 + 1e-9):
        best, best_score = None, -math.inf
        for i, row in enumerate(table.per_layer):
            cur = row[choices[i]]
            for j, lat in enumerate(row):
                if lat < cur - 1e-12:
                    score = (cur - lat) / (logp[i][choices[i]] - logp[i][j] + 1.0)
                    if score > best_score:
                        best, best_score = (i, j), score
        if best is None:
            break
        choices[best[0]] = best[1]
    return tuple(choices)


class DifferentiableSearcher(Searcher):
    """Shared loop of the differentiable searchers; subclasses set ``mode`` and defaults.

    Options (constructor keywords): ``lr``, ``arch_lr``, ``arch_every``, ``weight_decay``,
    ``temperature``, ``temperature_decay``, ``min_temperature``, ``noise`` (``batch``|``sample``),
    ``proxyless_paths``, ``weights`` (``shared``|``independent`` supernet candidates), ``seed``, ``device``
    (``auto``|``cpu``|``cuda``|``cuda:N``|``mps``), ``precision`` (``fp32``|``bf16``|``fp16``, see
    :class:`hwnas.search.train.Precision`), ``log_every`` (history record every N steps), ``checkpoint_every``
    (steps), ``recal_batches`` (BN recalibration batches per evaluation), ``progress`` (a callable
    receiving dict events), ``fault_steps`` (testing: global steps at which a weight is set to NaN),
    ``exit_at_step`` (testing: end the process abruptly, status 137 like SIGKILL, when that global
    step is reached in a run that did not start from a checkpoint).
    """

    mode = "fbnet"
    differentiable = True
    defaults: dict[str, Any] = {}
    common = dict(lr=0.05, weight_decay=4e-5, arch_lr=0.01, arch_every=1, arch_betas=(0.9, 0.999),
                  temperature=5.0, temperature_decay=0.045, min_temperature=0.1, noise="batch", proxyless_paths=2,
                  weights="shared", seed=0, log_every=5, checkpoint_every=25, recal_batches=4, device="auto",
                  precision="fp32", progress=None, fault_steps=(), exit_at_step=None)

    def opt(self, name: str) -> Any:
        if name in self.options:
            return self.options[name]
        if name in self.defaults:
            return self.defaults[name]
        return self.common[name]

    def config(self) -> dict[str, Any]:
        keys = [k for k in self.common if k not in ("progress", "fault_steps", "exit_at_step")]
        return {k: (list(v) if isinstance(v, tuple) else v) for k in keys for v in [self.opt(k)]}

    # ------------------------------------------------------------------ main loop
    def validate_options(self) -> None:
        unknown = set(self.options) - set(self.common)
        if unknown:
            raise ConfigError(f"unknown option(s) for method '{self.name}': {', '.join(sorted(unknown))}; "
                              f"valid: {', '.join(k for k in self.common if k not in ('progress', 'fault_steps', 'exit_at_step'))}")

    def run(self, space, objective, data, budget: Budget, run: RunDir) -> SearchResult:
        self.validate_options()
        table = objective.table
        if table is None:
            raise SearchError("the objective has no LayerLatencyTable (set objective.table)")
        progress: Callable[[dict], None] = self.opt("progress") or (lambda ev: None)
        seed = int(self.opt("seed"))
        bs = budget.batch_size
        steps = min(data.steps("train", bs), budget.steps_per_epoch or 10**9)
        n_val = data.steps("val", bs)
        arch_every = max(1, int(self.opt("arch_every")))
        fault_steps = set(self.opt("fault_steps") or ())
        thash = table_hash(table)

        seed_everything(seed)
        net = Supernet(space, self.mode, temperature=self.opt("temperature"),
                       temperature_decay=self.opt("temperature_decay"), min_temperature=self.opt("min_temperature"),
                       noise=self.opt("noise"), proxyless_paths=self.opt("proxyless_paths"),
                       weights=self.opt("weights"))
        prec = Precision(self.opt("precision"), resolve_device(self.opt("device")))
        prec.prepare(net)
        scaler, a_scaler = prec.scaler(), prec.scaler()
        if D.active():  # data-parallel: BatchNorm over the global batch (before the optimisers see the BN weights)
            D.sync_batchnorm(net)
        w_opt = weight_optimizer(net.weight_parameters(), self.opt("lr"), self.opt("weight_decay"))
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=self.opt("arch_lr"), betas=tuple(self.opt("arch_betas")),
                                 weight_decay=0.0)
        sched = cosine_schedule(w_opt, budget.epochs * steps)
        st: dict[str, Any] = {"epoch": 0, "step": 0, "global_step": 0, "evaluated": [], "lr_scale": 1.0,
                              "rolled_back": False, "seconds": 0.0,
                              "initial_expected_latency_ms": self._expected_latency(net, table)}

        def snapshot() -> dict[str, Any]:
            return {"supernet": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
                    "sched": sched.state_dict(), "rng": rng_state(), "state": copy.deepcopy(st),
                    "history_lines": run.history_lines(), "table_hash": thash, "method": self.name,
                    "mode": self.mode, "config": self.config(), "budget": budget.to_dict(),
                    "temperature": net.temperature, "scaler": scaler.state_dict(), "a_scaler": a_scaler.state_dict()}

        def restore(ck: dict[str, Any]) -> None:
            net.load_state_dict(ck["supernet"])
            w_opt.load_state_dict(ck["w_opt"])
            a_opt.load_state_dict(ck["a_opt"])
            sched.load_state_dict(ck["sched"])
            set_rng_state(ck["rng"])
            st.clear()
            st.update(copy.deepcopy(ck["state"]))
            net.temperature = ck.get("temperature", net.temperature)
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
                a_scaler.load_state_dict(ck["a_scaler"])
            run.truncate_history(ck["history_lines"])

        ck = run.load_checkpoint()
        if ck is not None:
            if ck.get("table_hash") != thash:
                raise ConfigError(f"{run.root}: the latency table changed since this run started "
                                  f"(hash {ck.get('table_hash')} → {thash}); start a new run")
            if ck.get("mode") != self.mode:
                raise ConfigError(f"{run.root}: checkpoint is of method '{ck.get('method')}', not '{self.name}'")
            restore(ck)
            progress({"event": "resumed", "epoch": st["epoch"], "step": st["step"]})
        else:
            run.save_checkpoint(snapshot())
        exit_at = self.opt("exit_at_step") if ck is None else None
        t_start = time.perf_counter() - st["seconds"]

        val_pass: dict[str, Any] = {"at": None, "it": None}

        def val_batch(epoch: int, j: int):
            """Architecture step ``j``'s val batch: pass ``j // n_val`` of a seeded shuffle of val, batch
            ``j % n_val`` (a function of the position alone, so resume draws the same batches); one
            iterator is kept across consecutive steps so loader workers stream ahead."""
            rnd, idx = divmod(j, n_val)
            if val_pass["at"] != (epoch, rnd, idx):
                val_pass["it"] = data.batches("val", bs, epoch=epoch * 100003 + rnd, start=idx, shuffle=True,
                                              augment=False, seed=seed)
            val_pass["at"] = (epoch, rnd, idx + 1)
            return prec.batch(*next(val_pass["it"]))

        def apply_lr_scale(scale: float) -> None:
            sched.base_lrs = [b * scale for b in sched.base_lrs]
            for g in a_opt.param_groups:
                g["lr"] *= scale

        def nonfinite(where: str) -> None:
            if st["rolled_back"]:
                raise NonFiniteError(f"search diverged ({where} became NaN/Inf at step {st['global_step']}) again "
                                     f"after rolling back with half the learning rate; lower --lr / --arch-lr")
            ck2 = run.load_checkpoint()
            scale = st["lr_scale"] * 0.5
            restore(ck2)
            st["rolled_back"] = True
            st["lr_scale"] = scale
            apply_lr_scale(0.5)
            run.append_history({"kind": "event", "event": "rollback", "reason": f"{where} non-finite",
                                "to_step": st["global_step"], "lr_scale": scale})
            progress({"event": "rollback", "where": where, "step": st["global_step"]})

        def out_of_time() -> bool:  # agreed by every rank (a collective under torchrun)
            return budget.max_seconds is not None and D.any_rank(st["seconds"] > budget.max_seconds)

        while st["epoch"] < budget.epochs:
            epoch = st["epoch"]
            tau = net.set_epoch(epoch)
            search_arch = epoch >= budget.warmup_epochs and bool(net.arch_parameters())
            net.train()
            diverged = timed_out = False
            for x, y in data.batches("train", bs, epoch=epoch, start=st["step"], limit=steps, seed=seed):
                gs = st["global_step"]
                x, y = prec.batch(x, y)
                # weight step (train split)
                with prec.autocast():
                    out = net(x)
                    ce = F.cross_entropy(out, y).float()
                lat = net.expected_latency(table)
                loss = objective.loss(ce, lat) if self.mode == "singlepath" else ce
                if gs in fault_steps:
                    fault_steps.discard(gs)
                    with torch.no_grad():
                        net.weight_parameters()[0].fill_(float("nan"))
                    loss = loss * float("nan")
                if not torch.isfinite(D.mean_over_ranks(loss)):
                    nonfinite("loss")
                    diverged = True
                    break
                w_opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                D.all_reduce_grads(net.weight_parameters())  # data-parallel: the global batch's gradient
                scaler.unscale_(w_opt)
                torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
                scaler.step(w_opt)
                scaler.update()
                sched.step()
                a_loss = a_lat = None
                if search_arch and gs % arch_every == 0:
                    xv, yv = val_batch(epoch, gs // arch_every)
                    with net.arch_step():
                        with prec.autocast():
                            a_ce = F.cross_entropy(net(xv), yv).float()
                        a_lat = net.expected_latency(table)
                        a_loss = objective.loss(a_ce, a_lat)
                        a_opt.zero_grad(set_to_none=True)
                        a_scaler.scale(a_loss).backward()
                        D.all_reduce_grads(net.arch_parameters())  # identical α on every rank
                        a_scaler.step(a_opt)
                        a_scaler.update()
                    net.after_arch_step()
                    bad = not torch.isfinite(a_loss) or not all_finite(p.detach() for p in net.arch_parameters())
                    if D.any_rank(bad):
                        nonfinite("architecture parameters")
                        diverged = True
                        break
                if not all_finite(p.detach() for p in net.weight_parameters()):
                    nonfinite("weights")
                    diverged = True
                    break
                st["step"] += 1
                st["global_step"] += 1
                if st["global_step"] % int(self.opt("log_every")) == 0 or st["step"] == steps:
                    rec = {"kind": "step", "epoch": epoch, "step": st["global_step"], "loss": loss.item(),
                           "ce": ce.item(), "acc": float((out.argmax(1) == y).float().mean()),
                           "expected_latency_ms": float(lat.detach()),
                           "arch_loss": None if a_loss is None else a_loss.item(), "temperature": tau,
                           "entropy": net.entropy(), "lr": w_opt.param_groups[0]["lr"],
                           "seconds": time.perf_counter() - t_start}
                    run.append_history(rec)
                    progress({"event": "step", **rec, "steps_per_epoch": steps})
                st["seconds"] = time.perf_counter() - t_start
                if st["global_step"] % int(self.opt("checkpoint_every")) == 0:
                    run.save_checkpoint(snapshot())
                if exit_at is not None and st["global_step"] >= int(exit_at):
                    import os

                    os._exit(137)  # testing: an abrupt kill, no cleanup
                if out_of_time():
                    timed_out = True
                    break
            if diverged:
                continue
            if timed_out or out_of_time():
                self._evaluate_epoch(net, space, objective, data, run, st, epoch, progress)
                st["epoch"] = budget.epochs  # stop; the checkpoint records a finished search
                run.save_checkpoint(snapshot())
                break
            if search_arch or epoch == budget.epochs - 1:
                self._evaluate_epoch(net, space, objective, data, run, st, epoch, progress)
            st["epoch"] += 1
            st["step"] = 0
            st["seconds"] = time.perf_counter() - t_start
            run.save_checkpoint(snapshot())

        if not st["evaluated"]:
            self._evaluate_epoch(net, space, objective, data, run, st, st["epoch"] - 1, progress)
        history = [Evaluated.from_dict(d) for d in st["evaluated"]]
        feasible = [e for e in history if objective.feasible(e.latency_ms)] or history
        best = max(feasible, key=lambda e: (e.accuracy or 0.0, -e.latency_ms, e.step))
        probs = net.probabilities()
        derived = net.derive()
        repaired = repair_to_budget(derived, probs, table, objective.latency_budget_ms)
        n_cands = [len(p) for p in probs]
        layer_entropy = [float(-(p * torch.log(p.clamp_min(1e-12))).sum()) for p in probs]
        layer_max = [float(p.max()) for p in probs]
        expected_ms = self._expected_latency(net, table)
        convergence = {
            "initial_expected_latency_ms": st.get("initial_expected_latency_ms"),
            "expected_latency_before_repair_ms": expected_ms,
            "reached_budget_before_repair": objective.feasible(expected_ms),
            "derived_latency_ms": float(table.latency(derived)),
            "repair_needed": tuple(repaired) != tuple(derived),
            "op_entropy": net.entropy(),
            "op_entropy_uniform": sum(math.log(n) for n in n_cands) / max(1, len(n_cands)),
            "mean_max_probability": float(sum(layer_max) / max(1, len(layer_max))),
            "op_entropy_per_layer": layer_entropy,
            "max_probability_per_layer": layer_max,
        }
        return SearchResult(
            best_choices=best.choices, best_arch=space.decode(best.choices), history=history,
            pareto=pareto_front(history),
            extra={"supernet": net, "probabilities": [p.tolist() for p in probs], "final_choices": list(net.derive()),
                   "temperature": net.temperature, "search_seconds": st["seconds"], "steps": st["global_step"],
                   "rolled_back": st["rolled_back"], "table_hash": thash, "config": self.config(),
                   "convergence": convergence})

    @staticmethod
    def _expected_latency(net: Supernet, table) -> float:
        """The supernet's expected latency (ms) under its current distribution (no sampling noise:
        fbnet/proxyless ``softmax(α)``, singlepath the hard selection)."""
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                return float(net.expected_latency(table))
        finally:
            net.train(was)

    def _evaluate_epoch(self, net: Supernet, space, objective, data, run: RunDir, st: dict, epoch: int,
                        progress) -> Evaluated:
        """Derive, repair to budget, recalibrate BN of the subnet, score on val; record it."""
        table = objective.table
        derived = net.derive()
        choices = repair_to_budget(derived, net.probabilities(), table, objective.latency_budget_ms)
        sub = net.subnet(choices)
        seed = int(self.opt("seed"))
        recal = int(self.opt("recal_batches"))
        # BN recalibration and evaluation must not disturb the search's RNG stream
        with torch.random.fork_rng():
            recalibrate_bn(sub, data.batches("train", 64, epoch=10**6 + epoch, limit=recal, augment=False, seed=seed,
                                             shard=False))
            acc, val_loss = evaluate(sub, data.batches("val", 256))
        arch = space.decode(choices)
        cost = count(arch)
        lat = float(table.latency(choices))
        energy = None
        if objective.predictor is not None:
            try:
                energy = objective.predictor.predict(arch).energy_mj
            except Exception:  # noqa: BLE001 - energy is optional
                energy = None
        ev = Evaluated(tuple(choices), arch.to_compact(), acc, lat, energy, cost.params, cost.macs, st["global_step"])
        st["evaluated"].append(ev.to_dict())
        rec = {"kind": "eval", "epoch": epoch, **ev.to_dict(), "derived": list(derived),
               "repaired": tuple(derived) != tuple(choices), "val_loss": val_loss,
               "probabilities": [[round(v, 5) for v in p.tolist()] for p in net.probabilities()]}
        run.append_history(rec)
        progress({"event": "eval", **rec})
        return ev


@register_searcher("fbnet")
class FBNetSearcher(DifferentiableSearcher):
    """FBNet (Wu et al. 2019): Gumbel-softmax mixture over all candidates; ``CE·α·(log LAT)^β``."""

    mode = "fbnet"
    defaults = dict(arch_lr=0.01, arch_every=1)


@register_searcher("proxyless")
class ProxylessSearcher(DifferentiableSearcher):
    """ProxylessNAS (Cai et al. 2019): binary gates, one path per weight step, two per arch step."""

    mode = "proxyless"
    defaults = dict(arch_lr=0.3, arch_every=2, arch_betas=(0.0, 0.999))


@register_searcher("singlepath")
class SinglePathSearcher(DifferentiableSearcher):
    """Single-Path NAS (Stamoulis et al. 2019): superkernels with trainable thresholds; ``CE + λ·log LAT``."""

    mode = "singlepath"
    defaults = dict(arch_lr=0.02, arch_every=1)


__all__ = ["DifferentiableSearcher", "FBNetSearcher", "ProxylessSearcher", "SinglePathSearcher", "repair_to_budget",
           "table_hash"]
