"""Elastic supernet of once-for-all (Cai et al., ICLR 2020, §3.1–3.2): one set of weights for every
subnet of a stage-wise MBConv space, and the rule that hands a plain subnet back.

**What is elastic** (OFA §3.2, Fig. 2–3):

* *kernel size* — every MBConv layer holds one depthwise kernel of the largest size (7×7 in
  ``mobilenetv3``); a smaller kernel is its centre, passed through OFA's *kernel transformation
  matrices*: 7→5 takes the centre 5×5 and multiplies its 25 taps by a learnable 25×25 matrix, 5→3
  takes the centre 3×3 of the *transformed* 5×5 and multiplies it by a 9×9 matrix (one matrix per
  layer and size pair, shared by the channels, initialised to the identity; OFA §3.2 "elastic kernel
  size" and its ``DynamicSeparableConv2d``);
* *expansion ratio* — the expansion 1×1 conv, the depthwise conv, the squeeze-excite and the
  projection keep the first ``make_divisible(in · e, 8)`` middle channels of the largest expansion
  (and the first squeeze channels of the SE);
* *depth* — a stage of depth ``d`` runs its first ``d`` layers (OFA keeps the first layers and skips
  the last ones);
* *resolution* — the convolutions pad TF-SAME for whatever input size arrives, so one set of weights
  serves every resolution of :attr:`ElasticSpace.resolutions` (the training loop resizes batches).

**Members.** :class:`ElasticSpace` describes the subnets as plain decisions (per searchable layer a
kernel and an expansion, per stage a depth, one resolution), so the bounded sampler and the evolution
of :mod:`hwnas.search` run on it unchanged; :meth:`ElasticSpace.arch` turns a member into the base
space's :class:`~hwnas.arch.ArchSpec` (layers past the depth are ``skip``), which the latency
predictor prices and :mod:`hwnas.export` exports.

**A plain subnet.** :meth:`ElasticSupernet.subnet` builds the member's :class:`~hwnas.nn.build.HwnasNet`
and copies the active weights into it (transformed kernels, sliced channels, BatchNorm statistics):
``subnet(c)(x) == supernet(x, c)`` in eval mode (tests/test_ofa.py). Nothing downstream ever sees the
supernet.

Deviations from OFA, said plainly: no channel sorting by importance before shrinking the expansion
(OFA's ``re_organize_middle_weights``; here the first channels are kept as trained); no elastic width
multiplier (OFA's MBv3 space has none either); the supernet is built from hwnas's MobileNetV3 space
(TF-SAME padding, MobileNetV3 head with a bias on the 1280 conv, see :mod:`hwnas.spaces.mobile`).

Device- and dtype-agnostic: nothing is created outside the module's parameters and the input
(tests/test_ofa.py runs forward and backward on the ``meta`` device). NCHW everywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.arch import ArchSpec, BlockSpec, same_padding
from hwnas.errors import SearchError
from hwnas.nn.blocks import BN_EPS, BN_MOMENTUM, Classifier, ConvBnAct, DSConv, MBConv, make_activation
from hwnas.nn.build import HwnasNet, init_weights
from hwnas.spaces.base import Decision

Choices = tuple[int, ...]


# ============================================================================ the space of subnets
@dataclass(frozen=True)
class ElasticConfig:
    """One subnet: kernel and expansion per searchable layer (all layers, also those past the depth),
    depth per stage, input resolution (pixels)."""

    kernels: tuple[int, ...]
    expansions: tuple[float, ...]
    depths: tuple[int, ...]
    resolution: int


class ElasticSpace:
    """The subnets of an elastic supernet over a base space, as decisions.

    Decisions, in order: ``<layer>.kernel`` and ``<layer>.expansion`` for every searchable layer,
    ``stage<i>.depth`` for every stage, ``resolution``. A member is a tuple of option indices (like
    every hwnas space), so :class:`hwnas.search.sampling.ConstrainedSampler` and
    :class:`hwnas.search.evolution.EvolutionStrategy` take it as is.

    Args:
        base: a stage-wise MBConv space with a depth range per stage (``mobilenetv3``,
            ``mobilenetv3-cifar``: :class:`hwnas.spaces.mobile.SkipDepthSpace` whose layer candidates
            are MBConv blocks that differ only in kernel and expansion, plus ``skip``), already at the
            data's classes, input channels and width; its resolution is the largest one.
        resolutions: input resolutions of the subnets (default: the base space's only).

    Raises:
        SearchError: the base space is not of that kind (the message names the layer), or a bad
            resolution.
    """

    def __init__(self, base, resolutions: Sequence[int] | None = None):
        if not hasattr(base, "min_depths") or not hasattr(base, "slots") or hasattr(base, "base"):
            raise SearchError(f"once-for-all needs a stage-wise MBConv space with a depth range per stage "
                              f"(mobilenetv3, mobilenetv3-cifar); space '{base.name}' is not one")
        self.base = base
        self.name = f"ofa-{base.name}"
        self.resolutions = tuple(sorted({int(r) for r in (resolutions or (base.resolution,))}))
        if not self.resolutions or self.resolutions[0] < 8:
            raise SearchError(f"once-for-all resolutions must be at least 8 px, got {list(self.resolutions)}")
        self.stage_depths = tuple(base.depths)
        self.min_depths = tuple(base.min_depths)
        kernels: set[int] = set()
        expansions: set[float] = set()
        self.slot_index: list[dict[tuple[int, float], int]] = []
        self.skip_index: list[int | None] = []
        for slot in base.slots:
            table: dict[tuple[int, float], int] = {}
            skip = None
            ref = None
            for j, text in enumerate(slot.candidates):
                b = BlockSpec.from_compact(text)
                if b.kind == "skip":
                    skip = j
                    continue
                if b.kind != "mbconv" or b.groups != 1:
                    raise SearchError(f"once-for-all: layer {slot.name} of space '{base.name}' offers "
                                      f"'{text}'; the elastic supernet holds plain MBConv layers only")
                key = (b.kernel, b.stride, b.out_channels, b.se_ratio, b.activation, b.residual)
                if ref is not None and key[1:] != ref[1:]:
                    raise SearchError(f"once-for-all: layer {slot.name} of space '{base.name}' mixes blocks that "
                                      f"differ in more than kernel and expansion ('{text}')")
                ref = key
                table[(b.kernel, b.expansion)] = j
                kernels.add(b.kernel)
                expansions.add(b.expansion)
            self.slot_index.append(table)
            self.skip_index.append(skip)
        self.kernels = tuple(sorted(kernels))
        self.expansions = tuple(sorted(expansions))
        for slot, table in zip(base.slots, self.slot_index):
            if len(table) != len(self.kernels) * len(self.expansions):
                raise SearchError(f"once-for-all: layer {slot.name} of space '{base.name}' lacks some kernel × "
                                  f"expansion pairs of {self.kernels} × {self.expansions}")
        self.layer_names = tuple(slot.name for slot in base.slots)
        self._decisions = tuple(
            [d for name in self.layer_names for d in (
                Decision(f"{name}.kernel", tuple(f"k{k}" for k in self.kernels)),
                Decision(f"{name}.expansion", tuple(f"e{e:g}" for e in self.expansions)))]
            + [Decision(f"stage{s}.depth", tuple(str(d) for d in range(lo, hi + 1)))
               for s, (lo, hi) in enumerate(zip(self.min_depths, self.stage_depths))]
            + [Decision("resolution", tuple(str(r) for r in self.resolutions))])
        self._spaces = {base.resolution: base}

    # ------------------------------------------------------------------ space interface
    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    @property
    def size(self) -> int:
        """Distinct subnets (layers past a stage's depth do not count twice)."""
        per_layer = len(self.kernels) * len(self.expansions)
        n = 1
        for lo, hi in zip(self.min_depths, self.stage_depths):
            n *= sum(per_layer ** d for d in range(lo, hi + 1))
        return n * len(self.resolutions)

    def check(self, choices: Sequence[int]) -> Choices:
        choices = tuple(int(c) for c in choices)
        if len(choices) != len(self._decisions) or any(
                not 0 <= c < len(d.options) for c, d in zip(choices, self._decisions)):
            raise SearchError(f"not a member of {self.name}: {list(choices)}")
        return choices

    def sample(self, rng: random.Random | None = None) -> Choices:
        """A uniformly random member (each decision uniform, as OFA's ``sample_active_subnet``)."""
        rng = rng or random
        return tuple(rng.randrange(len(d.options)) for d in self._decisions)

    def largest(self) -> Choices:
        return tuple(len(d.options) - 1 for d in self._decisions)

    def smallest(self) -> Choices:
        return tuple(0 for _ in self._decisions)

    # ------------------------------------------------------------------ members
    def config(self, choices: Sequence[int]) -> ElasticConfig:
        """The :class:`ElasticConfig` of a member."""
        c = self.check(choices)
        n = len(self.layer_names)
        ns = len(self.stage_depths)
        return ElasticConfig(kernels=tuple(self.kernels[c[2 * i]] for i in range(n)),
                             expansions=tuple(self.expansions[c[2 * i + 1]] for i in range(n)),
                             depths=tuple(self.min_depths[s] + c[2 * n + s] for s in range(ns)),
                             resolution=self.resolutions[c[-1]])

    def encode(self, config: ElasticConfig) -> Choices:
        """The member of a config (inverse of :meth:`config`)."""
        out: list[int] = []
        for k, e in zip(config.kernels, config.expansions):
            out += [self.kernels.index(k), self.expansions.index(e)]
        out += [d - lo for d, lo in zip(config.depths, self.min_depths)]
        out.append(self.resolutions.index(config.resolution))
        return self.check(out)

    def base_choices(self, choices: Sequence[int]) -> Choices:
        """The base space's member (one candidate per layer; ``skip`` past the stage depth)."""
        cfg = self.config(choices)
        out = []
        i = 0
        for s, n_layers in enumerate(self.stage_depths):
            for li in range(n_layers):
                if li < cfg.depths[s]:
                    out.append(self.slot_index[i][(cfg.kernels[i], cfg.expansions[i])])
                else:
                    out.append(self.skip_index[i])
                i += 1
        return tuple(out)

    def space_at(self, resolution: int):
        """The base space at ``resolution`` (cached)."""
        if resolution not in self._spaces:
            self._spaces[resolution] = self.base.at(resolution=resolution)
        return self._spaces[resolution]

    def arch(self, choices: Sequence[int]) -> ArchSpec:
        """The member as an ArchSpec of the base space, at the member's resolution."""
        cfg = self.config(choices)
        return self.space_at(cfg.resolution).decode(self.base_choices(choices))

    def active_layers(self, choices: Sequence[int]) -> list[bool]:
        """Per searchable layer, whether it runs in the member (within its stage's depth)."""
        cfg = self.config(choices)
        return [li < cfg.depths[s] for s, n in enumerate(self.stage_depths) for li in range(n)]

    def features(self, choices: Sequence[int]) -> list[float]:
        """One-hot encoding for the accuracy predictor (OFA's ``AccuracyPredictor`` encoding): per
        layer a one-hot kernel and a one-hot expansion (all zeros for a layer past its stage's depth),
        then a one-hot resolution."""
        c = self.check(choices)
        active = self.active_layers(c)
        out: list[float] = []
        for i, on in enumerate(active):
            k = [0.0] * len(self.kernels)
            e = [0.0] * len(self.expansions)
            if on:
                k[c[2 * i]] = 1.0
                e[c[2 * i + 1]] = 1.0
            out += k + e
        r = [0.0] * len(self.resolutions)
        r[c[-1]] = 1.0
        return out + r

    def describe(self, choices: Sequence[int]) -> str:
        """Short form, e.g. ``r32 d2,3,2,4,2 k=353.. e=346..`` (active layers only)."""
        cfg = self.config(choices)
        active = self.active_layers(choices)
        ks = "".join(str(k) for k, on in zip(cfg.kernels, active) if on)
        es = "".join(f"{e:g}" for e, on in zip(cfg.expansions, active) if on)
        return f"r{cfg.resolution} d{','.join(map(str, cfg.depths))} k{ks} e{es}"

    def __repr__(self) -> str:
        return (f"ElasticSpace({self.base.name!r}, kernels={self.kernels}, expansions={self.expansions}, "
                f"depths={list(zip(self.min_depths, self.stage_depths))}, resolutions={self.resolutions})")


# ============================================================================ elastic modules
def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF-SAME zero padding of an NCHW tensor for its own size (``out = ceil(in / stride)``)."""
    ph = same_padding(x.shape[-2], kernel, stride)
    pw = same_padding(x.shape[-1], kernel, stride)
    if ph == (0, 0) and pw == (0, 0):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]))


class ElasticConvBnAct(nn.Module):
    """Conv (TF-SAME for any input size) → BatchNorm → activation, with an active output-channel count
    and, for a depthwise conv, an active kernel size made by OFA's kernel transformation.

    ``(N, Cin_active, H, W) -> (N, out_active, ceil(H/s), ceil(W/s))``; the input channels are those of
    the input tensor (the first ``Cin_active`` of the weight are used).

    Args:
        depthwise: groups = channels (then ``in_channels == out_channels`` and both follow the input).
        kernels: the kernel sizes this conv can run (depthwise only; largest = stored weight).
        transform: use OFA's kernel transformation matrices (else a plain centre crop).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, activation: str | None, *,
                 depthwise: bool = False, kernels: Sequence[int] = (), transform: bool = True, bias: bool = False):
        super().__init__()
        self.depthwise = depthwise
        self.stride = stride
        self.max_kernel = kernel
        in_per_group = 1 if depthwise else in_channels
        self.conv = nn.Conv2d(in_per_group, out_channels, kernel, stride, bias=bias, groups=1)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_activation(activation)
        self.kernels = tuple(sorted(set(kernels) | {kernel}))
        self.transform = bool(transform) and len(self.kernels) > 1
        # OFA §3.2: one (k'^2 × k'^2) matrix per step down the kernel ladder, identity at the start
        self.ks_matrix = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels[::-1], self.kernels[::-1][1:])} if self.transform else {})
        self.active_out = out_channels
        self.active_kernel = kernel

    def kernel_weight(self, kernel: int, channels: int) -> torch.Tensor:
        """The active conv weight: ``(out, in/groups, k, k)`` sliced to ``channels`` outputs (and inputs for
        a pointwise conv: see :meth:`forward`), with the kernel transformed down to ``kernel``."""
        w = self.conv.weight[:channels]
        if kernel == self.max_kernel:
            return w
        if kernel not in self.kernels:
            raise SearchError(f"kernel {kernel} is not one of {self.kernels}")
        big = self.max_kernel
        for small in [k for k in self.kernels[::-1] if kernel <= k < self.max_kernel]:
            start = (big - small) // 2
            w = w[:, :, start:start + small, start:start + small]
            if self.transform:
                m = self.ks_matrix[f"{big}to{small}"]
                shape = w.shape
                w = F.linear(w.reshape(-1, small * small), m).reshape(shape)
            big = small
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        k = self.active_kernel if self.depthwise else self.max_kernel
        if self.depthwise:
            n = cin
            w = self.kernel_weight(k, n)
            groups = n
        else:
            n = self.active_out
            w = self.conv.weight[:n, :cin]
            groups = 1
        bias = self.conv.bias[:n] if self.conv.bias is not None else None
        y = F.conv2d(_pad_same(x, k, self.stride), w, bias, self.stride, 0, 1, groups)
        return self.act(self._bn(y, n))

    def _bn(self, y: torch.Tensor, n: int) -> torch.Tensor:
        bn = self.bn
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative average (BN recalibration)
                momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(y, bn.running_mean[:n], bn.running_var[:n], bn.weight[:n], bn.bias[:n],
                            self.training, momentum, bn.eps)

    def load_into(self, dst: ConvBnAct, out_channels: int, in_channels: int | None = None) -> None:
        """Copy the active weights into a static :class:`~hwnas.nn.blocks.ConvBnAct`."""
        with torch.no_grad():
            if self.depthwise:
                w = self.kernel_weight(self.active_kernel, out_channels)
            else:
                w = self.conv.weight[:out_channels, :in_channels]
            dst.conv.conv.weight.copy_(w)
            if self.conv.bias is not None:
                dst.conv.conv.bias.copy_(self.conv.bias[:out_channels])
            _copy_bn(dst.bn, self.bn, out_channels)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class ElasticSE(nn.Module):
    """Squeeze-excite whose channels follow the input and whose squeeze width is set per expansion
    (OFA's ``DynamicSE``): the first ``active_squeeze`` reduce filters over the first input channels.
    Styles as :class:`hwnas.nn.blocks.SqueezeExcite`. NCHW, shape kept."""

    def __init__(self, channels: int, squeeze: int, activation: str, se_style: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = make_activation("relu" if se_style == "mobilenetv3" else activation)
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid() if se_style == "mobilenetv3" else nn.Sigmoid()
        self.active_squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, q = x.shape[1], self.active_squeeze
        s = x.mean((2, 3), keepdim=True)
        s = self.act(F.conv2d(s, self.reduce.weight[:q, :c], self.reduce.bias[:q]))
        return x * self.gate(F.conv2d(s, self.expand.weight[:c, :q], self.expand.bias[:c]))

    def load_into(self, dst, channels: int, squeeze: int) -> None:
        with torch.no_grad():
            dst.reduce.weight.copy_(self.reduce.weight[:squeeze, :channels])
            dst.reduce.bias.copy_(self.reduce.bias[:squeeze])
            dst.expand.weight.copy_(self.expand.weight[:channels, :squeeze])
            dst.expand.bias.copy_(self.expand.bias[:channels])


class ElasticMBConv(nn.Module):
    """An MBConv layer of the largest kernel and expansion that runs any smaller one
    (:meth:`set_active`). NCHW ``(N, Cin, H, W) -> (N, Cout, ceil(H/s), ceil(W/s))``.

    Args:
        cin, cout, stride, activation, se_style, residual: the layer (as resolved by ArchSpec.layers).
        kernels: kernel options; mids: middle channels per expansion option; squeezes: SE squeeze
            channels per expansion option (0: no SE).
    """

    def __init__(self, cin: int, cout: int, stride: int, activation: str, se_style: str, residual: bool,
                 kernels: Sequence[int], mids: Sequence[int], squeezes: Sequence[int], transform: bool = True):
        super().__init__()
        mid, sq = max(mids), max(squeezes)
        self.mids, self.squeezes = tuple(mids), tuple(squeezes)
        self.expand = ElasticConvBnAct(cin, mid, 1, 1, activation)
        self.depthwise = ElasticConvBnAct(mid, mid, max(kernels), stride, activation, depthwise=True,
                                          kernels=kernels, transform=transform)
        self.se = ElasticSE(mid, sq, activation, se_style) if sq else None
        self.project = ElasticConvBnAct(mid, cout, 1, 1, None)
        self.has_residual = residual
        self.cout = cout

    def set_active(self, kernel: int, expansion_index: int) -> None:
        self.depthwise.active_kernel = kernel
        self.expand.active_out = self.mids[expansion_index]
        if self.se is not None:
            self.se.active_squeeze = self.squeezes[expansion_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.has_residual else y

    def load_into(self, dst: MBConv, cin: int) -> None:
        mid = self.expand.active_out
        self.expand.load_into(dst.expand, mid, cin)
        self.depthwise.load_into(dst.depthwise, mid)
        if self.se is not None:
            self.se.load_into(dst.se, mid, self.se.active_squeeze)
        self.project.load_into(dst.project, self.cout, mid)


class _FixedDS(nn.Module):
    """The fixed depthwise-separable first block (no elasticity; any input size). NCHW."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, activation: str, se: int, se_style: str,
                 residual: bool):
        super().__init__()
        self.depthwise = ElasticConvBnAct(cin, cin, kernel, stride, activation, depthwise=True)
        self.se = ElasticSE(cin, se, activation, se_style) if se else None
        self.project = ElasticConvBnAct(cin, cout, 1, 1, None)
        self.has_residual = residual
        self.cin, self.cout = cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(x)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.has_residual else y

    def load_into(self, dst: DSConv) -> None:
        self.depthwise.load_into(dst.depthwise, self.cin)
        if self.se is not None:
            self.se.load_into(dst.se, self.cin, self.se.active_squeeze)
        self.project.load_into(dst.project, self.cout, self.cin)


# ============================================================================ the supernet
class ElasticSupernet(nn.Module):
    """Once-for-all's elastic supernet over an :class:`ElasticSpace` (see the module docstring).

    Input ``(N, in_channels, R, R)`` float NCHW at the member's resolution ``R``; output
    ``(N, num_classes)`` logits. ``forward(x, choices)`` runs that member; without ``choices`` the
    member last given to :meth:`set_active` (initially the largest).

    Args:
        space: the :class:`ElasticSpace`.
        transform: OFA's kernel transformation matrices (False: plain centre crop of the largest kernel).
    """

    def __init__(self, space: ElasticSpace, *, transform: bool = True):
        super().__init__()
        self.space = space
        largest = space.largest()
        arch = space.arch(largest)
        self.se_style = arch.se_style
        layers = {la.name: la for la in arch.layers()}
        self.n_fixed = len(getattr(space.base, "fixed_first", ()))
        stem = layers["stem"]
        self.stem = ElasticConvBnAct(stem.in_shape[2], stem.out_shape[2], stem.block.kernel, stem.block.stride,
                                     stem.block.activation)
        self.fixed = nn.ModuleList()
        for j in range(self.n_fixed):
            la = layers[f"stages.0.{j}"]
            if la.block.kind != "dsconv":
                raise SearchError(f"once-for-all: the fixed first block of '{space.base.name}' must be a dsconv block")
            self.fixed.append(_FixedDS(la.in_shape[2], la.out_shape[2], la.block.kernel, la.block.stride,
                                       la.block.activation, la.se_channels(self.se_style), self.se_style,
                                       la.has_residual))
        # per expansion option: middle and squeeze channels of each searchable layer
        per_e = []
        for ei in range(len(space.expansions)):
            c = list(largest)
            for i in range(len(space.layer_names)):
                c[2 * i + 1] = ei
            lay = [la for la in space.arch(tuple(c)).layers() if la.name.startswith("stages.")][self.n_fixed:]
            per_e.append([(la.mid_channels, la.se_channels(self.se_style)) for la in lay])
        blocks = [la for la in arch.layers() if la.name.startswith("stages.")][self.n_fixed:]
        self.blocks = nn.ModuleList()
        for i, la in enumerate(blocks):
            self.blocks.append(ElasticMBConv(la.in_shape[2], la.out_shape[2], la.block.stride, la.block.activation,
                                             self.se_style, la.has_residual, space.kernels,
                                             [per_e[ei][i][0] for ei in range(len(space.expansions))],
                                             [per_e[ei][i][1] for ei in range(len(space.expansions))],
                                             transform=transform))
        head = layers.get("head")
        self.head = (ElasticConvBnAct(head.in_shape[2], head.out_shape[2], head.block.kernel, head.block.stride,
                                      head.block.activation) if head is not None else None)
        cls = layers["classifier"]
        self.classifier = Classifier(cls.in_shape[2], arch.classifier.num_classes, arch.classifier.dropout,
                                     arch.head.prelogits_channels, arch.head.prelogits_activation)
        init_weights(self)
        for m in self.modules():
            if isinstance(m, ElasticConvBnAct) and m.ks_matrix:
                for p in m.ks_matrix.values():
                    nn.init.eye_(p)
        for b in self.blocks:  # residual blocks start as identities (Goyal et al. 2017, §5.1)
            if b.has_residual:
                nn.init.zeros_(b.project.bn.weight)
        self.active: Choices = largest
        self._cfg = space.config(largest)

    def set_active(self, choices: Sequence[int]) -> None:
        """Make ``choices`` the member that :meth:`forward` runs without explicit choices."""
        self.active = self.space.check(choices)
        self._cfg = self.space.config(self.active)
        ei = [self.space.expansions.index(e) for e in self._cfg.expansions]
        for b, k, e in zip(self.blocks, self._cfg.kernels, ei):
            b.set_active(k, e)

    def forward(self, x: torch.Tensor, choices: Sequence[int] | None = None) -> torch.Tensor:
        if choices is not None and tuple(choices) != self.active:
            self.set_active(choices)
        x = self.stem(x)
        for m in self.fixed:
            x = m(x)
        active = self.space.active_layers(self.active)
        for b, on in zip(self.blocks, active):
            if on:
                x = b(x)
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x)

    def subnet(self, choices: Sequence[int]) -> HwnasNet:
        """The member as a plain :class:`~hwnas.nn.build.HwnasNet` (its ArchSpec, at its resolution) with
        the active weights copied (OFA's ``get_active_subnet``); eval mode, on the supernet's device
        and dtype. ``subnet(c)(x)`` equals ``self(x, c)`` in eval mode."""
        self.set_active(choices)
        arch = self.space.arch(choices)
        p0 = next(self.parameters())
        with torch.random.fork_rng(devices=[]):
            net = HwnasNet(arch)
        net.to(device=p0.device, dtype=p0.dtype)
        layers = {la.name: la for la in arch.layers()}
        self.stem.load_into(net.stem, layers["stem"].out_shape[2], layers["stem"].in_shape[2])
        for j, m in enumerate(self.fixed):
            m.load_into(net.stages[0][j])
        active = self.space.active_layers(choices)
        it = iter(zip(self.blocks, active))
        for si in range(self.n_fixed and 1, len(arch.stages)):
            for bi, block in enumerate(arch.stages[si]):
                b, on = next(it)
                if on:
                    b.load_into(net.stages[si][bi], layers[f"stages.{si}.{bi}"].in_shape[2])
        if self.head is not None:
            la = layers["head"]
            self.head.load_into(net.head, la.out_shape[2], la.in_shape[2])
        net.classifier.load_state_dict(self.classifier.state_dict())
        net.arch = arch
        return net.eval()


__all__ = ["ElasticSpace", "ElasticConfig", "ElasticSupernet", "ElasticConvBnAct", "ElasticMBConv", "ElasticSE"]
