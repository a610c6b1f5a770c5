"""Tables you can trust: impossible timings refused, corrupt tables never skipped silently, the
environment of a table and of a resumed profile compared, inversions and spread checked."""

from __future__ import annotations

import warnings

import pytest

from hwnas.errors import HwnasWarning, TableError
from hwnas.latency.devices import get_device
from hwnas.latency.table import (Entry, LatencyTable, TableMeta, check_environment, check_table_consistency,
                                 environment_mismatches, find_tables, now_iso)
from hwnas.opkey import OpKey
from hwnas.profile.run import Artifact, Journal, Measurement, MeasurementError, journal_environment, measure_key

K3 = "ir_k3_e3_s1_c24_r6@32x32x24"
K5 = "ir_k5_e3_s1_c24_r6@32x32x24"
E6 = "ir_k3_e6_s1_c24_r6@32x32x24"


def _meta(**kw):
    base = dict(device="host", space="mobilenetv2-cifar", resolutions=[32], backend="tflite", date=now_iso(),
                hwnas_version="test", provenance="measured", threads=1)
    return TableMeta(**{**base, **kw})


class BytesBuilderForTests:
    """Stands in for the converter where only the runner's answer matters."""

    name = "bytes-for-tests"

    def build(self, key):
        return Artifact(data=str(key).encode())


class ScriptedRunnerForTests:
    """Returns scripted medians per op (a list per key: one per call), to exercise the checks' logic."""

    name = "scripted-for-tests"

    def __init__(self, script: dict[str, list[float]]):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[str] = []
        self.closed = False

    def version(self):
        return "scripted"

    def measure(self, artifact):
        key = artifact.data.decode()
        self.calls.append(key)
        med = self.script[key].pop(0) if len(self.script[key]) > 1 else self.script[key][0]
        return Measurement(med, med * 0.99, med * 1.01, 10)

    def close(self):
        self.closed = True


# ------------------------------------------------------------------ impossible timings
def test_zero_median_refused_for_an_op_but_not_for_an_identity():
    t = LatencyTable(_meta(), {"skip@32x32x24": Entry(median_ms=0.0, samples=0)})
    with pytest.raises(TableError, match="'ir_k3_e3_s1_c24_r6@32x32x24' of device 'host' has median_ms 0.0"):
        t.set(K3, Entry(median_ms=0.0, samples=5))
    with pytest.raises(TableError, match="entry .ir_k3_e3_s1_c24_r6@32x32x24. of device .host.: field .median_ms."):
        t.set(K3, {"median_ms": float("nan"), "samples": 5})


def test_runner_reporting_zero_is_an_error_naming_op_and_device():
    dev = get_device("host")
    runner = ScriptedRunnerForTests({K3: [0.0]})
    with pytest.raises(MeasurementError, match=r"device 'host', op 'ir_k3_e3_s1_c24_r6@32x32x24'.*0.0 ms"):
        measure_key(OpKey.parse(K3), BytesBuilderForTests(), runner, dev)
    assert measure_key(OpKey.parse("skip@8x8x8"), BytesBuilderForTests(), runner, dev).median_ms == 0.0


# ------------------------------------------------------------------ corrupt tables
def test_corrupt_table_of_the_requested_device_fails_and_others_warn(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path))
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    good = LatencyTable(_meta(device="phone9"), {K3: Entry(median_ms=1.0, samples=3)})
    good.save(tmp_path / "phone9-x-32.yaml")
    bad = LatencyTable(_meta(device="host"), {K3: Entry(median_ms=1.0, samples=3)})
    path = bad.save(tmp_path / "host-x-32.yaml")
    path.write_text(path.read_text().replace(K3, "ir_k3_e3.0_s1_c24_r6@32x32x24"))
    with pytest.raises(TableError, match="belongs to device 'host'"):
        find_tables("host")
    with pytest.raises(TableError, match="host-x-32.yaml"):
        find_tables("cpu", aliases=["host"])
    with pytest.warns(HwnasWarning, match="skipped a corrupt latency table.*host-x-32.yaml"):
        assert [t.meta.device for t in find_tables("phone9")] == ["phone9"]
    errors: list[str] = []
    find_tables(errors=errors)
    assert len(errors) == 1 and "host-x-32.yaml" in errors[0]
    # unreadable beyond its meta: the file name says whose it is
    path.write_text("meta: [\n")
    with pytest.raises(TableError, match="belongs to device 'host'"):
        find_tables("host")


