"""Reference architectures (224×224 unless noted), each with its published parameter count and MACs.

Sources of the definitions and figures:

* MobileNetV2 1.0 — Sandler et al. 2018, Table 2; 3.4 M params / 300 M MACs (paper), timm
  ``mobilenetv2_100``: 3.50 M.
* MnasNet-A1 — Tan et al. 2019, Fig. 7 / Table 1: 3.9 M params, 312 M MACs (timm ``semnasnet_100``
  3.89 M).
* ProxylessNAS-mobile — Cai et al. 2019, released ``proxyless_mobile`` net (stage widths
  32/40/80/96/192/320); 4.1 M params, 320 M MACs (ProxylessNAS README / OFA model table).
* FBNet-A/B/C — Wu et al. 2019, Table 2 / Fig. 4 (definitions as in facebookresearch/mobile-vision
  ``fbnet_a/b/c``): A 4.3 M / 249 M, B 4.5 M / 295 M, C 5.5 M / 375 M.
* EfficientNet-B0 — Tan & Le 2019, Table 1: 5.3 M params, 390 M MACs (timm 5.29 M, 0.39 G).
* MobileNetV3-Large/Small 1.0 — Howard et al. 2019, Tables 1–2: 5.4 M / 219 M and 2.5 M / 56 M
  (timm ``mobilenetv3_large_100`` 5.48 M / 217 M, ``mobilenetv3_small_100`` 2.54 M / 57 M).
* EfficientNetV2-B0 / -S — Tan & Le 2021, Table 4 (S); definitions as timm's
  ``tf_efficientnetv2_b0`` / ``tf_efficientnetv2_s`` (TF-SAME padding, BN eps aside): 7.14 M params /
  0.73 G MACs at 224 and 21.46 M / 5.35 G MACs at 300 (timm's results/benchmark-infer-amp-nchw-pt240
  table). EfficientNetV2-S is pinned at 300, timm's training resolution; every other net at 224.

``ZOO[name].arch`` is the :class:`ArchSpec`; ``.params`` and ``.macs`` the published figures used by
the tests, ``.source`` where they come from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hwnas.arch import ArchSpec, BlockSpec, ClassifierSpec, HeadSpec
from hwnas.errors import SpecError, UnknownNameError


@dataclass(frozen=True)
class ZooEntry:
    """A reference net: its ArchSpec and published figures (params count, MACs at ``arch.resolution``)."""

    name: str
    arch: ArchSpec
    params: float
    macs: float
    source: str
    space: str | None = None  # the search space it lies in, if any


def _arch(name: str, stem: str, stages: list[list[str]], head: str | None, *, dropout: float = 0.2,
          prelogits: int | None = None, se_style: str = "efficientnet", head_rule: str = "grow") -> ArchSpec:
    return ArchSpec(
        stem=BlockSpec.from_compact(stem),
        stages=tuple(tuple(BlockSpec.from_compact(b) for b in s) for s in stages),
        head=HeadSpec(conv=BlockSpec.from_compact(head) if head else None, prelogits_channels=prelogits,
                      width_rule=head_rule),
        classifier=ClassifierSpec(num_classes=1000, dropout=dropout),
        resolution=224, se_style=se_style, name=name)


def _repeat(block: str, n: int, act: str) -> list[str]:
    """``n`` blocks from a timm-style string: the first keeps its stride, the rest stride 1."""
    first = f"{block}_{act}"
    rest = f"{block}_{act}".replace("_s2_", "_s1_")
    return [first] + [rest] * (n - 1)


def mobilenetv2() -> ArchSpec:
    stages = [["ds_k3_s1_c16_r6"]]
    for c, n, s in ((24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)):
        stages.append(_repeat(f"ir_k3_e6_s{s}_c{c}", n, "r6"))
    return _arch("mobilenetv2", "cn_k3_s2_c32_r6", stages, "cn_k1_s1_c1280_r6")


def mnasnet_a1() -> ArchSpec:
    stages = [["ds_k3_s1_c16_re_noskip"],
              _repeat("ir_k3_e6_s2_c24", 2, "re"),
              _repeat("ir_k5_e3_s2_c40_se0.25", 3, "re"),
              _repeat("ir_k3_e6_s2_c80", 4, "re"),
              _repeat("ir_k3_e6_s1_c112_se0.25", 2, "re"),
              _repeat("ir_k5_e6_s2_c160_se0.25", 3, "re"),
              _repeat("ir_k3_e6_s1_c320", 1, "re")]
    return _arch("mnasnet-a1", "cn_k3_s2_c32_re", stages, "cn_k1_s1_c1280_re", head_rule="fixed")


def efficientnet_b0() -> ArchSpec:
    stages = [["ds_k3_s1_c16_se0.25_sw"]]
    for k, c, n, s in ((3, 24, 2, 2), (5, 40, 2, 2), (3, 80, 3, 2), (5, 112, 3, 1), (5, 192, 4, 2), (3, 320, 1, 1)):
        stages.append(_repeat(f"ir_k{k}_e6_s{s}_c{c}_se0.25", n, "sw"))
    return _arch("efficientnet-b0", "cn_k3_s2_c32_sw", stages, "cn_k1_s1_c1280_sw", head_rule="scale")


def efficientnetv2(variant: str) -> ArchSpec:
    """EfficientNetV2-B0 or -S (timm ``tf_efficientnetv2_b0`` / ``tf_efficientnetv2_s``): a conv stage
    with identity shortcuts, two fused-MBConv stages, three MBConv stages with SE 0.25; swish."""
    if variant == "b0":
        stem, res = "cn_k3_s2_c32", 224
        plan = (("cn_k3_s1_c16", 1), ("er_k3_e4_s2_c32", 2), ("er_k3_e4_s2_c48", 2), ("ir_k3_e4_s2_c96_se0.25", 3),
                ("ir_k3_e6_s1_c112_se0.25", 5), ("ir_k3_e6_s2_c192_se0.25", 8))
    else:
        stem, res = "cn_k3_s2_c24", 300
        plan = (("cn_k3_s1_c24", 2), ("er_k3_e4_s2_c48", 4), ("er_k3_e4_s2_c64", 4), ("ir_k3_e4_s2_c128_se0.25", 6),
                ("ir_k3_e6_s1_c160_se0.25", 9), ("ir_k3_e6_s2_c256_se0.25", 15))
    stages = [_repeat(block, n, "sw") for block, n in plan]
    arch = _arch(f"efficientnetv2-{variant}", f"{stem}_sw", stages, "cn_k1_s1_c1280_sw", head_rule="scale")
    return arch.with_resolution(res)


def mobilenetv3_large() -> ArchSpec:
    stages = [["ds_k3_s1_c16_re"],
              ["ir_k3_e4_s2_c24_re", "ir_k3_e3_s1_c24_re"],
              _repeat("ir_k5_e3_s2_c40_se0.25", 3, "re"),
              ["ir_k3_e6_s2_c80_hs", "ir_k3_e2.5_s1_c80_hs", "ir_k3_e2.3_s1_c80_hs", "ir_k3_e2.3_s1_c80_hs"],
              _repeat("ir_k3_e6_s1_c112_se0.25", 2, "hs"),
              _repeat("ir_k5_e6_s2_c160_se0.25", 3, "hs")]
    return _arch("mobilenetv3-large", "cn_k3_s2_c16_hs", stages, "cn_k1_s1_c960_hs", prelogits=1280,
                 se_style="mobilenetv3", head_rule="scale")


def mobilenetv3_small() -> ArchSpec:
    stages = [["ds_k3_s2_c16_se0.25_re"],
              ["ir_k3_e4.5_s2_c24_re", "ir_k3_e3.67_s1_c24_re"],
              ["ir_k5_e4_s2_c40_se0.25_hs", "ir_k5_e6_s1_c40_se0.25_hs", "ir_k5_e6_s1_c40_se0.25_hs"],
              _repeat("ir_k5_e3_s1_c48_se0.25", 2, "hs"),
              _repeat("ir_k5_e6_s2_c96_se0.25", 3, "hs")]
    return _arch("mobilenetv3-small", "cn_k3_s2_c16_hs", stages, "cn_k1_s1_c576_hs", prelogits=1024,
                 se_style="mobilenetv3", head_rule="scale")


def proxylessnas_mobile() -> ArchSpec:
    # (kernel, expansion, stride, channels); None = zero layer (skip). From proxyless_mobile.config.
    layers = [
        [(5, 3, 2, 32), (3, 3, 1, 32), None, None],
        [(7, 3, 2, 40), (3, 3, 1, 40), (5, 3, 1, 40), (5, 3, 1, 40)],
        [(7, 6, 2, 80), (5, 3, 1, 80), (5, 3, 1, 80), (5, 3, 1, 80)],
        [(5, 6, 1, 96), (5, 3, 1, 96), (5, 3, 1, 96), (5, 3, 1, 96)],
        [(7, 6, 2, 192), (7, 6, 1, 192), (7, 3, 1, 192), (7, 3, 1, 192)],
        [(7, 6, 1, 320)],
    ]
    stages = [["ds_k3_s1_c16_r6"]]
    for stage in layers:
        stages.append([f"ir_k{k}_e{e}_s{s}_c{c}_r6" if spec else "skip" for spec in stage
                       for (k, e, s, c) in [spec or (0, 0, 0, 0)]])
    return _arch("proxylessnas-mobile", "cn_k3_s2_c32_r6", stages, "cn_k1_s1_c1280_r6", dropout=0.0)


_FBNET_WIDTHS = (16, 24, 32, 64, 112, 184, 352)


def _fbnet(name: str, ops: list[str], head: int) -> ArchSpec:
    """FBNet macro-architecture (Wu et al. 2019, Table 1) from 22 per-layer op names."""
    counts = (1, 4, 4, 4, 4, 4, 1)
    first_strides = (1, 2, 2, 2, 1, 2, 1)
    stages, i = [], 0
    for width, n, s in zip(_FBNET_WIDTHS, counts, first_strides):
        stage = []
        for j in range(n):
            stage.append(fbnet_block(ops[i], width, s if j == 0 else 1))
            i += 1
        stages.append(stage)
    return _arch(name, "cn_k3_s2_c16_re", stages, f"cn_k1_s1_c{head}_re")


def fbnet_block(op: str, channels: int, stride: int) -> str:
    """Compact block for an FBNet op name (``k3_e1``, ``k5_e1_g2``, ``k3_e6``, ``skip``…)."""
    if op == "skip":
        return "skip"
    parts = op.split("_")
    kernel, expansion = parts[0][1:], parts[1][1:]
    groups = "_g2" if len(parts) > 2 and parts[2] == "g2" else ""
    return f"ir_k{kernel}_e{expansion}_s{stride}_c{channels}{groups}_re"


FBNET_A_OPS = ["skip",
               "k3_e3", "k3_e1", "skip", "skip",
               "k5_e6", "k3_e3", "k5_e1", "k3_e3",
               "k5_e6", "k5_e3", "k5_e1_g2", "k5_e6",
               "k3_e6", "k5_e1_g2", "k5_e3", "k3_e1_g2",
               "k5_e6", "k5_e6", "k5_e3", "k5_e6",
               "k5_e6"]
FBNET_B_OPS = ["k3_e1",
               "k3_e6", "k5_e1", "k3_e1", "k3_e1",
               "k5_e6", "k5_e3", "k3_e6", "k5_e6",
               "k5_e6", "k5_e6", "skip", "k5_e3",
               "k5_e6", "k3_e1", "k5_e1", "k5_e3",
               "k5_e6", "k5_e1", "k5_e6", "k5_e6",
               "k3_e6"]
FBNET_C_OPS = ["k3_e1",
               "k3_e6", "skip", "k3_e1", "k3_e1",
               "k5_e6", "k5_e3", "k5_e6", "k3_e6",
               "k5_e6", "k5_e3", "k5_e6", "k5_e6",
               "k5_e6", "k5_e6", "k5_e6", "k5_e3",
               "k5_e6", "k5_e6", "k5_e6", "k5_e6",
               "k3_e6"]


def _entries() -> dict[str, ZooEntry]:
    entries = [
        ZooEntry("mobilenetv2", mobilenetv2(), 3.50e6, 300e6, "Sandler et al. 2018 Table 2; timm mobilenetv2_100"),
        ZooEntry("mnasnet-a1", mnasnet_a1(), 3.89e6, 312e6, "Tan et al. 2019 Table 1; timm semnasnet_100", "mnasnet"),
        ZooEntry("proxylessnas-mobile", proxylessnas_mobile(), 4.1e6, 320e6,
                 "Cai et al. 2019; released proxyless_mobile net"),
        ZooEntry("fbnet-a", _fbnet("fbnet-a", FBNET_A_OPS, 1504), 4.3e6, 249e6, "Wu et al. 2019 Table 2"),
        # The paper's 4.5 M / 295 M for FBNet-B is not reproduced by the public definition
        # (mobile-vision fbnet_b gives 4.86 M / 306 M; see tests/test_zoo.py for the recorded gap).
        ZooEntry("fbnet-b", _fbnet("fbnet-b", FBNET_B_OPS, 1984), 4.5e6, 295e6, "Wu et al. 2019 Table 2", "fbnet"),
        ZooEntry("fbnet-c", _fbnet("fbnet-c", FBNET_C_OPS, 1984), 5.57e6, 375e6,
                 "Wu et al. 2019 Table 2 (375 M MACs); timm fbnetc_100 (5.57 M params)", "fbnet"),
        ZooEntry("efficientnet-b0", efficientnet_b0(), 5.29e6, 390e6, "Tan & Le 2019 Table 1; timm efficientnet_b0",
                 "efficientnet"),
        ZooEntry("mobilenetv3-large", mobilenetv3_large(), 5.48e6, 217e6,
                 "Howard et al. 2019 Table 3; timm mobilenetv3_large_100"),
        ZooEntry("mobilenetv3-small", mobilenetv3_small(), 2.54e6, 57e6,
                 "Howard et al. 2019 Table 4; timm mobilenetv3_small_100"),
        ZooEntry("efficientnetv2-b0", efficientnetv2("b0"), 7.14e6, 0.73e9,
                 "Tan & Le 2021; timm tf_efficientnetv2_b0 at 224", "efficientnetv2"),
        ZooEntry("efficientnetv2-s", efficientnetv2("s"), 21.46e6, 5.35e9,
                 "Tan & Le 2021 Table 4; timm tf_efficientnetv2_s at 300 (MACs at 300 px)"),
    ]
    return {e.name: e for e in entries}


ZOO: dict[str, ZooEntry] = _entries()


def get_zoo(name: str) -> ZooEntry:
    """The zoo entry called ``name`` (case-insensitive; ``_`` and ``-`` are the same).

    Raises:
        UnknownNameError: listing the zoo's names.
    """
    key = name.lower().replace("_", "-")
    if key not in ZOO:
        raise UnknownNameError("zoo net", name, ZOO)
    return ZOO[key]


def zoo_arch(name: str) -> ArchSpec:
    return get_zoo(name).arch


def load_arch(ref: str, *, width: float | None = None, resolution: int | None = None) -> ArchSpec:
    """Resolve a user's ARCH argument: a YAML file path, a compact string, or a zoo name.

    Args:
        ref: path to a ``.yaml``/``.yml`` file, a compact architecture string (contains ``stem=``),
            or a zoo name such as ``mobilenetv2``.
        width: override the width multiplier (MobileNet's depth multiplier).
        resolution: override the input resolution.

    Raises:
        SpecError: a malformed file or string. UnknownNameError: an unknown zoo name.
    """
    from pathlib import Path

    ref = ref.strip()
    if re.fullmatch(r"(ir|er|ds|cn|skip)(_\S*)?", ref):
        raise SpecError(f"'{ref}' is a single block, not a whole architecture; give a compact architecture "
                        "such as 'res224 stem=cn_k3_s2_c32_r6 " + ref + " head=cn_k1_s1_c1280_r6', a YAML file "
                        "or a zoo name")
    if "stem=" in ref:
        arch = ArchSpec.from_compact(ref)
    elif ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        arch = ArchSpec.load(ref)
    else:
        arch = zoo_arch(ref)
    if width is not None:
        arch = arch.with_width(width)
    if resolution is not None:
        arch = arch.with_resolution(resolution)
    return arch
