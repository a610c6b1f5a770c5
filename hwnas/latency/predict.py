"""Latency/energy prediction from a device's key store (:mod:`hwnas.latency.store`: the union of all its
tables, asked by op key) and, for estimated devices, its cost model for keys no measured table holds.

``latency(arch) = Σ_ops scale_t(op) · entry(op_key) + offset_ms``: the sum of per-op entries over the
architecture's op keys (:func:`hwnas.opkey.arch_op_keys`: stem, blocks, head, classifier), with an
optional linear calibration fitted on whole-model measurements stored in a table
(:func:`fit_calibration`), which absorbs per-inference overhead and cross-op fusion effects
(nn-Meter, Zhang et al. 2021, §3 show per-op sums miss these). A table's calibration applies only to
the entries of that table: ``scale_t(op)`` is the scale of the table that priced ``op`` (1 for the cost
model, identities and uncalibrated tables) and ``offset_ms`` the offset of the table that priced the
largest share of the raw sum.

Rules:

* a ``skip`` op costs exactly 0 ms: it is no op at all in the exported graph;
* a key absent from the store raises :class:`~hwnas.latency.store.MissingKeysError` (a
  :class:`MissingOpError`) naming every missing key, the nearest keys and the ``hwnas profile`` command;
  with ``fallback=True`` the nearest key of the same kind, scaled by the MAC ratio, is used instead
  and every such key is reported in ``Prediction.fallback``. There is no constant default.

For the searchers: :class:`LayerLatencyTable` holds per searchable layer the (calibrated) latency
of each candidate, and :meth:`LayerLatencyTable.expected` gives the differentiable expected latency
``fixed + Σ_l Σ_j p_lj · lat_lj`` of FBNet (Wu et al. 2019, Eq. 4) / ProxylessNAS (Cai et al. 2019,
Eq. 5).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hwnas.arch import ArchSpec
from hwnas.errors import SpecError, TableError
from hwnas.latency.costmodel import CostModel
from hwnas.latency.devices import Device, get_device
from hwnas.latency.store import KeyStore, table_name
from hwnas.latency.table import LatencyTable
from hwnas.opkey import OpKey, arch_op_keys


#: Input resolutions (px) hwnas prices at all: from 8 (the smallest ``hwnas search`` accepts) to 1024
#: (above every published mobile network's input; EfficientNet-B7 takes 600 px). Outside it every
#: op would be an extrapolation, and on the host a profile would try to build such a network.
RESOLUTION_RANGE = (8, 1024)


def check_resolution(resolution: int, *, option: str = "--resolution") -> int:
    """Refuse a resolution outside :data:`RESOLUTION_RANGE`.

    Raises:
        SpecError: naming the option, the value and the range.
    """
    lo, hi = RESOLUTION_RANGE
    if not lo <= int(resolution) <= hi:
        raise SpecError(f"{option} must be between {lo} and {hi} px, got {resolution}: hwnas does not extrapolate "
                        f"latency tables or cost models that far")
    return int(resolution)


@dataclass(frozen=True)
class BlockPrediction:
    """One layer's share: ``name`` (``stem``, ``stages.i.j``, ``head``, ``classifier``), its op key,
    latency in ms (calibrated scale applied, offset not), energy in mJ (None when unknown) and where
    the number came from (``table`` | ``cost-model`` | ``identity`` | ``fallback: <key> x<ratio>``)."""

    name: str
    key: str
    latency_ms: float
    energy_mj: float | None
    source: str
    energy_source: str | None = None

    @property
    def energy(self):
        """:class:`hwnas.latency.energy.EnergyEstimate` of this layer (value, source, declared)."""
        from hwnas.latency.energy import EnergyEstimate

        return EnergyEstimate.of(self.energy_mj, self.energy_source)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "latency_ms": self.latency_ms, "energy_mj": self.energy_mj,
                "energy_source": self.energy_source, "energy_declared": self.energy.declared, "source": self.source}


@dataclass(frozen=True)
class Prediction:
    """A whole-model prediction: latency in ms, energy in mJ (None when any op's energy is unknown),
    per-layer breakdown, keys that were missing (priced by fallback), and provenance."""

    latency_ms: float
    energy_mj: float | None
    per_block: list[BlockPrediction]
    missing: list[str] = field(default_factory=list)
    provenance: str = ""
    device: str = ""
    calibration: dict[str, Any] | None = None
    fallback: list[str] = field(default_factory=list)
    energy_source: str | None = None
    fidelity: dict[str, Any] | None = None  # the pricing table's last `hwnas table check` (summary, no rows)
    warnings: list[str] = field(default_factory=list)
    correction: dict[str, Any] | None = None  # the learned correction that priced it (hwnas.latency.correction)

    #: a prediction whose fallback-priced layers make up more than this share of its total is flagged
    FALLBACK_WARN_SHARE = 0.2

    @property
    def fallback_share(self) -> float:
        """Share (0..1) of :attr:`latency_ms` priced from fallbacks (nearest key scaled by MACs)."""
        part = sum(b.latency_ms for b in self.per_block if b.source.startswith("fallback"))
        return part / self.latency_ms if self.latency_ms > 0 else 0.0

    def fallback_warning(self) -> str | None:
        """A one-line warning when more than :attr:`FALLBACK_WARN_SHARE` of the total came from
        fallbacks (the total then says little about the device), else None."""
        share = self.fallback_share
        if not self.fallback or share <= self.FALLBACK_WARN_SHARE:
            return None
        return (f"{100 * share:.0f} % of the predicted {self.latency_ms:.3f} ms on {self.device} comes from "
                f"{len(self.fallback)} fallback-priced key(s) (nearest key scaled by MACs), not from measurements of "
                f"those ops; measure them with hwnas profile --device {self.device}")

    @property
    def energy(self):
        """:class:`hwnas.latency.energy.EnergyEstimate`: value, source and whether it is ``declared`` (a
        power model × latency, not measured)."""
        from hwnas.latency.energy import EnergyEstimate

        return EnergyEstimate.of(self.energy_mj, [b.energy_source for b in self.per_block] or self.energy_source)

    @property
    def energy_declared(self) -> bool:
        return self.energy.declared

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "latency_ms": self.latency_ms, "energy_mj": self.energy_mj,
                "energy_source": self.energy_source, "energy_declared": self.energy_declared,
                "energy": self.energy.to_dict(), "provenance": self.provenance, "fidelity": self.fidelity,
                "warnings": self.warnings, "correction": self.correction,
                "calibration": self.calibration, "missing": self.missing, "fallback": self.fallback,
                "fallback_share": self.fallback_share, "fallback_warning": self.fallback_warning(),
                "per_block": [b.to_dict() for b in self.per_block]}


class Predictor:
    """Prices op keys and architectures for one device from its key store (and cost model).

    Args:
        device: the :class:`Device`.
        table: one explicit :class:`LatencyTable` (``--table``): only its entries are used (no cost
            model), with its calibration.
        fallback: price missing keys by the nearest same-kind key scaled by MACs (reported).
        store: the device's :class:`~hwnas.latency.store.KeyStore` (see :func:`load_predictor`).
            With neither ``table`` nor ``store``, an estimated device is priced by its cost model alone.
        calibrated: apply the store's/table's calibration (``False`` gives raw per-op sums).
        correction: a :class:`~hwnas.latency.correction.Correction` to apply, ``False`` for none, or
            ``None`` (default): the device's own correction file when pricing from its key store
            (:func:`~hwnas.latency.correction.load_correction`; never with an explicit ``table`` or
            ``calibrated=False``). A correction replaces the tables' calibrations: it was fitted on raw
            per-op terms.

    A key is priced, in order: ``skip`` = 0 ms; the store's winning entry (its table named in the
    source); the device's cost model (estimated devices); the nearest key with ``fallback``;
    otherwise :class:`~hwnas.latency.store.MissingKeysError`.
    """

    def __init__(self, device: Device, table: LatencyTable | None = None, *, fallback: bool = False,
                 store: KeyStore | None = None, calibrated: bool = True, correction=None):
        self.device = device
        self.table = table
        self.fallback = fallback
        if table is not None:
            store = KeyStore(device, [table])
        self.store = store if store is not None else KeyStore(device, [])
        self.cost_model = (CostModel(device.cost_model.params, device.cost_model.kind)
                           if (table is None and device.cost_model) else None)
        self.calibrated = calibrated
        self.correction_note: str | None = None  # why the device's correction file was not used
        if correction is None and table is None and calibrated:
            from hwnas.latency.correction import load_correction

            correction, self.correction_note = load_correction(device)
        self.correction = correction or None
        if self.correction is not None:
            why = self.correction.applies_to(device)
            if why:
                raise TableError(f"correction {self.correction.path or ''} cannot price device '{device.name}': {why}")
        self._cache: dict[str, tuple[float, str, LatencyTable | None]] = {}

    # ------------------------------------------------------------------ calibration (per table)
    def calibration_of(self, table: LatencyTable | None):
        """The :class:`~hwnas.latency.table.Calibration` that applies to entries of ``table`` (None: none).

        A table's calibration applies to that table's entries only (an explicit ``table`` has its own;
        in a key store each measured table its own, :meth:`KeyStore.calibration_of`), never to keys
        another table or the cost model priced."""
        if not self.calibrated or table is None or self.correction is not None:
            return None
        if self.table is not None:
            return self.table.calibration if table is self.table else None
        return self.store.calibration_of(table)

    def scale_of(self, table: LatencyTable | None) -> float:
        cal = self.calibration_of(table)
        return cal.scale if cal is not None else 1.0

    @property
    def scale(self) -> float:
        """The scale of an explicit table's calibration (1.0 without one; a key store has one per table)."""
        return self.scale_of(self.table)

    def _offset(self, priced: list[tuple[float, LatencyTable | None]]) -> tuple[float, LatencyTable | None]:
        """The offset (ms) of the table that priced the largest share of the raw sum, and that table."""
        share: dict[int, list] = {}
        for raw, table in priced:
            if table is not None:
                share.setdefault(id(table), [table, 0.0])[1] += raw
        if not share:
            return 0.0, None
        top = max(share.values(), key=lambda tv: tv[1])[0]
        cal = self.calibration_of(top)
        return (cal.offset_ms if cal is not None else 0.0), top

    def offset_for(self, arch: ArchSpec) -> float:
        """The calibration offset (ms) a prediction of ``arch`` adds (see :meth:`_offset`), or the learned
        correction's intercept."""
        if self.correction is not None:
            return self.correction.intercept_ms
        return self._offset([(r, t) for r, _, t in (self._price(k) for _, k in arch_op_keys(arch))])[0]

    # ------------------------------------------------------------------ description
    @property
    def provenance(self) -> str:
        """Where this predictor's figures come from (one line)."""
        if self.table is not None:
            m = self.table.meta
            where = f" ({self.table.path.name})" if self.table.path else ""
            tuned = " [untuned TVM]" if m.tuned is False else ""
            return f"{m.provenance}{tuned}: table {m.device}/{m.space}@{m.resolutions}{where}"
        parts = []
        if self.store.measured:
            parts.append(f"measured: key store, {self.store.describe()}")
        if self.cost_model is not None:
            cm = self.device.cost_model
            est = f"estimated: {cm.kind} cost model of {self.device.name} ({cm.fitted_on})"
            parts.append(est if not parts else f"keys not in it {est}")
        if not parts:
            parts.append(f"estimated: key store, {self.store.describe()}" if self.store.tables
                         else f"no latency table of {self.device.name}")
        return "; ".join(parts)

    def calibration_info(self, priced: list[tuple[float, LatencyTable | None]] | None = None) -> dict[str, Any] | None:
        """The calibration(s) a prediction used: scale/offset/fit report of the table that priced most of it
        (``table``: its file), and ``per_table``: ``{file: {scale, offset_ms, ops}}`` for every calibrated
        table that priced an op. None when no calibrated table priced anything."""
        if priced is None:
            priced = [(1.0, self.table)] if self.table is not None else []
        ops: dict[int, list] = {}
        for _, t in priced:
            if self.calibration_of(t) is not None:
                ops.setdefault(id(t), [t, 0])[1] += 1
        if not ops:
            return None
        _, top = self._offset(priced)
        main = top if self.calibration_of(top) is not None else max(ops.values(), key=lambda tn: tn[1])[0]
        c = self.calibration_of(main)
        per_table = {table_name(t): {"scale": self.calibration_of(t).scale, "offset_ms": self.calibration_of(t).offset_ms,
                                     "ops": n} for t, n in ops.values()}
        return {"scale": c.scale, "offset_ms": c.offset_ms if main is top else 0.0, "points": len(c.points),
                "table": table_name(main) if self.table is None else None, **c.report, "per_table": per_table}

    # ------------------------------------------------------------------ ops
    def priced(self, key: OpKey | str) -> bool:
        """Whether ``key`` can be priced without a fallback (identity, store or cost model)."""
        key = key if isinstance(key, OpKey) else OpKey.parse(key)
        return key.kind == "skip" or key in self.store or self.cost_model is not None

    def missing(self, keys) -> list[OpKey]:
        """The keys of ``keys`` (OpKeys, strings, or an ArchSpec) that neither the store nor a cost model
        prices, deduplicated."""
        if isinstance(keys, ArchSpec):
            keys = [k for _, k in arch_op_keys(keys)]
        if self.cost_model is not None:
            return []
        return self.store.missing(keys)

    def _raw(self, key: OpKey) -> tuple[float, str]:
        """Uncalibrated latency (ms) of one op and its source."""
        raw, source, _ = self._price(key)
        return raw, source

    def _price(self, key: OpKey) -> tuple[float, str, LatencyTable | None]:
        """Uncalibrated latency (ms) of one op, its source and the table whose entry priced it (None:
        identity or cost model)."""
        s = str(key)
        hit = self._cache.get(s)
        if hit is not None:
            return hit
        found = self.store.lookup(s)
        if key.kind == "skip":
            out = (0.0, "identity", None)
        elif found is not None:
            out = (found.entry.median_ms, found.source, found.table)
        elif self.cost_model is not None:
            out = (self.cost_model.op_ms(key), "cost-model", None)
        elif self.fallback:
            out = self._fallback(key)
        else:
            raise self.store.missing_error([key], what="the request")
        self._cache[s] = out
        return out

    def _fallback(self, key: OpKey) -> tuple[float, str]:
        """Nearest same-kind key, scaled by the MAC ratio (reported in the source string)."""
        same = [k for k in self.store.keys() if k.kind == key.kind and k.kind != "skip"]
        if not same:
            raise self.store.missing_error([key], what="the request (and no key of the same kind to fall back on)")
        near = difflib.get_close_matches(str(key), [str(k) for k in same], n=5, cutoff=0.0)
        # prefer the closest MAC count among the textual neighbours
        macs = max(key.macs(), 1)
        best = min(near, key=lambda k: abs(OpKey.parse(k).macs() - macs) / macs)
        ratio = macs / max(OpKey.parse(best).macs(), 1)
        hit = self.store.lookup(best)
        return hit.entry.median_ms * ratio, f"fallback: {best} x{ratio:.3f}", hit.table

    def op_latency(self, key: OpKey | str) -> float:
        """Calibrated latency of one op in ms (``scale · entry``; the offset is per model, not per op).

        Raises:
            MissingKeysError: the key is not in the store (and fallback is off).
        """
        key = key if isinstance(key, OpKey) else OpKey.parse(key)
        raw, _, table = self._price(key)
        if self.correction is not None:
            return self.correction.op_ms(key, raw)
        return self.scale_of(table) * raw

    def op_energy(self, key: OpKey | str) -> tuple[float | None, str | None]:
        """Energy of one op in mJ and its source, or ``(None, None)`` when the device declares none.

        With a learned correction an entry's energy follows the op's corrected time (energy = power ×
        time, the entry's power kept), so a block's mJ stays consistent with its corrected ms."""
        key = key if isinstance(key, OpKey) else OpKey.parse(key)
        if key.kind == "skip":
            return 0.0, "identity"
        found = self.store.lookup(key)
        if found is not None and found.entry.energy_mj is not None:
            if self.correction is not None and found.entry.median_ms > 0:
                ratio = self.correction.op_ms(key, found.entry.median_ms) / found.entry.median_ms
                return ratio * found.entry.energy_mj, found.entry.energy_source
            return self.scale_of(found.table) * found.entry.energy_mj, found.entry.energy_source
        pm = self.device.power_model
        if pm is not None:
            from hwnas.latency.energy import declared_source

            return pm.active_w * self.op_latency(key), declared_source(pm.active_w)
        return None, None

    # ------------------------------------------------------------------ models
    def check_arch(self, arch: ArchSpec) -> None:
        """With an explicit table only: refuse an architecture at a resolution the table was not made at
        (a key store is asked by key: any resolution whose keys it holds)."""
        if self.table is not None and arch.resolution not in self.table.meta.resolutions:
            raise TableError(f"{self.table.path or 'table'} for {self.table.meta.device} was made at resolution "
                             f"{self.table.meta.resolutions} but the architecture has resolution {arch.resolution}")

    def predict(self, arch: ArchSpec) -> Prediction:
        """Latency (ms) and energy (mJ) of ``arch`` with a per-layer breakdown.

        Raises:
            TableError: an explicit table was made at another resolution (the message names both).
            MissingKeysError: keys are absent and fallback is off (names every key, the nearest keys and
                ``hwnas profile --device D --arch ...``).
        """
        self.check_arch(arch)
        check_resolution(arch.resolution, option="resolution")
        if not self.fallback:
            missing = self.missing(arch)
            if missing:
                raise self.store.missing_error(
                    missing, what=f"'{arch.name or 'the architecture'}'",
                    command=f"hwnas profile --device {self.device.name} --arch '{arch.to_compact()}'")
        blocks, fallback = [], []
        energies: list[float | None] = []
        sources: set[str] = set()
        priced: list[tuple[float, LatencyTable | None]] = []
        for layer, key in arch_op_keys(arch):
            raw, source, table = self._price(key)
            priced.append((raw, table))
            if source.startswith("fallback"):
                fallback.append(str(key))
            e, esrc = self.op_energy(key)
            if esrc and esrc != "identity":
                sources.add(esrc.split(":")[0])
            energies.append(e)
            blocks.append(BlockPrediction(layer.name, str(key), self.op_latency(key), e, source, esrc))
        offset_ms = self.offset_for(arch)
        latency = sum(b.latency_ms for b in blocks) + offset_ms
        energy = None if any(e is None for e in energies) else sum(energies)
        if energy is not None and offset_ms and self.device.power_model:
            energy += self.device.power_model.active_w * offset_ms
        fidelity, warnings = self._fidelity(arch)
        warnings += self._foreign_warnings(priced)
        correction = None
        if self.correction is not None:
            unfitted = sorted({str(k) for _, k in arch_op_keys(arch) if not self.correction.knows(k)})
            correction = {"path": self.correction.path, "summary": self.correction.summary(),
                          "held_out": self.correction.report.get("held_out"), "unfitted_keys": unfitted}
            if unfitted:
                c = self.correction
                scale = (f"its default scale {c.default_coef:.3f}" if c.grouping == "kind"
                         else f"its one scale {c.coef.get('all', c.default_coef):.3f}")
                warnings.append(f"{len(unfitted)} op key(s) of a kind (block, SE, h-swish/swish) the learned "
                                f"correction was not fitted on (priced with {scale}): "
                                f"{', '.join(unfitted[:3])}{' ...' if len(unfitted) > 3 else ''}; refit with hwnas "
                                f"table fit-correction --device {self.device.name}")
        elif self.correction_note:
            warnings.append(self.correction_note)
        if fallback:
            res = sorted({r for t in self.store.tables for r in t.meta.resolutions})
            if res and not res[0] <= arch.resolution <= res[-1]:
                share = sum(b.latency_ms for b in blocks if b.source.startswith("fallback")) / max(latency, 1e-12)
                warnings.append(f"resolution {arch.resolution} px is outside the resolutions of {self.device.name}'s "
                                f"tables ({res[0]}-{res[-1]} px): {len(fallback)} key(s), {100 * share:.0f} % of the "
                                f"total, are extrapolated from other shapes by MACs; measure them with hwnas profile "
                                f"--device {self.device.name} --resolution {arch.resolution}")
        return Prediction(latency_ms=float(latency), energy_mj=energy, per_block=blocks, missing=list(fallback),
                          provenance=self._provenance_of(blocks), device=self.device.name,
                          calibration=self.calibration_info(priced), fallback=fallback, correction=correction,
                          energy_source=", ".join(sorted(sources)) or None, fidelity=fidelity, warnings=warnings)

    def _fidelity(self, arch: ArchSpec) -> tuple[dict[str, Any] | None, list[str]]:
        """The stored ``hwnas table check`` summary of the table that priced most of ``arch``'s ops, and a
        warning for every pricing table whose check fell below the thresholds."""
        from hwnas.profile.check import fidelity_warning

        used: dict[int, tuple[LatencyTable, int]] = {}
        for _, key in arch_op_keys(arch):
            hit = self.store.lookup(key)
            if hit is not None and key.kind != "skip":
                t, n = used.get(id(hit.table), (hit.table, 0))
                used[id(hit.table)] = (t, n + 1)
        ranked = [t for t, _ in sorted(used.values(), key=lambda tn: -tn[1])]
        main = next((t.meta.fidelity for t in ranked if t.meta.fidelity), None)
        warnings = []
        for t in ranked:
            w = fidelity_warning(t.meta.fidelity)
            if w:
                warnings.append(w if len(ranked) == 1 else f"{table_name(t)}: {w}")
        return ({k: v for k, v in main.items() if k != "rows"} if main else None), warnings

    def _foreign_warnings(self, priced: list[tuple[float, LatencyTable | None]]) -> list[str]:
        """One warning per table of the key store measured on another machine that priced ops here
        (:func:`hwnas.latency.store.foreign_machine`): its figures describe that machine, not this one."""
        from hwnas.latency.store import foreign_machine

        if self.table is not None:
            return []
        used: dict[int, list] = {}
        for raw, t in priced:
            if t is not None:
                used.setdefault(id(t), [t, 0, 0.0])
                used[id(t)][1] += 1
                used[id(t)][2] += raw
        total = sum(r for r, _ in priced) or 1.0
        out = []
        for t, n, part in used.values():
            why = foreign_machine(t, self.device)
            if why:
                out.append(f"{n} op(s), {100 * part / total:.0f} % of the raw sum, priced from {table_name(t)}, {why}: "
                           f"its figures describe that machine; measure them here with hwnas profile --device "
                           f"{self.device.name} --remeasure (--arch ARCH or --space S)")
        return out

    def _provenance_of(self, blocks: list[BlockPrediction]) -> str:
        """The provenance of one prediction: which tables (or the cost model) priced its ops."""
        if self.table is not None:
            return self.provenance
        used: dict[str, int] = {}
        for b in blocks:
            if b.source != "identity":
                kind = b.source.split(":")[0] if not b.source.startswith("fallback") else "fallback"
                used[b.source if kind in ("measured", "estimated") else kind] = \
                    used.get(b.source if kind in ("measured", "estimated") else kind, 0) + 1
        if set(used) == {"cost-model"}:
            cm = self.device.cost_model
            return f"estimated: {cm.kind} cost model of {self.device.name} ({cm.fitted_on})"
        tables = sorted({s.split(": ", 1)[1] for s in used if s.startswith(("measured", "estimated"))})
        head = "measured" if any(s.startswith("measured") for s in used) else "estimated"
        rest = [f"{n} op(s) by the {k}" for k, n in used.items() if k in ("cost-model", "fallback")]
        corr = f"; {self.correction.summary()}" if self.correction is not None else ""
        return f"{head}: key store of {self.device.name}, table(s) {', '.join(tables) or 'none'}" + \
            (f"; {', '.join(rest)}" if rest else "") + corr

    def __repr__(self) -> str:
        return f"Predictor(device={self.device.name!r}, provenance={self.provenance!r})"


