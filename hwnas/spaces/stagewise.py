"""Stage-wise spaces: decisions per stage, shared by the stage's layers, plus the stage depth.

* ``mnasnet`` — MnasNet's factorized hierarchical space (Tan et al. 2019, §4.1, Fig. 4) in a
  practical form. Skeleton: stem 32, stage widths 16/24/40/80/112/160/320, MobileNetV2's layer
  counts 1/2/3/4/3/3/1 and first strides 1/2/2/2/1/2/1, head 1280, ReLU. Per stage: the block
  (``conv``, ``ds``, ``ds_se``, ``ir_e3``, ``ir_e3_se``, ``ir_e6``, ``ir_e6_se``; SE ratio 0.25),
  kernel 3/5, identity skip on/off, and the layer count (−1/0/+1, at least 1).
  MnasNet-A1 is a member.
* ``efficientnet`` — the EfficientNet-B0 skeleton (Tan & Le 2019, Table 1): stem 32, widths
  16/24/40/80/112/192/320, depths 1/2/2/3/3/4/1, MBConv with SE 0.25 and swish, head 1280. Per
  stage: kernel 3/5, expansion 3/4/6 (stage 0 is a fixed depthwise-separable block), depth
  −1/0/+1. EfficientNet-B0 is a member. ``efficientnet-lite`` is the same space as
  EfficientNet-Lite builds it for int8/Edge TPU: ReLU6 and no SE.

Small-input variants (``-cifar``): stem and first stride-2 stage at stride 1 (see layerwise.py).
"""

from __future__ import annotations

import itertools
from typing import Iterable

from hwnas.arch import ArchSpec, BlockSpec, ClassifierSpec, HeadSpec
from hwnas.spaces.base import Choices, Decision, SearchSpace


class StagewiseSpace(SearchSpace):
    """Common machinery: per-stage block decisions + a depth decision per stage."""

    base_name: str
    stem_channels: int = 32
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    first_strides: tuple[int, ...]
    head_channels: int = 1280
    head_rule: str = "grow"  # HeadSpec.width_rule: how the head conv follows the width multiplier
    dropout: float = 0.2

    def __init__(self, resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3,
                 width_multiplier: float = 1.0, small_input: bool = False):
        super().__init__(resolution, num_classes, in_channels, width_multiplier)
        self.small_input = bool(small_input)
        self.name = self.base_name + ("-cifar" if self.small_input else "")

    def _extra_kwargs(self) -> dict:
        return {"small_input": self.small_input}

    # per stage: list of (decision name suffix, option labels) that shape the block
    def block_decisions(self, stage: int) -> list[tuple[str, tuple[str, ...]]]:
        raise NotImplementedError

    def make_block(self, stage: int, options: dict[str, str], stride: int) -> BlockSpec:
        raise NotImplementedError

    @property
    def activation(self) -> str:
        raise NotImplementedError

    def depth_options(self, stage: int) -> tuple[int, ...]:
        n = self.depths[stage]
        return tuple(d for d in (n - 1, n, n + 1) if d >= 1)

    def strides(self) -> tuple[int, ...]:
        strides = list(self.first_strides)
        if self.small_input:
            strides[strides.index(2)] = 1
        return tuple(strides)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        out = []
        for s in range(len(self.widths)):
            out += [Decision(f"stage{s}.{name}", opts) for name, opts in self.block_decisions(s)]
            out.append(Decision(f"stage{s}.depth", tuple(str(d) for d in self.depth_options(s))))
        return tuple(out)

    def _split(self, choices: Choices) -> list[tuple[dict[str, str], int]]:
        out, i = [], 0
        for s in range(len(self.widths)):
            opts = {}
            for name, labels in self.block_decisions(s):
                opts[name] = labels[choices[i]]
                i += 1
            depth = self.depth_options(s)[choices[i]]
            i += 1
            out.append((opts, depth))
        return out

    def _decode(self, choices: Choices) -> ArchSpec:
        strides = self.strides()
        stages = []
        for s, (opts, depth) in enumerate(self._split(choices)):
            stages.append(tuple(self.make_block(s, opts, strides[s] if j == 0 else 1) for j in range(depth)))
        stem_stride = 1 if self.small_input else 2
        act = self.activation
        return ArchSpec(stem=BlockSpec.from_compact(f"cn_k3_s{stem_stride}_c{self.stem_channels}_{act}"),
                        stages=tuple(stages),
                        head=HeadSpec(conv=BlockSpec.from_compact(f"cn_k1_s1_c{self.head_channels}_{act}"),
                                      width_rule=self.head_rule),
                        classifier=ClassifierSpec(self.num_classes, self.dropout), name=self.name)

    def relaxed(self):
        """The layer-wise relaxation of this space for the weight-sharing supernets
        (``--method fbnet|proxyless|singlepath``): see :class:`hwnas.spaces.mobile.RelaxedStagewiseSpace`."""
        from hwnas.spaces.mobile import RelaxedStagewiseSpace

        return RelaxedStagewiseSpace(self).restricted(self.activation_map)

    def _covering_members(self) -> Iterable[Choices]:
        per_stage = [list(itertools.product(*[range(len(o)) for _, o in self.block_decisions(s)]))
                     for s in range(len(self.widths))]
        for idx in range(max(len(p) for p in per_stage)):
            choice: list[int] = []
            for s, combos in enumerate(per_stage):
                choice += list(combos[idx % len(combos)])
                choice.append(len(self.depth_options(s)) - 1)  # deepest: first and later layers both placed
            yield tuple(choice)

    def _encode_candidates(self, arch: ArchSpec) -> Iterable[Choices]:
        if len(arch.stages) != len(self.widths):
            return
        per_stage = []
        for s, stage in enumerate(arch.stages):
            depth_opts = self.depth_options(s)
            if len(stage) not in depth_opts:
                return
            block_opts = [range(len(o)) for _, o in self.block_decisions(s)]
            per_stage.append([combo + (depth_opts.index(len(stage)),) for combo in itertools.product(*block_opts)])
        # the stages are independent: pick each stage's combo by matching its blocks
        strides = self.strides()
        choice: list[int] = []
        for s, combos in enumerate(per_stage):
            for combo in combos:
                opts = {name: labels[c] for (name, labels), c in zip(self.block_decisions(s), combo)}
                blocks = tuple(self.make_block(s, opts, strides[s] if j == 0 else 1)
                               for j in range(len(arch.stages[s])))
                if blocks == arch.stages[s]:
                    choice += list(combo)
                    break
            else:
                return
        yield tuple(choice)


