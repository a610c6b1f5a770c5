"""Layer-wise spaces: one decision per searchable layer, each a list of candidate blocks.

* ``mobilenetv2`` — the ProxylessNAS space (Cai et al. 2019, §4/Fig. 4): MobileNetV2 skeleton with
  stage widths 24/40/80/96/192/320 (4/4/4/4/4/1 searchable layers, first strides 2/2/2/1/2/1),
  a fixed first ``ds_k3_s1_c16`` block, per layer MBConv k∈{3,5,7} × e∈{3,6} plus ``skip``
  where the layer keeps its shape; ReLU6; head 1280.
* ``fbnet`` — FBNet (Wu et al. 2019, Table 1): 22 searchable layers, widths
  [16,24,32,64,112,184,352], layers [1,4,4,4,4,4,1], first strides [1,2,2,2,1,2,1], candidates
  ``k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip`` (index order as in
  HW-NAS-Bench); ``skip`` only where the layer keeps its shape; ReLU; head 1984.

Small-input variants (``-cifar``) for 32×32 data follow HW-NAS-Bench's CIFAR setting: the stem
and the first stride-2 stage use stride 1, so a 32×32 input leaves the last stage at 4×4.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Iterable

from hwnas.arch import ArchSpec, BlockSpec, ClassifierSpec, HeadSpec
from hwnas.spaces.base import Choices, Decision, SearchSpace


@dataclass(frozen=True)
class LayerSlot:
    """A searchable layer: base output channels, stride, and candidate block strings in order."""

    name: str
    channels: int
    stride: int
    candidates: tuple[str, ...]


class LayerwiseSpace(SearchSpace):
    """A space with one decision per layer. Subclasses define the skeleton."""

    stem: str
    fixed_first: tuple[str, ...] = ()  # fixed blocks forming the first stage, if any
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    first_strides: tuple[int, ...]
    head_channels: int
    activation: str
    dropout: float = 0.0

    def __init__(self, resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3,
                 width_multiplier: float = 1.0, small_input: bool = False):
        super().__init__(resolution, num_classes, in_channels, width_multiplier)
        self.small_input = bool(small_input)
        if self.small_input:
            self.name = f"{type(self).name}-cifar"
        self._slots = self._build_slots()

    def _extra_kwargs(self) -> dict:
        return {"small_input": self.small_input}

    def _restrict(self) -> None:
        # candidates of the supernet and of encode() carry the substituted activations too
        def sub(c: str) -> str:
            block = BlockSpec.from_compact(c)
            if block.kind == "skip" or block.activation not in self.activation_map:
                return c
            return replace(block, activation=self.activation_map[block.activation]).to_compact()

        self._slots = tuple(replace(slot, candidates=tuple(sub(c) for c in slot.candidates))
                            for slot in self._build_slots())

    def _op_block(self, op: str, channels: int, stride: int) -> str:
        raise NotImplementedError

    def candidate_ops(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _strides(self) -> tuple[tuple[int, ...], str]:
        strides = list(self.first_strides)
        stem = self.stem
        if self.small_input:
            stem = stem.replace("_s2_", "_s1_")
            first_s2 = strides.index(2)
            strides[first_s2] = 1
        return tuple(strides), stem

    def _build_slots(self) -> tuple[LayerSlot, ...]:
        strides, _ = self._strides()
        slots = []
        prev = BlockSpec.from_compact(self.fixed_first[-1]).out_channels if self.fixed_first else \
            BlockSpec.from_compact(self.stem).out_channels
        for si, (width, depth, stride) in enumerate(zip(self.widths, self.depths, strides)):
            for li in range(depth):
                s = stride if li == 0 else 1
                keeps_shape = s == 1 and prev == width
                cands = tuple(self._op_block(op, width, s) for op in self.candidate_ops()
                              if op != "skip" or keeps_shape)
                slots.append(LayerSlot(f"stage{si}.layer{li}", width, s, cands))
                prev = width
        return tuple(slots)

    @property
    def slots(self) -> tuple[LayerSlot, ...]:
        return self._slots

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(Decision(slot.name, slot.candidates) for slot in self._slots)

    def layer_candidates(self) -> list[list[BlockSpec]]:
        """Per searchable layer, the candidate blocks (base channels) in decision order."""
        return [[BlockSpec.from_compact(c) for c in slot.candidates] for slot in self._slots]

    def _decode(self, choices: Choices) -> ArchSpec:
        _, stem = self._strides()
        stages: list[list[BlockSpec]] = []
        if self.fixed_first:
            stages.append([BlockSpec.from_compact(b) for b in self.fixed_first])
        it = iter(zip(self._slots, choices))
        for depth in self.depths:
            stages.append([BlockSpec.from_compact(slot.candidates[c]) for slot, c in itertools.islice(it, depth)])
        return ArchSpec(stem=BlockSpec.from_compact(stem), stages=tuple(tuple(s) for s in stages),
                        head=HeadSpec(conv=BlockSpec.from_compact(f"cn_k1_s1_c{self.head_channels}_{self.activation}")),
                        classifier=ClassifierSpec(self.num_classes, self.dropout), name=self.name)

    def _covering_members(self) -> Iterable[Choices]:
        widest = max(len(slot.candidates) for slot in self._slots)
        for j in range(widest):
            yield tuple(j if j < len(slot.candidates) else 0 for slot in self._slots)

    def _encode_candidates(self, arch: ArchSpec) -> Iterable[Choices]:
        blocks = arch.blocks[len(self.fixed_first):]
        if len(blocks) != len(self._slots):
            return
        choice = []
        for slot, block in zip(self._slots, blocks):
            compact = block.to_compact()
            if compact not in slot.candidates:
                return
            choice.append(slot.candidates.index(compact))
        yield tuple(choice)


class MobileNetV2Space(LayerwiseSpace):
    """The ProxylessNAS MobileNetV2 space (Cai et al. 2019, §4): 21 layers × {k3,5,7 × e3,6, skip}."""

    name = "mobilenetv2"
    stem = "cn_k3_s2_c32_r6"
    fixed_first = ("ds_k3_s1_c16_r6",)
    widths = (24, 40, 80, 96, 192, 320)
    depths = (4, 4, 4, 4, 4, 1)
    first_strides = (2, 2, 2, 1, 2, 1)
    head_channels = 1280
    activation = "r6"
    dropout = 0.0

    def candidate_ops(self) -> tuple[str, ...]:
        return ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "skip")

    def _op_block(self, op: str, channels: int, stride: int) -> str:
        if op == "skip":
            return "skip"
        k, e = op.split("_")
        return f"ir_{k}_{e}_s{stride}_c{channels}_r6"


class FBNetSpace(LayerwiseSpace):
    """The FBNet space (Wu et al. 2019, Table 1/2): 22 layers × 9 candidates."""

    name = "fbnet"
    stem = "cn_k3_s2_c16_re"
    widths = (16, 24, 32, 64, 112, 184, 352)
    depths = (1, 4, 4, 4, 4, 4, 1)
    first_strides = (1, 2, 2, 2, 1, 2, 1)
    head_channels = 1984
    activation = "re"
    dropout = 0.2

    def candidate_ops(self) -> tuple[str, ...]:
        return ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")

    def _op_block(self, op: str, channels: int, stride: int) -> str:
        from hwnas.zoo import fbnet_block

        return fbnet_block(op, channels, stride)