# ---------------------------------------------------------------------- loading
def load_predictor(target: str | Device, *, space: str | None = None, resolution: int | None = None,
                   table: str | Path | LatencyTable | None = None, fallback: bool = False) -> Predictor:
    """A predictor for a device name/alias (``pixel``, ``pixel1``, ``host`` …).

    Without ``table``: the device's :class:`~hwnas.latency.store.KeyStore` (every table of the device,
    any space or resolution; ``space`` and ``resolution`` are not needed) plus its cost model on
    estimated devices. With ``table``: that table only, checked against the device and, when given,
    ``space`` (literal name) and ``resolution``.

    Raises:
        UnknownNameError: unknown device. TableError: ``table`` made for another device/space/resolution
        (the message names both).
    """
    device = get_device(target)
    if table is not None:
        t = table if isinstance(table, LatencyTable) else LatencyTable.load(table)
        t.check(device=device.name, space=space, resolution=resolution, device_aliases=device.aliases)
        return Predictor(device, t, fallback=fallback)
    return Predictor(device, fallback=fallback, store=KeyStore.for_device(device))


def predict(arch: ArchSpec, device_or_table: str | Device | LatencyTable | Predictor, *,
            fallback: bool = False) -> Prediction:
    """Predict ``arch`` on a device (name, :class:`Device`: its key store), a :class:`LatencyTable` or a
    Predictor."""
    if isinstance(device_or_table, Predictor):
        return device_or_table.predict(arch)
    if isinstance(device_or_table, LatencyTable):
        dev = get_device(device_or_table.meta.device)
        return Predictor(dev, device_or_table, fallback=fallback).predict(arch)
    return load_predictor(device_or_table, fallback=fallback).predict(arch)


