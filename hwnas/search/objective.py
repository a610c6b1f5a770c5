"""Latency-aware losses and rewards, each the formula of its paper with the paper's defaults.

Latencies are in milliseconds. ``CE`` is the (mean) cross-entropy of a batch; ``LAT`` the
(expected) latency of the architecture on the target from the predictor's per-layer table.

=============  =====================================================  ===========================
method         formula                                                defaults
=============  =====================================================  ===========================
``fbnet``      ``CE · α · (log LAT)^β``  (Wu et al. 2019, eq. 2)        α = 0.2, β = 0.6
``proxyless``  ``α · CE · (log E[LAT] / log T)^β`` ("mul#log", the     α = 0.2, β = 0.3 (reference
               paper's multiplicative form; Cai et al. 2019, §3.3 and  search script)
               reference code)
``proxyless``  ``CE + λ · (E[LAT] − T) / T`` ("add#linear"; eq. 4's    λ = 0.1
  additive     ``CE + λ₂·E[LAT]`` with λ₂ = λ/T, up to a constant)
``singlepath`` ``CE + λ · log LAT`` (Stamoulis et al. 2019, eq. 8)     λ = 0.02
``mnasnet``    reward ``ACC · (LAT/T)^w``, ``w = α`` if LAT ≤ T else β  soft α = β = −0.07;
               (Tan et al. 2019, eq. 2)                               hard α = 0, β = −1
=============  =====================================================  ===========================

Hard constraint (``hard=True``), for every loss: the latency term is evaluated at
``max(LAT, T)``, so an architecture within the budget gets no latency pressure and one above it
gets the paper's pressure — the analogue of MnasNet's hard reward (α = 0 below the target).

``(log LAT)^β`` needs ``LAT > 1`` in the unit used: FBNet measured tens of milliseconds, but
small-input mobile nets can run under 1 ms. ``unit_ms`` rescales (``LAT / unit_ms``); the pipeline
picks ``unit_ms = 1`` unless the space's fastest member is faster than ``e`` ms, in which case
``unit_ms = min_ms / e`` (recorded in ``config.yaml``). Note that ``log(LAT^β) ≠ (log LAT)^β``:
the tests pin the latter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hwnas.errors import SearchError, UnknownNameError


def _t(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)


def fbnet_loss(ce, lat, alpha: float = 0.2, beta: float = 0.6):
    """FBNet (Wu et al. 2019, eq. 2): ``CE · α · (log LAT)^β`` (natural log, LAT > 1)."""
    return _t(ce) * alpha * torch.log(_t(lat)) ** beta


def proxyless_mul_log_loss(ce, lat, target, alpha: float = 0.2, beta: float = 0.3):
    """ProxylessNAS multiplicative form: ``α · CE · (log E[LAT] / log T)^β``."""
    return alpha * _t(ce) * (torch.log(_t(lat)) / math.log(target)) ** beta


def proxyless_add_loss(ce, lat, target, lam: float = 0.1):
    """ProxylessNAS additive form (eq. 4, normalised as the reference code): ``CE + λ·(E[LAT] − T)/T``."""
    return _t(ce) + lam * (_t(lat) - target) / target


def singlepath_loss(ce, lat, lam: float = 0.02):
    """Single-Path NAS (Stamoulis et al. 2019, eq. 8): ``CE + λ · log LAT``."""
    return _t(ce) + lam * torch.log(_t(lat))


def mnasnet_reward(acc: float, lat: float, target: float, alpha: float = -0.07, beta: float = -0.07) -> float:
    """MnasNet (Tan et al. 2019, eq. 2): ``ACC · (LAT/T)^w`` with ``w = α`` if ``LAT ≤ T`` else ``β``.

    Soft: α = β = −0.07; hard: α = 0, β = −1 (:data:`MNASNET_HARD`).
    """
    w = alpha if lat <= target else beta
    return float(acc) * (float(lat) / float(target)) ** w


MNASNET_SOFT = {"alpha": -0.07, "beta": -0.07}
MNASNET_HARD = {"alpha": 0.0, "beta": -1.0}


@dataclass
class Objective:
    """A latency-aware objective bound to a target and budget.

    Attributes:
        method: the paper it follows (``fbnet`` | ``proxyless`` | ``singlepath`` | ``mnasnet``).
        latency_budget_ms: the budget ``T`` (``None``: no budget; only ``fbnet``/``singlepath``
            losses work without one; ``proxyless`` and ``mnasnet`` need a reference).
        form: ``proxyless`` only: ``mul_log`` (default) or ``add``.
        hard: evaluate latency terms at ``max(LAT, T)`` (see the module docstring).
        alpha, beta, lam: the formula's constants (``None``: the paper's default).
        unit_ms: latency unit for the log forms (``LAT / unit_ms``).
        predictor, table: the latency predictor and its ``LayerLatencyTable`` (set by the pipeline).
        latency_range_ms: ``(min, max)`` predicted latency over the space.
    """

    method: str
    latency_budget_ms: float | None = None
    form: str = "mul_log"
    hard: bool = False
    alpha: float | None = None
    beta: float | None = None
    lam: float | None = None
    unit_ms: float = 1.0
    predictor: Any = None
    table: Any = None
    latency_range_ms: tuple[float, float] | None = None

    DEFAULTS = {
        "fbnet": {"alpha": 0.2, "beta": 0.6},
        "proxyless": {"alpha": 0.2, "beta": 0.3, "lam": 0.1},
        "singlepath": {"lam": 0.02},
        "mnasnet": dict(MNASNET_SOFT),
    }

    def __post_init__(self) -> None:
        key = self.method.lower()
        sample_based = ("rl", "evolution", "random")  # rank by MnasNet's reward
        if key not in self.DEFAULTS and key not in sample_based:
            raise UnknownNameError("objective", self.method, [*self.DEFAULTS, *sample_based])
        self.method = key
        base = "mnasnet" if key in sample_based else key
        if base == "mnasnet" and self.hard:
            defaults = dict(MNASNET_HARD)
        else:
            defaults = self.DEFAULTS[base]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.form not in ("mul_log", "add"):
            raise SearchError(f"unknown proxyless objective form '{self.form}'; expected mul_log or add")
        if base in ("proxyless", "mnasnet") and self.latency_budget_ms is None:
            raise SearchError(f"the {base} objective needs a latency budget (--latency-ms)")
        if self.hard and self.latency_budget_ms is None:
            raise SearchError("a hard latency constraint needs a budget (--latency-ms)")

    # -------------------------------------------------------------- losses
    def _lat(self, lat):
        lat = _t(lat)
        if self.hard:
            lat = torch.clamp(lat, min=float(self.latency_budget_ms))
        return lat

    def loss(self, ce: torch.Tensor, latency_ms: torch.Tensor) -> torch.Tensor:
        """The differentiable search loss from a batch's CE and the (expected) latency in ms."""
        lat = self._lat(latency_ms)
        t = self.latency_budget_ms
        u = self.unit_ms
        if self.method == "fbnet":
            return fbnet_loss(ce, lat / u, self.alpha, self.beta)
        if self.method == "proxyless":
            if self.form == "add":
                return proxyless_add_loss(ce, lat, t, self.lam)
            return proxyless_mul_log_loss(ce, lat / u, t / u, self.alpha, self.beta)
        if self.method == "singlepath":
            return singlepath_loss(ce, lat / u, self.lam)
        raise SearchError(f"the {self.method} objective is a reward, not a differentiable loss")

    def reward(self, accuracy: float, latency_ms: float) -> float:
        """MnasNet reward ``ACC · (LAT/T)^w`` (used by RL, evolution and random search)."""
        if self.latency_budget_ms is None:
            return float(accuracy)
        sample_based = self.method in ("mnasnet", "rl", "evolution", "random")
        alpha = self.alpha if sample_based else MNASNET_SOFT["alpha"]
        beta = self.beta if sample_based else MNASNET_SOFT["beta"]
        return mnasnet_reward(accuracy, latency_ms, self.latency_budget_ms, alpha, beta)

    def feasible(self, latency_ms: float) -> bool:
        """Within the budget (always, without one)."""
        return self.latency_budget_ms is None or latency_ms <= self.latency_budget_ms * (1 + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("predictor", None)
        d.pop("table", None)
        if d.get("latency_range_ms") is not None:
            d["latency_range_ms"] = list(d["latency_range_ms"])
        return d


def check_feasible(latency_ms: float | None, bounds: tuple[float, float], target: str, space: str) -> None:
    """Fail fast when the budget is outside what the space can reach.

    Raises:
        SearchError: ``latency_ms`` is below the space's fastest member, naming the achievable range.
    """
    if latency_ms is None:
        return
    lo, hi = bounds
    if latency_ms <= 0 or latency_ms < lo:
        raise SearchError(f"--latency-ms {latency_ms:g} is infeasible on '{target}' for space '{space}': "
                          f"achievable range is {lo:.3f}–{hi:.3f} ms (fastest to slowest member); "
                          f"raise the budget, lower --resolution or --width, or pick a smaller space")


def log_unit(min_ms: float) -> float:
    """The ``unit_ms`` that keeps ``log(LAT/unit) ≥ 1`` over the space (1.0 when ``min_ms ≥ e``)."""
    return 1.0 if min_ms >= math.e else min_ms / math.e


__all__ = ["Objective", "fbnet_loss", "proxyless_mul_log_loss", "proxyless_add_loss", "singlepath_loss",
           "mnasnet_reward", "MNASNET_SOFT", "MNASNET_HARD", "check_feasible", "log_unit"]
