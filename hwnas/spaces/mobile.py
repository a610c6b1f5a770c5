"""Layer-wise spaces around the MobileNetV3 and EfficientNetV2 skeletons, depth chosen by ``skip``.

* ``mobilenetv3`` — the once-for-all / NNI MobileNetV3 space (Cai et al. 2020, OFA §3.1 and its
  ``OFAMobileNetV3``; NNI's ``MobileNetV3Space``): stem ``cn_k3_s2_c16_hs``, a fixed
  ``ds_k3_s1_c16_re`` block, five stages of widths 24/40/80/112/160 with first strides 2/2/2/1/2,
  activations ReLU/ReLU/h-swish/h-swish/h-swish and squeeze-excite in the 40, 112 and 160 stages
  (where MobileNetV3-Large puts them, Howard et al. 2019, Table 1; MobileNetV3 SE: ReLU squeeze,
  hard-sigmoid gate, ``make_divisible(mid / 4, 8)`` squeeze channels). Per layer an MBConv with
  kernel 3/5/7 × expansion 3/4/6 (9 candidates); per stage depth 2–4. Head: 1×1 conv to 960
  (h-swish), global pooling, 1×1 conv to 1280 (h-swish), classifier.
* ``efficientnetv2`` — the EfficientNetV2-B0 skeleton (Tan & Le 2021, Table 4 and timm's
  ``tf_efficientnetv2_b0``): stem ``cn_k3_s2_c32_sw``, a fixed ``cn_k3_s1_c16_sw`` block, then
  fused-MBConv stages of widths 32/48 and MBConv-with-SE-0.25 stages of widths 96/112/192 (first
  strides 2/2/2/1/2), swish, head 1280. Per layer kernel 3/5 × expansion 4/6; per stage depth
  B0's depth −1/0/+1 (1–3, 1–3, 2–4, 4–6, 7–9). EfficientNetV2-B0 is a member.

Depth as a choice. Each stage has as many searchable layers as its deepest option; the layers past
the shallowest depth also offer ``skip`` (identity), as ProxylessNAS does for its zero op (Cai et al.
2019, §3). This keeps the spaces layer-wise, so the weight-sharing supernets
(``--method fbnet|proxyless|singlepath``) run on them unchanged. Deviation from OFA: OFA keeps the
first ``d`` layers of a stage; here any optional layer can be skipped, so a stage of depth 3 has two
members (skip in layer 3 or in layer 4) that compute the same function with different layer
positions (decode keeps the ``skip`` block, so encode stays exact). OFA's elastic width and its
bias-free last 1×1 conv are not reproduced (hwnas's MobileNetV3 head conv after pooling has a bias,
as in Howard et al. 2019 and timm).

Small-input variants (``-cifar``): stem and first stride-2 stage at stride 1 (see layerwise.py).
"""

from __future__ import annotations

from dataclasses import replace

from hwnas.arch import ArchSpec, BlockSpec, HeadSpec
from hwnas.spaces.base import Choices
from hwnas.spaces.layerwise import LayerSlot, LayerwiseSpace


class SkipDepthSpace(LayerwiseSpace):
    """A layer-wise space whose stages have a depth range: layers past ``min_depths`` may be ``skip``.

    Subclasses set ``widths``, ``depths`` (max layers per stage), ``min_depths``, ``first_strides``,
    ``stem``, ``fixed_first``, ``head_channels``, ``activation`` (stem/head), and implement
    :meth:`stage_block` (block string of candidate ``op`` in stage ``stage``).
    """

    min_depths: tuple[int, ...]
    se_style: str = "efficientnet"
    prelogits_channels: int | None = None
    # HeadSpec.width_rule: both nets scale their head conv with the width (timm: MobileNetV3's 960 conv,
    # EfficientNetV2's round_chs_fn(1280))
    head_rule: str = "scale"

    def stage_ops(self, stage: int) -> tuple[str, ...]:
        """Candidate op names of a layer of ``stage`` (``skip`` excluded), in decision order."""
        return self.candidate_ops()

    def stage_block(self, stage: int, op: str, channels: int, stride: int) -> str:
        raise NotImplementedError

    def _build_slots(self) -> tuple[LayerSlot, ...]:
        strides, _ = self._strides()
        slots = []
        for si, (width, depth, stride) in enumerate(zip(self.widths, self.depths, strides)):
            for li in range(depth):
                s = stride if li == 0 else 1
                cands = tuple(self.stage_block(si, op, width, s) for op in self.stage_ops(si))
                if li >= self.min_depths[si]:
                    cands += ("skip",)
                slots.append(LayerSlot(f"stage{si}.layer{li}", width, s, cands))
        return tuple(slots)

    def _decode(self, choices: Choices) -> ArchSpec:
        arch = super()._decode(choices)
        head = HeadSpec(conv=arch.head.conv, prelogits_channels=self.prelogits_channels, width_rule=self.head_rule)
        return replace(arch, head=head, se_style=self.se_style)

    def _normalise(self, arch: ArchSpec) -> ArchSpec:
        # ``encode`` compares members without their skip blocks, so a net written without them
        # (EfficientNetV2-B0 from the zoo) is found at the member that skips its trailing layers
        arch = super()._normalise(arch)
        return replace(arch, stages=tuple(tuple(b for b in stage if b.kind != "skip") for stage in arch.stages))

    def _encode_candidates(self, arch: ArchSpec):
        stages = list(arch.stages)
        n_fixed = 1 if self.fixed_first else 0
        if len(stages) == n_fixed + len(self.depths):
            for si, depth in enumerate(self.depths):
                stage = stages[n_fixed + si]
                stages[n_fixed + si] = tuple(stage) + (BlockSpec("skip"),) * max(0, depth - len(stage))
        yield from super()._encode_candidates(replace(arch, stages=tuple(stages)))

    def depth_of(self, choices: Choices) -> tuple[int, ...]:
        """Layers per stage that are not ``skip`` (the member's depth per stage)."""
        arch = self.decode(choices)
        return tuple(sum(b.kind != "skip" for b in stage) for stage in arch.stages[1 if self.fixed_first else 0:])