# ---------------------------------------------------------------------- calibration
def fit_calibration(table: LatencyTable, points: Sequence[tuple[str, ArchSpec, float]], *,
                    offset: bool | None = None, store: KeyStore | None = None) -> LatencyTable:
    """Fit ``measured ≈ scale · Σ entries + offset`` by least squares on the relative error over
    whole-model measurements ``(name, arch, measured_ms)`` and store it (with the points and a fit
    report) in ``table``.

    Args:
        offset: fit the offset too (``True``), the scale only (``False``), or decide by the number of
            points (``None``: the offset only with ≥ 8 points; with fewer, two parameters overfit the
            noise of a handful of members — seen on this machine with 5 points).
        store: price keys the table lacks from this device store (a profile that measured only the
            keys its store lacked); the sums are raw (uncalibrated) either way.

    The report gives the RMSPE (%) and the max |error| (%) of the calibrated sums, and of the raw
    sums for comparison.
    """
    import numpy as np

    from hwnas.latency.table import Calibration, CalibrationPoint

    device = get_device(table.meta.device)
    bare = LatencyTable(table.meta, table.entries)
    raw = (Predictor(device, bare) if store is None else
           Predictor(device, store=KeyStore(device, [bare, *store.tables]), calibrated=False))
    sums = np.array([sum(raw._raw(k)[0] for _, k in arch_op_keys(a)) for _, a, _ in points])
    meas = np.array([m for _, _, m in points])
    use_offset = len(points) >= 8 if offset is None else bool(offset)
    if use_offset and len(points) >= 2:
        a = np.c_[sums / meas, 1.0 / meas]
        (scale, off), *_ = np.linalg.lstsq(a, np.ones(len(points)), rcond=None)
    else:
        use_offset = False
        (scale,), *_ = np.linalg.lstsq((sums / meas)[:, None], np.ones(len(points)), rcond=None)
        off = 0.0
    if scale <= 0:
        use_offset = False
        (scale,), *_ = np.linalg.lstsq((sums / meas)[:, None], np.ones(len(points)), rcond=None)
        off = 0.0
    scale, offset_ms = float(scale), float(off)
    cal_err = 100 * (scale * sums + offset_ms - meas) / meas
    raw_err = 100 * (sums - meas) / meas
    report = {"n": len(points), "fitted": "scale+offset" if use_offset else "scale", "rmspe_pct": float(np.sqrt((cal_err ** 2).mean())),
              "max_abs_error_pct": float(np.abs(cal_err).max()),
              "raw_rmspe_pct": float(np.sqrt((raw_err ** 2).mean())),
              "raw_sum_over_measured": float(np.mean(sums / meas))}
    table.calibration = Calibration(
        scale=scale, offset_ms=offset_ms, report=report,
        points=[CalibrationPoint(name=n, arch=a.to_compact(), measured_ms=float(m), sum_ms=float(s))
                for (n, a, m), s in zip(points, sums)])
    return table


