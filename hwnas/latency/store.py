"""A device's latency knowledge as one key store: the union of all its tables, queried by OpKey.

Tables are storage, not the unit of selection: a prediction, a search and a profile ask the store
for op keys, whatever space, resolution, width, input channels or classes the table that holds a
key was made for (the key itself states the op's shape: :mod:`hwnas.opkey`).

**Which entry wins** when several tables of the device hold the same key (the order of
:attr:`KeyStore.tables`):

1. a ``measured`` table before an ``estimated`` one;
2. on a device measured here (``transport: local``, e.g. ``host``): a table measured on this machine
   before one whose ``meta.machine`` names another CPU (:func:`foreign_machine`; such a table, e.g. the
   shipped host table from the project's machine, still prices what no table of this machine holds,
   and every prediction that uses it says so);
3. then the newer table (``meta.date``) first;
4. then the earlier folder on the table path (:func:`hwnas.latency.table.table_dirs`:
   ``$HWNAS_TABLE_PATH``, the user folder ``$HWNAS_HOME/latency_tables``, the shipped tables),
   then the file name.

On a device with a cost model (an *estimated* device such as ``pixel1``), the predictor prices a key
from a measured table when one holds it and from the cost model otherwise; the device's estimated
tables are the cost model's own materialisation and are not consulted.

Calibration (scale/offset fitted on whole-model measurements, :func:`hwnas.latency.predict.fit_calibration`)
is a property of one table and applies only to that table's entries: the predictor scales each entry by
the scale of the table it came from, and adds the offset of the table that priced the largest share of
the network (:meth:`hwnas.latency.predict.Predictor.offset_for`). A calibration fitted on 224-px
MobileNetV2 members says nothing about a table profiled at 16 px (a user trial found +81 % errors when
one table's scale was applied to every key).

Every answer names its table (:attr:`StoreHit.source`), so ``hwnas predict`` shows per block where
its figure came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from hwnas.errors import MissingOpError
from hwnas.latency.devices import Device, get_device
from hwnas.latency.table import Calibration, Entry, LatencyTable, find_tables, nearest_keys
from hwnas.opkey import OpKey


class MissingKeysError(MissingOpError):
    """Op keys a device's store (and cost model) cannot price.

    Attributes:
        device: the device name. keys: the missing keys (canonical strings, sorted).
    """

    def __init__(self, message: str, *, device: str, keys: Sequence[str]):
        super().__init__(message)
        self.device = device
        self.keys = sorted(keys)


@dataclass(frozen=True)
class StoreHit:
    """One key's entry and the table it came from."""

    entry: Entry
    table: LatencyTable

    @property
    def source(self) -> str:
        """``measured: <file>`` or ``estimated: <file>`` (the table's file name, or device/space)."""
        kind = "estimated" if self.table.meta.estimated else "measured"
        return f"{kind}: {table_name(self.table)}"


def table_name(table: LatencyTable) -> str:
    return table.path.name if table.path else f"{table.meta.device}-{table.meta.space} (in memory)"


_MACHINE_FIELDS = ("machine", "cpu", "cpus")


def foreign_machine(table: LatencyTable, device: Device) -> str | None:
    """Why ``table`` does not describe this machine, or None.

    Only for a measured table of a device timed here (``transport: local``) whose ``meta.machine``
    records the CPU: it is foreign when its architecture, CPU model or CPU count differs from
    :func:`hwnas.latency.table.machine_info` now. A table without machine details is not judged.

    Returns:
        e.g. ``"measured on AMD EPYC (2 CPUs, x86_64), this machine is Intel Xeon (2 CPUs, x86_64)"``.
    """
    m = table.meta.machine
    if table.meta.estimated or not m or device.transport.kind != "local":
        return None
    here = _here()
    diffs = [f for f in _MACHINE_FIELDS if m.get(f) is not None and here.get(f) is not None and m[f] != here[f]]
    if not diffs:
        return None

    def name(d):
        return f"{d.get('cpu', '?')} ({d.get('cpus', '?')} CPUs, {d.get('machine', '?')})"

    return f"measured on {name(m)}, this machine is {name(here)}"


_HERE: dict | None = None


def _here() -> dict:
    global _HERE
    if _HERE is None:
        from hwnas.latency.table import machine_info

        _HERE = machine_info()
    return _HERE


def _rank(tables: Sequence[LatencyTable], device: Device | None = None) -> list[LatencyTable]:
    """Precedence order (see the module docstring); ``tables`` come in table-path order."""
    # stable sorts (reverse=True keeps ties in order): path order, then newest first, then this machine's
    # first, then measured first
    by_date = sorted(tables, key=lambda t: t.meta.date, reverse=True)
    if device is not None:
        by_date = sorted(by_date, key=lambda t: foreign_machine(t, device) is not None)
    return sorted(by_date, key=lambda t: t.meta.estimated)


