"""A learned per-device correction of per-op sums, fitted on that device's end-to-end measurements.

Per-op sums miss what happens between ops in a whole network (nn-Meter, Zhang et al., MobiSys 2021,
§3: kernel fusion, per-inference and per-op overheads). On this project's host, at 64 px, the raw sum
of the ops measured one by one came 20–35 % below the whole network, by an amount that depends on the
op mix. The correction is a linear model on the per-block raw terms of a prediction::

    latency_ms = intercept_ms + Σ_ops [ coef[group(op)] · raw_ms(op) + per_op_ms + per_mparam_ms · params_M(op) ]

With ``grouping: total`` (the default) every op is in one group ``all``: a scale, a per-op overhead
and a constant, three parameters that a few dozen networks pin down. With ``grouping: kind``,
``group(op)`` is the op kind (``mbconv``, ``dsconv``, ``conv``, ``fused_mbconv``, ``classifier``) with
``+se`` for squeeze-excite and ``+hswish``/``+swish`` for those activations (the op key's fields);
``raw_ms`` the uncalibrated entry of the device's key store; ``per_op_ms`` a per-op overhead (identities,
``skip``, cost 0 and count no op); ``params_M`` the op's weights in millions (:meth:`OpKey.cost`). The
weight term is there because an op profiled alone runs with its weights hot in cache, while a whole
network streams all its weights every inference: on the host at 64 px the whole network's excess over
the raw sum grew with the network's weights per raw ms (correlation 0.59 over 22 MobileNetV2-space
networks), and the term cut the leave-one-out RMSPE there from 10.1 % to 8.6 %. On the pooled four-space
data (docs/latency.md) the ``total`` fit set it to 0 and ``kind`` to 0.10 ms per million weights: the
fit decides, the term only allows it. Coefficients are fitted with scikit-learn's ``LinearRegression
(positive=True)`` weighted by ``1/measured²`` (least squares on the relative error), so every term stays
non-negative, the constant included (physical: an op never makes a network faster, and no network
takes less than nothing; an unconstrained constant came out at −2 ms on the host's first data). A group the fit never saw uses
``default_coef`` (one scale fitted on the raw sums) and the prediction says so. Because the model is
additive per op, :class:`hwnas.latency.predict.LayerLatencyTable` stays exact under it.

This is nn-Meter's idea (learn what per-op sums miss from the device's own data) in a much smaller
form: nn-Meter fits per-kernel random forests on kernel features; we fit one linear model per device on
whole networks, because a handful of end-to-end runs is what a user can afford to measure.

Stored as plain JSON (no pickles): ``$HWNAS_HOME/corrections/<device>.json`` (:func:`correction_path`).
A correction applies to the device it was fitted on only, and for a device timed here (``transport:
local``) only on the machine it was measured on (CPU model, count, architecture).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnas.arch import ArchSpec
from hwnas.errors import ConfigError, TableError
from hwnas.opkey import OpKey, arch_op_keys

SCHEMA = "hwnas-latency-correction/1"


GROUPINGS = ("total", "kind")


def op_group(key: OpKey, grouping: str = "kind") -> str | None:
    """The correction's feature group of one op key under ``grouping`` (None for an identity)."""
    if key.kind == "skip":
        return None
    if grouping == "total":
        return "all"
    if key.kind == "classifier":
        return "classifier"
    b = key.block()
    group = b.kind
    if b.se_ratio:
        group += "+se"
    if b.activation in ("hswish", "swish"):
        group += f"+{b.activation}"
    return group