# ---------------------------------------------------------------------- layer-wise spaces
@dataclass(frozen=True)
class LayerLatencyTable:
    """Per searchable layer (``space.slots`` order) the calibrated latency (ms) of each candidate
    (decision order; ``skip`` = 0), and ``fixed_ms`` = stem + fixed blocks + head + classifier +
    calibration offset (or a learned correction's constant), so that ``fixed_ms + Σ_i per_layer[i][choice_i]``
    equals ``predictor.predict(space.decode(choices)).latency_ms``. Exact whenever every member takes the
    same offset: one calibrated table, a key store whose members are mostly priced by one calibrated
    table, or a correction (additive per op); the offset is that of the space's first member."""

    fixed_ms: float
    per_layer: list[list[float]]
    keys: list[list[str]] = field(default_factory=list)

    def latency(self, choices: Sequence[int]) -> float:
        return self.fixed_ms + sum(row[c] for row, c in zip(self.per_layer, choices))

    def expected(self, probs):
        """Differentiable expected latency (ms) from per-layer choice probabilities.

        Args:
            probs: a sequence of 1-D tensors (one per layer, candidate order), or a 2-D tensor
                ``[layers, max_candidates]`` (entries beyond a layer's candidates are ignored).
        Returns:
            a 0-d torch tensor ``fixed + Σ_l Σ_j p_lj · lat_lj`` (FBNet Eq. 4, ProxylessNAS Eq. 5).
        """
        import torch

        total = None
        for i, row in enumerate(self.per_layer):
            p = probs[i][: len(row)]
            lat = torch.as_tensor(row, dtype=p.dtype, device=p.device)
            term = (p * lat).sum()
            total = term if total is None else total + term
        return total + self.fixed_ms