class MobileNetV3Space(SkipDepthSpace):
    """The OFA/NNI MobileNetV3 space: 20 layers × {k3,5,7 × e3,4,6} (+ skip past depth 2)."""

    name = "mobilenetv3"
    stem = "cn_k3_s2_c16_hs"
    fixed_first = ("ds_k3_s1_c16_re",)
    widths = (24, 40, 80, 112, 160)
    depths = (4, 4, 4, 4, 4)
    min_depths = (2, 2, 2, 2, 2)
    first_strides = (2, 2, 2, 1, 2)
    stage_activation = ("re", "re", "hs", "hs", "hs")
    stage_se = (False, True, False, True, True)
    head_channels = 960
    activation = "hs"
    dropout = 0.2
    se_style = "mobilenetv3"
    prelogits_channels = 1280

    def candidate_ops(self) -> tuple[str, ...]:
        return tuple(f"k{k}_e{e}" for k in (3, 5, 7) for e in (3, 4, 6))

    def stage_block(self, stage: int, op: str, channels: int, stride: int) -> str:
        k, e = op.split("_")
        se = "_se0.25" if self.stage_se[stage] else ""
        return f"ir_{k}_{e}_s{stride}_c{channels}{se}_{self.stage_activation[stage]}"


class EfficientNetV2Space(SkipDepthSpace):
    """EfficientNetV2-B0 skeleton: fused-MBConv then MBConv+SE stages, k3/5 × e4/6, depth B0 ±1."""

    name = "efficientnetv2"
    stem = "cn_k3_s2_c32_sw"
    fixed_first = ("cn_k3_s1_c16_sw",)
    widths = (32, 48, 96, 112, 192)
    depths = (3, 3, 4, 6, 9)
    min_depths = (1, 1, 2, 4, 7)
    first_strides = (2, 2, 2, 1, 2)
    fused_stages = (True, True, False, False, False)
    head_channels = 1280
    activation = "sw"
    dropout = 0.2

    def candidate_ops(self) -> tuple[str, ...]:
        return tuple(f"k{k}_e{e}" for k in (3, 5) for e in (4, 6))

    def stage_block(self, stage: int, op: str, channels: int, stride: int) -> str:
        k, e = op.split("_")
        if self.fused_stages[stage]:
            return f"er_{k}_{e}_s{stride}_c{channels}_sw"
        return f"ir_{k}_{e}_s{stride}_c{channels}_se0.25_sw"


class RelaxedStagewiseSpace(SkipDepthSpace):
    """A stage-wise space (``mnasnet``, ``efficientnet``, ``efficientnet-lite``) relaxed to one
    decision per layer, for the weight-sharing supernets.

    Same skeleton (stem, widths, first strides, head, activation); each stage gets its deepest
    depth option as layers, every layer offers every block the stage's decisions can make (for
    MnasNet: block kind × kernel × skip on/off; for EfficientNet: kernel × expansion), and the layers
    past the stage's shallowest depth also offer ``skip`` (depth as a choice, as ProxylessNAS's zero
    op). Deviation from MnasNet/EfficientNet: their stage-wise search shares one block across a
    stage's layers; FBNet/ProxylessNAS-style search picks per layer, so a result need not be a
    member of the factorized space (it is a plain ArchSpec on the same skeleton and op keys, so the
    same latency tables price it). It keeps the stage-wise space's name.
    """

    def __init__(self, base):
        from itertools import product

        self.base = base
        n = len(base.widths)
        self.widths = tuple(base.widths)
        self.depths = tuple(max(base.depth_options(s)) for s in range(n))
        self.min_depths = tuple(min(base.depth_options(s)) for s in range(n))
        self.first_strides = tuple(base.first_strides)
        self.activation = base.activation
        self.stem = f"cn_k3_s2_c{base.stem_channels}_{base.activation}"
        self.head_channels = base.head_channels
        self.dropout = base.dropout
        self.head_rule = getattr(base, "head_rule", "grow")
        self._stage_opts = [[dict(zip([name for name, _ in base.block_decisions(s)], combo))
                             for combo in product(*[labels for _, labels in base.block_decisions(s)])]
                            for s in range(n)]
        super().__init__(resolution=base.resolution, num_classes=base.num_classes, in_channels=base.in_channels,
                         width_multiplier=base.width_multiplier, small_input=base.small_input)
        self.name = base.name

    def stage_ops(self, stage: int) -> tuple[str, ...]:
        return tuple(",".join(f"{k}={v}" for k, v in opts.items()) for opts in self._stage_opts[stage])

    def stage_block(self, stage: int, op: str, channels: int, stride: int) -> str:
        opts = dict(item.split("=", 1) for item in op.split(","))
        return self.base.make_block(stage, opts, stride).to_compact()

    def at(self, **kwargs) -> "RelaxedStagewiseSpace":
        return RelaxedStagewiseSpace(self.base.at(**kwargs)).restricted(self.activation_map)


__all__ = ["SkipDepthSpace", "MobileNetV3Space", "EfficientNetV2Space", "RelaxedStagewiseSpace"]
