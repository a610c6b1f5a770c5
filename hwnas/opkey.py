"""The one canonical key of a latency-table entry.

A key names an op by everything that changes its cost: the block with its *actual* channels
(kind, kernel, expansion, stride, output channels, SE ratio, groups, activation, whether the
identity shortcut is *effectively* added) and the input shape ``H x W x C`` (NHWC). Its string
form is the block's compact string, ``@``, and the input shape, e.g.::

    ir_k5_e6_s2_c40_se0.25_hs@112x112x24
    cn_k3_s2_c32_r6@224x224x3                 (stem)
    cn_k1_s1_c1280_r6@7x7x320                 (head conv)
    classifier_c1000@7x7x1280                 (global pool + FC)
    classifier_c1000_pl1280_hs@7x7x960        (MobileNetV3: pool + 1x1 prelogits conv + FC)
    ir_k3_e4_s1_c40_se0.25_re_semv3@28x28x40  (MobileNetV3-style SE)
    cn_k3_s1_c32_r6_noskip@32x32x32           (a shape-keeping stem conv: no residual add)
    cn_k3_s1_c32_r6@32x32x32                  (a stage conv keeping the shape: adds the identity)

Residual rule: where a block keeps its shape (stride 1, output channels == input channels) the key
says whether the identity is added — no token when it is, ``noskip`` when it is not (a stage
block with ``residual: false``, or the stem/head conv, which never take a shortcut). Where the
shape changes no shortcut is possible and no token is written. The role of a layer (stem, stage,
head) changes the op only through that residual, so the key carries no separate role token;
:meth:`OpKey.layer` rebuilds exactly the op the network runs.

The profiler that fills tables and the predictor that reads them both call :func:`op_key` /
:func:`arch_op_keys`; nothing else builds keys. ``OpKey.parse(str(key)) == key``, and :meth:`OpKey.parse` refuses any string
that is not what :func:`op_key` writes (token order, ``e6.0``, an omitted default activation, a
``noskip`` where the shape changes, ``_semv3`` without SE...), naming the canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hwnas.arch import ACTIVATIONS, ArchSpec, BlockSpec, Layer, same_output_size
from hwnas.errors import SpecError

_ACT_TOKENS = {"relu": "re", "relu6": "r6", "hswish": "hs", "swish": "sw"}
_TOKEN_ACTS = {v: k for k, v in _ACT_TOKENS.items()}


@dataclass(frozen=True, order=True)
class OpKey:
    """A typed, hashable latency-table key.

    Attributes:
        op: the block's canonical compact string with actual output channels, or
            ``classifier_c<classes>[_pl<C>_<act>]`` for pooling + FC.
        height, width, in_channels: input shape (NHWC, no batch).
    """

    op: str
    height: int
    width: int
    in_channels: int

    def __str__(self) -> str:
        return f"{self.op}@{self.height}x{self.width}x{self.in_channels}"

    @property
    def kind(self) -> str:
        """``mbconv`` | ``fused_mbconv`` | ``dsconv`` | ``conv`` | ``skip`` | ``classifier``."""
        from hwnas.ops import kind_of_token

        prefix = self.op.split("_", 1)[0]
        kind = kind_of_token(prefix)
        return kind.name if kind is not None else prefix

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.in_channels)

    @property
    def se_style(self) -> str:
        return "mobilenetv3" if self.op.endswith("_semv3") else "efficientnet"

    def block(self) -> BlockSpec | None:
        """The block this key prices (actual channels), or None for the classifier."""
        if self.kind == "classifier":
            return None
        op = self.op[: -len("_semv3")] if self.op.endswith("_semv3") else self.op
        return BlockSpec.from_compact(op)

    def classifier_parts(self) -> tuple[int, int | None, str | None]:
        """``(num_classes, prelogits_channels, prelogits_activation)`` of a classifier key."""
        m = re.fullmatch(r"classifier_c(\d+)(?:_pl(\d+)_(re|r6|hs|sw))?", self.op)
        if not m:
            raise SpecError(f"not a classifier key: '{self}'")
        pl = int(m.group(2)) if m.group(2) else None
        return int(m.group(1)), pl, _TOKEN_ACTS[m.group(3)] if m.group(3) else None

    @property
    def output_shape(self) -> tuple[int, int, int]:
        if self.kind == "classifier":
            return (1, 1, self.classifier_parts()[0])
        b = self.block()
        c = self.in_channels if b.out_channels is None else b.out_channels
        return (same_output_size(self.height, b.stride), same_output_size(self.width, b.stride), c)

    def macs(self) -> int:
        """Multiply-accumulates of this op (same counting as :mod:`hwnas.nn.count`)."""
        return self.cost()[1]

    def layer(self) -> Layer:
        """A :class:`Layer` carrying this key's block and shapes (for builders and counters)."""
        if self.kind == "classifier":
            return Layer("classifier", None, self.input_shape, self.output_shape)
        return Layer("op", self.block(), self.input_shape, self.output_shape)

    def cost(self) -> tuple[int, int]:
        """``(params, macs)`` of this op, counted as :mod:`hwnas.nn.count` does."""
        from hwnas.nn.count import layer_cost

        if self.kind == "classifier":
            classes, prelogits, _ = self.classifier_parts()
            return layer_cost(self.layer(), self.se_style, num_classes=classes, prelogits_channels=prelogits)
        return layer_cost(self.layer(), self.se_style)

    def canonical(self) -> "OpKey":
        """The key :func:`op_key` / :func:`classifier_key` write for the op this key names.

        Raises:
            SpecError: the op part is malformed (unknown token, invalid value).
        """
        shape = self.input_shape
        if self.kind == "classifier":
            classes, prelogits, act = self.classifier_parts()
            return classifier_key(shape, classes, prelogits, act or "hswish")
        semv3 = self.op.endswith("_semv3")
        block = self.block()
        if block.kind == "skip":
            return op_key(block, shape)
        return op_key(block, shape, se_style="mobilenetv3" if semv3 else "efficientnet")

    @classmethod
    def parse(cls, text: str, *, source: str | None = None) -> "OpKey":
        """Parse the string form; only the canonical form :func:`op_key` writes is accepted.

        Args:
            text: ``<op>@<H>x<W>x<C>``.
            source: where the key comes from (a table file), named in errors.

        Raises:
            SpecError: malformed, or not canonical (the message gives the canonical form).
        """
        where = f"{source}: " if source else ""
        m = re.fullmatch(r"(\S+)@(\d+)x(\d+)x(\d+)", str(text).strip())
        if not m:
            raise SpecError(f"{where}malformed op key '{text}'; expected '<op>@<H>x<W>x<C>'")
        key = cls(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        if min(key.input_shape) < 1:
            raise SpecError(f"{where}op key '{text}': input shape must be positive")
        try:
            canon = key.canonical()
        except SpecError as err:
            raise SpecError(f"{where}op key '{text}': {err}") from None
        if canon != key:
            raise SpecError(f"{where}op key '{text}' is not canonical: hwnas writes this op as '{canon}'")
        return key


def op_key(block: BlockSpec, input_shape: tuple[int, int, int], *, se_style: str = "efficientnet",
           residual_allowed: bool = True) -> OpKey:
    """The canonical key of ``block`` (actual channels) applied to an NHWC ``input_shape``.

    The key states the *effective* residual: where the shape is kept, ``noskip`` is written when no
    identity is added (the block says ``residual: false``, or ``residual_allowed=False``: the stem
    and head convs, which never take a shortcut); where the shape changes no shortcut is possible
    and none is written. The SE style is appended (``_semv3``) only when the block has SE and the
    style is MobileNetV3's.

    Raises:
        SpecError: a ``skip`` that would change the shape.
    """
    h, w, c = (int(v) for v in input_shape)
    if block.kind == "skip":
        if block.out_channels is not None and block.out_channels != c:
            raise SpecError(f"a skip block must keep the shape: input has {c} channels, block asks for "
                            f"{block.out_channels}", source=block.to_compact(), field="out_channels")
        return OpKey("skip", h, w, c)
    keeps_shape = block.stride == 1 and block.out_channels == c
    normalised = replace(block, residual=(block.residual and residual_allowed) if keeps_shape else True)
    op = normalised.to_compact()
    if block.se_ratio > 0 and se_style == "mobilenetv3":
        op += "_semv3"
    return OpKey(op, h, w, c)


def classifier_key(input_shape: tuple[int, int, int], num_classes: int, prelogits_channels: int | None = None,
                   prelogits_activation: str = "hswish") -> OpKey:
    """Key of global average pooling (+ MobileNetV3 prelogits conv) + FC on ``input_shape`` (NHWC)."""
    h, w, c = (int(v) for v in input_shape)
    op = f"classifier_c{int(num_classes)}"
    if prelogits_channels:
        if prelogits_activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation '{prelogits_activation}'", field="prelogits_activation")
        op += f"_pl{int(prelogits_channels)}_{_ACT_TOKENS[prelogits_activation]}"
    return OpKey(op, h, w, c)


def layer_key(layer: Layer, arch: ArchSpec) -> OpKey:
    """Key of one resolved layer of ``arch`` (see :meth:`ArchSpec.layers`)."""
    if layer.block is None:
        return classifier_key(layer.in_shape, arch.classifier.num_classes, arch.head.prelogits_channels,
                              arch.head.prelogits_activation)
    return op_key(layer.block, layer.in_shape, se_style=arch.se_style,
                  residual_allowed=layer.name not in ("stem", "head"))


def arch_op_keys(arch: ArchSpec) -> list[tuple[Layer, OpKey]]:
    """``(layer, key)`` for every layer of ``arch``: stem, blocks, head conv, classifier."""
    return [(layer, layer_key(layer, arch)) for layer in arch.layers()]


__all__ = ["OpKey", "op_key", "classifier_key", "layer_key", "arch_op_keys"]