# ------------------------------------------------------------------ environment
def test_table_environment_compared_with_the_device_and_runtime():
    dev = get_device("host")
    t = LatencyTable(_meta(threads=2, backend_version="ai-edge-litert 0.0.1", delegate="xnnpack"),
                     {K3: Entry(median_ms=1.0, samples=3)})
    diffs = environment_mismatches(t, dev, backend_version="ai-edge-litert 2.3.0", governor=None)
    assert "threads: table 2, device 1" in diffs
    assert "backend version: table ai-edge-litert 0.0.1, installed ai-edge-litert 2.3.0" in diffs
    with pytest.warns(HwnasWarning, match="threads: table 2, device 1"):
        check_environment(t, dev, backend_version="ai-edge-litert 2.3.0")
    with pytest.raises(TableError, match="refused by --strict"):
        check_environment(t, dev, strict=True, backend_version="ai-edge-litert 2.3.0")
    same = LatencyTable(_meta(threads=1, backend_version="ai-edge-litert 2.3.0", delegate="xnnpack",
                              governor="performance"), {K3: Entry(median_ms=1.0, samples=3)})
    assert environment_mismatches(same, dev, backend_version="ai-edge-litert 2.3.0", governor="performance") == []
    assert environment_mismatches(same, dev.model_copy(update={"precision": "int8"}),
                                  backend_version="ai-edge-litert 2.3.0") == ["precision: table float32, device int8"]
    assert environment_mismatches(same, dev, backend_version="ai-edge-litert 2.3.0",
                                  governor="powersave") == ["governor: table performance, device powersave"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_environment(same, dev, backend_version="ai-edge-litert 2.3.0")


def test_resumed_profile_refuses_a_changed_environment(tmp_path):
    dev = get_device("host")
    head = {"device": "host", "space": "s", "resolution": 32, "backend": "tflite"}
    j = Journal(tmp_path / "t.journal.jsonl", {**head, "env": journal_environment(dev)})
    j.append(OpKey.parse(K3), Measurement(1.0, 0.9, 1.1, 3))
    Journal(tmp_path / "t.journal.jsonl", {**head, "env": journal_environment(dev)})  # same: resumes
    two = dev.model_copy(update={"threads": 2})
    with pytest.raises(TableError, match="environment changed.*threads: journal 1, now 2"):
        Journal(tmp_path / "t.journal.jsonl", {**head, "env": journal_environment(two)})


# ------------------------------------------------------------------ consistency
def test_inversions_and_spread_are_found():
    entries = {K3: Entry(median_ms=2.0, p10_ms=1.95, p90_ms=2.05, samples=9),
               K5: Entry(median_ms=1.0, p10_ms=0.95, p90_ms=1.05, samples=9),   # bigger kernel, faster: inversion
               E6: Entry(median_ms=3.0, p10_ms=1.0, p90_ms=5.0, samples=9)}     # bigger expansion, slower, noisy
    check = check_table_consistency(entries)
    assert [(a, b) for a, b, _ in check.inversions] == [(K3, K5)]
    assert [k for k, _ in check.high_spread] == [E6]
    # within the entries' spread it is noise, not an inversion
    entries[K5] = Entry(median_ms=1.9, p10_ms=1.7, p90_ms=2.1, samples=9)
    assert check_table_consistency(entries).inversions == []


def test_profile_remeasures_offenders_once_and_lists_what_remains(tmp_path):
    from hwnas.profile import profile

    # K5 is measured faster than K3 twice (a real inversion); E6 first too fast, then fine
    runner = ScriptedRunnerForTests({K3: [2.0], K5: [1.0, 1.0], E6: [0.5, 4.0]})
    res = profile("host", "mobilenetv2-cifar", 32, out=tmp_path / "t.yaml", keys=[K3, K5, E6],
                  builder=BytesBuilderForTests(), runner=runner, progress=False)
    assert sorted(res.remeasured) == sorted([K3, K5, E6])
    assert sorted(runner.calls) == sorted([K3, K5, E6] * 2)  # each offender measured once more, no more
    assert [(a, b) for a, b, _ in res.check.inversions] == [(K3, K5)]
    assert res.table.entries[E6].median_ms == 4.0
    assert f"inversion: {K5} measured faster than {K3}" in res.table.meta.notes
    assert runner.closed
    # a rerun re-measures nothing again
    runner2 = ScriptedRunnerForTests({K3: [2.0], K5: [1.0], E6: [4.0]})
    res2 = profile("host", "mobilenetv2-cifar", 32, out=tmp_path / "t.yaml", keys=[K3, K5, E6],
                   builder=BytesBuilderForTests(), runner=runner2, progress=False)
    assert runner2.calls == [] and res2.remeasured == []


def test_runner_is_closed_when_profiling_fails(tmp_path):
    from hwnas.profile import profile

    runner = ScriptedRunnerForTests({K3: [0.0]})
    with pytest.raises(MeasurementError):
        profile("host", "mobilenetv2-cifar", 32, out=tmp_path / "t.yaml", keys=[K3], builder=BytesBuilderForTests(),
                runner=runner, progress=False)
    assert runner.closed


@pytest.mark.slow
def test_per_op_sum_check_on_the_host_measures_the_whole_model_with_litert(tmp_path):
    """``hwnas profile --check`` on the host: the real builder and LiteRT runner time the whole model."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("hwnas.export.keras")
    from hwnas.arch import ArchSpec
    from hwnas.opkey import arch_op_keys
    from hwnas.profile.check import check_per_op_sum

    arch = ArchSpec.from_compact("res8 stem=cn_k3_s2_c8_r6 ir_k3_e2_s1_c8_r6 head=cn_k1_s1_c16_r6 classes=4")
    table = LatencyTable(_meta(resolutions=[8]), {str(k): Entry(median_ms=0.01, samples=3) for _, k in arch_op_keys(arch)})
    dev = get_device("host").model_copy(update={"repeats": 5, "warmup": 1})
    res = check_per_op_sum(dev, table, archs=[arch])
    (m,) = res.members
    assert m.measured_ms > 0 and m.per_op_sum_ms == pytest.approx(0.04)
    assert m.error_pct == pytest.approx(100 * (0.04 - m.measured_ms) / m.measured_ms)
    assert m.op_profile_sum_ms is None  # the Python interpreter has no per-node profiler


def test_fallback_share_is_reported_and_warned_when_large():
    from hwnas.arch import ArchSpec
    from hwnas.latency.predict import Predictor
    from hwnas.opkey import arch_op_keys

    arch = ArchSpec.from_compact("res8 stem=cn_k3_s2_c8_r6 ir_k3_e2_s1_c8_r6 ir_k5_e2_s1_c8_r6 head=cn_k1_s1_c64_r6 "
                                 "classes=4")
    keys = {layer.name: k for layer, k in arch_op_keys(arch)}
    entries = {str(k): Entry(median_ms=1.0 if name.startswith("stages") else 5.0, samples=3)
               for name, k in keys.items() if name != "stages.0.1"}
    small = Predictor(get_device("host"), LatencyTable(_meta(resolutions=[8]), entries), fallback=True).predict(arch)
    (fb,) = [b for b in small.per_block if b.source.startswith("fallback")]
    assert small.fallback_share == pytest.approx(fb.latency_ms / small.latency_ms)
    assert small.fallback_share < 0.2 and small.fallback_warning() is None
    # the head and the classifier priced from other keys: most of the total is a guess
    del entries[str(keys["head"])]
    entries[str(keys["stages.0.1"])] = Entry(median_ms=0.01, samples=3)
    entries[str(keys["stages.0.0"])] = Entry(median_ms=0.01, samples=3)
    big = Predictor(get_device("host"), LatencyTable(_meta(resolutions=[8]), entries), fallback=True).predict(arch)
    assert big.fallback_share > 0.2
    assert f"{100 * big.fallback_share:.0f} % of the predicted" in big.fallback_warning()
    assert big.to_dict()["fallback_share"] == big.fallback_share


def test_tables_of_a_device_are_checked_against_its_environment_and_strict_refuses(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hwnas.cli import main
    from hwnas.latency.table import TableEnvironmentWarning

    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path))
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    arch = "res8 stem=cn_k3_s2_c8_r6 ir_k3_e2_s1_c8_r6 head=cn_k1_s1_c16_r6 classes=4"
    from hwnas.arch import ArchSpec
    from hwnas.opkey import arch_op_keys

    keys = [k for _, k in arch_op_keys(ArchSpec.from_compact(arch))]
    LatencyTable(_meta(threads=2, resolutions=[8]), {str(k): Entry(median_ms=1.0, samples=3) for k in keys}).save(
        tmp_path / "host-two-threads-8.yaml")
    with pytest.warns(TableEnvironmentWarning, match="threads: table 2, device 1"):
        assert len(find_tables("host", resolution=8)) == 1
    res = CliRunner().invoke(main, ["predict", arch, "--target", "host", "--fallback", "--strict"])
    assert res.exit_code == 2 and "threads: table 2, device 1" in res.output and "--strict" in res.output
    res = CliRunner().invoke(main, ["predict", arch, "--target", "host", "--fallback"])
    assert res.exit_code == 0, res.output
    assert "hwnas: warning:" in res.output and "threads: table 2, device 1" in res.output


def test_predict_cli_prints_the_fallback_share_and_warns_when_large(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hwnas.arch import ArchSpec
    from hwnas.cli import main
    from hwnas.opkey import arch_op_keys

    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path))
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    arch = "res8 stem=cn_k3_s2_c8_r6 ir_k3_e2_s1_c8_r6 ir_k5_e2_s1_c8_r6 head=cn_k1_s1_c64_r6 classes=4"
    keys = {layer.name: k for layer, k in arch_op_keys(ArchSpec.from_compact(arch))}
    entries = {str(k): Entry(median_ms=0.01 if name.startswith("stages") else 1.0, samples=3)
               for name, k in keys.items() if name != "head"}  # the head priced from another conv key
    LatencyTable(_meta(resolutions=[8]), entries).save(tmp_path / "host-x-8.yaml")
    res = CliRunner().invoke(main, ["predict", arch, "--target", "host", "--fallback"])
    assert res.exit_code == 0, res.output
    assert "share of the total priced by fallback:" in res.output
    assert "hwnas: warning:" in res.output and "fallback-priced key(s)" in res.output


def test_devices_listing_survives_a_corrupt_table_and_names_it(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from hwnas.cli import main

    monkeypatch.setenv("HWNAS_TABLE_PATH", str(tmp_path))
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    (tmp_path / "host-x-32.yaml").write_text("meta: [\n")
    result = CliRunner().invoke(main, ["devices", "--json"])
    assert result.exit_code == 0, result.output  # every device listed, not exit 2 on the first corrupt table
    assert "host-x-32.yaml" in result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert "host" in rows and "pixel1" in rows
