"""The key store: every table of a device, asked by op key, with a documented precedence."""

from __future__ import annotations

from hwnas.latency.costmodel import estimate_table
from hwnas.latency.predict import load_predictor
from hwnas.latency.store import KeyStore
from hwnas.latency.table import LatencyTable, TableMeta
from hwnas.spaces import resolve_space


def _table(space, resolution, *, provenance, date, value, device="host", width=1.0, in_channels=3, classes=1000):
    sp = resolve_space(space, resolution=resolution, width=width, in_channels=in_channels, classes=classes)
    meta = TableMeta(device=device, space=space, resolutions=[resolution], backend="tflite", date=date,
                     hwnas_version="0", provenance=provenance)
    return LatencyTable(meta, {str(k): {"median_ms": 0.0 if k.kind == "skip" else value, "samples": 3}
                               for k in sp.op_keys()})


def test_store_is_the_union_by_key_and_newest_measured_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path / "extra"))
    folder = tmp_path / "latency_tables"
    # same keys: an old measured, a new measured (other folder) and a newer estimated table
    _table("mobilenetv2", 32, provenance="measured", date="2026-12-01T00:00:00Z", value=1.0).save(folder / "old.yaml")
    _table("mobilenetv2", 32, provenance="measured", date="2026-12-02T00:00:00Z", value=2.0).save(
        tmp_path / "extra" / "new.yaml")
    _table("mobilenetv2", 32, provenance="estimated: test", date="2026-12-03T00:00:00Z", value=3.0).save(
        folder / "est.yaml")
    # another space at another width/channels/classes: its keys join the store too
    _table("fbnet", 32, provenance="measured", date="2026-01-01T00:00:00Z", value=5.0, width=0.5, in_channels=1,
           classes=10).save(folder / "fb.yaml")
    (folder / "broken.yaml").write_text("schema_version: 1\nmeta: [\n")
    store = KeyStore.for_device("host")
    assert [t.path.name for t in store.tables[:2]] == ["new.yaml", "old.yaml"]
    assert store.tables[-1].path.name == "est.yaml"  # newest, but estimated: last
    assert any("broken.yaml" in m for m in store.skipped)
    key = next(k for k in resolve_space("mobilenetv2", resolution=32).op_keys() if k.kind != "skip")
    assert store.lookup(key).entry.median_ms == 2.0 and store.lookup(key).source == "measured: new.yaml"
    fb = resolve_space("fbnet", resolution=32, width=0.5, in_channels=1, classes=10)
    arch = fb.decode([0] * 22)
    pred = load_predictor("host").predict(arch)  # no space/resolution asked: the store answers by key
    assert {b.source for b in pred.per_block} - {"identity"} == {"measured: fb.yaml"}
    assert "fb.yaml" in pred.provenance


def test_estimated_tables_only_fill_what_no_measured_table_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    folder = tmp_path / "latency_tables"
    _table("mobilenetv2", 32, provenance="estimated: test", date="2026-12-01T00:00:00Z", value=3.0).save(
        folder / "est.yaml")
    sp = resolve_space("mobilenetv2", resolution=32)
    store = KeyStore.for_device("host")
    key = next(k for k in sp.op_keys() if k.kind != "skip")
    assert store.lookup(key).source == "estimated: est.yaml"
    m = _table("mobilenetv2", 32, provenance="measured", date="2025-01-01T00:00:00Z", value=1.0)
    m.entries = {str(key): m.entries[str(key)]}
    m.save(folder / "m.yaml")
    store = KeyStore.for_device("host")
    assert store.lookup(key).source == "measured: m.yaml"  # measured beats a newer estimate
    other = next(k for k in sp.op_keys() if k.kind != "skip" and k != key)
    assert store.lookup(other).source == "estimated: est.yaml"


def test_estimated_device_prices_from_measured_tables_then_cost_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    store = KeyStore.for_device("pixel1")
    assert not store.tables  # its shipped estimated tables are the cost model's materialisation
    arch = resolve_space("mobilenetv2", resolution=224).decode([0] * 21)
    assert {b.source for b in load_predictor("pixel1").predict(arch).per_block} == {"cost-model"}
    t = estimate_table("pixel1", "mobilenetv2", 224)
    t.meta.provenance = "measured"
    t.save(tmp_path / "latency_tables" / "p.yaml")
    assert {b.source for b in load_predictor("pixel1").predict(arch).per_block} == {"measured: p.yaml"}