class KeyStore:
    """All latency tables of one device, looked up by :class:`~hwnas.opkey.OpKey`.

    Args:
        device: the :class:`Device` (or its name/alias).
        tables: the tables (any order; ranked by the precedence rule of the module docstring).
        skipped: messages of table files that could not be read (shown by ``hwnas predict``).

    Use :meth:`for_device` to collect a device's tables from the table path.
    """

    def __init__(self, device: Device | str, tables: Iterable[LatencyTable] = (), *, skipped: Sequence[str] = ()):
        self.device = device if isinstance(device, Device) else get_device(device)
        self.tables: list[LatencyTable] = _rank(list(tables), self.device)
        self.skipped = list(skipped)
        self._index: dict[str, StoreHit] = {}
        for table in reversed(self.tables):  # higher precedence overwrites
            for key, entry in table.entries.items():
                self._index[key] = StoreHit(entry, table)

    @classmethod
    def for_device(cls, device: Device | str, *, extra: Iterable[LatencyTable] = ()) -> "KeyStore":
        """Every table of ``device`` (name or alias) on the table path, plus ``extra`` tables.

        Corrupt files are not used; their messages are kept in :attr:`skipped`.
        """
        dev = device if isinstance(device, Device) else get_device(device)
        errors: list[str] = []
        tables = find_tables(dev.name, aliases=dev.aliases, errors=errors)
        if dev.estimated:  # estimated tables are the cost model's own materialisation
            tables = [t for t in tables if not t.meta.estimated]
        return cls(dev, [*extra, *tables], skipped=errors)

    # ------------------------------------------------------------------ queries
    def lookup(self, key: OpKey | str) -> StoreHit | None:
        """The winning entry of ``key`` and its table, or None."""
        return self._index.get(str(key))

    def __contains__(self, key: OpKey | str) -> bool:
        return str(key) in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[OpKey]:
        return [OpKey.parse(k) for k in sorted(self._index)]

    def missing(self, keys: Iterable[OpKey | str]) -> list[OpKey]:
        """The keys of ``keys`` no table holds (``skip`` is never missing: it costs 0 ms), deduplicated,
        in their first order."""
        out, seen = [], set()
        for key in keys:
            k = key if isinstance(key, OpKey) else OpKey.parse(key)
            s = str(k)
            if k.kind == "skip" or s in self._index or s in seen:
                continue
            seen.add(s)
            out.append(k)
        return out

    def nearest(self, key: OpKey | str, n: int = 3) -> list[str]:
        """The ``n`` keys of the store most similar to ``key`` (:func:`hwnas.latency.table.nearest_keys`)."""
        return nearest_keys(key, self._index, n)

    @staticmethod
    def calibration_of(table: LatencyTable | None) -> Calibration | None:
        """The calibration that applies to ``table``'s entries: its own (measured tables only), or None."""
        if table is None or table.meta.estimated:
            return None
        return table.calibration

    def foreign(self) -> dict[str, str]:
        """``{table name: why}`` for each table measured on another machine (:func:`foreign_machine`)."""
        return {table_name(t): why for t in self.tables if (why := foreign_machine(t, self.device))}

    @property
    def measured(self) -> bool:
        return any(not t.meta.estimated for t in self.tables)

    def as_table(self) -> LatencyTable:
        """The winning entries as one in-memory :class:`LatencyTable` (meta of the first table; for checks
        that read a table, e.g. :func:`hwnas.profile.check.check_per_op_sum`).

        Raises:
            TableError: the store is empty.
        """
        if not self.tables:
            from hwnas.errors import TableError

            raise TableError(f"no latency table of device '{self.device.name}'")
        return LatencyTable(self.tables[0].meta.model_copy(), {k: h.entry for k, h in self._index.items()})

    def describe(self) -> str:
        """One line: how many keys from which tables, in precedence order."""
        if not self.tables:
            return f"no latency table of {self.device.name}"
        names = ", ".join(f"{table_name(t)} ({'estimated' if t.meta.estimated else 'measured'})"
                          for t in self.tables)
        return f"{len(self)} keys of {self.device.name} from {len(self.tables)} table(s): {names}"

    def missing_error(self, keys: Sequence[OpKey | str], *, command: str | None = None,
                      what: str = "") -> MissingKeysError:
        """A :class:`MissingKeysError` naming the keys, their nearest present keys and the remedy."""
        keys = [str(k) for k in keys]
        first = keys[0]
        near = self.nearest(first, 3)
        fix = command or f"hwnas profile --device {self.device.name} --arch ARCH"
        where = self.describe()
        listed = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        return MissingKeysError(
            f"{len(keys)} op key(s){' of ' + what if what else ''} not in any latency table of device "
            f"'{self.device.name}' ({where}): {listed}; op key '{first}' is not in the store, nearest keys: "
            f"{', '.join(near) if near else 'none'}. Measure them with: {fix} (or, for hwnas predict, price them "
            f"from the nearest keys with --fallback)", device=self.device.name, keys=keys)

    def __repr__(self) -> str:
        return f"KeyStore({self.describe()!r})"


__all__ = ["KeyStore", "StoreHit", "MissingKeysError", "table_name", "foreign_machine"]
