"""Latency tables: schema, safe loading, refusal of wrong device/space/resolution, missing keys."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.errors import MissingOpError, TableError
from hwnas.latency.predict import load_predictor
from hwnas.latency.table import Entry, LatencyTable, TableMeta, diff_tables, now_iso
from hwnas.spaces import get_space


def _table(device="host", space="mobilenetv2", resolution=224, n=None, provenance="measured") -> LatencyTable:
    sp = get_space(space, resolution=resolution)
    keys = sp.op_keys(resolution)[:n] if n else sp.op_keys(resolution)
    meta = TableMeta(device=device, space=sp.name, resolutions=[resolution], backend="tflite", date=now_iso(),
                     hwnas_version="test", provenance=provenance, threads=1)
    return LatencyTable(meta, {str(k): Entry(median_ms=0.0 if k.kind == "skip" else 1.0 + i * 0.01,
                                             p10_ms=0.9, p90_ms=1.2, samples=5)
                               for i, k in enumerate(keys)})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    t = _table(n=10)
    path = t.save(tmp_path / f"t{suffix}")
    back = LatencyTable.load(path, device="host", space="mobilenetv2", resolution=224)
    assert back.entries == t.entries and back.meta == t.meta


def test_corrupt_and_truncated_files_are_clear_errors(tmp_path):
    path = _table(n=10).save(tmp_path / "t.yaml")
    text = path.read_text()
    path.write_text(text[: len(text) // 2] + "\n  median_ms: [")
    with pytest.raises(TableError, match="corrupt or truncated"):
        LatencyTable.load(path)
    path.write_text("")
    with pytest.raises(TableError, match="empty"):
        LatencyTable.load(path)
    path.write_text("just: a mapping\n")
    with pytest.raises(TableError, match="not a latency table"):
        LatencyTable.load(path)
    data = json.loads(json.dumps(_table(n=3).to_dict()))
    data["schema_version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(TableError, match="schema_version 99"):
        LatencyTable.load(tmp_path / "v.json")
    data["schema_version"] = 1
    data["entries"] = {"conv3x3_ad_hoc_224": {"median_ms": 1.0, "samples": 1}}
    (tmp_path / "k.json").write_text(json.dumps(data))
    with pytest.raises(TableError, match="bad entry key 'conv3x3_ad_hoc_224'"):
        LatencyTable.load(tmp_path / "k.json")
    data = _table(n=3).to_dict()
    data["meta"]["provenance"] = "guessed"
    with pytest.raises(TableError, match="provenance"):
        LatencyTable.from_dict(data)


def test_wrong_device_space_resolution_refused_naming_both(tmp_path):
    path = _table(n=10).save(tmp_path / "host.yaml")
    with pytest.raises(TableError, match="device 'host', not for 'pixel1'"):
        LatencyTable.load(path, device="pixel1")
    with pytest.raises(TableError, match="space 'mobilenetv2', not 'fbnet'"):
        LatencyTable.load(path, space="fbnet")
    with pytest.raises(TableError, match=r"resolution \[224\] but resolution 160"):
        LatencyTable.load(path, resolution=160)


def test_host_table_refused_for_pixel1_target(tmp_path):
    path = _table().save(tmp_path / "host.yaml")
    with pytest.raises(TableError, match="made for device 'host', not for 'pixel1'"):
        load_predictor("pixel1", table=path)
    result = CliRunner().invoke(main, ["predict", "mobilenetv2", "--target", "pixel1", "--table", str(path)])
    assert result.exit_code == 2
    assert "made for device 'host'" in result.output


def test_table_of_another_resolution_refused_by_predict(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    path = _table().save(tmp_path / "host.yaml")
    result = CliRunner().invoke(main, ["predict", "mobilenetv2", "--target", "host", "--table", str(path),
                                       "--resolution", "160"])
    assert result.exit_code == 2
    assert "[224]" in result.output and "160" in result.output
    # the predictor also refuses an arch of another resolution
    from hwnas.zoo import zoo_arch

    pred = load_predictor("host", table=path)
    with pytest.raises(TableError, match=r"resolution \[224\] but the architecture has resolution 192"):
        pred.predict(zoo_arch("mobilenetv2").with_resolution(192))


def test_missing_key_names_key_and_nearest():
    t = _table(n=5)
    key = "ir_k5_e6_s2_c40_r6@56x56x24"
    with pytest.raises(MissingOpError) as err:
        t.get(key)
    assert key in str(err.value) and "nearest keys: " in str(err.value)
    assert "ir_" in str(err.value).split("nearest keys: ")[1]


def test_diff_and_show(tmp_path):
    a = _table(n=10).save(tmp_path / "a.yaml")
    tb = _table(n=12)
    for e in tb.entries.values():
        e.median_ms *= 2
    b = tb.save(tmp_path / "b.yaml")
    d = diff_tables(LatencyTable.load(a), LatencyTable.load(b))
    assert d["shared"] == 10 and len(d["only_b"]) == 2
    nonzero = [r for r in d["ratios"].values() if r is not None]
    assert all(abs(r - 2) < 1e-9 for r in nonzero)
    res = CliRunner().invoke(main, ["table", "show", str(a)])
    assert res.exit_code == 0 and "provenance: measured" in res.output
    res = CliRunner().invoke(main, ["table", "diff", str(a), str(b)])
    assert res.exit_code == 0 and "only in B 2" in res.output


def test_shipped_tables_declare_how_they_were_made():
    from hwnas.latency.table import find_tables

    tables = find_tables()
    assert tables
    for t in tables:
        m = t.meta
        if m.provenance == "measured":
            assert m.machine and m.machine.get("cpu") and m.backend_version and m.threads
            assert "timer" in m.notes
        else:
            assert m.provenance.startswith(("estimated: ", "measured: "))
