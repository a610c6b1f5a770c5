"""Device descriptors: shipped files validate, aliases resolve, bad files give clear errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.errors import ConfigError, UnknownNameError
from hwnas.latency.devices import get_device, list_devices, load_device


def test_shipped_devices_validate_and_cover_the_required_kinds():
    devices = {d.name: d for d in list_devices()}
    assert {"host", "pixel1", "adreno-opencl", "edgetpu"} <= set(devices)
    assert devices["host"].backend == "tflite" and devices["host"].transport.kind == "local"
    pixel = devices["pixel1"]
    assert pixel.transport.kind == "adb" and pixel.threads == 1 and pixel.estimated
    assert set(pixel.cost_model.params) >= {"s_gemm_ns_per_mac", "t_op_us"}
    gpu = devices["adreno-opencl"]
    assert gpu.backend == "tvm" and gpu.transport.kind == "tvm-rpc" and gpu.transport.key
    assert gpu.tvm_target["kind"] == "opencl"
    tpu = devices["edgetpu"]
    assert tpu.precision == "int8" and "DEPTHWISE_CONV_2D" in tpu.accelerator_ops()
    assert "HARD_SWISH" not in tpu.accelerator_ops() and tpu.op_support.source  # the vendor list, named
    assert devices["host-tvm"].tuned is False


def test_aliases_resolve_case_insensitively():
    assert get_device("pixel").name == "pixel1"
    assert get_device("PIXEL1").name == "pixel1"
    with pytest.raises(UnknownNameError, match="valid devices: .*pixel1"):
        get_device("iphone")


def test_bad_device_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: cpu\nbackend: tflite\nthreads: 0\n")
    with pytest.raises(ConfigError, match="field 'threads'"):
        load_device(bad)
    bad.write_text("name: y\nkind: gpu\nbackend: tvm\n")
    with pytest.raises(ConfigError, match="tvm_target"):
        load_device(bad)
    bad.write_text("name: [unterminated\n")
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        load_device(bad)


def test_devices_command_lists_tables_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    spaces = {t["space"] for t in rows["pixel1"]["tables"]}
    assert {"mobilenetv2", "fbnet"} <= spaces
    assert all(t["provenance"] == "estimated" for t in rows["pixel1"]["tables"])
    assert rows["pixel1"]["priced_by"].startswith("cost model")
