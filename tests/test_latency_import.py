"""Importing published LUTs: ProxylessNAS (Pixel 1) and once-for-all (Note10) reproduce their sums."""

from __future__ import annotations

import csv
import json
import random

import pytest
import yaml
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.errors import MissingOpError, TableError
from hwnas.latency.importers import arch_from_ofa_config, arch_from_proxyless_config, import_table
from hwnas.latency.predict import predict
from hwnas.spaces import get_space


def _proxyless_key(layer) -> str:
    """ProxylessNAS's own key construction (search/utils/latency_estimator.py), written independently."""
    h, w, c = layer.in_shape
    oh, ow, oc = layer.out_shape
    b = layer.block
    if layer.name == "stem":
        return f"Conv-input:{h}x{w}x{c}-output:{oh}x{ow}x{oc}"
    if layer.name == "head":
        return f"Conv_1-input:{h}x{w}x{c}-output:{oh}x{ow}x{oc}"
    if layer.name == "classifier":
        return f"Logits-input:{h}x{w}x{c}-output:{oc}"
    e = 1 if b.kind == "dsconv" else int(b.expansion)
    idskip = int(layer.has_residual)
    return (f"expanded_conv-input:{h}x{w}x{c}-output:{oh}x{ow}x{oc}-expand:{e}-kernel:{b.kernel}-stride:{b.stride}"
            f"-idskip:{idskip}")


@pytest.mark.parametrize("name", ["pixel_trim.yaml", "mobile_trim.yaml"])
def test_proxylessnas_import_reproduces_table_sums(shared_data, name):
    path = shared_data / "proxylessnas-lut" / name
    raw = yaml.safe_load(path.read_text())
    table, report = import_table(path, "proxylessnas")
    assert not report.unmapped and len(report.mapped) == len(raw) == 72
    assert table.meta.device == "pixel1" and table.meta.resolutions == [224]
    assert table.meta.provenance.startswith("measured: imported from")
    space = get_space("mobilenetv2", resolution=224)
    assert {str(k) for k in space.op_keys(224) if k.kind != "skip"} <= set(table.entries)
    rng = random.Random(0)
    for _ in range(10):
        arch = space.decode(space.sample(rng))
        expected = sum(raw[_proxyless_key(layer)]["mean"] for layer in arch.layers()
                       if layer.block is None or layer.block.kind != "skip")
        assert predict(arch, table).latency_ms == pytest.approx(expected, abs=1e-9)


def test_proxyless_mobile_net_misses_exactly_three_keys(shared_data):
    table, _ = import_table(shared_data / "proxylessnas-lut" / "pixel_trim.yaml", "proxylessnas")
    arch = arch_from_proxyless_config(shared_data / "proxylessnas-lut" / "proxyless_mobile.config")
    with pytest.raises(MissingOpError):
        predict(arch, table)
    fb = predict(arch, table, fallback=True)
    assert len(fb.fallback) == 3  # the MANIFEST: 3 of its 23 keys are not in the table


OFA_NETS = {"note10_lat-30ms_top1-78.4_finetune-75": 29.97, "note10_lat-41ms_top1-79.3_finetune-75": 39.91,
            "note10_lat-50ms_top1-79.7_finetune-75": 49.78}


@pytest.mark.parametrize("net,expected", sorted(OFA_NETS.items()))
def test_ofa_note10_import_reproduces_specialized_net_sums(shared_data, net, expected):
    base = shared_data / "ofa-note10-lut"
    arch = arch_from_ofa_config(base / "ofa_specialized" / net / "net.config")
    assert arch.se_style == "mobilenetv3" and arch.stem.out_channels == 24
    table, report = import_table(base / "lookup_tables" / f"{arch.resolution}_lookup_table.yaml", "ofa")
    assert not report.unmapped
    assert list(report.composed) == ["classifier_c1000_pl1536_hs@7x7x1152"]
    got = predict(arch, table).latency_ms
    assert abs(got - expected) <= 0.01
    with open(base / "note10_lut_sum_check.csv") as fh:
        check = {r["ofa_specialized_net"]: float(r["note10_lut_sum_ms"]) for r in csv.DictReader(fh)}
    assert got == pytest.approx(check[net], abs=1e-4)


def test_import_cli_lists_unmapped_and_refuses_garbage(shared_data, tmp_path):
    out = tmp_path / "ofa.yaml"
    res = CliRunner().invoke(main, ["table", "import", "--format", "ofa", "--out", str(out),
                                    str(shared_data / "ofa-note10-lut" / "lookup_tables" / "224_lookup_table.yaml")])
    assert res.exit_code == 0, res.output
    assert "composed classifier_c1000_pl1536_hs@7x7x1152 = AvgPool2D" in res.output
    assert "unmapped keys: none" in res.output
    odd = tmp_path / "odd.yaml"
    raw = yaml.safe_load((shared_data / "proxylessnas-lut" / "pixel_trim.yaml").read_text())
    raw["Mystery-op-input:1x1x1"] = {"count": 1, "mean": 1.0}
    odd.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(main, ["table", "import", "--format", "proxylessnas", "--out", str(tmp_path / "p.yaml"),
                                    "--json", str(odd)])
    assert res.exit_code == 0
    assert json.loads(res.output)["unmapped"] == {"Mystery-op-input:1x1x1": "unknown key pattern"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("Conv-input: [\n")
    res = CliRunner().invoke(main, ["table", "import", "--format", "ofa", str(bad)])
    assert res.exit_code == 2 and "corrupt or truncated" in res.output
    with pytest.raises(TableError, match="no key could be mapped"):
        (tmp_path / "x.yaml").write_text("a: {mean: 1}\n")
        import_table(tmp_path / "x.yaml", "ofa")
