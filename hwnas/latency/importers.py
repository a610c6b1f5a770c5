"""Import published latency lookup tables into hwnas tables, mapping their keys onto ``op_key``.

Formats:

* ``proxylessnas`` — ProxylessNAS's ``mobile_trim.yaml`` / ``pixel_trim.yaml`` (Cai et al. 2019):
  ``key -> {count, mean, var}``, ``mean`` in ms; keys ``Conv-input:…-output:…`` (stem, ReLU6),
  ``expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:0|1`` (``E`` = ratio;
  ``E = 1`` is the depthwise-separable first block), ``Conv_1-…`` (1×1 head conv), ``Logits-…``
  (global pool + FC).
* ``ofa`` — once-for-all's ``<r>_lookup_table.yaml`` (Cai et al. 2020), MobileNetV3 w1.2 space:
  ``expand`` is the absolute mid-channel count, ``se:1`` = MobileNetV3-style SE, ``hs:1`` = h-swish
  (else ReLU). Its separate ``AvgPool2D``, ``Conv_2`` (1×1 prelogits conv) and ``Logits`` entries
  are *composed* into the single hwnas key ``classifier_c1000_pl1536_hs@HxWx1152`` (sum of the three
  means); the report lists every composition.

Unmapped keys are listed in the :class:`ImportReport`, never dropped silently. Also here:
:func:`arch_from_ofa_config` / :func:`arch_from_proxyless_config` turn the released ``net.config``
JSON files into ArchSpecs so their tables can be checked against their own nets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas import __version__
from hwnas.arch import ArchSpec, BlockSpec, ClassifierSpec, HeadSpec, make_divisible
from hwnas.errors import ConfigError, TableError, UnknownNameError
from hwnas.io import load_structured
from hwnas.latency.table import Entry, LatencyTable, TableMeta, now_iso
from hwnas.opkey import OpKey, classifier_key, op_key

FORMATS = ("proxylessnas", "ofa")
_SHAPE = r"(\d+)x(\d+)x(\d+)"


@dataclass
class ImportReport:
    """What an import did: ``mapped`` foreign key -> hwnas key, ``composed`` hwnas key -> foreign
    parts, ``unmapped`` foreign key -> reason."""

    mapped: dict[str, str] = field(default_factory=dict)
    composed: dict[str, list[str]] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mapped": len(self.mapped), "composed": self.composed, "unmapped": self.unmapped}


def _entry(raw: dict, foreign: str) -> Entry:
    mean = float(raw["mean"])
    n = int(raw.get("count", 0))
    spread = raw.get("std")
    if spread is None and raw.get("var") is not None:
        spread = float(raw["var"]) ** 0.5
    note = f"imported mean of '{foreign}'" + (f", std {float(spread):.4g} ms" if spread is not None else "")
    return Entry(median_ms=mean, samples=n, note=note)


def _act(hs: bool, default: str) -> str:
    return "hswish" if hs else default


def _block_from_fields(h: int, w: int, cin: int, oh: int, cout: int, mid_or_ratio: float, kernel: int, stride: int,
                       idskip: bool, *, absolute_mid: bool, se: bool, activation: str, se_style: str) -> OpKey:
    if -(-h // stride) != oh:
        raise ValueError(f"output size {oh} is not ceil({h}/{stride})")
    if absolute_mid:
        mid = int(mid_or_ratio)
        if mid == cin:
            block = BlockSpec("dsconv", cout, kernel, stride, 1.0, 0.25 if se else 0.0, activation, residual=idskip)
        else:
            e = mid / cin
            if make_divisible(cin * e, 8) != mid:
                raise ValueError(f"mid channels {mid} are not make_divisible({cin} x {e:g}, 8)")
            block = BlockSpec("mbconv", cout, kernel, stride, e, 0.25 if se else 0.0, activation, residual=idskip)
    else:
        e = float(mid_or_ratio)
        kind = "dsconv" if e == 1 else "mbconv"
        block = BlockSpec(kind, cout, kernel, stride, 1.0 if kind == "dsconv" else e, 0.25 if se else 0.0,
                          activation, residual=idskip)
    return op_key(block, (h, w, cin), se_style=se_style)


def _map_key(key: str, fmt: str) -> OpKey | tuple[str, tuple] | None:
    """hwnas key of one foreign key, or ``("part", ...)`` for OFA classifier parts, or None."""
    default_act = "relu6" if fmt == "proxylessnas" else "relu"
    se_style = "efficientnet" if fmt == "proxylessnas" else "mobilenetv3"
    m = re.fullmatch(rf"Conv-input:{_SHAPE}-output:{_SHAPE}", key)
    if m:
        h, w, c, oh, ow, oc = map(int, m.groups())
        stride = h // oh
        act = "relu6" if fmt == "proxylessnas" else "hswish"
        return op_key(BlockSpec("conv", oc, 3, stride, activation=act), (h, w, c), residual_allowed=False)
    m = re.fullmatch(rf"Conv_1-input:{_SHAPE}-output:{_SHAPE}", key)
    if m:
        h, w, c, oh, ow, oc = map(int, m.groups())
        act = "relu6" if fmt == "proxylessnas" else "hswish"
        return op_key(BlockSpec("conv", oc, 1, 1, activation=act), (h, w, c), residual_allowed=False)
    m = re.fullmatch(rf"Logits-input:{_SHAPE}-output:(\d+)", key)
    if m:
        h, w, c, classes = map(int, m.groups())
        if fmt == "proxylessnas":
            return classifier_key((h, w, c), classes)
        return ("part", ("logits", c, classes))
    m = re.fullmatch(r"Logits-input:1x1x(\d+)-output:(\d+)", key)
    m2 = re.fullmatch(rf"AvgPool2D-input:{_SHAPE}-output:1x1x(\d+)", key)
    if m2 and fmt == "ofa":
        h, w, c, _ = map(int, m2.groups())
        return ("part", ("pool", h, w, c))
    m3 = re.fullmatch(r"Conv_2-input:1x1x(\d+)-output:1x1x(\d+)", key)
    if m3 and fmt == "ofa":
        return ("part", ("prelogits", int(m3.group(1)), int(m3.group(2))))
    m = re.fullmatch(rf"expanded_conv-input:{_SHAPE}-output:{_SHAPE}-expand:(\d+(?:\.\d+)?)-kernel:(\d+)"
                     rf"-stride:(\d+)-idskip:([01])(?:-se:([01])-hs:([01]))?", key)
    if m:
        h, w, c, oh, ow, oc = map(int, m.groups()[:6])
        expand, kernel, stride, idskip = float(m.group(7)), int(m.group(8)), int(m.group(9)), m.group(10) == "1"
        se = m.group(11) == "1"
        hs = m.group(12) == "1"
        return _block_from_fields(h, w, c, oh, oc, expand, kernel, stride, idskip, absolute_mid=(fmt == "ofa"),
                                  se=se, activation=_act(hs, default_act), se_style=se_style)
    return None


def import_table(path: str | Path, fmt: str, *, device: str | None = None, space: str | None = None,
                 resolution: int | None = None, backend: str = "tflite") -> tuple[LatencyTable, ImportReport]:
    """Convert a foreign LUT file into a :class:`LatencyTable` (not saved).

    Args:
        path: the foreign YAML file.
        fmt: ``proxylessnas`` | ``ofa``.
        device: device name recorded (default ``pixel1`` for proxylessnas, ``note10`` for ofa).
        space: space name recorded (default ``mobilenetv2`` / ``ofa-mbv3-w1.2``).
        resolution: input resolution (default: from the stem key).

    Raises:
        UnknownNameError: unknown format. TableError: unreadable/corrupt file or nothing mapped.
    """
    if fmt not in FORMATS:
        raise UnknownNameError("table format", fmt, FORMATS)
    path = Path(path)
    try:
        raw = load_structured(path)
    except ConfigError as err:
        raise TableError(str(err)) from None
    if not isinstance(raw, dict) or not raw:
        raise TableError(f"{path}: expected a mapping of '{fmt}' keys to {{count, mean, ...}}")
    report = ImportReport()
    entries: dict[str, Entry] = {}
    parts: dict[str, dict] = {"pool": {}, "prelogits": {}, "logits": {}}
    res_seen = set()
    for key, value in raw.items():
        if not isinstance(value, dict) or "mean" not in value:
            report.unmapped[str(key)] = "value has no 'mean'"
            continue
        try:
            mapped = _map_key(str(key), fmt)
        except (ValueError, Exception) as err:  # SpecError and shape mismatches
            report.unmapped[str(key)] = f"cannot map: {err}"
            continue
        if mapped is None:
            report.unmapped[str(key)] = "unknown key pattern"
            continue
        if isinstance(mapped, tuple):
            kind, info = mapped[1][0], mapped[1][1:]
            parts[kind][info] = (str(key), value)
            continue
        if mapped.op.startswith("cn_k3_s2"):
            res_seen.add(mapped.height)
        entries[str(mapped)] = _entry(value, str(key))
        report.mapped[str(key)] = str(mapped)
    # OFA: compose pool + prelogits conv + FC into the hwnas classifier key
    for (h, w, c), (pool_key, pool_val) in parts["pool"].items():
        for (pin, pout), (pl_key, pl_val) in parts["prelogits"].items():
            if pin != c:
                continue
            for (lin, classes), (lg_key, lg_val) in parts["logits"].items():
                if lin != pout:
                    continue
                k = classifier_key((h, w, c), classes, pout, "hswish")
                total = float(pool_val["mean"]) + float(pl_val["mean"]) + float(lg_val["mean"])
                entries[str(k)] = Entry(median_ms=total, samples=min(int(pool_val.get("count", 0)),
                                                                     int(pl_val.get("count", 0)),
                                                                     int(lg_val.get("count", 0))),
                                        note=f"sum of imported means of {pool_key}, {pl_key}, {lg_key}")
                report.composed[str(k)] = [pool_key, pl_key, lg_key]
    used = {p for ps in report.composed.values() for p in ps}
    for kind in parts.values():
        for foreign, _ in kind.values():
            if foreign not in used:
                report.unmapped[foreign] = "classifier part without matching pool/prelogits/logits parts"
    if not entries:
        raise TableError(f"{path}: no key could be mapped from format '{fmt}' (first keys: "
                         f"{', '.join(list(map(str, raw))[:3])})")
    if resolution is None:
        if len(res_seen) != 1:
            raise TableError(f"{path}: cannot infer the resolution from the stem keys ({sorted(res_seen)}); "
                             f"pass --resolution")
        resolution = res_seen.pop()
    device = device or ("pixel1" if fmt == "proxylessnas" else "note10")
    space = space or ("mobilenetv2" if fmt == "proxylessnas" else "ofa-mbv3-w1.2")
    who = "ProxylessNAS (Cai et al. 2019)" if fmt == "proxylessnas" else "once-for-all (Cai et al. 2020)"
    meta = TableMeta(device=device, space=space, resolutions=[int(resolution)], backend=backend,
                     backend_version=None, threads=1 if fmt == "proxylessnas" else None, date=now_iso(),
                     hwnas_version=__version__,
                     provenance=f"measured: imported from {path.name} (format {fmt}; measured by the {who} authors, "
                                f"per-op means)",
                     source_file=path.name,
                     notes=f"{len(report.mapped)} keys mapped, {len(report.composed)} composed, "
                           f"{len(report.unmapped)} unmapped")
    return LatencyTable(meta, entries), report


# ---------------------------------------------------------------------- released net configs
_ACT = {"relu": "relu", "relu6": "relu6", "h_swish": "hswish", "swish": "swish", "h_sigmoid": None}


def _ofa_block(conv: dict, shortcut: Any) -> BlockSpec:
    act = _ACT.get(conv.get("act_func") or "relu6", "relu6") or "relu6"
    cin, cout = conv["in_channels"], conv["out_channels"]
    mid = conv.get("mid_channels")
    ratio = conv.get("expand_ratio", 1)
    se = 0.25 if conv.get("use_se") else 0.0
    if ratio == 1 and (mid is None or mid == cin):
        return BlockSpec("dsconv", cout, conv["kernel_size"], conv["stride"], 1.0, se, act, residual=shortcut is not None)
    e = (mid / cin) if mid else float(ratio)
    return BlockSpec("mbconv", cout, conv["kernel_size"], conv["stride"], e, se, act, residual=shortcut is not None)


def _group(blocks: list[BlockSpec]) -> tuple[tuple[BlockSpec, ...], ...]:
    """Split blocks into stages: a new stage where the channels change or the stride is 2."""
    stages: list[list[BlockSpec]] = []
    channels = None
    for b in blocks:
        if stages and (b.kind == "skip" or (b.stride == 1 and b.out_channels == channels)):
            stages[-1].append(b)
        else:
            stages.append([b])
            channels = b.out_channels
    return tuple(tuple(s) for s in stages)


def arch_from_ofa_config(config: dict | str | Path, resolution: int | None = None) -> ArchSpec:
    """ArchSpec of a once-for-all ``net.config`` (``MobileNetV3`` or ``ProxylessNASNets``).

    ``resolution`` defaults to ``image_size`` of the ``run.config`` beside a ``net.config`` path.
    """
    if not isinstance(config, dict):
        p = Path(config)
        if resolution is None and (p.parent / "run.config").is_file():
            resolution = int(json.loads((p.parent / "run.config").read_text())["image_size"])
        config = json.loads(p.read_text())
        name = p.parent.name
    else:
        name = config.get("name", "")
    first = config["first_conv"]
    stem = BlockSpec("conv", first["out_channels"], first["kernel_size"], first["stride"],
                     activation=_ACT[first.get("act_func") or "relu6"])
    blocks = []
    for b in config["blocks"]:
        conv = b["mobile_inverted_conv"]
        if conv["name"] == "ZeroLayer":
            blocks.append(BlockSpec("skip"))
            continue
        blocks.append(_ofa_block(conv, b.get("shortcut")))
    v3 = config["name"] == "MobileNetV3"
    if v3:
        fe, fm = config["final_expand_layer"], config["feature_mix_layer"]
        head = HeadSpec(conv=BlockSpec("conv", fe["out_channels"], 1, 1, activation=_ACT[fe["act_func"]]),
                        prelogits_channels=fm["out_channels"], prelogits_activation=_ACT[fm["act_func"]])
    else:
        fm = config["feature_mix_layer"]
        head = HeadSpec(conv=BlockSpec("conv", fm["out_channels"], 1, 1, activation=_ACT[fm["act_func"]]))
    return ArchSpec(stem=stem, stages=_group(blocks), head=head,
                    classifier=ClassifierSpec(config["classifier"]["out_features"], 0.0),
                    resolution=int(resolution or 224), se_style="mobilenetv3" if v3 else "efficientnet", name=name)


arch_from_proxyless_config = arch_from_ofa_config

__all__ = ["FORMATS", "ImportReport", "import_table", "arch_from_ofa_config", "arch_from_proxyless_config"]
