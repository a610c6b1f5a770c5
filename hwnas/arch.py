"""ArchSpec: the framework-independent description of a mobile network.

An :class:`ArchSpec` is an input (resolution, channels), a stem, stages of blocks, a head and a
classifier, plus a width multiplier and channel divisor. It is immutable and has two user forms
that round-trip exactly:

* YAML (:meth:`ArchSpec.to_yaml` / :meth:`ArchSpec.from_yaml`), and
* a one-line compact form (:meth:`ArchSpec.to_compact` / :meth:`ArchSpec.from_compact`) built from
  one timm-style string per block, e.g. ``ir_k5_e6_s2_c40_se0.25_hs``.

Block vocabulary (compact prefixes in brackets):

* ``mbconv`` [``ir``] — inverted residual (Sandler et al. 2018, MobileNetV2 §3.3): 1×1 expansion
  conv (groups ``groups``) → k×k depthwise conv (stride) → optional squeeze-excite → 1×1 linear
  projection (groups ``groups``; FBNet's ``g2`` ops shuffle channels between them) → identity
  residual when the shape is kept.
* ``dsconv`` [``ds``] — depthwise-separable conv (expansion 1): k×k depthwise → optional SE →
  1×1 linear projection, residual when the shape is kept.
* ``fused_mbconv`` [``er``] — fused-MBConv (Tan & Le 2021, EfficientNetV2 §3.2, Fig. 2; timm's
  ``EdgeResidual``): k×k conv expanding to ``expansion × in`` channels (stride) → optional
  squeeze-excite → 1×1 linear projection → identity residual when the shape is kept.
* ``conv`` [``cn``] — plain conv → BatchNorm → activation.
* ``skip`` — identity; the zero/skip op of a searchable layer. It must keep the shape.

Channels in blocks are *base* channels; :meth:`ArchSpec.layers` applies the width multiplier
(``make_divisible(c * width, divisor)``, as MobileNetV2/timm do) and gives every layer its
input/output NHWC shape with TF-SAME arithmetic (``out = ceil(in / stride)``). Everything that
needs shapes (builders, counters, op keys, exporters) reads them from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import yaml

from hwnas.errors import SpecError
from hwnas.ops import KIND_NAMES, OP_KINDS, op_kind, token_help

BLOCK_KINDS = KIND_NAMES  # the op vocabulary: hwnas.ops
ACTIVATIONS = ("relu", "relu6", "hswish", "swish")
SE_STYLES = ("efficientnet", "mobilenetv3")
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)

_KIND_TO_PREFIX = {k.name: k.token for k in OP_KINDS}
# kinds with an expansion ratio (mid channels = make_divisible(in * e, 8))
EXPANDING_KINDS = tuple(k.name for k in OP_KINDS if k.expanding)
_PREFIX_TO_KIND = {v: k for k, v in _KIND_TO_PREFIX.items()}
_ACT_TO_TOKEN = {"relu": "re", "relu6": "r6", "hswish": "hs", "swish": "sw"}
_TOKEN_TO_ACT = {v: k for k, v in _ACT_TO_TOKEN.items()}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90 % of it.

    The channel rounding of MobileNetV2 (Sandler et al. 2018, reference code ``_make_divisible``),
    also used by EfficientNet's ``round_filters`` (Tan & Le 2019).
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def same_output_size(size: int, stride: int) -> int:
    """TF-SAME output size: ``ceil(size / stride)`` (independent of the kernel size)."""
    return -(-size // stride)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF-SAME padding ``(before, after)`` along one axis.

    Total padding is ``max((ceil(size/stride) - 1) * stride + kernel - size, 0)``; TensorFlow puts
    the odd pixel *after* (bottom/right). With stride 1 and an odd kernel this is symmetric.
    """
    out = same_output_size(size, stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _fmt_num(value: float) -> str:
    """Shortest exact decimal form: 6 -> '6', 0.25 -> '0.25', 3.67 -> '3.67'."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class BlockSpec:
    """One block of a network.

    Attributes:
        kind: ``mbconv`` | ``fused_mbconv`` | ``dsconv`` | ``conv`` | ``skip``.
        out_channels: base output channels (before the width multiplier). ``None`` only for
            ``skip`` (keeps the input channels).
        kernel: kernel size of the spatial (depthwise for mbconv/dsconv) conv: 1, 3, 5 or 7.
        stride: 1 or 2.
        expansion: expansion ratio of ``mbconv`` / ``fused_mbconv`` (mid channels = ``make_divisible(in * e, 8)``);
            1 for the other kinds.
        se_ratio: squeeze-excite ratio in [0, 1); 0 means no SE.
        activation: ``relu`` | ``relu6`` | ``hswish`` | ``swish``.
        groups: group count of the 1×1 convs of ``mbconv`` (FBNet's ``g2``), 1 otherwise.
        residual: add the identity shortcut when a stage block keeps the shape (MnasNet's skip
            on/off decision; plain conv blocks in a stage too); ignored when the shape changes and
            for the stem and head convs.
    """

    kind: str
    out_channels: int | None = None
    kernel: int = 3
    stride: int = 1
    expansion: float = 1.0
    se_ratio: float = 0.0
    activation: str = "relu"
    groups: int = 1
    residual: bool = True

    def __post_init__(self) -> None:
        # Normalise numeric types so that equal specs compare and hash equal.
        object.__setattr__(self, "expansion", float(self.expansion))
        object.__setattr__(self, "se_ratio", float(self.se_ratio))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self, source: str | None = None) -> None:
        """Check every field on its own (shape checks need the input: see :meth:`ArchSpec.layers`).

        Raises:
            SpecError: naming the field and what was expected.
        """
        src = source or self.to_compact_unchecked()
        if self.kind not in BLOCK_KINDS:
            raise SpecError(f"unknown block kind '{self.kind}'; expected one of {', '.join(BLOCK_KINDS)}",
                            source=src, field="kind")
        if self.kind == "skip":
            if self.stride != 1:
                raise SpecError(f"a skip block must keep the shape, got stride {self.stride}",
                                source=src, field="stride")
            return
        if self.out_channels is None or int(self.out_channels) != self.out_channels or self.out_channels < 1:
            raise SpecError(f"expected a positive integer channel count, got {self.out_channels!r}",
                            source=src, field="out_channels")
        if self.kernel not in KERNELS:
            what = "an odd kernel" if isinstance(self.kernel, int) and self.kernel % 2 == 0 else "a kernel"
            raise SpecError(f"expected {what} in {KERNELS}, got {self.kernel}", source=src, field="kernel")
        kind = op_kind(self.kind)
        if kind.project and self.kernel == 1:  # the k×k conv before a 1×1 projection
            what = kind.title if kind.kxk == "full" else "depthwise"
            raise SpecError(f"a {what} kernel must be 3, 5 or 7, got 1", source=src, field="kernel")
        if self.stride not in STRIDES:
            raise SpecError(f"expected stride 1 or 2, got {self.stride}", source=src, field="stride")
        if not (0.0 <= self.se_ratio < 1.0):
            raise SpecError(f"expected an SE ratio in [0, 1), got {_fmt_num(self.se_ratio)}",
                            source=src, field="se_ratio")
        if not kind.se and self.se_ratio > 0:
            raise SpecError(f"a {kind.title} block has no squeeze-excite", source=src, field="se_ratio")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation '{self.activation}'; expected one of {', '.join(ACTIVATIONS)}",
                            source=src, field="activation")
        if self.kind in EXPANDING_KINDS:
            if not (self.expansion > 0):
                raise SpecError(f"expected a positive expansion ratio, got {self.expansion}",
                                source=src, field="expansion")
        elif self.expansion != 1.0:
            raise SpecError(f"a {self.kind} block has expansion 1, got {_fmt_num(self.expansion)}",
                            source=src, field="expansion")
        if int(self.groups) != self.groups or self.groups < 1:
            raise SpecError(f"expected a positive group count, got {self.groups}", source=src, field="groups")
        if self.groups > 1 and not kind.grouped:
            raise SpecError("grouped pointwise convs exist only in mbconv blocks", source=src, field="groups")

    # ------------------------------------------------------------------ compact form
    def to_compact(self) -> str:
        """The canonical one-line form, e.g. ``ir_k5_e6_s2_c40_se0.25_hs``."""
        return self.to_compact_unchecked()

    def to_compact_unchecked(self) -> str:
        if self.kind not in _KIND_TO_PREFIX:
            return str(self.kind)
        if self.kind == "skip":
            return "skip" if self.out_channels is None else f"skip_c{self.out_channels}"
        parts = [_KIND_TO_PREFIX[self.kind], f"k{self.kernel}"]
        if self.kind in EXPANDING_KINDS:
            parts.append(f"e{_fmt_num(self.expansion)}")
        parts += [f"s{self.stride}", f"c{self.out_channels}"]
        if self.se_ratio > 0:
            parts.append(f"se{_fmt_num(self.se_ratio)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        parts.append(_ACT_TO_TOKEN.get(self.activation, str(self.activation)))
        if not self.residual:
            parts.append("noskip")
        return "_".join(parts)

    @classmethod
    def from_compact(cls, text: str) -> "BlockSpec":
        """Parse a block string such as ``ir_k5_e6_s2_c40_se0.25_hs``.

        Tokens after the kind prefix (``ir``, ``er``, ``ds``, ``cn``, ``skip``): ``k<kernel>``,
        ``e<expansion>``, ``s<stride>``, ``c<channels>``, ``se<ratio>``, ``g<groups>``, an activation
        (``re`` relu, ``r6`` relu6, ``hs`` hswish, ``sw`` swish; default relu), ``noskip``.

        Raises:
            SpecError: malformed string, unknown token, missing ``k``/``s``/``c``, invalid value.
        """
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"expected a block string such as 'ir_k3_e6_s1_c24_r6', got {text!r}")
        text = text.strip()
        tokens = text.split("_")
        prefix = tokens[0]
        if prefix not in _PREFIX_TO_KIND:
            raise SpecError(f"unknown block kind '{prefix}'; expected one of "
                            f"{', '.join(_PREFIX_TO_KIND)} ({token_help()})",
                            source=f"block '{text}'", field="kind")
        kind = _PREFIX_TO_KIND[prefix]
        values: dict[str, Any] = {"kind": kind}
        for token in tokens[1:]:
            m = re.fullmatch(r"(se|k|e|s|c|g)(\d+(?:\.\d+)?)", token)
            if token in _TOKEN_TO_ACT:
                values["activation"] = _TOKEN_TO_ACT[token]
            elif token == "noskip":
                values["residual"] = False
            elif m:
                key, number = m.group(1), m.group(2)
                name = {"k": "kernel", "e": "expansion", "s": "stride", "c": "out_channels",
                        "se": "se_ratio", "g": "groups"}[key]
                if name in values:
                    raise SpecError(f"token '{token}' repeats field '{name}'", source=f"block '{text}'", field=name)
                if key in ("e", "se"):
                    values[name] = float(number)
                else:
                    if "." in number:
                        raise SpecError(f"expected an integer in token '{token}'", source=f"block '{text}'",
                                        field=name)
                    values[name] = int(number)
            else:
                raise SpecError(f"malformed token '{token}'; expected k<int>, e<num>, s<int>, c<int>, "
                                f"se<num>, g<int>, re|r6|hs|sw or noskip", source=f"block '{text}'")
        if kind != "skip":
            for key, name in (("k", "kernel"), ("s", "stride"), ("c", "out_channels")):
                if name not in values:
                    raise SpecError(f"missing '{key}<{name}>' token", source=f"block '{text}'", field=name)
            if kind in EXPANDING_KINDS and "expansion" not in values:
                raise SpecError("missing 'e<expansion>' token", source=f"block '{text}'", field="expansion")
        try:
            block = cls(**values)
        except SpecError as err:
            raise SpecError(err.detail, source=f"block '{text}'", field=err.field) from None
        return block

    # ------------------------------------------------------------------ mapping form
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_any(cls, value: Any, source: str = "block") -> "BlockSpec":
        """A block from its compact string or a mapping of :class:`BlockSpec` fields."""
        if isinstance(value, BlockSpec):
            return value
        if isinstance(value, str):
            try:
                return cls.from_compact(value)
            except SpecError as err:
                raise SpecError(err.detail, source=f"{source} '{value}'", field=err.field) from None
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise SpecError(f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}",
                                source=source, field=unknown[0])
            if "kind" not in value:
                raise SpecError("missing field 'kind'", source=source, field="kind")
            try:
                return cls(**value)
            except TypeError as err:
                raise SpecError(str(err), source=source) from None
        raise SpecError(f"expected a block string or mapping, got {type(value).__name__}", source=source)


@dataclass(frozen=True)
class HeadSpec:
    """Layers between the last block and the classifier.

    Attributes:
        conv: 1×1 conv → BN → activation before global pooling (MobileNetV2's 1280 conv), or None.
        prelogits_channels: MobileNetV3's 1×1 conv (with bias, no BN) after pooling, or None. Never
            scaled by the width multiplier (timm ``MobileNetV3.head_hidden_size``).
        prelogits_activation: activation after that conv.
        width_rule: how the head conv follows the width multiplier, per network as published:
            ``grow`` = ``max(C, scaled C)`` (MobileNetV2 §4; timm ``mobilenetv2``), ``fixed`` = C at every
            width (MnasNet; timm ``_gen_mnasnet_a1`` passes 1280 unscaled), ``scale`` = scaled like every
            other conv (MobileNetV3's 960 conv, TF slim / timm; EfficientNet ``round_chs_fn(1280)``).
    """

    conv: BlockSpec | None = None
    prelogits_channels: int | None = None
    prelogits_activation: str = "hswish"
    width_rule: str = "grow"

    def __post_init__(self) -> None:
        if self.conv is not None and (self.conv.kind != "conv" or self.conv.kernel != 1 or self.conv.stride != 1):
            raise SpecError(f"the head conv must be a 1x1 stride-1 conv block (cn_k1_s1_c<C>_<act>), "
                            f"got '{self.conv.to_compact()}'", source="head", field="conv")
        if self.prelogits_channels is not None and self.prelogits_channels < 1:
            raise SpecError(f"expected positive prelogits channels, got {self.prelogits_channels}",
                            source="head", field="prelogits_channels")
        if self.prelogits_activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation '{self.prelogits_activation}'", source="head",
                            field="prelogits_activation")
        if self.width_rule not in HEAD_WIDTH_RULES:
            raise SpecError(f"unknown head width rule '{self.width_rule}'; expected one of "
                            f"{', '.join(HEAD_WIDTH_RULES)}", source="head", field="width_rule")


HEAD_WIDTH_RULES = ("grow", "fixed", "scale")


@dataclass(frozen=True)
class ClassifierSpec:
    """Global average pooling → dropout → fully connected layer.

    Attributes:
        num_classes: output classes (logits).
        dropout: dropout probability before the FC layer (training only).
    """

    num_classes: int = 1000
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dropout", float(self.dropout))
        if int(self.num_classes) != self.num_classes or self.num_classes < 1:
            raise SpecError(f"expected a positive number of classes, got {self.num_classes}",
                            source="classifier", field="num_classes")
        if not (0.0 <= self.dropout < 1.0):
            raise SpecError(f"expected dropout in [0, 1), got {self.dropout}", source="classifier", field="dropout")


@dataclass(frozen=True)
class Layer:
    """One layer of a resolved architecture (width multiplier applied).

    Attributes:
        name: ``stem``, ``stages.<i>.<j>``, ``head`` or ``classifier``.
        block: the block with *actual* output channels (``None`` for the classifier).
        in_shape: input shape NHWC without batch, ``(H, W, C)``.
        out_shape: output shape ``(H, W, C)``; ``(1, 1, num_classes)`` for the classifier.
        stage: stage index for stage blocks, else ``None``.
    """

    name: str
    block: BlockSpec | None
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    stage: int | None = None

    @property
    def has_residual(self) -> bool:
        """Whether an identity shortcut is added (shape kept, block allows it)."""
        b = self.block
        return (b is not None and op_kind(b.kind).residual and b.residual and b.stride == 1
                and self.name not in ("stem", "head") and self.in_shape == self.out_shape)

    @property
    def mid_channels(self) -> int:
        """Channels of the depthwise conv (mbconv) or of the fused k×k conv's output (fused_mbconv):
        ``make_divisible(in * expansion, 8)``; the input channels for the other kinds."""
        b = self.block
        if b is None or b.kind == "skip":
            return self.in_shape[2]
        if b.kind in EXPANDING_KINDS:
            return make_divisible(self.in_shape[2] * b.expansion, 8)
        return self.in_shape[2]

    @property
    def has_expansion_conv(self) -> bool:
        """mbconv keeps its 1×1 expansion conv even at expansion 1 (FBNet's ``k3_e1``)."""
        return self.block is not None and op_kind(self.block.kind).expand_1x1

    def se_channels(self, se_style: str) -> int:
        """Squeeze channels of the SE module, 0 without SE.

        ``efficientnet`` style (EfficientNet/MnasNet): ``max(1, int(block_in * ratio))``.
        ``mobilenetv3`` style (Howard et al. 2019, §5.3): ``make_divisible(mid * ratio, 8)``.
        """
        b = self.block
        if b is None or b.se_ratio <= 0:
            return 0
        if se_style == "mobilenetv3":
            return make_divisible(self.mid_channels * b.se_ratio, 8)
        return max(1, int(self.in_shape[2] * b.se_ratio))


@dataclass(frozen=True)
class ArchSpec:
    """A whole network, framework independent. See the module docstring for the forms.

    Attributes:
        stem: first conv block (``conv`` kind).
        stages: tuple of stages, each a tuple of blocks.
        head: :class:`HeadSpec`.
        classifier: :class:`ClassifierSpec`.
        resolution: input height = width in pixels.
        in_channels: input channels (3 for RGB, 1 for grayscale).
        width_multiplier: channel multiplier (MobileNet's depth multiplier α).
        divisor: channels are rounded to multiples of this.
        se_style: ``efficientnet`` (sigmoid gate, squeeze from block input) or ``mobilenetv3``
            (hard-sigmoid gate, ReLU inside, squeeze from expanded channels).
        name: free-form name (zoo name, run name); part of the spec.
    """

    stem: BlockSpec
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)
    resolution: int = 224
    in_channels: int = 3
    width_multiplier: float = 1.0
    divisor: int = 8
    se_style: str = "efficientnet"
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        object.__setattr__(self, "width_multiplier", float(self.width_multiplier))
        self.validate()

    # ------------------------------------------------------------------ structure
    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """All stage blocks in order."""
        return tuple(b for stage in self.stages for b in stage)

    def channels(self, base: int) -> int:
        """Actual channels for ``base`` channels under the width multiplier."""
        if self.width_multiplier == 1.0:
            return int(base)
        return make_divisible(base * self.width_multiplier, self.divisor)

    def _resolved(self, block: BlockSpec, in_channels: int) -> BlockSpec:
        if block.kind == "skip":
            return replace(block, out_channels=in_channels)
        return replace(block, out_channels=self.channels(block.out_channels))

    def layers(self) -> list[Layer]:
        """Every layer with its resolved block and NHWC shapes (TF-SAME: ``ceil(in/stride)``).

        Order: stem, stage blocks, head conv (if any), classifier. Shapes exclude the batch axis.

        Raises:
            SpecError: a ``skip`` block that would change the shape.
        """
        h = w = self.resolution
        c = self.in_channels
        out: list[Layer] = []

        def add(name: str, block: BlockSpec, stage: int | None = None) -> None:
            nonlocal h, w, c
            oh, ow = same_output_size(h, block.stride), same_output_size(w, block.stride)
            out.append(Layer(name, block, (h, w, c), (oh, ow, block.out_channels), stage))
            h, w, c = oh, ow, block.out_channels

        add("stem", self._resolved(self.stem, c))
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                if block.kind == "skip" and block.out_channels is not None and self.channels(block.out_channels) != c:
                    raise SpecError(f"a skip block must keep the shape: input has {c} channels, "
                                    f"the block asks for {self.channels(block.out_channels)}",
                                    source=f"stages[{si}][{bi}] '{block.to_compact()}'", field="out_channels")
                add(f"stages.{si}.{bi}", self._resolved(block, c), si)
        if self.head.conv is not None:
            head = self.head.conv
            scaled = self.channels(head.out_channels)
            head_c = {"grow": max(head.out_channels, scaled), "fixed": head.out_channels,
                      "scale": scaled}[self.head.width_rule]
            add("head", replace(head, out_channels=head_c))
        out.append(Layer("classifier", None, (h, w, c), (1, 1, self.classifier.num_classes)))
        return out

    def shapes(self) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int]]]:
        """``(name, in_shape, out_shape)`` per layer, NHWC without batch."""
        return [(lay.name, lay.in_shape, lay.out_shape) for lay in self.layers()]

    @property
    def feature_channels(self) -> int:
        """Channels entering the classifier's pooling (after the head conv)."""
        return self.layers()[-1].in_shape[2]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the whole spec; every block is checked on construction, shapes here.

        Raises:
            SpecError: naming the field (``stem``, ``stages[i][j]``, ``resolution`` …).
        """
        if not isinstance(self.stem, BlockSpec) or self.stem.kind != "conv":
            raise SpecError("the stem must be a conv block such as 'cn_k3_s2_c32_r6'", source="stem", field="stem")
        if not self.stages or not all(self.stages):
            raise SpecError("expected at least one non-empty stage", source="stages", field="stages")
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                if not isinstance(block, BlockSpec):
                    raise SpecError(f"expected a BlockSpec, got {type(block).__name__}", source=f"stages[{si}][{bi}]")
        if int(self.resolution) != self.resolution or self.resolution < 1:
            raise SpecError(f"expected a positive integer resolution, got {self.resolution}", field="resolution")
        if self.in_channels < 1:
            raise SpecError(f"expected positive input channels, got {self.in_channels}", field="in_channels")
        if not (self.width_multiplier > 0):
            raise SpecError(f"expected a positive width multiplier, got {self.width_multiplier}",
                            field="width_multiplier")
        if self.divisor < 1:
            raise SpecError(f"expected a positive divisor, got {self.divisor}", field="divisor")
        if self.se_style not in SE_STYLES:
            raise SpecError(f"unknown SE style '{self.se_style}'; expected one of {', '.join(SE_STYLES)}",
                            field="se_style")
        for lay in self.layers():
            b = lay.block
            if b is not None and b.kind == "mbconv" and b.groups > 1:
                if lay.in_shape[2] % b.groups or lay.mid_channels % b.groups or lay.out_shape[2] % b.groups:
                    raise SpecError(f"{b.groups} groups do not divide the channels {lay.in_shape[2]}/"
                                    f"{lay.mid_channels}/{lay.out_shape[2]}", source=lay.name, field="groups")

    # ------------------------------------------------------------------ transforms
    def with_width(self, width_multiplier: float) -> "ArchSpec":
        """The same spec under another width multiplier (base channels unchanged)."""
        return replace(self, width_multiplier=float(width_multiplier))

    def with_resolution(self, resolution: int) -> "ArchSpec":
        return replace(self, resolution=int(resolution))

    def with_classes(self, num_classes: int, in_channels: int | None = None) -> "ArchSpec":
        return replace(self, classifier=replace(self.classifier, num_classes=int(num_classes)),
                       in_channels=self.in_channels if in_channels is None else int(in_channels))

    def with_activations(self, mapping: dict[str, str]) -> "ArchSpec":
        """The same network with every activation ``a`` in ``mapping`` replaced by ``mapping[a]`` (stem,
        blocks, head conv, MobileNetV3 prelogits), e.g. ``{"hswish": "relu"}`` for hardware without
        h-swish. This is the activation part of TF-slim's MobileNetV3 "minimalistic" variants (which
        also drop SE and 5×5 kernels; hwnas changes only what the hardware cannot run).

        Raises:
            SpecError: an unknown activation name in ``mapping``.
        """
        if not mapping:
            return self
        for a in (*mapping, *mapping.values()):
            if a not in ACTIVATIONS:
                raise SpecError(f"unknown activation '{a}'; expected one of {', '.join(ACTIVATIONS)}",
                                field="activation")

        def sub(block: BlockSpec | None) -> BlockSpec | None:
            if block is None or block.kind == "skip" or block.activation not in mapping:
                return block
            return replace(block, activation=mapping[block.activation])

        head = replace(self.head, conv=sub(self.head.conv),
                       prelogits_activation=mapping.get(self.head.prelogits_activation,
                                                        self.head.prelogits_activation))
        return replace(self, stem=sub(self.stem), stages=tuple(tuple(sub(b) for b in st) for st in self.stages),
                       head=head)

    def iter_blocks(self) -> Iterator[tuple[int, int, BlockSpec]]:
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                yield si, bi, block

    # ------------------------------------------------------------------ mapping / YAML
    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (blocks as compact strings); the YAML form."""
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        d["resolution"] = self.resolution
        d["in_channels"] = self.in_channels
        d["width_multiplier"] = self.width_multiplier
        d["divisor"] = self.divisor
        d["se_style"] = self.se_style
        d["stem"] = self.stem.to_compact()
        d["stages"] = [[b.to_compact() for b in stage] for stage in self.stages]
        d["head"] = {
            "conv": self.head.conv.to_compact() if self.head.conv is not None else None,
            "prelogits_channels": self.head.prelogits_channels,
            "prelogits_activation": self.head.prelogits_activation,
            **({"width_rule": self.head.width_rule} if self.head.width_rule != "grow" else {}),
        }
        d["classifier"] = {"num_classes": self.classifier.num_classes, "dropout": self.classifier.dropout}
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "<arch>") -> "ArchSpec":
        """Build from the YAML mapping form (blocks as compact strings or field mappings).

        Raises:
            SpecError: not a mapping, unknown or missing field, invalid block.
        """
        if not isinstance(data, dict):
            raise SpecError(f"expected a YAML mapping with 'stem' and 'stages', got {type(data).__name__}",
                            source=source)
        known = {"name", "resolution", "in_channels", "width_multiplier", "divisor", "se_style", "stem",
                 "stages", "head", "classifier"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown field '{unknown[0]}'; expected some of {', '.join(sorted(known))}",
                            source=source, field=unknown[0])
        for required in ("stem", "stages"):
            if required not in data:
                raise SpecError(f"missing field '{required}'", source=source, field=required)
        try:
            stem = BlockSpec.from_any(data["stem"], source=f"{source}: stem")
            stages_raw = data["stages"]
            if not isinstance(stages_raw, list) or not all(isinstance(s, list) for s in stages_raw):
                raise SpecError("expected a list of stages, each a list of blocks", source=source, field="stages")
            stages = tuple(
                tuple(BlockSpec.from_any(b, source=f"{source}: stages[{si}][{bi}]") for bi, b in enumerate(stage))
                for si, stage in enumerate(stages_raw))
            head_raw = data.get("head") or {}
            if not isinstance(head_raw, dict):
                raise SpecError("expected a mapping", source=source, field="head")
            unknown_head = set(head_raw) - {"conv", "prelogits_channels", "prelogits_activation", "width_rule"}
            if unknown_head:
                raise SpecError(f"unknown field 'head.{sorted(unknown_head)[0]}'", source=source, field="head")
            head = HeadSpec(
                conv=BlockSpec.from_any(head_raw["conv"], source=f"{source}: head.conv")
                if head_raw.get("conv") is not None else None,
                prelogits_channels=head_raw.get("prelogits_channels"),
                prelogits_activation=head_raw.get("prelogits_activation", "hswish"),
                width_rule=head_raw.get("width_rule", "grow"))
            cls_raw = data.get("classifier") or {}
            if not isinstance(cls_raw, dict):
                raise SpecError("expected a mapping", source=source, field="classifier")
            unknown_cls = set(cls_raw) - {"num_classes", "dropout"}
            if unknown_cls:
                raise SpecError(f"unknown field 'classifier.{sorted(unknown_cls)[0]}'", source=source,
                                field="classifier")
            classifier = ClassifierSpec(**cls_raw)
            return cls(stem=stem, stages=stages, head=head, classifier=classifier,
                       resolution=data.get("resolution", 224), in_channels=data.get("in_channels", 3),
                       width_multiplier=data.get("width_multiplier", 1.0), divisor=data.get("divisor", 8),
                       se_style=data.get("se_style", "efficientnet"), name=str(data.get("name", "") or ""))
        except SpecError as err:
            if err.source and str(err.source).startswith(source):
                raise
            inner = f"{err.source}: " if err.source else ""
            raise SpecError(f"{inner}{err.detail}", source=source, field=err.field) from None
        except (TypeError, ValueError) as err:
            raise SpecError(str(err), source=source) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> "ArchSpec":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"not valid YAML ({err.__class__.__name__}: {str(err).splitlines()[0]})",
                            source=source) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> "ArchSpec":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SpecError(f"cannot read: {err.strerror}", source=str(path)) from None
        return cls.from_yaml(text, source=str(path))

    def save(self, path: str | Path) -> None:
        """Write the YAML form atomically."""
        from hwnas.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    # ------------------------------------------------------------------ compact form
    def to_compact(self) -> str:
        """One line: ``key=value`` options, the stem, blocks with ``|`` between stages, the head.

        Example (MobileNetV2, abridged)::

            res224 stem=cn_k3_s2_c32_r6 ds_k3_s1_c16_r6 | ir_k3_e6_s2_c24_r6 ir_k3_e6_s1_c24_r6 | ...
            head=cn_k1_s1_c1280_r6 classes=1000 dropout=0.2
        """
        parts = []
        if self.name:
            parts.append(f"name={self.name}")
        parts.append(f"res{self.resolution}")
        if self.in_channels != 3:
            parts.append(f"in={self.in_channels}")
        if self.width_multiplier != 1.0:
            parts.append(f"width={_fmt_num(self.width_multiplier)}")
        if self.divisor != 8:
            parts.append(f"divisor={self.divisor}")
        if self.se_style != "efficientnet":
            parts.append(f"se={self.se_style}")
        parts.append(f"stem={self.stem.to_compact()}")
        parts.append(" | ".join(" ".join(b.to_compact() for b in stage) for stage in self.stages))
        if self.head.conv is not None:
            parts.append(f"head={self.head.conv.to_compact()}")
        if self.head.prelogits_channels is not None:
            parts.append(f"prelogits=c{self.head.prelogits_channels}_{_ACT_TO_TOKEN[self.head.prelogits_activation]}")
        if self.head.width_rule != "grow":
            parts.append(f"headwidth={self.head.width_rule}")
        parts.append(f"classes={self.classifier.num_classes}")
        if self.classifier.dropout:
            parts.append(f"dropout={_fmt_num(self.classifier.dropout)}")
        return " ".join(parts)

    @classmethod
    def from_compact(cls, text: str) -> "ArchSpec":
        """Parse :meth:`to_compact`'s form. A single block string is not a whole architecture.

        Raises:
            SpecError: naming the offending token.
        """
        if not isinstance(text, str) or not text.strip():
            raise SpecError("expected an architecture string such as 'res224 stem=cn_k3_s2_c32_r6 ir_k3_e6_s1_c16_r6'")
        source = "architecture string"
        opts: dict[str, Any] = {}
        head = HeadSpec()
        prelogits: tuple[int, str] | None = None
        head_conv = None
        head_rule = "grow"
        classes, dropout = 1000, 0.0
        stem = None
        stages: list[list[BlockSpec]] = [[]]
        for token in text.split():
            if token == "|":
                stages.append([])
            elif re.fullmatch(r"res\d+", token):
                opts["resolution"] = int(token[3:])
            elif "=" in token:
                key, value = token.split("=", 1)
                try:
                    if key == "name":
                        opts["name"] = value
                    elif key == "in":
                        opts["in_channels"] = int(value)
                    elif key == "width":
                        opts["width_multiplier"] = float(value)
                    elif key == "divisor":
                        opts["divisor"] = int(value)
                    elif key == "se":
                        opts["se_style"] = value
                    elif key == "stem":
                        stem = BlockSpec.from_compact(value)
                    elif key == "head":
                        head_conv = BlockSpec.from_compact(value)
                    elif key == "headwidth":
                        head_rule = value
                    elif key == "prelogits":
                        m = re.fullmatch(r"c(\d+)_(re|r6|hs|sw)", value)
                        if not m:
                            raise SpecError(f"expected prelogits=c<channels>_<act>, got '{token}'", source=source)
                        prelogits = (int(m.group(1)), _TOKEN_TO_ACT[m.group(2)])
                    elif key == "classes":
                        classes = int(value)
                    elif key == "dropout":
                        dropout = float(value)
                    else:
                        raise SpecError(f"unknown option '{key}='; expected name, in, width, divisor, se, stem, "
                                        "head, headwidth, prelogits, classes, dropout", source=source, field=key)
                except SpecError as err:
                    raise SpecError(f"{err.source + ': ' if err.source else ''}{err.detail}", source=source,
                                    field=key) from None
                except ValueError:
                    raise SpecError(f"malformed value in '{token}'", source=source, field=key) from None
            else:
                stages[-1].append(BlockSpec.from_compact(token))
        if stem is None:
            raise SpecError("missing 'stem=<conv block>' (e.g. stem=cn_k3_s2_c32_r6); a single block string is not "
                            "a whole architecture", source=source, field="stem")
        if any(not s for s in stages):
            raise SpecError("empty stage (two '|' in a row, or '|' at an end)", source=source, field="stages")
        if prelogits is not None:
            head = HeadSpec(conv=head_conv, prelogits_channels=prelogits[0], prelogits_activation=prelogits[1],
                            width_rule=head_rule)
        else:
            head = HeadSpec(conv=head_conv, width_rule=head_rule)
        return cls(stem=stem, stages=tuple(tuple(s) for s in stages), head=head,
                   classifier=ClassifierSpec(num_classes=classes, dropout=dropout), **opts)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Short stable hash of the compact form (names run folders and artifacts)."""
        import hashlib

        return hashlib.sha1(self.to_compact().encode()).hexdigest()[:10]


__all__ = ["ArchSpec", "BlockSpec", "HeadSpec", "ClassifierSpec", "Layer", "make_divisible", "same_padding",
           "same_output_size", "BLOCK_KINDS", "EXPANDING_KINDS", "ACTIVATIONS"]
