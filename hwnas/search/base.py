"""What every searcher shares: results, budgets, the run folder and the registry.

A searcher is a class registered under a method name::

    @register_searcher("fbnet")
    class FBNetSearcher(Searcher):
        def run(self, space, objective, data, budget, run) -> SearchResult: ...

``get_searcher(name, **options)`` imports the modules that define searchers lazily
(``hwnas.search.differentiable``, ``.rl``, ``.evolution``, ``.random_search``, ``.nsga2``; missing
ones are skipped) and returns an instance.

Every run writes one :class:`RunDir`::

    runs/<name>/
      config.yaml        the full configuration (CLI options resolved)
      history.jsonl      one JSON object per line: per step (losses, accuracy, expected latency,
                         temperature, entropy) or per evaluated architecture (``"kind": "eval"``)
      checkpoints/       last.pt — everything needed to continue (see :meth:`RunDir.save_checkpoint`)
      arch.yaml          the chosen architecture
      model.pt           trained weights of the final model (state_dict + compact arch)
      model.tflite       the exported model
      result.json        the summary (target, method, space, arch, latencies, accuracies, artifacts)
      plots/             PNG plots

Resuming: a searcher calls :meth:`RunDir.load_checkpoint` at start; when it returns a state the
searcher restores weights, optimizers, schedules and RNG states from it, calls
:meth:`RunDir.truncate_history` with the checkpoint's ``history_lines`` and continues. Because
RNG states are restored, a resumed run gives the same ``arch.yaml`` as an uninterrupted one.
"""

from __future__ import annotations

import importlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hwnas.arch import ArchSpec
from hwnas.errors import ConfigError, SearchError, UnknownNameError
from hwnas.io import atomic_path, atomic_write_json, atomic_write_yaml, load_structured

Choices = tuple[int, ...]

#: Modules imported by :func:`get_searcher` to fill the registry (missing ones are skipped).
SEARCHER_MODULES = ("hwnas.search.differentiable", "hwnas.search.rl", "hwnas.search.evolution",
                    "hwnas.search.random_search", "hwnas.search.nsga2")


# ---------------------------------------------------------------------------------------- results
@dataclass
class Evaluated:
    """One evaluated architecture.

    Attributes:
        choices: the member of the space (one option index per decision).
        arch_compact: :meth:`ArchSpec.to_compact` of the decoded member.
        accuracy: validation accuracy in [0, 1] (``None`` when not measured, e.g. latency-only).
        latency_ms: predicted (or measured) latency on the target, milliseconds.
        energy_mj: predicted energy in millijoules, ``None`` when the target has no power model.
        params: parameter count; macs: multiply-accumulates.
        step: search step (or query index) at which it was evaluated.
    """

    choices: tuple[int, ...]
    arch_compact: str
    accuracy: float | None
    latency_ms: float
    energy_mj: float | None
    params: int
    macs: int
    step: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluated":
        return cls(choices=tuple(int(c) for c in d["choices"]), arch_compact=d["arch_compact"],
                   accuracy=d.get("accuracy"), latency_ms=float(d["latency_ms"]), energy_mj=d.get("energy_mj"),
                   params=int(d["params"]), macs=int(d["macs"]), step=int(d["step"]))


@dataclass
class SearchResult:
    """What a searcher returns.

    Attributes:
        best_choices: the chosen member.
        best_arch: its ArchSpec (decoded at the space's resolution/width/classes).
        history: every evaluated architecture, in order.
        pareto: the non-dominated subset of ``history`` (accuracy up, latency down; see :func:`pareto_front`).
        extra: searcher-specific figures (e.g. ``probabilities``, ``temperature``, ``supernet_state``).
    """

    best_choices: tuple[int, ...]
    best_arch: ArchSpec
    history: list[Evaluated] = field(default_factory=list)
    pareto: list[Evaluated] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def pareto_front(items: Sequence[Evaluated], objectives: Sequence[str] = ("accuracy", "latency_ms")) -> list[Evaluated]:
    """Non-dominated items. ``accuracy`` is maximised, every other named field minimised.

    Items with a ``None`` value in an objective are left out. Duplicated architectures count once
    (the first occurrence). Returned sorted by the second objective (usually latency).
    """
    def vec(e: Evaluated) -> tuple[float, ...] | None:
        out = []
        for name in objectives:
            v = getattr(e, name)
            if v is None:
                return None
            out.append(-float(v) if name == "accuracy" else float(v))
        return tuple(out)

    seen: set[str] = set()
    cands: list[tuple[tuple[float, ...], Evaluated]] = []
    for e in items:
        v = vec(e)
        if v is None or e.arch_compact in seen:
            continue
        seen.add(e.arch_compact)
        cands.append((v, e))
    front = []
    for v, e in cands:
        dominated = any(all(a <= b for a, b in zip(w, v)) and any(a < b for a, b in zip(w, v)) for w, _ in cands)
        if not dominated:
            front.append((v, e))
    key = 1 if len(objectives) > 1 else 0
    return [e for v, e in sorted(front, key=lambda t: t[0][key])]