class Correction(BaseModel):
    """One device's learned correction (see the module docstring).

    Attributes:
        device: the device name it was fitted on. machine: :func:`hwnas.latency.table.machine_info` of
            the machine measured (local devices), else None.
        coef: ``{group: scale}`` on the raw per-op terms. per_op_ms: overhead per (non-identity) op.
        intercept_ms: per-network constant. default_coef: scale for a group the fit never saw.
        trained_on: networks, spaces, date, load average of the training measurements.
        trained_kinds: the op kinds (:func:`op_group` under ``"kind"``: block kind, SE, h-swish/swish)
            of the training networks, whatever the grouping; predictions warn about any other kind
            (None in files written before it was recorded: then only unfitted groups warn).
        report: ``in_sample`` and ``held_out`` :func:`hwnas.profile.check.fidelity_stats` of the
            correction, and ``raw_in_sample`` / ``raw_held_out`` of the raw per-op sum, per split and
            ``per_space`` (held-out).
    """

    model_config = ConfigDict(extra="forbid")
    schema_: str = Field(SCHEMA, alias="schema")
    device: str
    machine: dict[str, Any] | None = None
    grouping: str = "total"
    coef: dict[str, float]
    per_op_ms: float = Field(0.0, ge=0)
    per_mparam_ms: float = Field(0.0, ge=0)
    intercept_ms: float = Field(0.0, ge=0)
    default_coef: float = Field(gt=0)
    trained_on: dict[str, Any] = Field(default_factory=dict)
    trained_kinds: list[str] | None = None
    report: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, exclude=True)

    def knows(self, key: OpKey) -> bool:
        """Whether ``key``'s kind was in the training networks and its group was fitted."""
        group = op_group(key, self.grouping)
        if group is None:
            return True
        if group not in self.coef:
            return False
        return self.trained_kinds is None or op_group(key, "kind") in self.trained_kinds

    def op_ms(self, key: OpKey, raw_ms: float) -> float:
        """Corrected latency (ms) of one op from its raw entry (a group the fit never saw: ``default_coef``;
        :meth:`knows` says whether it saw it)."""
        group = op_group(key, self.grouping)
        if group is None:
            return 0.0
        coef = self.coef.get(group, self.default_coef)
        weights = self.per_mparam_ms * key.cost()[0] / 1e6 if self.per_mparam_ms else 0.0
        return coef * raw_ms + self.per_op_ms + weights

    def predict_raw(self, terms: Sequence[tuple[OpKey, float]]) -> float:
        """Corrected network latency (ms) from ``(op key, raw ms)`` pairs."""
        return self.intercept_ms + sum(self.op_ms(k, r) for k, r in terms)

    def summary(self) -> str:
        """One line: where it was fitted and how it did on held-out networks."""
        ho = self.report.get("held_out") or {}
        t = self.trained_on
        held = (f"held-out {ho.get('members')} networks {100 * ho['within_10pct']:.0f} % within ±10 %, "
                f"Spearman {ho['spearman']:.3f}" if ho else "no held-out networks")
        return (f"learned correction {Path(self.path).name if self.path else '(in memory)'} of {self.device} "
                f"(linear, grouping {self.grouping}, {t.get('networks', '?')} networks, {t.get('date', '?')}; {held})")

    def save(self, path: str | Path) -> Path:
        from hwnas.io import atomic_write_json

        path = Path(path)
        atomic_write_json(path, self.model_dump(by_alias=True))
        self.path = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Correction":
        """Read a correction file.

        Raises:
            TableError: not a correction file (names the file and the field).
        """
        from hwnas.io import load_structured

        try:
            data = load_structured(path)
        except ConfigError as err:
            raise TableError(str(err)) from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise TableError(f"{path}: not a latency correction (expected 'schema: {SCHEMA}')")
        try:
            out = cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            raise TableError(f"{path}: invalid correction field '{'.'.join(str(p) for p in first['loc'])}': "
                             f"{first['msg']}") from None
        out.path = str(path)
        return out

    def applies_to(self, device) -> str | None:
        """None when this correction may price ``device`` (a :class:`Device`), else why not."""
        if device.name != self.device:
            return f"it was fitted on device '{self.device}', not '{device.name}'"
        if device.transport.kind == "local" and self.machine:
            from hwnas.latency.store import _MACHINE_FIELDS, _here

            here = _here()
            diffs = [f for f in _MACHINE_FIELDS
                     if self.machine.get(f) is not None and here.get(f) is not None and self.machine[f] != here[f]]
            if diffs:
                return (f"it was fitted on {self.machine.get('cpu')} ({self.machine.get('cpus')} CPUs), this machine is "
                        f"{here.get('cpu')} ({here.get('cpus')} CPUs)")
        return None


def correction_path(device: str) -> Path:
    """``$HWNAS_HOME/corrections/<device>.json``."""
    from hwnas.latency.table import user_table_dir

    return user_table_dir().parent / "corrections" / f"{device}.json"


def load_correction(device) -> tuple[Correction | None, str | None]:
    """The correction of ``device`` (a :class:`Device`) and None, or None and why none applies (None
    when there is no file).

    Raises:
        TableError: the file exists but is not a valid correction.
    """
    path = correction_path(device.name)
    if not path.is_file():
        return None, None
    corr = Correction.load(path)
    why = corr.applies_to(device)
    if why:
        return None, f"{path} not used: {why}; refit it here with hwnas table fit-correction --device {device.name}"
    return corr, None


# ---------------------------------------------------------------------- fitting
def _terms(predictor, arch: ArchSpec) -> list[tuple[OpKey, float]]:
    return [(k, predictor._price(k)[0]) for _, k in arch_op_keys(arch)]


def _features(terms: Sequence[tuple[OpKey, float]], groups: list[str], grouping: str):
    row = [0.0] * (len(groups) + 2)
    for k, r in terms:
        g = op_group(k, grouping)
        if g is None:
            continue
        row[groups.index(g)] += r
        row[-2] += 1.0
        row[-1] += k.cost()[0] / 1e6
    return row