def layer_latency_table(predictor: Predictor, space) -> LayerLatencyTable:
    """Build the :class:`LayerLatencyTable` of a layer-wise space (``mobilenetv2``, ``fbnet``).

    Raises:
        TableError: the space is not layer-wise. MissingOpError: a candidate key is not priced.
    """
    if not hasattr(space, "slots"):
        raise TableError(f"space '{space.name}' is not layer-wise (no per-layer candidates)")
    slots = space.slots
    n_fixed = len(getattr(space, "fixed_first", ()))
    widest = max(len(s.candidates) for s in slots)
    keys: list[list[str]] = [[] for _ in slots]
    per_layer: list[list[float]] = [[] for _ in slots]
    fixed_ms = None
    for j in range(widest):
        choices = tuple(j if j < len(s.candidates) else 0 for s in slots)
        arch = space.decode(choices)
        predictor.check_arch(arch)
        pairs = arch_op_keys(arch)
        block_pairs = pairs[1 + n_fixed: 1 + n_fixed + len(slots)]
        if fixed_ms is None:
            fixed = pairs[: 1 + n_fixed] + pairs[1 + n_fixed + len(slots):]
            fixed_ms = sum(predictor.op_latency(k) for _, k in fixed) + predictor.offset_for(arch)
        for i, (slot, (_, key)) in enumerate(zip(slots, block_pairs)):
            if j < len(slot.candidates):
                keys[i].append(str(key))
                per_layer[i].append(predictor.op_latency(key))
    return LayerLatencyTable(float(fixed_ms), per_layer, keys)


def latency_bounds(predictor: Predictor, space) -> tuple[float, float]:
    """``(min_ms, max_ms)`` over the members of a layer-wise space."""
    t = layer_latency_table(predictor, space)
    return (t.fixed_ms + sum(min(r) for r in t.per_layer), t.fixed_ms + sum(max(r) for r in t.per_layer))


__all__ = ["RESOLUTION_RANGE", "check_resolution", "Prediction", "BlockPrediction", "Predictor", "load_predictor", "predict", "fit_calibration",
           "LayerLatencyTable", "layer_latency_table", "latency_bounds"]
