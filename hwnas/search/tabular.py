"""Tabular benchmark mode: NAS-Bench-201 CIFAR-10 accuracy × HW-NAS-Bench Pixel 3 latency.

Searchers can be judged without training when every member's accuracy and latency come from a
table. The space is NAS-Bench-201's cell (Dong & Yang 2020): 6 edges (node ``i ← j`` for
``0 ≤ j < i ≤ 3``), each one of 5 ops, ``5^6 = 15,625`` members, decoded to NB201's string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

Data (never copied into the repository; looked up in ``$HWNAS_SHARED/data`` or ``../shared/data``
beside the checkout, or given as ``data_dir``):

* ``nasbench201-acc/nb201_cifar10_acc_ge90.csv`` — ``nb201_idx, arch_str, cifar10_acc`` (%),
  from microsoft/nn-Meter. It holds **only the 8,689 architectures with accuracy ≥ 90 %**.
* ``help-latency/nb201_latency_ms.csv`` — HW-NAS-Bench latencies for all 15,625 members (via
  HayeonLee/HELP); column ``pixel3`` (ms; equal to HW-NAS-Bench's CIFAR-10 Pixel 3 values).

Only members present in both files count (joined on ``nb201_idx``, arch strings checked equal).
The other 6,936 members have a known latency but **no accuracy**: the accuracy file leaves them
out, and all we know is that their accuracy is below 90 % (or unrecorded). They are *infeasible*:
:meth:`NB201Benchmark.query` returns ``accuracy=None`` for them, the evaluator reports
``accuracy=None``, searchers score them with the lowest reward (0) and never choose them, and a
query of one still counts against the budget. The best-under-a-limit reference is computed over
the joined members only.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from hwnas.errors import SpecError, TableError
from hwnas.search.base import Evaluated
from hwnas.spaces.base import Decision, SearchSpace

#: NAS-Bench-201 operations, in NB201's index order.
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The 6 edges ``(to, from)`` in the order of NB201's arch string.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

ACC_FILE = Path("nasbench201-acc") / "nb201_cifar10_acc_ge90.csv"
LAT_FILE = Path("help-latency") / "nb201_latency_ms.csv"


def default_data_dir() -> Path:
    """``$HWNAS_SHARED/data``, else ``../shared/data`` beside the repository checkout."""
    env = os.environ.get("HWNAS_SHARED")
    if env:
        return Path(env) / "data"
    return Path(__file__).resolve().parents[3] / "shared" / "data"


class NB201Space:
    """The NAS-Bench-201 cell as a space: 6 decisions (edges) × 5 options (ops).

    Same member interface as :class:`hwnas.spaces.SearchSpace` (``decisions``, ``size``,
    ``check``, ``sample``, ``describe``), but :meth:`decode` returns NB201's arch *string* — a
    cell is not an :class:`~hwnas.arch.ArchSpec`, so this space is for the tabular benchmark only.
    """

    name = "nb201"
    decisions = tuple(Decision(f"edge{to}<-{frm}", NB201_OPS) for to, frm in NB201_EDGES)
    size = SearchSpace.size
    check = SearchSpace.check
    sample = SearchSpace.sample
    describe = SearchSpace.describe

    def decode(self, choices: Sequence[int]) -> str:
        """``(3, 3, 0, 1, 3, 2)`` → ``|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|…|``."""
        ops = [NB201_OPS[c] for c in self.check(choices)]
        nodes, k = [], 0
        for to in (1, 2, 3):
            nodes.append("|" + "|".join(f"{ops[k + j]}~{j}" for j in range(to)) + "|")
            k += to
        return "+".join(nodes)

    def encode(self, arch_str: str) -> tuple[int, ...]:
        """Inverse of :meth:`decode`.

        Raises:
            SpecError: not a NAS-Bench-201 cell string.
        """
        try:
            nodes = arch_str.strip().split("+")
            if len(nodes) != 3:
                raise ValueError
            out = []
            for to, node in enumerate(nodes, start=1):
                parts = node.strip("|").split("|")
                if len(parts) != to:
                    raise ValueError
                for j, part in enumerate(parts):
                    op, src = part.split("~")
                    if int(src) != j:
                        raise ValueError
                    out.append(NB201_OPS.index(op))
            return tuple(out)
        except ValueError:
            raise SpecError(f"not a NAS-Bench-201 cell string: {arch_str!r}", source="space 'nb201'") from None

    def __repr__(self) -> str:
        return f"NB201Space(size={self.size})"


@dataclass(frozen=True)
class TabularRecord:
    """One member's table entry: NB201 index, arch string, accuracy (%, ``None`` when absent from
    the accuracy table) and latency (ms)."""

    nb201_idx: int
    arch_str: str
    accuracy: float | None
    latency_ms: float

    @property
    def in_join(self) -> bool:
        return self.accuracy is not None


class NB201Benchmark:
    """NB201 CIFAR-10 accuracy joined with one HW-NAS-Bench latency column (default ``pixel3``).

    Args:
        data_dir: folder holding ``nasbench201-acc/`` and ``help-latency/`` (default
            :func:`default_data_dir`).
        device: latency column of ``nb201_latency_ms.csv`` (``pixel3``, ``raspi4``, ``eyeriss``, …).

    Raises:
        TableError: a file is missing or malformed, the device column is unknown, or the two files
            disagree on an index's arch string.
    """

    def __init__(self, data_dir: str | Path | None = None, device: str = "pixel3"):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.device = device
        self.space = NB201Space()
        acc_path, lat_path = self.data_dir / ACC_FILE, self.data_dir / LAT_FILE
        for p in (acc_path, lat_path):
            if not p.is_file():
                raise TableError(f"{p}: tabular benchmark file not found (set $HWNAS_SHARED or pass data_dir)")
        latency: dict[int, tuple[str, float]] = {}
        with open(lat_path, newline="") as fh:
            reader = csv.DictReader(fh)
            if device not in (reader.fieldnames or []):
                cols = [c for c in (reader.fieldnames or []) if c not in ("nb201_idx", "arch_str")]
                raise TableError(f"{lat_path}: no latency column '{device}'; columns: {', '.join(cols)}")
            for row in reader:
                latency[int(row["nb201_idx"])] = (row["arch_str"], float(row[device]))
        accuracy: dict[int, float] = {}
        with open(acc_path, newline="") as fh:
            for row in csv.DictReader(fh):
                idx = int(row["nb201_idx"])
                if idx in latency and latency[idx][0] != row["arch_str"]:
                    raise TableError(f"{acc_path}: index {idx} is {row['arch_str']!r} but {lat_path.name} "
                                     f"says {latency[idx][0]!r}")
                accuracy[idx] = float(row["cifar10_acc"])
        self._by_choices: dict[tuple[int, ...], TabularRecord] = {}
        for idx, (arch_str, lat) in latency.items():
            choices = self.space.encode(arch_str)
            self._by_choices[choices] = TabularRecord(idx, arch_str, accuracy.get(idx), lat)
        if len(self._by_choices) != self.space.size:
            raise TableError(f"{lat_path}: expected {self.space.size} distinct cells, found {len(self._by_choices)}")
        #: accuracy entries whose index is not in the latency file (do not count)
        self.unmatched_accuracy = sum(1 for i in accuracy if i not in latency)

    # ------------------------------------------------------------------ queries
    def query(self, choices: Sequence[int]) -> TabularRecord:
        """The table entry of a member (every member has one; ``accuracy`` may be ``None``)."""
        return self._by_choices[self.space.check(choices)]

    def latency(self, choices: Sequence[int]) -> float:
        """Latency in ms (known for every member)."""
        return self.query(choices).latency_ms

    @cached_property
    def joined(self) -> list[tuple[tuple[int, ...], TabularRecord]]:
        """Members present in both tables, ordered by NB201 index."""
        return sorted(((c, r) for c, r in self._by_choices.items() if r.in_join), key=lambda t: t[1].nb201_idx)

    def median_latency(self) -> float:
        """Median Pixel-3 (or ``device``) latency over the joined members (ms; the mean of the two
        middle values when their count is even)."""
        lats = sorted(r.latency_ms for _, r in self.joined)
        n = len(lats)
        return lats[n // 2] if n % 2 else 0.5 * (lats[n // 2 - 1] + lats[n // 2])

    def latency_bounds(self, joined_only: bool = False) -> tuple[float, float]:
        """``(min, max)`` latency in ms over all members (or the joined ones)."""
        lats = [r.latency_ms for _, r in (self.joined if joined_only else self._by_choices.items())]
        return min(lats), max(lats)

    def best_under(self, limit_ms: float | None) -> tuple[tuple[int, ...], TabularRecord]:
        """The joined member with the highest accuracy and latency ≤ ``limit_ms`` (ties: lower latency).

        Raises:
            TableError: no joined member meets the limit.
        """
        cands = [(c, r) for c, r in self.joined if limit_ms is None or r.latency_ms <= limit_ms]
        if not cands:
            lo, hi = self.latency_bounds(joined_only=True)
            raise TableError(f"no architecture with latency <= {limit_ms} ms; joined range {lo:.4g}–{hi:.4g} ms")
        return max(cands, key=lambda t: (t[1].accuracy, -t[1].latency_ms))

    def summary(self) -> dict:
        lo, hi = self.latency_bounds(joined_only=True)
        return {"members": self.space.size, "joined": len(self.joined), "device": self.device,
                "joined_latency_ms": [lo, hi], "median_latency_ms": self.median_latency()}


class TabularEvaluator:
    """Evaluator over an :class:`NB201Benchmark`: accuracy (fraction) and latency from the table.

    ``Evaluated.accuracy`` is ``cifar10_acc / 100`` or ``None`` for members absent from the join;
    ``energy_mj`` is ``None`` (HW-NAS-Bench's energy is not in the shared data), and ``params`` /
    ``macs`` are 0 (not in the shared data either). ``arch_compact`` is the NB201 string.
    """

    cheap = True  # evaluations are table look-ups: no point in worker processes

    def __init__(self, bench: NB201Benchmark):
        self.bench = bench
        self.space = bench.space

    def latency(self, choices: Sequence[int]) -> float:
        return self.bench.latency(choices)

    def latency_bounds(self) -> tuple[float, float]:
        return self.bench.latency_bounds()

    def evaluate(self, choices: Sequence[int], step: int = 0) -> Evaluated:
        rec = self.bench.query(choices)
        return Evaluated(choices=tuple(choices), arch_compact=rec.arch_str,
                         accuracy=None if rec.accuracy is None else rec.accuracy / 100.0,
                         latency_ms=rec.latency_ms, energy_mj=None, params=0, macs=0, step=int(step))

    def evaluate_many(self, batch: Sequence[Sequence[int]], start_step: int = 0) -> list[Evaluated]:
        return [self.evaluate(c, start_step + i) for i, c in enumerate(batch)]


def random_member(rng: random.Random) -> tuple[int, ...]:
    """A uniform member of the NB201 space."""
    return NB201Space().sample(rng)


__all__ = ["NB201_OPS", "NB201_EDGES", "NB201Space", "NB201Benchmark", "TabularRecord", "TabularEvaluator",
           "default_data_dir"]
