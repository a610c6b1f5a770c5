"""Multi-objective results: Pareto front, MnasNet weighted-product ranking, and a plot.

Every evaluated architecture of a search is a point (accuracy ↑, latency ms ↓, energy mJ ↓,
params ↓, …). :func:`pareto_front` returns the non-dominated points; :func:`weighted_product`
ranks them with MnasNet's multiplicative objective generalised to several costs
(Tan et al. 2019, eq. 2: ``ACC × Π_i (m_i / T_i)^{w_i}``, with ``w_i = α`` when ``m_i ≤ T_i`` and
``β`` otherwise); ``hwnas search --objective latency,energy`` picks the costs.

Points are plain mappings (e.g. :class:`hwnas.search.base.Evaluated` as a dict, or a row of
``history.jsonl``); the metric names are their keys. Missing or ``None`` values make a point
ineligible (it is never on the front and ranks last).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from hwnas.errors import ConfigError

#: Known metrics and their direction (+1 maximise, −1 minimise); ``--objective`` names map here.
METRICS: dict[str, tuple[str, int]] = {
    "accuracy": ("accuracy", +1),
    "latency": ("latency_ms", -1),
    "latency_ms": ("latency_ms", -1),
    "energy": ("energy_mj", -1),
    "energy_mj": ("energy_mj", -1),
    "params": ("params", -1),
    "macs": ("macs", -1),
}


def resolve_metrics(names: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"latency,energy"`` → ``[("latency_ms", -1), ("energy_mj", -1)]``.

    Raises:
        ConfigError: an unknown metric name (the message lists the valid ones).
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in names:
        key = name.lower().replace("-", "_")
        if key not in METRICS:
            raise ConfigError(f"unknown objective '{name}'; valid objectives: {', '.join(sorted(METRICS))}")
        if METRICS[key] not in out:
            out.append(METRICS[key])
    if not out:
        raise ConfigError("an objective needs at least one metric (e.g. 'latency' or 'latency,energy')")
    return out


def _value(point: Any, key: str) -> float | None:
    value = point.get(key) if isinstance(point, Mapping) else getattr(point, key, None)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _vector(point: Any, metrics: Sequence[tuple[str, int]]) -> tuple[float, ...] | None:
    """The point as a maximisation vector, or ``None`` when a metric is missing."""
    values = []
    for key, sign in metrics:
        v = _value(point, key)
        if v is None:
            return None
        values.append(sign * v)
    return tuple(values)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (maximisation vectors): no worse anywhere, better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points: Sequence[Any], metrics: str | Sequence = ("accuracy", "latency")) -> list[int]:
    """Indices of the non-dominated points, sorted by the first cost metric (ascending).

    Args:
        points: mappings/objects with the metric keys (``accuracy``, ``latency_ms``, ``energy_mj``…).
        metrics: metric names (``"accuracy,latency,energy"``) or ``(key, sign)`` pairs.
            Duplicated points (equal vectors) keep their first occurrence only.
    """
    metrics = resolve_metrics(metrics) if isinstance(metrics, str) or (
        metrics and isinstance(metrics[0], str)) else list(metrics)
    vectors = [_vector(p, metrics) for p in points]
    front: list[int] = []
    seen: set[tuple[float, ...]] = set()
    # O(n²) is fine for search histories (≤ a few thousand points).
    for i, vi in enumerate(vectors):
        if vi is None or vi in seen:
            continue
        if any(vj is not None and dominates(vj, vi) for vj in vectors):
            continue
        seen.add(vi)
        front.append(i)
    order_key = next(((k, s) for k, s in metrics if s < 0), metrics[0])
    front.sort(key=lambda i: order_key[1] * vectors[i][metrics.index(order_key)])  # the cost, ascending
    return front


def weighted_product(point: Any, targets: Mapping[str, float], *, alpha: float = -0.07, beta: float = -0.07,
                     accuracy_key: str = "accuracy") -> float:
    """MnasNet's multi-objective reward over one or more costs (Tan et al. 2019, eq. 2).

    ``ACC × Π_i (m_i / T_i)^{w_i}``, ``w_i = alpha`` if ``m_i ≤ T_i`` else ``beta``. Soft setting
    (the paper's default): α = β = −0.07; hard constraint: α = 0, β = −1. ``targets`` maps a metric
    name (``latency``/``energy``/… or the key) to its target ``T_i`` (same unit as the metric).
    Accuracy is used as given (fraction or percent; the ranking is the same).

    Returns ``-inf`` when the accuracy or a cost is missing (the point ranks last).

    Raises:
        ConfigError: unknown metric name or a non-positive target.
    """
    acc = _value(point, accuracy_key)
    if acc is None:
        return -math.inf
    reward = acc
    for name, target in targets.items():
        (key, _), = resolve_metrics([name])
        if target is None or not target > 0:
            raise ConfigError(f"objective target for '{name}' must be > 0, got {target}")
        m = _value(point, key)
        if m is None or m <= 0:
            return -math.inf
        w = alpha if m <= target else beta
        reward *= (m / target) ** w
    return reward


def rank_weighted_product(points: Sequence[Any], targets: Mapping[str, float], **kwargs) -> list[int]:
    """Indices of ``points`` by descending :func:`weighted_product` (ties keep input order)."""
    scores = [weighted_product(p, targets, **kwargs) for p in points]
    return sorted(range(len(points)), key=lambda i: -scores[i])


def plot_front(points: Sequence[Any], path: str | Path, *, x: str = "latency", y: str = "accuracy",
               front: Sequence[int] | None = None, limit: float | None = None,
               best: int | None = None, title: str | None = None) -> Path:
    """Scatter of every evaluated point (``x`` cost vs ``y``) with the Pareto front as a line; PNG.

    Args:
        points: evaluated points (mappings/objects).
        path: output PNG (written atomically).
        x, y: metric names (``latency``/``energy``/``params``/``macs``; ``accuracy``).
        front: indices of the front (default: :func:`pareto_front` over ``y`` and ``x``).
        limit: draw the budget as a vertical line (same unit as ``x``).
        best: index of the chosen architecture (drawn as a star).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.io import atomic_path

    (xk, _), = resolve_metrics([x])
    (yk, _), = resolve_metrics([y])
    if front is None:
        front = pareto_front(points, [(yk, +1), (xk, -1)])
    xs = [_value(p, xk) for p in points]
    ys = [_value(p, yk) for p in points]
    pts = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.45, color="tab:blue",
                   label=f"evaluated ({len(pts)})")
    fr = sorted((xs[i], ys[i]) for i in front if xs[i] is not None and ys[i] is not None)
    if fr:
        ax.plot([p[0] for p in fr], [p[1] for p in fr], "-o", color="tab:red", ms=4, lw=1.2,
                label=f"Pareto front ({len(fr)})")
    if limit is not None:
        ax.axvline(limit, color="gray", ls="--", lw=1, label=f"limit {limit:.4g}")
    if best is not None and xs[best] is not None and ys[best] is not None:
        ax.scatter([xs[best]], [ys[best]], marker="*", s=160, color="gold", edgecolor="k", zorder=5, label="chosen")
    ax.set_xlabel({"latency_ms": "latency (ms)", "energy_mj": "energy (mJ)"}.get(xk, xk))
    ax.set_ylabel(yk)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["METRICS", "resolve_metrics", "dominates", "pareto_front", "weighted_product", "rank_weighted_product",
           "plot_front"]
