"""Errors found by a first-time user trial: each is one line, exit 2, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


def hwnas(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("hwnas: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_single_block_string_gets_a_hint():
    msg = one_line_error(hwnas("show", "ir_k3_e6_s2_c24_r6"))
    assert "single block, not a whole architecture" in msg


def test_stem_error_gives_the_reason():
    msg = one_line_error(hwnas("show", "res224 stem=cn_k9_s2_c32_r6 ir_k3_e6_s1_c16_r6"))
    assert "field 'stem'" in msg and "got 9" in msg


def test_missing_table_file_is_not_an_unknown_device():
    msg = one_line_error(hwnas("table", "show", "nothere.yaml"))
    assert "no such table file" in msg


def test_missing_op_key_suggests_profile_or_fallback(tmp_path):
    import os

    env = {**os.environ, "HWNAS_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "hwnas", "predict", "mobilenetv2", "--target", "host", "--resolution",
                           "96", "--no-profile"], capture_output=True, text=True, env=env)
    msg = one_line_error(proc)
    assert "is not in" in msg and "--fallback" in msg
    assert "hwnas profile --device host --arch 'mobilenetv2' --resolution 96" in msg
    assert not (tmp_path / "latency_tables").exists()  # --no-profile measured nothing


def test_unwritable_export_path_fails_before_converting():
    t0 = time.perf_counter()
    msg = one_line_error(hwnas("export", "mobilenetv2", "--format", "tflite", "-o", "/proc/hwnas-test.tflite"))
    assert "cannot write output" in msg
    assert time.perf_counter() - t0 < 12  # no 15 s conversion before the error


def test_bad_searcher_option_leaves_no_run_folder(tmp_path):
    msg = one_line_error(hwnas("search", "--target", "pixel", "--data", "digits", "-o", "bogus=1",
                               "--out", str(tmp_path / "run")))
    assert "unknown option(s)" in msg and "bogus" in msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,expected", [(["--epochs", "0"], "--epochs must be at least 1, got 0"),
                                           (["--resolution", "3"], "--resolution must be at least 8, got 3"),
                                           (["--batch-size", "0"], "--batch-size must be at least 1, got 0")])
def test_search_refuses_nonsense_sizes_before_any_run_folder(tmp_path, args, expected):
    out = tmp_path / "run"
    msg = one_line_error(hwnas("search", "--target", "pixel", "--data", "digits", "--out", str(out), *args))
    assert expected in msg
    assert not out.exists()


@pytest.mark.parametrize("args", [["search", "--target", "host"], ["predict", "mobilenetv2", "--target", "pixel1"],
                                  ["profile", "--device", "host"], ["scale", "mobilenetv2", "--phi", "1"],
                                  ["show", "mobilenetv2"], ["table", "check", "--device", "pixel1"]])
def test_width_zero_names_the_width_option(args, tmp_path):
    from click.testing import CliRunner

    from hwnas.cli import main

    res = CliRunner().invoke(main, [*args, "--width", "0"])
    assert res.exit_code == 2 and "'--width'" in res.output and "width_multiplier" not in res.output, res.output
    assert not list(tmp_path.iterdir())


def test_every_extra_has_its_one_line_hint():
    """Each optional extra of pyproject.toml is named by the CLI's one-line hint for one of its modules."""
    import re
    from pathlib import Path

    from hwnas.errors import EXTRAS, missing_extra

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = {m.group(1) for m in re.finditer(r"^(\w+)\s*=", block, re.M)} - {"all", "dev"}
    assert extras <= set(EXTRAS.values()), extras - set(EXTRAS.values())
    err = ModuleNotFoundError("No module named 'pymoo'", name="pymoo")
    assert missing_extra(err) == "this command needs the 'pymoo' module: pip install 'hwnas[search]'"