# ---------------------------------------------------------------------------------------- budget
@dataclass
class Budget:
    """How much work a search may do.

    Attributes:
        epochs: search epochs over the train split (supernet training).
        warmup_epochs: of those, the first epochs train weights only (architecture parameters
            frozen), as FBNet/ProxylessNAS warm up the supernet.
        steps_per_epoch: cap on optimisation steps per epoch (``None``: one pass over the train split).
        batch_size: images per weight step (and per architecture step on val).
        samples: architectures a sample-based searcher (RL, evolution, random) may evaluate.
        eval_batches: validation batches used to score one sampled architecture (sample-based searchers);
            ``None`` (default): the whole validation split (see :class:`hwnas.search.evaluator.SPOSEvaluator`
            for the standard error this keeps below the differences being ranked).
        max_seconds: wall-clock cap; the searcher stops cleanly (and checkpoints) when exceeded.
    """

    epochs: int = 8
    warmup_epochs: int = 2
    steps_per_epoch: int | None = None
    batch_size: int = 64
    samples: int = 100
    eval_batches: int | None = None
    max_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------- run folder
class RunDir:
    """The folder of one search run (see the module docstring for its layout).

    ``RunDir(path)`` creates the folder (and ``checkpoints/``, ``plots/``) if needed.
    """

    CHECKPOINT = "last.pt"

    def __init__(self, path: str | Path):
        self.root = Path(path)
        self._lines: int | None = None  # complete records in history.jsonl (counted once, then kept)
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        self.plots.mkdir(exist_ok=True)

    # paths
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / self.CHECKPOINT

    @property
    def arch(self) -> Path:
        return self.root / "arch.yaml"

    @property
    def model_pt(self) -> Path:
        return self.root / "model.pt"

    @property
    def model_tflite(self) -> Path:
        return self.root / "model.tflite"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # config
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_yaml(self.config, config)

    def read_config(self) -> dict[str, Any]:
        """The saved config. Raises ConfigError when missing or corrupt."""
        if not self.config.exists():
            raise ConfigError(f"{self.root}: not a run folder (no config.yaml)")
        data = load_structured(self.config)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config}: expected a mapping")
        return data

    # history
    def append_history(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``history.jsonl`` and fsync it (survives a kill)."""
        from hwnas.io import _json_default

        line = json.dumps(record, default=_json_default, allow_nan=True) + "\n"
        n = self.history_lines()
        with open(self.history, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._lines = n + 1

    def read_history(self) -> list[dict[str, Any]]:
        """Every complete line of ``history.jsonl`` (a torn last line from a kill is ignored)."""
        if not self.history.exists():
            return []
        out = []
        for line in self.history.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def history_lines(self) -> int:
        """Number of complete records in ``history.jsonl`` (store it in checkpoints).

        The file is parsed once per :class:`RunDir` (resume) and the count kept up to date by
        :meth:`append_history` and :meth:`truncate_history`, so a checkpoint costs the same at step
        10 and at step 100,000 (records written to the file by another object are not seen).
        """
        if self._lines is None:
            self._lines = len(self.read_history())
        return self._lines

    def truncate_history(self, lines: int) -> None:
        """Keep the first ``lines`` records (drop what a killed run wrote after its last checkpoint)."""
        records = self.read_history()[:lines]
        from hwnas.io import _json_default, atomic_write_text

        atomic_write_text(self.history, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))
        self._lines = len(records)

    # checkpoints
    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        """Write ``state`` (tensors, optimizer states, RNG states, plain data) to ``checkpoints/last.pt``
        atomically (``torch.save`` to a temporary file, then rename). Returns the path."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        with atomic_path(self.checkpoint) as tmp:
            tmp.write_bytes(buf.getvalue())
        return self.checkpoint

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or ``None`` when the run has none.

        Raises:
            ConfigError: the checkpoint file is corrupt.
        """
        import torch

        if not self.checkpoint.exists():
            return None
        try:
            return torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for a torn file
            raise ConfigError(f"{self.checkpoint}: corrupt checkpoint ({type(err).__name__}: {err})") from None

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result, result)


# ---------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (store in checkpoints)."""
    import random

    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s output."""
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (single-process reproducibility)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------- searchers
class Searcher:
    """Base class of searchers.

    Subclasses set ``name`` (via :func:`register_searcher`) and implement :meth:`run`. Options
    given to the constructor (e.g. ``lr``, ``temperature``) are kept in ``self.options``.

    Conventions the pipeline relies on:

    * ``options["seed"]`` seeds the search; ``options["progress"]`` (optional) is a callable fed
      dict events: ``{"event": "step", "step": n, ...}`` (drives the progress bar; ``ce`` and
      ``expected_latency_ms`` are shown when present), ``{"event": "eval", "accuracy", "latency_ms",
      ...}``, ``{"event": "resumed" | "rollback", "step"}``;
    * ``result.extra["supernet"]`` (optional) is a trained :class:`hwnas.nn.supernet.Supernet`;
      the pipeline then fine-tunes ``supernet.subnet(result.best_choices)`` instead of training
      from scratch; ``result.extra["search_seconds"]`` (optional) the search time; other JSON-able
      ``extra`` entries are copied into ``result.json``; ``extra["probabilities"]`` (per layer)
      feeds the probability plot.
    """

    name: str = "searcher"
    #: whether the method trains a differentiable supernet (fbnet/proxyless/singlepath)
    differentiable: bool = False

    def __init__(self, **options: Any):
        self.options = dict(options)

    def validate_options(self) -> None:
        """Raise :class:`hwnas.errors.ConfigError` for options this method does not take.

        Called by the pipeline before it creates a run folder; the default accepts everything.
        """

    def run(self, space, objective, data, budget: Budget, run: RunDir) -> SearchResult:
        """Search ``space`` for ``objective`` on ``data`` within ``budget``, writing into ``run``.

        Args:
            space: a :class:`hwnas.spaces.SearchSpace` (decoded at the data's resolution/classes).
            objective: a :class:`hwnas.search.objective.Objective` (latency predictor, budget, formula).
            data: a :class:`hwnas.search.data.DataBundle` (train / val / test splits).
            budget: :class:`Budget`.
            run: the :class:`RunDir` (history, checkpoints; resume from its checkpoint if present).
        """
        raise NotImplementedError


_REGISTRY: dict[str, type[Searcher]] = {}


def register_searcher(name: str) -> Callable[[type[Searcher]], type[Searcher]]:
    """Class decorator: register a :class:`Searcher` subclass under ``name``."""
    def deco(cls: type[Searcher]) -> type[Searcher]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load_searchers() -> None:
    for module in SEARCHER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def searcher_names() -> list[str]:
    """Every registered method name."""
    _load_searchers()
    return sorted(_REGISTRY)


def get_searcher(name: str, **options: Any) -> Searcher:
    """An instance of the searcher registered as ``name``.

    Raises:
        UnknownNameError: listing the valid methods.
    """
    _load_searchers()
    key = name.lower()
    if key not in _REGISTRY:
        raise UnknownNameError("method", name, _REGISTRY)
    return _REGISTRY[key](**options)


__all__ = ["Evaluated", "SearchResult", "Budget", "RunDir", "Searcher", "register_searcher", "get_searcher",
           "searcher_names", "pareto_front", "rng_state", "set_rng_state", "seed_everything", "SearchError"]
