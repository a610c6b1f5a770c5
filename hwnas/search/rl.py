"""MnasNet-style reinforcement-learning search (Tan et al. 2019, "MnasNet: Platform-Aware Neural
Architecture Search for Mobile", §3–§4).

* **Controller**: an LSTM that emits the space's decisions one after another (any space: one
  softmax head per decision, sized by its options; the embedding of each choice is the next input),
  as in Zoph & Le / MnasNet §4.2.
* **Reward** (MnasNet eq. 2): ``ACC(m) × (LAT(m) / T)^w`` with ``w = α`` if ``LAT ≤ T`` else ``β``.
  Soft constraint (the paper's default): α = β = −0.07; hard constraint: α = 0, β = −1.
  :class:`MnasNetReward` also takes several costs (``--objective latency,energy``) and multiplies
  their factors (:func:`hwnas.search.pareto.weighted_product`).
* **Policy gradient**: REINFORCE with a moving-average baseline (Williams 1992; Zoph & Le 2017) and
  an entropy bonus — or, with ``algo="ppo"``, PPO's clipped objective (Schulman et al. 2017), which
  MnasNet used. Each round samples ``batch`` members (evaluated in parallel with ``workers > 1``).
* **Child accuracy** comes from a weight-sharing evaluator (SPOS supernet, see
  :mod:`hwnas.search.evaluator`) or a table — MnasNet trained every child for 5 epochs.

Defaults (``controller_lr=0.02, batch=16, advantage="rank"``; baseline decay 0.9, entropy 1e-3,
tanh constant 2.5) were chosen once on the tabular NB201 × Pixel-3 task at 200 queries over tuning
seeds 100–129 (``benchmarks/search_quality.py``; the reported seeds are 0–9), not per seed. With
the moving-average baseline and std-normalised advantages (``advantage="ema"``) the controller did
no better than random search there (mean gap 0.45–0.60 vs 0.48 points); rank-based advantages
(each round's rewards replaced by their centred ranks, as in evolution strategies' fitness shaping)
gave 0.26. Figures on the reported seeds: docs/search-rl.md.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from hwnas.errors import ConfigError
from hwnas.search.base import Evaluated, register_searcher
from hwnas.search.evaluator import SampleSearcher, Strategy
from hwnas.search.objective import MNASNET_HARD, MNASNET_SOFT
from hwnas.search.objective import mnasnet_reward as _objective_reward

#: MnasNet eq. 2 settings: (α, β) — the values of :data:`hwnas.search.objective.MNASNET_SOFT` / ``_HARD``.
REWARD_SETTINGS = {"soft": (MNASNET_SOFT["alpha"], MNASNET_SOFT["beta"]),
                   "hard": (MNASNET_HARD["alpha"], MNASNET_HARD["beta"])}


# ============================================================================ reward
def mnasnet_reward(accuracy: float, latency_ms: float, target_ms: float, *, alpha: float = -0.07,
                   beta: float = -0.07) -> float:
    """MnasNet's reward ``ACC × (LAT / T)^w``, ``w = alpha`` if ``LAT ≤ T`` else ``beta``
    (Tan et al. 2019, eq. 2); :func:`hwnas.search.objective.mnasnet_reward` with its inputs checked.
    Soft: α = β = −0.07; hard: α = 0, β = −1.

    Raises:
        ConfigError: a non-positive latency or target.
    """
    if not target_ms > 0 or not latency_ms > 0:
        raise ConfigError(f"MnasNet reward needs latency and target > 0 (got {latency_ms}, {target_ms})")
    return _objective_reward(accuracy, latency_ms, target_ms, alpha, beta)


class MnasNetReward:
    """``Evaluated -> reward``: MnasNet eq. 2 over one or more costs.

    Args:
        targets: ``{"latency": T_ms, "energy": E_mJ, …}``. A target of ``None`` for latency means no
            latency term (reward = accuracy). A ``None`` energy target is fixed to the energy of the
            first evaluated member with one (documented normalisation; the ranking of candidates is
            what matters).
        alpha, beta: exponents (see :data:`REWARD_SETTINGS`).

    Members without an accuracy (``None``: not measured, or absent from a tabular benchmark) get
    reward 0, the minimum (rewards are ≥ 0).
    """

    def __init__(self, targets: Mapping[str, float | None], alpha: float = -0.07, beta: float = -0.07):
        self.targets = dict(targets)
        self.alpha, self.beta = float(alpha), float(beta)

    @classmethod
    def setting(cls, name: str, targets: Mapping[str, float | None]) -> "MnasNetReward":
        """``"soft"`` or ``"hard"`` (raises ConfigError otherwise)."""
        key = name.lower()
        if key not in REWARD_SETTINGS:
            raise ConfigError(f"unknown reward setting '{name}'; valid: {', '.join(REWARD_SETTINGS)}")
        alpha, beta = REWARD_SETTINGS[key]
        return cls(targets, alpha, beta)

    def __call__(self, e: Evaluated) -> float:
        from hwnas.search.pareto import weighted_product

        if e.accuracy is None:
            return 0.0
        targets = {}
        for name, target in self.targets.items():
            if target is None and name in ("energy", "energy_mj") and e.energy_mj is not None:
                self.targets[name] = target = float(e.energy_mj)
            if target is not None:
                targets[name] = target
        if not targets:
            return float(e.accuracy)
        value = weighted_product(e.to_dict(), targets, alpha=self.alpha, beta=self.beta)
        return value if math.isfinite(value) else 0.0

    def __repr__(self) -> str:
        return f"MnasNetReward(targets={self.targets}, alpha={self.alpha}, beta={self.beta})"


# ============================================================================ controller
def _controller_cls():
    import torch
    from torch import nn

    class Controller(nn.Module):
        """LSTM policy over a sequence of decisions with ``sizes[i]`` options each.

        Input of step ``i`` is the embedding of the choice made at step ``i−1`` (a learned start
        token at step 0); the hidden state goes through decision ``i``'s linear head to logits.
        Heads start at zero, so the initial policy is uniform.
        """

        def __init__(self, sizes: Sequence[int], hidden: int = 64, tanh_constant: float | None = 2.5,
                     temperature: float = 1.0):
            super().__init__()
            self.sizes = [int(s) for s in sizes]
            self.offsets = [0]
            for s in self.sizes[:-1]:
                self.offsets.append(self.offsets[-1] + s)
            self.hidden = int(hidden)
            self.tanh_constant = tanh_constant
            self.temperature = float(temperature)
            self.start = nn.Parameter(torch.zeros(1, hidden))
            self.embed = nn.Embedding(sum(self.sizes), hidden)
            self.lstm = nn.LSTMCell(hidden, hidden)
            self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in self.sizes)
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
            for head in self.heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

        def _logits(self, i: int, h):
            logits = self.heads[i](h) / self.temperature
            if self.tanh_constant:
                logits = self.tanh_constant * torch.tanh(logits)
            return logits

        def forward(self, n: int = 1, choices=None, generator=None):
            """Sample ``n`` members (or score the given ``choices`` ``(n, D)`` long tensor).

            Returns ``(choices (n, D) long, log_prob (n,), entropy (n,))``.
            """
            if choices is not None:
                n = choices.shape[0]
            x = self.start.expand(n, -1)
            h = c = torch.zeros(n, self.hidden)
            out, logps, ents = [], [], []
            for i, size in enumerate(self.sizes):
                h, c = self.lstm(x, (h, c))
                dist = torch.distributions.Categorical(logits=self._logits(i, h))
                if choices is None:
                    a = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
                else:
                    a = choices[:, i]
                out.append(a)
                logps.append(dist.log_prob(a))
                ents.append(dist.entropy())
                x = self.embed(a + self.offsets[i])
            return torch.stack(out, 1), torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1)

        def probabilities(self, greedy_prefix: bool = True):
            """Per decision, the option probabilities along the greedy (argmax) path."""
            with torch.no_grad():
                x = self.start
                h = c = torch.zeros(1, self.hidden)
                probs = []
                for i in range(len(self.sizes)):
                    h, c = self.lstm(x, (h, c))
                    p = torch.softmax(self._logits(i, h), -1)[0]
                    probs.append(p.tolist())
                    x = self.embed(p.argmax().view(1) + self.offsets[i])
            return probs

    return Controller


def Controller(sizes: Sequence[int], **kwargs):  # noqa: N802 - factory keeps torch import lazy
    """An LSTM controller over decisions with ``sizes`` options (see the class docstring)."""
    return _controller_cls()(sizes, **kwargs)


class RLStrategy(Strategy):
    """REINFORCE (moving-average baseline) or PPO updates of an LSTM controller.

    Options:
        controller_lr (0.02): Adam learning rate of the controller (``lr`` is the supernet's).
        hidden (64): LSTM width.
        baseline_decay (0.9): ``b ← decay·b + (1−decay)·mean(R)`` after each round.
        entropy (1e-3): entropy bonus weight.
        normalize (True): divide advantages by a running standard deviation of the rewards (the
            rewards of a search differ by ~1 % of accuracy; without it the step size depends on the
            accuracy scale).
        advantage ("rank"): ``"rank"`` — each round's rewards (with the members the latency limit
            rejected, when ``learn_rejections``) replaced by their centred ranks in [−0.5, 0.5];
            ``"ema"`` — ``R − b`` with the moving-average baseline ``b`` (normalised if ``normalize``).
        learn_rejections (False): also train on members the latency limit rejected before
            evaluation, with reward 0 (no query spent).
        tanh_constant (2.5), temperature (1.0): logit shaping as in ENAS/NASNet controllers.
        algo ("reinforce"): or ``"ppo"`` (clip 0.2, ``ppo_epochs`` 4 passes per round).
    """

    def __init__(self, space, sampler, rng, controller_lr: float = 0.02, hidden: int = 64, baseline_decay: float = 0.9,
                 entropy: float = 1e-3, normalize: bool = True, tanh_constant: float | None = 2.5,
                 temperature: float = 1.0, algo: str = "reinforce", ppo_clip: float = 0.2, ppo_epochs: int = 4,
                 advantage: str = "rank", learn_rejections: bool = False, seed: int = 0, **options: Any):
        import torch

        super().__init__(space, sampler, rng, **options)
        if algo not in ("reinforce", "ppo"):
            raise ConfigError(f"unknown RL algorithm '{algo}'; valid: reinforce, ppo")
        self.algo = algo
        self.advantage = advantage
        self.learn_rejections = bool(learn_rejections)
        self.rejected: list[tuple[int, ...]] = []
        self.fallbacks = 0  # members drawn by the uniform constrained sampler (see ask)
        self.ppo_clip, self.ppo_epochs = float(ppo_clip), int(ppo_epochs)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy)
        self.normalize = bool(normalize)
        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            self.controller = Controller([len(d.options) for d in space.decisions], hidden=hidden,
                                         tanh_constant=tanh_constant, temperature=temperature)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=float(controller_lr))
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.pending: dict[tuple[int, ...], float] = {}  # choices -> log-prob at sampling time (PPO)
        self.updates = 0

    def ask(self, n: int):
        """``n`` members sampled from the controller; with a latency limit on the sampler, members
        over it are redrawn. When the controller's draws in a round are rejected
        ``max_rejections`` times (a policy that drifted over the limit), the remaining members of
        the round come from the uniform constrained sampler instead (counted in ``fallbacks``;
        the controller is still trained on them) — which stops with the achievable range if the
        limit is truly impossible."""
        import torch

        out: list[tuple[int, ...]] = []
        rejected = 0
        while len(out) < n:
            if rejected >= self.sampler.max_rejections:
                c = self.sampler.sample(self.rng)  # raises SearchError when nothing is within the limit
                with torch.no_grad():
                    _, lp, _ = self.controller(choices=torch.tensor([list(c)], dtype=torch.long))
                self.pending[c] = float(lp[0])
                self.fallbacks += 1
                out.append(c)
                continue
            # draw in chunks (i.i.d. draws; the first feasible ones are kept, the rest discarded)
            chunk = min(1024, max(2 * (n - len(out)), 32, rejected))
            with torch.no_grad():
                choices, logp, _ = self.controller(chunk, generator=self.generator)
            for row, lp in zip(choices.tolist(), logp.tolist()):
                c = tuple(int(v) for v in row)
                if self.sampler.limit is not None and not self.sampler.feasible(c):
                    self.sampler.rejections += 1
                    rejected += 1
                    if self.learn_rejections:
                        self.rejected.append(c)
                        self.pending[c] = lp
                    if rejected >= self.sampler.max_rejections:
                        break
                    continue
                self.pending[c] = lp
                out.append(c)
                if len(out) == n:
                    break
        return out

    def tell(self, results: list[tuple[Evaluated, float]]) -> None:
        import torch

        members = [tuple(e.choices) for e, _ in results]
        values = [r for _, r in results]
        if self.learn_rejections and self.rejected:
            # members the latency limit rejected before evaluation: reward 0 (no query spent)
            extra = self.rejected[: len(results)]
            members += extra
            values += [0.0] * len(extra)
        self.rejected = []
        rewards = torch.tensor(values, dtype=torch.float32)
        mean = float(rewards.mean())
        if self.baseline is None:
            self.baseline = mean
            self.reward_var = float(rewards.var(unbiased=False)) if len(results) > 1 else 0.0
        adv = rewards - self.baseline
        if self.advantage == "rank" and len(results) > 1:
            ranks = rewards.argsort().argsort().float()
            adv = ranks / (len(values) - 1) - 0.5
        elif self.normalize:
            scale = math.sqrt(max(self.reward_var or 0.0, 0.0)) + 1e-8
            adv = adv / max(scale, 1e-3 * abs(self.baseline) + 1e-8)
        choices = torch.tensor([list(c) for c in members], dtype=torch.long)
        old = torch.tensor([self.pending.get(c, 0.0) for c in members])
        for _ in range(self.ppo_epochs if self.algo == "ppo" else 1):
            _, logp, ent = self.controller(choices=choices)
            if self.algo == "ppo":
                ratio = torch.exp(logp - old)
                pg = -torch.min(ratio * adv, torch.clamp(ratio, 1 - self.ppo_clip, 1 + self.ppo_clip) * adv).mean()
            else:
                pg = -(adv * logp).mean()
            loss = pg - self.entropy_weight * ent.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.updates += 1
        d = self.baseline_decay
        self.baseline = d * self.baseline + (1 - d) * mean
        spread = float(((rewards - mean) ** 2).mean()) + (mean - self.baseline) ** 2
        self.reward_var = d * self.reward_var + (1 - d) * spread
        self.pending.clear()

    def state_dict(self):
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline, "reward_var": self.reward_var,
                "updates": self.updates, "fallbacks": self.fallbacks}

    def load_state_dict(self, state):
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline, self.reward_var = state["baseline"], state["reward_var"]
        self.updates = int(state["updates"])
        self.fallbacks = int(state.get("fallbacks", 0))

    def summary(self):
        return {"controller_updates": self.updates, "controller_fallbacks": self.fallbacks, "baseline": self.baseline,
                "algo": self.algo,
                "probabilities": self.controller.probabilities()}


@register_searcher("mnasnet")
class MnasNetSearcher(SampleSearcher):
    """``hwnas search --method mnasnet``: LSTM controller + MnasNet reward (REINFORCE or PPO).

    With a latency limit the controller's samples over it are redrawn before evaluation (option
    ``constrained=False``: evaluate them and let the reward penalise them, as MnasNet does); see
    :class:`RLStrategy` for its options.
    """

    default_batch = 16
    strategy_cls = RLStrategy



register_searcher("rl")(type("RLSearcher", (MnasNetSearcher,), {"__doc__": "Alias of ``mnasnet``."}))

__all__ = ["REWARD_SETTINGS", "mnasnet_reward", "MnasNetReward", "Controller", "RLStrategy", "MnasNetSearcher"]