class MnasNetSpace(StagewiseSpace):
    """MnasNet's factorized hierarchical space (Tan et al. 2019, §4.1)."""

    base_name = "mnasnet"
    head_rule = "fixed"  # MnasNet keeps its 1280 head at every width (timm _gen_mnasnet_a1)
    widths = (16, 24, 40, 80, 112, 160, 320)
    depths = (1, 2, 3, 4, 3, 3, 1)
    first_strides = (1, 2, 2, 2, 1, 2, 1)
    BLOCKS = ("conv", "ds", "ds_se", "ir_e3", "ir_e3_se", "ir_e6", "ir_e6_se")

    @property
    def activation(self) -> str:
        return "re"

    def block_decisions(self, stage: int) -> list[tuple[str, tuple[str, ...]]]:
        return [("block", self.BLOCKS), ("kernel", ("3", "5")), ("skip", ("on", "off"))]

    def make_block(self, stage: int, options: dict[str, str], stride: int) -> BlockSpec:
        kind = options["block"]
        k = options["kernel"]
        c = self.widths[stage]
        se = "_se0.25" if kind.endswith("_se") else ""
        noskip = "_noskip" if options["skip"] == "off" else ""
        if kind == "conv":
            text = f"cn_k{k}_s{stride}_c{c}"
        elif kind.startswith("ds"):
            text = f"ds_k{k}_s{stride}_c{c}{se}"
        else:
            e = kind.split("_")[1][1:]
            text = f"ir_k{k}_e{e}_s{stride}_c{c}{se}"
        return BlockSpec.from_compact(f"{text}_re{noskip}")


class EfficientNetSpace(StagewiseSpace):
    """Per-stage kernel/expansion/depth around EfficientNet-B0 (Tan & Le 2019, Table 1)."""

    base_name = "efficientnet"
    head_rule = "scale"  # EfficientNet scales its head with the width (timm round_chs_fn(1280))
    widths = (16, 24, 40, 80, 112, 192, 320)
    depths = (1, 2, 2, 3, 3, 4, 1)
    first_strides = (1, 2, 2, 2, 1, 2, 1)
    lite = False

    @property
    def activation(self) -> str:
        return "r6" if self.lite else "sw"

    def block_decisions(self, stage: int) -> list[tuple[str, tuple[str, ...]]]:
        if stage == 0:
            return [("kernel", ("3", "5"))]
        return [("kernel", ("3", "5")), ("expansion", ("3", "4", "6"))]

    def make_block(self, stage: int, options: dict[str, str], stride: int) -> BlockSpec:
        se = "" if self.lite else "_se0.25"
        k, c = options["kernel"], self.widths[stage]
        if stage == 0:
            return BlockSpec.from_compact(f"ds_k{k}_s{stride}_c{c}{se}_{self.activation}")
        return BlockSpec.from_compact(f"ir_k{k}_e{options['expansion']}_s{stride}_c{c}{se}_{self.activation}")


class EfficientNetLiteSpace(EfficientNetSpace):
    """EfficientNet-Lite form of the space: ReLU6, no squeeze-excite (int8/Edge TPU friendly)."""

    base_name = "efficientnet-lite"
    head_rule = "fixed"  # EfficientNet-Lite keeps stem and head fixed (timm _gen_efficientnet_lite fix_stem_head)
    lite = True