def fit_correction(device, points: Sequence[tuple[ArchSpec, float]], *, predictor=None, holdout: float = 0.3,
                   seed: int = 0, grouping: str = "total", trained_on: dict[str, Any] | None = None) -> Correction:
    """Fit a :class:`Correction` of ``device`` on whole-network measurements ``(arch, measured_ms)``.

    Args:
        device: a :class:`Device`.
        points: measured networks of that device (end to end, same runner settings as its tables).
        predictor: prices the raw per-op terms (default: the device's key store, uncalibrated, no
            correction), or a sequence of predictors, one per point (each network priced from the table
            it was measured with); every op key must be priced.
        holdout: share of the networks (drawn with ``seed``, at least one when ``holdout > 0``) kept out
            of the fit and only evaluated; the stored model is the one fitted on the rest.
        grouping: ``total`` (one scale for all ops) or ``kind`` (a scale per op kind, SE and activation).
        trained_on: extra facts recorded with it (spaces, load average, command).

    Raises:
        ConfigError: fewer than 4 training networks, ``holdout`` outside [0, 0.9] or an unknown grouping.
        MissingKeysError: a network's op key is not in the store.
    """
    import numpy as np
    from sklearn.linear_model import LinearRegression

    from hwnas.latency.table import machine_info, now_iso
    from hwnas.profile.check import fidelity_stats

    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    if not 0 <= holdout <= 0.9:
        raise ConfigError(f"--holdout must be between 0 and 0.9, got {holdout}")
    if predictor is None:
        from hwnas.latency.predict import Predictor
        from hwnas.latency.store import KeyStore

        predictor = Predictor(device, store=KeyStore.for_device(device), calibrated=False, correction=False)
    preds = predictor if isinstance(predictor, (list, tuple)) else [predictor] * len(points)
    terms = [_terms(p, a) for p, (a, _) in zip(preds, points)]
    y = np.array([m for _, m in points], float)
    idx = list(range(len(points)))
    random.Random(seed).shuffle(idx)
    n_out = max(1, round(holdout * len(idx))) if holdout > 0 and len(idx) > 1 else 0
    test, train = sorted(idx[:n_out]), sorted(idx[n_out:])
    if len(train) < 4:
        raise ConfigError(f"a correction needs at least 4 training networks, got {len(train)} "
                          f"({len(points)} measured, {n_out} held out)")
    groups = sorted({g for i in train for k, _ in terms[i] if (g := op_group(k, grouping)) is not None})
    x = np.array([_features(terms[i], groups, grouping) for i in range(len(points))])
    raw = np.array([sum(r for _, r in t) for t in terms])
    w = 1.0 / y ** 2
    xc = np.c_[x, np.ones(len(x))]  # the constant as a column: non-negative like every other term
    reg = LinearRegression(positive=True, fit_intercept=False).fit(xc[train], y[train], sample_weight=w[train])
    (default,), *_ = np.linalg.lstsq((raw[train] / y[train])[:, None], np.ones(len(train)), rcond=None)
    corr = Correction(device=device.name, machine=machine_info() if device.transport.kind == "local" else None,
                      grouping=grouping,
                      coef={g: float(c) for g, c in zip(groups, reg.coef_[:-3])}, per_op_ms=float(reg.coef_[-3]),
                      per_mparam_ms=float(reg.coef_[-2]),
                      intercept_ms=float(reg.coef_[-1]), default_coef=float(default),
                      trained_on={"networks": len(train), "held_out": len(test), "date": now_iso(), "seed": seed,
                                  **(trained_on or {})},
                      trained_kinds=sorted({g for i in train for k, _ in terms[i]
                                            if (g := op_group(k, "kind")) is not None}))
    pred = np.array([corr.predict_raw(t) for t in terms])

    def stats(rows, values):
        return fidelity_stats(list(y[rows]), list(values[rows])) if len(rows) >= 2 else None

    names = [a.name or "?" for a, _ in points]
    per_space = {}
    for name in sorted({names[i] for i in test}):
        rows = [i for i in test if names[i] == name]
        per_space[name] = {"correction": stats(rows, pred), "raw_sum": stats(rows, raw)}
    corr.report = {"in_sample": stats(train, pred), "held_out": stats(test, pred),
                   "raw_in_sample": stats(train, raw), "raw_held_out": stats(test, raw), "per_space": per_space}
    return corr


def read_points(paths: Sequence[str | Path]) -> list[tuple[ArchSpec, float]]:
    """``(arch, measured_ms)`` from JSONL files with one ``{"arch": <compact string>, "measured_ms": ms}``
    object per line (what ``benchmarks/predictor_fidelity.py`` writes beside its table).

    Raises:
        ConfigError: a line without those fields (names the file and line).
    """
    import json

    out = []
    for path in paths:
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append((ArchSpec.from_compact(row["arch"]), float(row["measured_ms"])))
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}:{n}: expected {{\"arch\": compact string, \"measured_ms\": ms}} ({err})") \
                    from None
    return out


__all__ = ["Correction", "GROUPINGS", "op_group", "fit_correction", "load_correction", "correction_path", "read_points", "SCHEMA"]
