"""The foundation CLI: --version, spaces, zoo, show (+ --json), and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hwnas import __version__
from hwnas.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_show_json_is_machine_readable():
    result = run("show", "mobilenetv2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["params"] == 3_504_872
    assert abs(data["macs"] - 300.8e6) < 1e6
    assert data["blocks"][0]["name"] == "stem" and data["blocks"][0]["in_shape"] == [224, 224, 3]
    assert isinstance(data["arch"], str)


def test_show_width_and_resolution():
    data = json.loads(run("show", "mobilenetv2", "--width", "0.5", "--resolution", "160", "--json").output)
    assert data["blocks"][0]["out_shape"] == [80, 80, 16]
    assert data["params"] == pytest.approx(1.97e6, rel=0.01)


def test_spaces_and_zoo_tables():
    result = run("spaces", "--json")
    names = [row["name"] for row in json.loads(result.output)]
    assert {"mobilenetv2", "fbnet", "mnasnet", "efficientnet", "fbnet-cifar"} <= set(names)
    zoo = json.loads(run("zoo", "--json").output)
    assert {row["name"] for row in zoo} >= {"mobilenetv2", "mnasnet-a1", "efficientnet-b0", "fbnet-c"}


@pytest.mark.parametrize("arg,needle", [
    ("nope", "unknown zoo net 'nope'; valid zoo nets:"),
    ("res224 stem=cn_k3_s2_c32_r6 xx_k3_s1_c16", "unknown block kind 'xx'"),
    ("res224 stem=cn_k3_s2_c32_r6 ir_k4_e6_s1_c16_r6", "odd kernel"),
    ("res224 stem=cn_k3_s2_c32_r6 ir_k3_e6_s3_c16_r6", "stride 1 or 2"),
    ("res224 stem=cn_k3_s2_c32_r6 ir_k3_e6_s1_c16_se1.5_r6", "SE ratio"),
    ("res224 stem=cn_k3_s2_c32_r6 skip_s2", "skip block must keep the shape"),
    ("res224 stem=cn_k3_s2_c32_r6 ir_k3_e6_s1_c16_r6_bogus", "malformed token 'bogus'"),
])
def test_bad_input_one_line_exit_2(arg, needle):
    proc = subprocess.run([sys.executable, "-m", "hwnas", "show", arg], capture_output=True, text=True)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    result = run("show", str(path))
    assert result.exit_code == 2
    assert "list.yaml" in result.output and "expected a YAML mapping" in result.output
