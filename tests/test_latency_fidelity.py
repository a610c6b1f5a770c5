"""Host fidelity: calibration scope per table, tables from another machine, table check with a search's
options, predict's resolution range and the learned per-device correction."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwnas.latency.devices import get_device
from hwnas.latency.predict import load_predictor
from hwnas.latency.store import KeyStore
from hwnas.latency.table import Calibration, LatencyTable, TableMeta
from hwnas.opkey import arch_op_keys
from hwnas.spaces import resolve_space


def _table(space, resolution, *, value, date="2026-12-01T00:00:00Z", machine=None, calibration=None, width=1.0):
    sp = resolve_space(space, resolution=resolution, width=width)
    meta = TableMeta(device="host", space=space, resolutions=[resolution], backend="tflite", date=date,
                     hwnas_version="0", provenance="measured", machine=machine)
    return LatencyTable(meta, {str(k): {"median_ms": 0.0 if k.kind == "skip" else value, "samples": 3}
                               for k in sp.op_keys()}, calibration)


def _raw_sum(arch, value):
    return sum(0.0 if k.kind == "skip" else value for _, k in arch_op_keys(arch))


def test_a_tables_calibration_applies_only_to_its_own_entries(tmp_path, monkeypatch):
    """User trial: the shipped 224-px table's scale 0.932 priced a 16-px user table's nets too (+81 %)."""
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    folder = tmp_path / "latency_tables"
    # a calibrated 224 px table (like the shipped one) and a newer uncalibrated user table at 32 px
    _table("mobilenetv2", 224, value=2.0, calibration=Calibration(scale=0.5, offset_ms=3.0)).save(folder / "a224.yaml")
    _table("mobilenetv2", 32, value=1.0, date="2026-12-02T00:00:00Z").save(folder / "user32.yaml")
    sp32 = resolve_space("mobilenetv2", resolution=32)
    arch32 = sp32.decode(sp32.sample())
    pred = load_predictor("host").predict(arch32)
    assert pred.latency_ms == pytest.approx(_raw_sum(arch32, 1.0))  # neither scale nor offset of a224.yaml
    assert pred.calibration is None
    sp224 = resolve_space("mobilenetv2", resolution=224)
    arch224 = sp224.decode(sp224.sample())
    pred = load_predictor("host").predict(arch224)  # its own table: its scale and offset
    assert pred.latency_ms == pytest.approx(0.5 * _raw_sum(arch224, 2.0) + 3.0)
    assert pred.calibration["table"] == "a224.yaml" and pred.calibration["per_table"]["a224.yaml"]["scale"] == 0.5


def test_mixed_tables_scale_per_entry_and_offset_of_the_main_table(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    folder = tmp_path / "latency_tables"
    sp = resolve_space("mobilenetv2", resolution=32)
    arch = sp.decode(sp.sample())
    keys = [str(k) for _, k in arch_op_keys(arch) if k.kind != "skip"]
    big = _table("mobilenetv2", 32, value=1.0, calibration=Calibration(scale=2.0, offset_ms=0.25))
    big.entries = {k: v for k, v in big.entries.items() if k != keys[0]}
    big.save(folder / "big.yaml")
    small = _table("mobilenetv2", 32, value=1.0, date="2026-12-02T00:00:00Z")
    small.entries = {keys[0]: small.entries[keys[0]]}
    small.save(folder / "small.yaml")
    p = load_predictor("host")
    pred = p.predict(arch)
    n = len(keys)
    assert pred.latency_ms == pytest.approx(2.0 * (n - 1) + 1.0 + 0.25)
    by_key = {b.key: b for b in pred.per_block}
    assert by_key[keys[0]].latency_ms == pytest.approx(1.0) and by_key[keys[0]].source == "measured: small.yaml"
    assert p.op_latency(keys[0]) == pytest.approx(1.0) and p.op_latency(keys[1]) == pytest.approx(2.0)


def test_a_table_from_another_machine_ranks_last_and_is_named(tmp_path, monkeypatch):
    from hwnas.latency.table import machine_info

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    folder = tmp_path / "latency_tables"
    here = machine_info()
    other = {**here, "cpu": "Some Other CPU 9000"}
    # the foreign table is newer: without the machine rule it would win
    _table("mobilenetv2", 32, value=5.0, date="2026-12-03T00:00:00Z", machine=other).save(folder / "theirs.yaml")
    _table("mobilenetv2", 32, value=1.0, date="2026-12-01T00:00:00Z", machine=here).save(folder / "mine.yaml")
    store = KeyStore.for_device("host")
    assert [t.path.name for t in store.tables][:2] == ["mine.yaml", "theirs.yaml"]
    assert "Some Other CPU 9000" in store.foreign()["theirs.yaml"]
    import json

    from click.testing import CliRunner

    from hwnas.cli import main

    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["devices", "--json"]).output)}
    marks = {Path(t["path"]).name: t["other_machine"] for t in rows["host"]["tables"]}
    assert "Some Other CPU 9000" in marks["theirs.yaml"] and marks["mine.yaml"] is None
    sp = resolve_space("mobilenetv2", resolution=32)
    pred = load_predictor("host").predict(sp.decode(sp.sample()))
    assert not pred.warnings
    (folder / "mine.yaml").unlink()
    pred = load_predictor("host").predict(sp.decode(sp.sample()))
    assert any("theirs.yaml" in w and "Some Other CPU 9000" in w for w in pred.warnings)


# ---------------------------------------------------------------------- table check with a search's options
class FakeBuilder:
    """Stands in for the keras→tflite build (the space's resolution is what is tested, not the runtime)."""

    name = "fake"

    def build_arch(self, arch):
        return arch


class FakeRunner:
    """Times an 'artifact' as 1.05 × its op count in ms (a stand-in for end-to-end runs)."""

    name = "fake"

    def measure(self, arch):
        from hwnas.profile.run import Measurement

        n = sum(k.kind != "skip" for _, k in arch_op_keys(arch))
        return Measurement(1.05 * n, None, None, 1)

    def close(self):
        pass


def _search_space_table(tmp_path):
    sp = resolve_space("mobilenetv2", resolution=16, width=0.5, in_channels=1, classes=10)
    meta = TableMeta(device="host", space="mobilenetv2", resolutions=[16], backend="tflite",
                     date="2026-12-02T00:00:00Z", hwnas_version="0", provenance="measured")
    t = LatencyTable(meta, {str(k): {"median_ms": 0.0 if k.kind == "skip" else 1.0, "samples": 3}
                            for k in sp.op_keys()})
    return t.save(tmp_path / "latency_tables" / "host-mobilenetv2-w0.5-c1-k10-16.yaml")


def test_table_check_draws_from_the_space_the_search_used(tmp_path, monkeypatch):
    import json

    import yaml
    from click.testing import CliRunner

    from hwnas.cli import main
    import hwnas.profile.run as run_mod

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    monkeypatch.setattr(run_mod, "make_builder", lambda dev, *a, **k: FakeBuilder())
    monkeypatch.setattr(run_mod, "make_runner", lambda dev, *a, **k: FakeRunner())
    path = _search_space_table(tmp_path)
    base = ["table", "check", "--device", "host", "--members", "3", "--json"]
    # without the search's options the default width-1, 3-channel, 1000-class space is drawn: keys missing
    res = CliRunner().invoke(main, [*base, "--table", str(path)])
    assert res.exit_code == 2 and "not in" in res.output
    # ... and the error names the flags that select the table hwnas profile made with its defaults
    assert "--width 0.5 --in-channels 1 --classes 10" in res.output and "Traceback" not in res.output
    opts = ["--space", "mobilenetv2", "--resolution", "16", "--width", "0.5", "--in-channels", "1", "--classes", "10"]
    res = CliRunner().invoke(main, [*base, *opts])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["width"], out["in_channels"], out["classes"]) == (0.5, 1, 10) and out["table"] == str(path)
    assert out["mean_error_pct"] == pytest.approx(100 * (1 / 1.05 - 1), abs=0.01)
    assert LatencyTable.load(path).meta.fidelity["width"] == 0.5  # stored in the table's metadata
    host = [r for r in json.loads(CliRunner().invoke(main, ["devices", "--json"]).output) if r["name"] == "host"][0]
    mine = [t for t in host["tables"] if t["path"] == str(path)][0]  # shown with its file's label, checked
    assert mine["label"] == "mobilenetv2-w0.5-c1-k10" and mine["fidelity"]["width"] == 0.5
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "search": {"space": "mobilenetv2", "resolution": 16, "latency_ms": 5.0},
        "space_spec": {"name": "mobilenetv2", "resolution": 16, "width": 0.5, "in_channels": 1, "classes": 10}}))
    res = CliRunner().invoke(main, [*base, "--from-run", str(run), "--no-save"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["classes"] == 10
    res = CliRunner().invoke(main, [*base, "--from-run", str(run), "--width", "1"])
    assert res.exit_code == 2 and "--from-run takes the space from the run" in res.output
    res = CliRunner().invoke(main, [*base, "--space", "mobilenetv2", "--resolution", "16", "--width", "0.75"])
    assert res.exit_code == 2 and "--width 0.75" in res.output and "hwnas profile --device host" in res.output


def test_table_check_prices_from_the_key_store_when_the_keys_span_tables(tmp_path, monkeypatch):
    """A search profiles only what the store lacks, so a space's keys can sit in several tables: the check
    then prices members from the device's key store and stores its result in the table holding most keys."""
    import json

    from click.testing import CliRunner

    from hwnas.cli import main
    import hwnas.profile.run as run_mod

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    monkeypatch.setattr(run_mod, "make_builder", lambda dev, *a, **k: FakeBuilder())
    monkeypatch.setattr(run_mod, "make_runner", lambda dev, *a, **k: FakeRunner())
    whole = LatencyTable.load(_search_space_table(tmp_path))
    whole.path.unlink()
    keys = sorted(whole.entries)
    cut = 2 * len(keys) // 3
    big = LatencyTable(whole.meta, {k: whole.entries[k] for k in keys[:cut]}).save(tmp_path / "latency_tables" / "big.yaml")
    small = LatencyTable(whole.meta.model_copy(update={"date": "2026-12-02T01:00:00Z"}),
                         {k: whole.entries[k] for k in keys[cut:]}).save(tmp_path / "latency_tables" / "small.yaml")
    opts = ["--space", "mobilenetv2", "--resolution", "16", "--width", "0.5", "--in-channels", "1", "--classes", "10"]
    res = CliRunner().invoke(main, ["table", "check", "--device", "host", "--members", "3", "--json", *opts])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["priced_by"] and out["table"] == str(big)  # priced by the store, stored where most keys are
    assert out["mean_error_pct"] == pytest.approx(100 * (1 / 1.05 - 1), abs=0.01)
    assert LatencyTable.load(big).meta.fidelity["priced_by"] == out["priced_by"]
    assert LatencyTable.load(small).meta.fidelity is None


# ---------------------------------------------------------------------- predict's resolution range
def test_predict_refuses_a_resolution_out_of_range_before_anything():
    from click.testing import CliRunner

    from hwnas.cli import main
    from hwnas.errors import SpecError
    from hwnas.latency.predict import RESOLUTION_RANGE
    from hwnas.zoo import zoo_arch

    for r in (99999, RESOLUTION_RANGE[1] + 1, 4):
        res = CliRunner().invoke(main, ["predict", "mobilenetv2", "--target", "pixel1", "--resolution", str(r)])
        assert res.exit_code == 2 and f"--resolution must be between 8 and 1024 px, got {r}" in res.output
        assert "Traceback" not in res.output
    # every command's --resolution: 0 is an error naming the option, never "use the default"
    for cmd in (["profile", "--device", "host"], ["table", "check", "--device", "host", "--space", "mobilenetv2",
                                                  "--width", "0.5", "--in-channels", "1", "--classes", "10"],
                ["table", "fit-correction", "--device", "host", "--space", "mobilenetv2"],
                ["ofa", "train"], ["show", "mobilenetv2"]):  # (search has its own check: test_user_errors)
        res = CliRunner().invoke(main, [*cmd, "--resolution", "0"])
        assert res.exit_code == 2 and "--resolution must be between 8 and 1024 px, got 0" in res.output, (cmd, res.output)
    with pytest.raises(SpecError, match="between 8 and 1024"):
        load_predictor("pixel1").predict(zoo_arch("mobilenetv2").with_resolution(2048))
    assert load_predictor("pixel1").predict(zoo_arch("mobilenetv2").with_resolution(1024)).latency_ms > 0


def test_fallback_outside_the_tables_resolutions_warns_with_its_share(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path / "only"))
    _table("mobilenetv2", 32, value=1.0).save(tmp_path / "only" / "t32.yaml")
    sp = resolve_space("mobilenetv2", resolution=32)
    arch = sp.decode(sp.sample())
    assert not load_predictor("host", fallback=True).predict(arch).warnings
    pred = load_predictor("host", fallback=True).predict(arch.with_resolution(512))
    assert any("resolution 512 px is outside" in w and "% of the total" in w for w in pred.warnings)


# ---------------------------------------------------------------------- learned correction
def _synthetic(tmp_path, monkeypatch, n=24):
    """A host table of 64-px mobilenetv2 keys (entries ∝ MACs) and networks 'measured' as
    1.5 × raw sum + 0.05 ms per op + 0.4 ms, with ±2 % deterministic jitter."""
    import random

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path))
    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path / "only"))
    sp = resolve_space("mobilenetv2", resolution=64)
    meta = TableMeta(device="host", space="mobilenetv2", resolutions=[64], backend="tflite",
                     date="2026-12-02T00:00:00Z", hwnas_version="0", provenance="measured")
    table = LatencyTable(meta, {str(k): {"median_ms": 0.0 if k.kind == "skip" else 0.02 + k.macs() / 2e8, "samples": 3}
                                for k in sp.op_keys()})
    table.save(tmp_path / "only" / "host-mobilenetv2-64.yaml")
    rng = random.Random(1)
    points = []
    for _ in range(n):
        arch = sp.decode(sp.sample(rng))
        raw = sum(table.entries[str(k)].median_ms for _, k in arch_op_keys(arch))
        ops = sum(k.kind != "skip" for _, k in arch_op_keys(arch))
        points.append((arch, (1.5 * raw + 0.05 * ops + 0.4) * (1 + rng.uniform(-0.02, 0.02))))
    return sp, table, points


