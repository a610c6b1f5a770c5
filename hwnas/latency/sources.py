"""Public phone measurements as cost-model fitting rows: each row is a set of op keys and one latency.

A :class:`SourceRow` says "these hwnas op keys, run together, took ``target_ms`` on this phone, as
measured by ``source``". The readers below map each public data set onto :func:`hwnas.opkey.op_key`
keys (nothing else builds keys) so :mod:`hwnas.latency.costmodel` can fit one model on all of them:

* ``slim_mnv2v3`` — whole networks: the 22 MobileNetV2 width × resolution rows "Mobile CPU (ms)
  Pixel 1" of the TF-slim MobileNetV2 README (``published-latency/published_latencies.csv``); TFLite
  float32 on one big core, the setup of the published end-to-end Pixel-1 figures. No other
  end-to-end figure is read: the others are a held-out check.
* ``proxylessnas-pixel`` / ``proxylessnas-mobile`` — ProxylessNAS's per-op Pixel-1 LUTs
  ``pixel_trim.yaml`` / ``mobile_trim.yaml`` (Cai et al. 2019), mapped by
  :func:`hwnas.latency.importers.import_table`.
* ``single-path-nas`` — the Single-Path NAS per-layer Pixel-1 runtime model
  ``pixel1_runtime_model.json`` (Stamoulis et al. 2019, §3.2): 22 MBConv layers of its MnasNet-based
  supernet × 4 choices (index 0 = k3 e3, 1 = k3 e6, 2 = k5 e3, 3 = k5 e6; index 0 is inferred by
  elimination, see the data MANIFEST). ReLU, identity shortcut on every layer but a stage's first.
  Layer 0 (the fixed ``k3 e1`` block) has four near-equal values: their mean is one row.
* ``nn-meter-<device>`` — nn-Meter's block LUTs ``<device>_lut_ln_v3.json`` (Zhang et al. 2021;
  branch ``dev/hybrid-transformer``): ``firstconv_{res}_3_{c}_2_3`` (3×3 stride-2 h-swish stem),
  ``conv_{hw}_{cin}_{cout}_{e}_{s}_hard_swish_{k}_{se|nose}`` (h-swish MBConv with MobileNetV3 SE;
  ``hw`` is the *input* size as in nn-Meter's ``BlockLatencyPredictor.get_latency``; ``e = 1`` is a
  depthwise-separable block) and ``mbpool_{hw}_{cin}_1984_6_hard_swish`` (1×1 conv to 6·cin, pool,
  1984-channel prelogits, 1000-way FC: two hwnas keys). Transformer keys are not read.

Each source has its own setup (TFLite version, threads, how it was timed): the cost model fits a
per-source factor on top of one shared model (see :func:`hwnas.latency.costmodel.fit_sources`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from hwnas.arch import ArchSpec, BlockSpec
from hwnas.errors import ConfigError
from hwnas.opkey import OpKey, arch_op_keys, classifier_key, op_key

#: The source whose setup the shipped Pixel-1 estimate represents (factor 1).
ANCHOR = "slim_mnv2v3"
NN_METER_DEVICES = ("pixel1", "pixel4", "pixel6", "xiaomi11")


@dataclass(frozen=True)
class SourceRow:
    """One measured latency: ``keys`` (op keys summed) took ``target_ms`` per ``source``."""

    source: str
    name: str
    keys: tuple[OpKey, ...]
    target_ms: float
    arch: ArchSpec | None = None


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path}: not found (expected the public data set named in ../shared/data/MANIFEST.md)")
    return path


def mobilenetv2_rows(csv_path: str | Path, source: str = ANCHOR, device: str = "Pixel 1") -> list[SourceRow]:
    """The MobileNetV2 width × resolution rows of a published-latency CSV (columns ``source, model,
    input_size, width_mult, device, latency_ms``), as zoo MobileNetV2 ArchSpecs and their op keys.

    Raises:
        ConfigError: no such rows in the file.
    """
    from hwnas.zoo import zoo_arch

    base = zoo_arch("mobilenetv2")
    rows, seen = [], set()
    with open(_need(Path(csv_path)), newline="") as fh:
        for r in csv.DictReader(fh):
            if r["source"] != source or r["device"] != device or not r["model"].startswith("mobilenet_v2"):
                continue
            if r["model"] in seen:
                continue
            seen.add(r["model"])
            arch = base.with_width(float(r["width_mult"])).with_resolution(int(r["input_size"]))
            rows.append(SourceRow(source, r["model"], tuple(k for _, k in arch_op_keys(arch)),
                                  float(r["latency_ms"]), arch))
    if not rows:
        raise ConfigError(f"{csv_path}: no '{source}' MobileNetV2 rows for device '{device}'")
    return rows


def proxylessnas_rows(yaml_path: str | Path, source: str) -> list[SourceRow]:
    """Every key of a ProxylessNAS LUT (``pixel_trim.yaml`` / ``mobile_trim.yaml``), one row each."""
    from hwnas.latency.importers import import_table

    table, _ = import_table(_need(Path(yaml_path)), "proxylessnas")
    return [SourceRow(source, k, (OpKey.parse(k),), e.median_ms) for k, e in sorted(table.entries.items())]


#: Single-Path NAS supernet layers: (input H, cin, cout, stride) of layers 0..21 at 224 px.
_SPNAS_STAGES = ((112, 32, 16, 1, 1), (112, 16, 24, 2, 4), (56, 24, 40, 2, 4), (28, 40, 80, 2, 4),
                 (14, 80, 96, 1, 4), (14, 96, 192, 2, 4), (7, 192, 320, 1, 1))
_SPNAS_CHOICES = {"0": (3, 3.0), "1": (3, 6.0), "2": (5, 3.0), "3": (5, 6.0)}


def single_path_nas_rows(json_path: str | Path, source: str = "single-path-nas") -> list[SourceRow]:
    """The Single-Path NAS Pixel-1 runtime model as rows (layer × choice); see the module docstring."""
    data = json.loads(_need(Path(json_path)).read_text())
    rows = []
    layer = 0
    for h, cin, cout, stride, depth in _SPNAS_STAGES:
        for i in range(depth):
            lin, s = (cin, stride) if i == 0 else (cout, 1)
            hin = h if i == 0 else -(-h // stride)
            values = data[str(layer)]
            if layer == 0:
                key = op_key(BlockSpec("dsconv", cout, 3, 1, activation="relu"), (hin, hin, lin))
                rows.append(SourceRow(source, "layer0", (key,), sum(values.values()) / len(values)))
            else:
                for choice, (k, e) in sorted(_SPNAS_CHOICES.items()):
                    key = op_key(BlockSpec("mbconv", cout, k, s, e, activation="relu"), (hin, hin, lin))
                    rows.append(SourceRow(source, f"layer{layer}/{choice}", (key,), float(values[choice])))
            layer += 1
    return rows


_NNM_CONV = re.compile(r"conv_(\d+)_(\d+)_(\d+)_(\d+)_([12])_hard_swish_(\d)_(se|nose)")
_NNM_STEM = re.compile(r"firstconv_(\d+)_3_(\d+)_2_3")
_NNM_POOL = re.compile(r"mbpool_(\d+)_(\d+)_1984_6_hard_swish")


def nn_meter_rows(json_path: str | Path, source: str) -> list[SourceRow]:
    """The CNN keys of an nn-Meter block LUT (``<device>_lut_ln_v3.json``) as rows; see the module
    docstring for the key mapping. Transformer keys are skipped."""
    data = json.loads(_need(Path(json_path)).read_text())
    rows = []
    for name, ms in sorted(data.items()):
        keys: tuple[OpKey, ...]
        if m := _NNM_CONV.fullmatch(name):
            hw, cin, cout, e, s, k = (int(v) for v in m.groups()[:6])
            se = 0.25 if m.group(7) == "se" else 0.0
            if e == 1:
                block = BlockSpec("dsconv", cout, k, s, 1.0, se, "hswish")
            else:
                block = BlockSpec("mbconv", cout, k, s, float(e), se, "hswish")
            keys = (op_key(block, (hw, hw, cin), se_style="mobilenetv3"),)
        elif m := _NNM_STEM.fullmatch(name):
            res, c = int(m.group(1)), int(m.group(2))
            keys = (op_key(BlockSpec("conv", c, 3, 2, activation="hswish"), (res, res, 3), residual_allowed=False),)
        elif m := _NNM_POOL.fullmatch(name):
            hw, cin = int(m.group(1)), int(m.group(2))
            keys = (op_key(BlockSpec("conv", 6 * cin, 1, 1, activation="hswish"), (hw, hw, cin), residual_allowed=False),
                    classifier_key((hw, hw, 6 * cin), 1000, 1984, "hswish"))
        else:
            continue
        rows.append(SourceRow(source, name, keys, float(ms)))
    if not rows:
        raise ConfigError(f"{json_path}: no nn-Meter CNN keys (firstconv_/conv_/mbpool_) found")
    return rows


def load_sources(data_root: str | Path, names: list[str] | tuple[str, ...]) -> dict[str, list[SourceRow]]:
    """The named sources under ``data_root`` (``../shared/data``): ``slim_mnv2v3``,
    ``proxylessnas-pixel``, ``proxylessnas-mobile``, ``single-path-nas``, ``nn-meter-<device>``.

    Raises:
        ConfigError: an unknown name or a missing file.
    """
    root = Path(data_root)
    readers = {
        ANCHOR: lambda: mobilenetv2_rows(root / "published-latency" / "published_latencies.csv"),
        "proxylessnas-pixel": lambda: proxylessnas_rows(root / "proxylessnas-lut" / "pixel_trim.yaml",
                                                        "proxylessnas-pixel"),
        "proxylessnas-mobile": lambda: proxylessnas_rows(root / "proxylessnas-lut" / "mobile_trim.yaml",
                                                         "proxylessnas-mobile"),
        "single-path-nas": lambda: single_path_nas_rows(root / "single-path-nas" / "pixel1_runtime_model.json"),
        **{f"nn-meter-{d}": (lambda d=d: nn_meter_rows(root / "nn-meter-lut" / f"{d}_lut_ln_v3.json", f"nn-meter-{d}"))
           for d in NN_METER_DEVICES},
    }
    unknown = [n for n in names if n not in readers]
    if unknown:
        raise ConfigError(f"unknown measurement source(s) {', '.join(unknown)}; expected one of {', '.join(readers)}")
    return {n: readers[n]() for n in names}


__all__ = ["load_sources", "SourceRow", "ANCHOR", "NN_METER_DEVICES", "mobilenetv2_rows", "proxylessnas_rows", "single_path_nas_rows",
           "nn_meter_rows"]