def test_correction_fit_improves_held_out_error_and_round_trips(tmp_path, monkeypatch):
    from hwnas.latency.correction import Correction, fit_correction

    sp, table, points = _synthetic(tmp_path, monkeypatch)
    corr = fit_correction(get_device("host"), points, holdout=0.25, seed=0)
    held, raw = corr.report["held_out"], corr.report["raw_held_out"]
    assert held["members"] == 6 and corr.trained_on["networks"] == 18
    assert held["within_10pct"] == 1.0 and raw["within_10pct"] == 0.0  # raw sums are ~35 % low
    assert held["rmspe_pct"] < 3 < raw["rmspe_pct"]
    # the generating terms come back (the weight term takes a little of the scale: weights track MACs)
    assert 1.25 < corr.coef["all"] < 1.6
    assert corr.per_op_ms == pytest.approx(0.05, abs=0.01) and corr.intercept_ms == pytest.approx(0.4, abs=0.1)
    assert min(corr.coef["all"], corr.per_op_ms, corr.per_mparam_ms, corr.intercept_ms) >= 0
    path = corr.save(tmp_path / "c.json")
    text = path.read_text()
    assert text.lstrip().startswith("{") and '"schema": "hwnas-latency-correction/1"' in text  # plain JSON
    back = Correction.load(path)
    assert back.model_dump() == corr.model_dump() and back.coef == corr.coef
    # one scale for everything, but it knows what it was trained on: an SE / h-swish op is not that
    assert back.trained_kinds == ["classifier", "conv", "dsconv", "mbconv"]
    v3 = [k for _, k in arch_op_keys(resolve_space("mobilenetv3", resolution=64).decode(
        resolve_space("mobilenetv3", resolution=64).sample())) if k.kind != "skip"]
    assert all(back.knows(k) for _, k in arch_op_keys(points[0][0]))
    assert not all(back.knows(k) for k in v3) and any("se" in str(k) or "hs" in str(k) for k in v3 if not back.knows(k))
    arch = points[0][0]
    terms = [(k, table.entries[str(k)].median_ms) for _, k in arch_op_keys(arch)]
    assert back.predict_raw(terms) == pytest.approx(corr.predict_raw(terms))


def test_predictions_use_the_devices_correction_and_say_so(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hwnas.cli import main
    from hwnas.errors import TableError
    from hwnas.latency.correction import Correction, correction_path, fit_correction
    from hwnas.latency.predict import Predictor, layer_latency_table

    sp, table, points = _synthetic(tmp_path, monkeypatch)
    arch = points[-1][0]
    before = load_predictor("host").predict(arch)
    assert before.correction is None
    corr = fit_correction(get_device("host"), points, holdout=0.25, seed=0)
    corr.save(correction_path("host"))
    p = load_predictor("host")
    pred = p.predict(arch)
    assert pred.correction["path"] == str(correction_path("host")) and "learned correction" in pred.provenance
    assert pred.latency_ms == pytest.approx(points[-1][1], rel=0.05)
    assert abs(before.latency_ms / points[-1][1] - 1) > 0.2
    # an entry's energy (power × time) follows the corrected time: mJ / ms stays the entry's power
    for k, e in table.entries.items():
        if e.median_ms > 0:
            e.energy_mj, e.energy_source = 2.0 * e.median_ms, "declared:2W"
    table.save(table.path)
    pe = load_predictor("host").predict(arch)
    assert all(b.energy_mj == pytest.approx(2.0 * b.latency_ms) for b in pe.per_block if b.latency_ms > 0)
    assert pe.correction is not None and len(pe.per_block) > 3
    lt = layer_latency_table(p, sp)  # additive per op: the layer table stays exact
    choices = sp.sample()
    assert lt.latency(choices) == pytest.approx(p.predict(sp.decode(choices)).latency_ms)
    # an explicit table is that table alone: no correction
    assert Predictor(get_device("host"), table).predict(arch).correction is None
    # only its own device, and only on the machine it was measured on
    with pytest.raises(TableError, match="fitted on device 'host'"):
        Predictor(get_device("host-tvm"), store=KeyStore(get_device("host-tvm")), correction=corr)
    other = Correction.load(correction_path("host"))
    other.machine = {**other.machine, "cpu": "Some Other CPU 9000"}
    other.save(correction_path("host"))
    pred = load_predictor("host").predict(arch)
    assert pred.correction is None and any("Some Other CPU 9000" in w and "not used" in w for w in pred.warnings)


def test_fit_correction_cli_writes_the_devices_file(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from hwnas.cli import main
    from hwnas.latency.correction import correction_path

    sp, table, points = _synthetic(tmp_path, monkeypatch, n=12)
    pts = tmp_path / "members.jsonl"
    pts.write_text("".join(json.dumps({"arch": a.to_compact(), "measured_ms": m}) + "\n" for a, m in points))
    res = CliRunner().invoke(main, ["table", "fit-correction", "--device", "host", "--points", str(pts)])
    assert res.exit_code == 0, res.output
    assert correction_path("host").is_file() and "held_out" in res.output and "raw_held_out" in res.output
    pts.write_text('{"arch": "nonsense"}\n')
    res = CliRunner().invoke(main, ["table", "fit-correction", "--device", "host", "--points", str(pts)])
    assert res.exit_code == 2 and "members.jsonl:1" in res.output
