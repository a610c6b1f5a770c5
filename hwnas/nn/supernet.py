"""Weight-sharing supernets for layer-wise spaces (every space: the stage-wise ones through their
layer-wise relaxation, :class:`hwnas.spaces.mobile.RelaxedStagewiseSpace`).

A :class:`Supernet` holds the space's fixed parts (stem, fixed first blocks, head, classifier) once
and, per searchable layer, the candidates in one of four forms (``mode``):

``fbnet`` — Wu et al. 2019 (FBNet), §3.3: every candidate runs; the layer output is
    ``Σ_i m_i · b_i(x)`` with ``m = GumbelSoftmax(θ, τ)``. The temperature starts at 5.0 and is
    multiplied by ``exp(-0.045)`` per epoch (:meth:`Supernet.set_epoch`) down to a floor
    (``min_temperature``, default 0.1 ≈ its value after FBNet's 90 epochs). ``noise="batch"`` (default)
    draws one Gumbel sample per layer and batch; ``noise="sample"`` one per image (each image then
    mixes the candidates with its own weights, as the paper's per-sample formulation; same cost).
``proxyless`` — Cai et al. 2019 (ProxylessNAS), §3.2: binary gates. In a weight step one path per
    layer is sampled from ``p = softmax(α)`` and only that path runs (memory and compute of one
    path). In an architecture step (inside :meth:`Supernet.arch_step`) two paths are sampled
    without replacement, the gate is binarised between them, and the BinaryConnect-style gradient
    ``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j (δ_ij − p_i)`` flows through a straight-through gate
    ``g = onehot + p − stop_grad(p)``; the inactive path runs without autograd (its output is
    needed only for ``∂L/∂g``). The latency term of that step weights only the two sampled paths,
    with the softmax over their α (the reference code's ``current_prob_over_ops``), so with Adam
    β1 = 0 no unsampled α moves. :meth:`Supernet.after_arch_step` rescales the two updated α so the
    unsampled paths keep their probabilities (the paper's reference code, mit-han-lab/proxylessnas
    ``MixedEdge``). Path decisions are drawn on the host with the CPU RNG (:func:`host_probs`).
``singlepath`` — Stamoulis et al. 2019 (Single-Path NAS), §3: one superkernel per layer, an MBConv
    with the layer's largest kernel and expansion. Trainable thresholds decide, through indicators
    ``1(‖w_group‖² > t)``, whether the outer kernel rings are used (kernel 3 → 5 → 7) and which
    nested channel groups of the expansion are used (e.g. e3 = first half of e6's channels). Where
    the layer may be ``skip``, the first channel group's indicator decides skip vs. block (paper
    §3.2: "the first 50 % of the channels ... decides whether the layer is skipped").
    Indicators are hard (0/1) in the forward pass and use the sigmoid relaxation for gradients
    (paper §3.3). We compare ``log`` of the *mean* squared weight with the threshold (the paper
    uses the squared L2 norm), which makes thresholds comparable across groups of different size;
    thresholds start 1.0 below the initial log mean square, so the search starts from the largest
    block. Mapping of the spaces: ``mobilenetv2`` (k∈{3,5,7} × e∈{3,6} + skip) maps exactly;
    ``fbnet`` maps k∈{3,5} × e∈{1,3,6} + skip, and its grouped ``g2`` candidates, which a
    superkernel cannot express, are never selected. Beyond the paper (its space has plain MBConv
    only; see :class:`Superkernel`): squeeze-excite layers carry one SE sliced with the expansion
    (``efficientnet``, ``mobilenetv3``, ``efficientnetv2``), fused-MBConv layers a
    :class:`FusedSuperkernel` (kernel rings and expansion groups of the full k×k conv), ``ds``
    layers a :class:`DSSuperkernel` (kernel only); depth is the skip decision of each optional
    layer of the layer-wise and relaxed stage-wise spaces. MnasNet's layers offer conv, ds and
    MBConv with and without SE and identity skip: the superkernel holds the MBConv candidates,
    with SE on/off as a threshold decision, and the first identity-skip setting per (kernel,
    expansion, SE); conv, ds and the no-skip duplicates are never selected.
``spos`` — Guo et al. 2020 (Single Path One-Shot): uniform single-path sampling; ``forward(x)``
    in training samples one candidate per layer uniformly, ``forward(x, choices)`` runs exactly
    that path. It has no architecture parameters; the RL/evolution/random searchers use it as a
    weight-sharing accuracy evaluator.

Candidate weights (``weights=``, all modes but ``singlepath``): ``shared`` (default) makes the
ungrouped MBConv candidates of a layer slices of one superkernel (centre-cropped kernels, leading
channels; once-for-all's weight entanglement), each path still computed at its own size;
``independent`` gives every candidate its own module, as the FBNet/ProxylessNAS papers do. Sharing
is what lets a supernet learn in a few CPU epochs (see :class:`MixedLayer`).

Common API: :meth:`arch_parameters`, :meth:`weight_parameters`, ``forward(x, choices=None)``,
:meth:`derive` (argmax member), :meth:`probabilities` (per layer), :meth:`subnet` (an ordinary
:class:`hwnas.nn.HwnasNet` with weights copied — once-for-all's ``get_active_subnet`` idea; search
code never exports the supernet), :meth:`expected_latency` (differentiable, from a
``LayerLatencyTable``). Tensors are NCHW. Device- and dtype-agnostic: every tensor the supernet
creates (masks, gates, latency weights) follows its parameters (``net.to(device)``); the tests guard
this on the ``meta`` device.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.arch import Layer, same_padding
from hwnas.errors import SearchError
from hwnas.nn.blocks import BN_EPS, BN_MOMENTUM, SqueezeExcite, make_activation
from hwnas.nn.build import HwnasNet, init_weights

MODES = ("fbnet", "proxyless", "singlepath", "spos")


def host_probs(p: torch.Tensor) -> torch.Tensor:
    """``p`` detached as float32 on the CPU, for sampling decisions with the CPU generator.

    Path decisions are drawn on the host with the global CPU RNG whatever device the supernet is on:
    the draws are then the same on every device and covered by the checkpoints' RNG state. A tensor
    on the ``meta`` device has no values (tests use it to catch tensors created on the CPU): it
    samples as uniform.
    """
    if p.is_meta:
        return torch.full(p.shape, 1.0 / p.shape[-1])
    return p.detach().float().cpu()


def _slot_layers(space) -> list[list[Layer]]:
    """Per searchable layer, the resolved :class:`Layer` of each candidate (actual channels, shapes)."""
    n_fixed = len(getattr(space, "fixed_first", ()))
    slots = space.slots
    widest = max(len(s.candidates) for s in slots)
    out: list[list[Layer | None]] = [[None] * len(s.candidates) for s in slots]
    for j in range(widest):
        member = tuple(j if j < len(s.candidates) else 0 for s in slots)
        layers = space.decode(member).layers()
        for i, s in enumerate(slots):
            if j < len(s.candidates):
                out[i][j] = layers[1 + n_fixed + i]
    return out  # type: ignore[return-value]


class _Indicator(torch.autograd.Function):
    """``1(x > 0)`` forward, ``σ'(x)`` backward (Single-Path NAS §3.3's sigmoid relaxation)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 - s)


def indicator(x: torch.Tensor) -> torch.Tensor:
    """Hard 0/1 indicator of ``x > 0`` with the sigmoid-relaxed gradient."""
    return _Indicator.apply(x)


class Superkernel(nn.Module):
    """Single-Path NAS superkernel MBConv for one searchable layer (NCHW).

    1×1 expansion to the largest mid width → BN → act → k_max×k_max depthwise (TF-SAME for
    k_max, whose centre crops are exactly the TF-SAME k×k convs) → BN → act → channel mask of the
    selected nested groups → [squeeze-excite] → 1×1 projection → BN → (+ identity when the shape
    is kept). :class:`FusedSuperkernel` is the fused-MBConv form.

    Squeeze-excite (deviation from Single-Path NAS, whose space has no SE): where the layer's
    candidates carry SE (fixed per stage in ``efficientnet``, ``mobilenetv3``, ``efficientnetv2``),
    the superkernel carries one SE module sized for the largest expansion and the selected
    expansion uses its slice, as once-for-all's ``DynamicSE`` (Cai et al. 2020): the squeeze conv
    reads the selected mid channels (the masked ones are 0, so the full conv equals the sliced
    one) and its hidden units are masked to the selected expansion's squeeze width
    (``Layer.se_channels``: constant for the ``efficientnet`` style, ``make_divisible(mid/4, 8)`` for
    ``mobilenetv3``). Where the space fixes SE per stage it is a fixed part of the candidate and the
    thresholds stay the paper's (kernel rings and channel groups of the searchable k×k weight).
    Where every (kernel, expansion) is offered with and without SE (MnasNet), SE is one more
    threshold decision in the paper's form: SE is used while ``log mean(w_squeeze²) > t_se``
    (hard in the forward pass, sigmoid-relaxed gradient; the block output is
    ``y · (1 + 1_se · (gate − 1))``), starting on. A layer whose candidates offer SE for some
    (kernel, expansion) only is refused.

    Args:
        layers: the resolved candidate layers of the slot. Candidates of the superkernel's kind
            (``kind``) with ``groups == 1`` shape it; per (kernel, expansion, SE) the first one is the
            candidate the superkernel stands for (later duplicates such as MnasNet's no-skip
            variants, other kinds and grouped convs are never selected); ``skip`` enables the skip
            decision.
        se_style: the architecture's SE style (``efficientnet`` | ``mobilenetv3``,
            :attr:`hwnas.arch.ArchSpec.se_style`).

    Raises:
        SearchError: no candidate of the superkernel's kind, or candidates that disagree on SE.
    """

    #: the block kind the superkernel holds
    kind = "mbconv"

    def __init__(self, layers: Sequence[Layer], se_style: str = "efficientnet"):
        super().__init__()
        convs = [lay for lay in layers if lay.block.kind == self.kind and lay.block.groups == 1]
        if not convs:
            raise SearchError(f"singlepath: a layer has no ungrouped {self.kind} candidate to build a superkernel from")
        reps: dict[tuple[int, float, bool], Layer] = {}  # first candidate per (kernel, expansion, SE)
        for lay in convs:
            reps.setdefault((lay.block.kernel, lay.block.expansion, lay.block.se_ratio > 0), lay)
        ref = convs[0]
        ratios = {lay.block.se_ratio for lay in reps.values() if lay.block.se_ratio > 0}
        ke = {(k, e) for k, e, _ in reps}
        with_se, plain = {(k, e) for k, e, s in reps if s}, {(k, e) for k, e, s in reps if not s}
        if len(ratios) > 1 or not (with_se in (set(), ke) and plain in (set(), ke)):
            raise SearchError(f"singlepath: the candidates of layer '{ref.name}' ({', '.join(sorted(lay.block.to_compact() for lay in reps.values()))}) "
                              "disagree on squeeze-excite; the superkernel carries SE for every (kernel, expansion) "
                              "or for none, or offers it as a decision for all")
        self.in_shape, self.out_shape = ref.in_shape, ref.out_shape
        self.se_ratio = ratios.pop() if ratios else 0.0
        self.se_choice = bool(with_se) and bool(plain)  # MnasNet: SE on/off is a decision
        self.se_style = se_style
        self.kernels = sorted({lay.block.kernel for lay in convs})
        self.expansions = sorted({lay.block.expansion for lay in convs})
        by_e = {e: next(lay for lay in reps.values() if lay.block.expansion == e and (lay.block.se_ratio > 0) ==
                        (self.se_ratio > 0)) for e in self.expansions}
        self.group_ends = [by_e[e].mid_channels for e in self.expansions]          # nested channel groups
        self.se_ends = [by_e[e].se_channels(se_style) for e in self.expansions]    # nested squeeze widths
        self.has_skip = any(lay.block.kind == "skip" for lay in layers)
        self.kmax, self.mid = max(self.kernels), max(self.group_ends)
        self.stride = ref.block.stride
        self.act_name = ref.block.activation
        self.residual = ref.has_residual
        h, w, cin = ref.in_shape
        cout = ref.out_shape[2]
        self._build_kxk(cin)
        self.se = SqueezeExcite(self.mid, max(self.se_ends), self.act_name, se_style) if self.se_ratio > 0 else None
        self.project = nn.Conv2d(self.mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_activation(self.act_name)
        self.pad = (*same_padding(w, self.kmax, self.stride), *same_padding(h, self.kmax, self.stride))
        self.pads = {k: (*same_padding(w, k, self.stride), *same_padding(h, k, self.stride)) for k in self.kernels}
        # constant 0/1 masks as non-persistent buffers: they follow .to(device/dtype) and stay out of
        # the state_dict. core_mask: the smallest kernel; ring_masks[i]: the ring added by kernels[i+1];
        # group_masks[g]: the mid channels of nested group g; se_masks[g]: its squeeze channels.
        core = torch.zeros(self.kmax, self.kmax)
        o = (self.kmax - self.kernels[0]) // 2
        core[o:o + self.kernels[0], o:o + self.kernels[0]] = 1
        rings = torch.zeros(max(1, len(self.kernels) - 1), self.kmax, self.kmax)
        for i, (prev, k) in enumerate(zip(self.kernels, self.kernels[1:])):
            oo, oi = (self.kmax - k) // 2, (self.kmax - prev) // 2
            rings[i, oo:oo + k, oo:oo + k] = 1
            rings[i, oi:oi + prev, oi:oi + prev] = 0
        self.register_buffer("core_mask", core, persistent=False)
        self.register_buffer("ring_masks", rings, persistent=False)
        self.register_buffer("group_masks", self._nested(self.group_ends), persistent=False)
        self.register_buffer("se_masks", self._nested(self.se_ends), persistent=False)
        # thresholds: one per extra kernel ring, one per channel group (the first only with skip)
        with torch.no_grad():
            k_init = [self._ring_log_ms(k).item() - 1.0 for k in self.kernels[1:]]
            e_init = [self._log_ms(self._group(g)).item() - 1.0 for g in range(len(self.group_ends))]
        self.t_kernel = nn.Parameter(torch.tensor(k_init))
        self.t_expand = nn.Parameter(torch.tensor(e_init))
        if self.se_choice:  # SE on while the squeeze weights' log mean square exceeds it; starts on
            with torch.no_grad():
                self.t_se = nn.Parameter(torch.tensor([self._log_ms(self.se.reduce.weight).item() - 1.0]))
        else:
            self.register_parameter("t_se", None)
        #: the SE flag of every configuration of a layer without the SE decision
        self.se_default = int(self.se is not None and not self.se_choice)
        self.forced: tuple[int, int, int] | None = None  # (kernel index, number of groups, SE on) or None

    @staticmethod
    def _nested(ends: Sequence[int]) -> torch.Tensor:
        """``(groups, max(ends))`` 0/1 rows: row g marks channels ``ends[g-1]:ends[g]``."""
        out = torch.zeros(len(ends), max(1, max(ends)))
        start = 0
        for g, end in enumerate(ends):
            out[g, start:end] = 1
            start = max(start, end)
        return out

    # -- the searchable k×k weight (subclasses: another conv)
    def _build_kxk(self, cin: int) -> None:
        """MBConv: 1×1 expansion ``cin → mid`` + BN, the k_max depthwise weight ``(mid, 1, k, k)`` + BN."""
        self.expand = nn.Conv2d(cin, self.mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.dw_weight = nn.Parameter(torch.empty(self.mid, 1, self.kmax, self.kmax))
        nn.init.kaiming_normal_(self.dw_weight, mode="fan_out")
        self.bn2 = nn.BatchNorm2d(self.mid, eps=BN_EPS, momentum=BN_MOMENTUM)

    @property
    def kxk_weight(self) -> torch.Tensor:
        """The k_max×k_max weight whose rings and output-channel groups the thresholds judge,
        ``(mid, in/groups, k_max, k_max)``."""
        return self.dw_weight

    def _features(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Masked path up to the mid channels: ``w`` is the k_max weight with the kernel mask applied."""
        y = self.act(self.bn1(self.expand(x)))
        y = F.conv2d(F.pad(y, self.pad), w, stride=self.stride, groups=self.mid)
        return self.act(self.bn2(y))

    def _sliced_features(self, x: torch.Tensor, k: int, mid: int) -> torch.Tensor:
        """Sliced path up to the mid channels: kernel ``k`` (centre crop), first ``mid`` channels."""
        o = (self.kmax - k) // 2
        y = self.act(self._bn(F.conv2d(x, self.expand.weight[:mid]), self.bn1, mid, self.training))
        y = F.conv2d(F.pad(y, self.pads[k]), self.dw_weight[:mid, :, o:o + k, o:o + k], stride=self.stride,
                     groups=mid)
        return self.act(self._bn(y, self.bn2, mid, self.training))

    def _load_features(self, block: nn.Module, k: int, mid: int) -> None:
        o = (self.kmax - k) // 2
        block.expand.conv.conv.weight.copy_(self.expand.weight[:mid])
        _copy_bn(block.expand.bn, self.bn1, mid)
        block.depthwise.conv.conv.weight.copy_(self.dw_weight[:mid, :, o:o + k, o:o + k])
        _copy_bn(block.depthwise.bn, self.bn2, mid)

    # -- weight groups
    def _ring_log_ms(self, k: int) -> torch.Tensor:
        """``log`` mean square of the k×k weights in the ring between kernel ``k`` and the next
        smaller kernel (a masked sum, no boolean indexing: no data-dependent shapes, any device)."""
        w = self.kxk_weight
        mask = self.ring_masks[self.kernels.index(k) - 1].to(w.dtype)
        n = mask.sum() * w.shape[0] * w.shape[1]
        return torch.log((w.pow(2) * mask).sum() / n + 1e-12)

    def _group(self, g: int) -> torch.Tensor:
        start = self.group_ends[g - 1] if g else 0
        return self.kxk_weight[start:self.group_ends[g]]

    @staticmethod
    def _log_ms(w: torch.Tensor) -> torch.Tensor:
        return torch.log(w.pow(2).mean() + 1e-12)

    def indicators(self, soft: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(kernel ring indicators, channel group indicators)``, each a list of 0-d tensors.

        The first group's indicator is constant 1 when the layer cannot be skipped. ``soft``: the
        sigmoid values instead of the hard indicators (for plots / probabilities).
        """
        f = torch.sigmoid if soft else indicator
        ks = [f(self._ring_log_ms(k) - t) for k, t in zip(self.kernels[1:], self.t_kernel)]
        es = [f(self._log_ms(self._group(g)) - t) for g, t in enumerate(self.t_expand)]
        if not self.has_skip:
            es[0] = torch.ones_like(es[0])
        return ks, es

    def se_indicator(self, soft: bool = False) -> torch.Tensor | None:
        """The SE decision's indicator ``1(log ms(w_squeeze) > t_se)`` (0-d), or None without the decision."""
        if not self.se_choice:
            return None
        f = torch.sigmoid if soft else indicator
        return f(self._log_ms(self.se.reduce.weight) - self.t_se[0])

    def selection(self) -> tuple[int, int, int]:
        """Current hard selection: ``(kernel index, number of channel groups used; 0 = skip, SE on)``."""
        if self.forced is not None:
            return self.forced
        with torch.no_grad():
            ks, es = self.indicators()
            s = self.se_indicator()
        kidx = 0
        for v in ks:
            if v.item() < 0.5:
                break
            kidx += 1
        groups = 0
        for v in es:
            if v.item() < 0.5:
                break
            groups += 1
        if groups == 0:
            return 0, 0, 0
        return kidx, groups, (int(s.item() > 0.5) if s is not None else self.se_default)

    def candidate_weights(self, soft: bool = False) -> dict[tuple[int, int, int], torch.Tensor]:
        """``{(kernel index, groups, SE on): weight}`` — product-form weights of each configuration.

        With hard indicators exactly one weight is 1 (the selected configuration); gradients flow
        through the sigmoid relaxation. ``groups == 0`` is skip (``(0, 0, 0)``).
        """
        one = self.kxk_weight.new_ones(())
        if self.forced is not None:
            return {self.forced: one}
        ks, es = self.indicators(soft=soft)
        kw, run = [], one
        for v in ks:
            kw.append(run * (1 - v))
            run = run * v
        kw.append(run)
        out = {}
        run = one
        for g, v in enumerate(es):
            if g == 0 and not self.has_skip:
                pass
            elif g == 0:
                out[(0, 0)] = 1 - v
            run = run * v
            stop = (1 - es[g + 1]) if g + 1 < len(es) else one
            for ki, w in enumerate(kw):
                out[(ki, g + 1)] = run * stop * w
        s = self.se_indicator(soft=soft)
        full = {}
        for (ki, g), w in out.items():
            if g == 0:
                full[(0, 0, 0)] = w
            elif s is None:
                full[(ki, g, self.se_default)] = w
            else:
                full[(ki, g, 1)] = w * s
                full[(ki, g, 0)] = w * (1 - s)
        return full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.kxk_weight
        if self.forced is not None:
            kidx, groups, se_on = self.forced
            if groups == 0:
                return x
            one, zero = w.new_ones(()), w.new_zeros(())
            ks = [one if i < kidx else zero for i in range(len(self.kernels) - 1)]
            es = [one if g < groups else zero for g in range(len(self.group_ends))]
            s_ind = (one if se_on else zero) if self.se_choice else None
        else:
            ks, es = self.indicators()
            s_ind = self.se_indicator()
        # k×k kernel: core + g5·(ring5 + g7·ring7)
        kmask = self.core_mask.to(w.dtype)
        run = w.new_ones(())
        for i, v in enumerate(ks):
            run = run * v
            kmask = kmask + run * self.ring_masks[i].to(w.dtype)
        # channel mask (mid channels) and squeeze mask (SE hidden units): nested groups
        cmask, smask = w.new_zeros(self.mid), w.new_zeros(self.se_masks.shape[1])
        run = w.new_ones(())
        for g, v in enumerate(es):
            run = run * v
            cmask = cmask + run * self.group_masks[g].to(w.dtype)
            smask = smask + run * self.se_masks[g].to(w.dtype)
        y = self._features(x, w * kmask) * cmask.view(1, -1, 1, 1)
        if self.se is not None:  # masked channels are 0: the full squeeze conv reads only the selected ones
            se = self.se
            s = se.act(se.reduce(y.mean((2, 3), keepdim=True))) * smask.view(1, -1, 1, 1)
            gate = se.gate(se.expand(s))
            y = y * gate if s_ind is None else y * (1 + s_ind * (gate - 1))  # SE decision: gate or identity
        y = self.bn3(self.project(y))
        if self.has_skip:  # all groups off = skip: the block contributes nothing (not BN's bias)
            y = y * es[0]
        if self.residual:
            return x + y
        return y  # no skip possible here: the first group is always on

    @staticmethod
    def _bn(y: torch.Tensor, bn: nn.BatchNorm2d, n: int | None, training: bool) -> torch.Tensor:
        sl = slice(0, n)
        return F.batch_norm(y, bn.running_mean[sl], bn.running_var[sl], bn.weight[sl], bn.bias[sl], training,
                            bn.momentum if bn.momentum is not None else 0.0, bn.eps)

    def run_path(self, x: torch.Tensor, kidx: int, groups: int, se: int | None = None) -> torch.Tensor:
        """Run exactly one configuration with *sliced* weights (the cost of that block alone):
        kernel ``kernels[kidx]`` (centre crop), the first ``group_ends[groups-1]`` mid channels and
        the first ``se_ends[groups-1]`` squeeze channels, SE when ``se`` (default: the layer's fixed
        SE); ``groups == 0`` is skip. Computes the same
        function as the :class:`hwnas.nn.blocks.MBConv` (or ``FusedMBConv``) that :meth:`load_into`
        fills (once-for-all's elastic kernel/width, Cai et al. 2020 §3.1). BatchNorm statistics of the
        used channels are updated in place in training mode."""
        if groups == 0:
            return x
        mid = self.group_ends[groups - 1]
        k = self.kernels[kidx]
        se_on = self.se_default if se is None else int(se)
        momentum_none = self.bn1.momentum is None
        if momentum_none and self.training:  # recalibration (cumulative average): use the module path
            self.forced = (kidx, groups, se_on)
            try:
                return self(x)
            finally:
                self.forced = None
        y = self._sliced_features(x, k, mid)
        if self.se is not None and se_on:
            se, sq = self.se, self.se_ends[groups - 1]
            s = se.act(F.conv2d(y.mean((2, 3), keepdim=True), se.reduce.weight[:sq, :mid], se.reduce.bias[:sq]))
            y = y * se.gate(F.conv2d(s, se.expand.weight[:mid, :sq], se.expand.bias[:mid]))
        y = self._bn(F.conv2d(y, self.project.weight[:, :mid]), self.bn3, None, self.training)
        return x + y if self.residual else y

    def load_into(self, block: nn.Module, kernel: int, expansion_index: int) -> None:
        """Copy the sliced superkernel weights into the block (``MBConv`` / ``FusedMBConv``) built for
        (kernel, expansion)."""
        mid = self.group_ends[expansion_index]
        with torch.no_grad():
            self._load_features(block, kernel, mid)
            if self.se is not None and isinstance(getattr(block, "se", None), SqueezeExcite):
                sq = self.se_ends[expansion_index]
                block.se.reduce.weight.copy_(self.se.reduce.weight[:sq, :mid])
                block.se.reduce.bias.copy_(self.se.reduce.bias[:sq])
                block.se.expand.weight.copy_(self.se.expand.weight[:mid, :sq])
                block.se.expand.bias.copy_(self.se.expand.bias[:mid])
            block.project.conv.conv.weight.copy_(self.project.weight[:, :mid])
            _copy_bn(block.project.bn, self.bn3, None)


class FusedSuperkernel(Superkernel):
    """Superkernel of a fused-MBConv layer (EfficientNetV2's ``er`` blocks, Tan & Le 2021 §3.2).

    k_max×k_max conv ``in → mid`` (TF-SAME, stride) → BN → act → channel mask → [SE] → 1×1
    projection → BN → (+ identity). Deviation from Single-Path NAS (which searches depthwise kernels
    only): the kernel rings and the expansion groups are judged on the full conv's weights
    ``(mid, in, k, k)`` — ring ``r``'s indicator on the mean square of every input and output
    channel's ring weights, group ``g``'s on its output channels — so kernel and expansion are both
    thresholds on one weight, as for the depthwise superkernel.
    """

    kind = "fused_mbconv"

    def _build_kxk(self, cin: int) -> None:
        self.conv_weight = nn.Parameter(torch.empty(self.mid, cin, self.kmax, self.kmax))
        nn.init.kaiming_normal_(self.conv_weight, mode="fan_out")
        self.bn1 = nn.BatchNorm2d(self.mid, eps=BN_EPS, momentum=BN_MOMENTUM)

    @property
    def kxk_weight(self) -> torch.Tensor:
        return self.conv_weight

    def _features(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(F.conv2d(F.pad(x, self.pad), w, stride=self.stride)))

    def _sliced_features(self, x: torch.Tensor, k: int, mid: int) -> torch.Tensor:
        o = (self.kmax - k) // 2
        y = F.conv2d(F.pad(x, self.pads[k]), self.conv_weight[:mid, :, o:o + k, o:o + k], stride=self.stride)
        return self.act(self._bn(y, self.bn1, mid, self.training))

    def _load_features(self, block: nn.Module, k: int, mid: int) -> None:
        o = (self.kmax - k) // 2
        block.expand.conv.conv.weight.copy_(self.conv_weight[:mid, :, o:o + k, o:o + k])
        _copy_bn(block.expand.bn, self.bn1, mid)


class DSSuperkernel(Superkernel):
    """Superkernel of a depthwise-separable layer (EfficientNet's first stage: ``ds`` k3/k5 + SE).

    k_max×k_max depthwise conv on the input channels (TF-SAME, stride) → BN → act → [SE] → 1×1
    projection → BN → (+ identity). There is no expansion to search: one channel group (all input
    channels), so the kernel rings are the only thresholds (and the group's indicator decides skip
    where the layer may be skipped). An extension of Single-Path NAS, whose superkernel is MBConv's.
    """

    kind = "dsconv"

    def _build_kxk(self, cin: int) -> None:
        self.dw_weight = nn.Parameter(torch.empty(self.mid, 1, self.kmax, self.kmax))
        nn.init.kaiming_normal_(self.dw_weight, mode="fan_out")
        self.bn1 = nn.BatchNorm2d(self.mid, eps=BN_EPS, momentum=BN_MOMENTUM)

    def _features(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(F.conv2d(F.pad(x, self.pad), w, stride=self.stride, groups=self.mid)))

    def _sliced_features(self, x: torch.Tensor, k: int, mid: int) -> torch.Tensor:
        o = (self.kmax - k) // 2
        y = F.conv2d(F.pad(x, self.pads[k]), self.dw_weight[:mid, :, o:o + k, o:o + k], stride=self.stride,
                     groups=mid)
        return self.act(self._bn(y, self.bn1, mid, self.training))

    def _load_features(self, block: nn.Module, k: int, mid: int) -> None:
        o = (self.kmax - k) // 2
        block.depthwise.conv.conv.weight.copy_(self.dw_weight[:mid, :, o:o + k, o:o + k])
        _copy_bn(block.depthwise.bn, self.bn1, mid)


def make_superkernel(layers: Sequence[Layer], se_style: str = "efficientnet") -> Superkernel:
    """The superkernel of one searchable layer: the :attr:`hwnas.ops.OpKind.superkernel` of the first
    kind of the op vocabulary (:data:`hwnas.ops.OP_KINDS` order) among its ungrouped candidates
    (MnasNet's layers offer conv, ds and MBConv: the MBConv ones are searched).

    Raises:
        SearchError: no candidate of a kind a superkernel holds (e.g. only plain convs).
    """
    from hwnas.ops import OP_KINDS, superkernel_class

    kinds = {lay.block.kind for lay in layers if lay.block.groups == 1}
    for kind in OP_KINDS:
        if kind.superkernel and kind.name in kinds:
            return superkernel_class(kind.name)(layers, se_style)
    held = ", ".join(k.name for k in OP_KINDS if k.superkernel)
    raise SearchError(f"singlepath: layer '{layers[0].name}' has no candidate a superkernel holds "
                      f"({held}); use --method fbnet or proxyless")


class _SharedPath(nn.Module):
    """One candidate of a :class:`MixedLayer` that runs a slice of the layer's superkernel."""

    def __init__(self, sk: Superkernel, kidx: int, groups: int):
        super().__init__()
        object.__setattr__(self, "sk", sk)  # not registered: the MixedLayer owns the superkernel
        self.kidx, self.groups = kidx, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sk.run_path(x, self.kidx, self.groups)


class MixedLayer(nn.Module):
    """The candidates of one searchable layer, indexable in decision order (``layer[j](x)``).

    ``weights="independent"``: every candidate has its own module (the papers' supernets).
    ``weights="shared"``: the ungrouped MBConv candidates are slices of one superkernel (largest
    kernel × largest expansion; smaller kernels are centre crops, smaller expansions the first
    channels — once-for-all's weight entanglement), grouped candidates keep their own module and
    ``skip`` is the identity. Sharing is what lets a supernet learn within a few CPU epochs:
    with independent weights each candidate sees 1/n of the steps, and a single-path supernet on
    MNIST stayed at chance accuracy for the first 300 steps in our measurement (docs/search.md).
    """

    def __init__(self, layers: Sequence[Layer], se_style: str, weights: str):
        super().__init__()
        from hwnas.nn.blocks import build_layer

        shareable = [j for j, lay in enumerate(layers) if lay.block.kind == "mbconv" and lay.block.groups == 1
                     and lay.block.se_ratio == 0]
        self.sk = Superkernel([layers[j] for j in shareable]) if weights == "shared" and shareable else None
        self.mods = nn.ModuleDict()
        self.route: list[tuple[str, int, int]] = []
        paths: list[nn.Module] = []
        for j, lay in enumerate(layers):
            b = lay.block
            if b.kind == "skip":
                paths.append(nn.Identity())
                self.route.append(("skip", 0, 0))
            elif self.sk is not None and j in shareable:
                cfg = (self.sk.kernels.index(b.kernel), self.sk.expansions.index(b.expansion) + 1)
                paths.append(_SharedPath(self.sk, *cfg))
                self.route.append(("shared", *cfg))
            else:
                self.mods[str(j)] = build_layer(lay, se_style)
                paths.append(self.mods[str(j)])
                self.route.append(("module", j, 0))
        object.__setattr__(self, "paths", paths)

    def __getitem__(self, j: int) -> nn.Module:
        return self.paths[j]

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        return iter(self.paths)

    def load_candidate_into(self, j: int, block: nn.Module) -> None:
        """Copy candidate ``j``'s weights into a block built by :func:`hwnas.nn.blocks.build_layer`."""
        kind, a, b = self.route[j]
        if kind == "shared":
            self.sk.load_into(block, self.sk.kernels[a], b - 1)
        elif kind == "module":
            block.load_state_dict(self.mods[str(a)].state_dict())


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int | None) -> None:
    sl = slice(0, n)
    dst.weight.copy_(src.weight[sl])
    dst.bias.copy_(src.bias[sl])
    dst.running_mean.copy_(src.running_mean[sl])
    dst.running_var.copy_(src.running_var[sl])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class Supernet(nn.Module):
    """A weight-sharing supernet over a layer-wise space (see the module docstring for the modes).

    Args:
        space: a layer-wise :class:`hwnas.spaces.SearchSpace` (has ``slots``), already at the
            resolution / classes / input channels / width of the data.
        mode: ``fbnet`` | ``proxyless`` | ``singlepath`` | ``spos``.
        temperature: initial Gumbel-softmax temperature (fbnet; paper 5.0).
        temperature_decay: per-epoch decay exponent (fbnet; paper 0.045: τ ← τ·e^−0.045).
        min_temperature: floor of the annealed temperature.
        noise: ``batch`` | ``sample`` — one Gumbel draw per batch or per image (fbnet).
        proxyless_paths: paths sampled per architecture step (proxyless; 1 or 2, paper 2).

        weights: ``shared`` (default; candidates of a layer are slices of one superkernel, see
            :class:`MixedLayer`) or ``independent`` (one module per candidate, as in the papers);
            ignored by ``singlepath``, which is a superkernel by definition.

    Input ``(N, in_channels, R, R)`` float NCHW; output ``(N, num_classes)`` logits.

    Raises:
        SearchError: a stage-wise space (mnasnet, efficientnet…) or an unknown mode.
    """

    def __init__(self, space, mode: str = "fbnet", *, temperature: float = 5.0, temperature_decay: float = 0.045,
                 min_temperature: float = 0.1, noise: str = "batch", proxyless_paths: int = 2,
                 weights: str = "shared"):
        super().__init__()
        if weights not in ("shared", "independent"):
            raise SearchError(f"unknown supernet weights '{weights}'; expected 'shared' or 'independent'")
        if mode not in MODES:
            raise SearchError(f"unknown supernet mode '{mode}'; valid modes: {', '.join(MODES)}")
        if not hasattr(space, "slots"):
            raise SearchError(f"space '{space.name}' is stage-wise; weight-sharing supernets need a layer-wise space "
                              f"(mobilenetv2, fbnet or their -cifar variants); use --method mnasnet|evolution|random "
                              f"with a stage-wise space")
        if noise not in ("batch", "sample"):
            raise SearchError(f"unknown Gumbel noise '{noise}'; expected 'batch' or 'sample'")
        if proxyless_paths not in (1, 2):
            raise SearchError(f"proxyless_paths must be 1 or 2, got {proxyless_paths}")
        self.space = space
        self.mode = mode
        self.tau0, self.tau_decay, self.tau_min = float(temperature), float(temperature_decay), float(min_temperature)
        self.temperature = self.tau0
        self.noise = noise
        self.proxyless_paths = proxyless_paths
        self.weights = weights
        self.slot_layers = _slot_layers(space)
        first = tuple(0 for _ in space.slots)
        base = HwnasNet(space.decode(first))
        self.n_fixed = len(getattr(space, "fixed_first", ()))
        self.stem = base.stem
        self.fixed = base.stages[0] if self.n_fixed else nn.Sequential()
        self.head = base.head
        self.classifier = base.classifier
        se_style = space.decode(first).se_style
        if mode == "singlepath":
            self.layers_ = nn.ModuleList([make_superkernel(lays, se_style) for lays in self.slot_layers])
            self.alphas = nn.ParameterList()
        else:
            self.layers_ = nn.ModuleList([MixedLayer(lays, se_style, weights) for lays in self.slot_layers])
            init_weights(self.layers_)
            n_alpha = len(self.slot_layers) if mode in ("fbnet", "proxyless") else 0
            # α ~ N(0, 1e-3) (ProxylessNAS reference code, init_ratio 1e-3): near-uniform probabilities
            # without exact ties, so the argmax before any update is a random member, not candidate 0
            self.alphas = nn.ParameterList([nn.Parameter(1e-3 * torch.randn(len(self.slot_layers[i])))
                                            for i in range(n_alpha)])
        for m in self.modules():  # residual blocks start as identities (Goyal et al. 2017, §5.1)
            if getattr(m, "has_residual", False) and hasattr(m, "project"):
                nn.init.zeros_(m.project.bn.weight)
            elif isinstance(m, Superkernel) and m.residual:
                nn.init.zeros_(m.bn3.weight)
        self._arch_phase = False
        self._last_weights: list[torch.Tensor] | None = None  # fbnet: last Gumbel weights (mean over batch)
        self._sampled: list[tuple[int, ...]] | None = None     # proxyless: sampled paths of the last step
        self._current_probs: list[torch.Tensor] | None = None  # proxyless: current_prob_over_ops (arch step)
        # proxyless: (α indices, binary gate over them) per layer of the last architecture step
        self._gates: list[tuple[list[int], torch.Tensor]] = []
        self._alpha_before: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """Architecture parameters: α per layer (fbnet, proxyless) or thresholds (singlepath); none for spos."""
        if self.mode == "singlepath":
            return [p for m in self.layers_ for p in (m.t_kernel, m.t_expand, m.t_se) if p is not None]
        return list(self.alphas)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (conv/BN/FC weights)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @property
    def num_layers(self) -> int:
        return len(self.slot_layers)

    # ------------------------------------------------------------------ schedule / phases
    def set_epoch(self, epoch: int) -> float:
        """Anneal the Gumbel temperature to ``max(floor, τ0·exp(−decay·epoch))`` (FBNet §4.1); returns it."""
        self.temperature = max(self.tau_min, self.tau0 * math.exp(-self.tau_decay * epoch))
        return self.temperature

    @contextlib.contextmanager
    def arch_step(self) -> Iterator[None]:
        """Context of an architecture step: weight parameters are frozen (no weight gradients are
        computed) and proxyless samples two paths with binary gates."""
        weights = self.weight_parameters()
        flags = [p.requires_grad for p in weights]
        for p in weights:
            p.requires_grad_(False)
        self._arch_phase = True
        self._current_probs = None
        if self.mode == "proxyless":
            self._alpha_before = [a.detach().clone() for a in self.alphas]
        try:
            yield
        finally:
            self._arch_phase = False
            self._current_probs = None
            for p, f in zip(weights, flags):
                p.requires_grad_(f)

    def after_arch_step(self) -> None:
        """Proxyless: after the optimizer step, shift the two sampled α of each layer so that
        ``logsumexp`` over them is unchanged (unsampled paths keep their probability)."""
        if self.mode != "proxyless" or not self._sampled or self._alpha_before is None:
            return
        with torch.no_grad():
            for a, old, idx in zip(self.alphas, self._alpha_before, self._sampled):
                if len(idx) < 2:
                    continue
                ix = list(idx)
                offset = torch.logsumexp(old[ix], 0) - torch.logsumexp(a[ix], 0)
                a[ix] += offset
        self._alpha_before = None

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, choices: Sequence[int] | None = None) -> torch.Tensor:
        """Logits ``(N, classes)``. With ``choices``, exactly that path runs (every mode)."""
        x = self.fixed(self.stem(x))
        if choices is not None:
            choices = self.space.check(choices)
            for i, c in enumerate(choices):
                x = self._run_choice(i, c, x)
        elif self.mode == "fbnet":
            x = self._forward_fbnet(x)
        elif self.mode == "proxyless":
            x = self._forward_proxyless(x)
        elif self.mode == "singlepath":
            for m in self.layers_:
                x = m(x)
        else:  # spos
            for i, c in enumerate(self.sample_choices()):
                x = self.layers_[i][c](x)
        return self.classifier(self.head(x))

    def _run_choice(self, i: int, c: int, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "singlepath":
            return self.layers_[i][c](x)
        m: Superkernel = self.layers_[i]
        return m.run_path(x, *self._superkernel_config(i, c))

    def _forward_fbnet(self, x: torch.Tensor) -> torch.Tensor:
        weights = []
        for alpha, cands in zip(self.alphas, self.layers_):
            if self.noise == "sample" and self.training:
                m = F.gumbel_softmax(alpha.expand(x.shape[0], -1), tau=self.temperature, dim=-1)
                x = sum(m[:, j].view(-1, 1, 1, 1) * op(x) for j, op in enumerate(cands))
                weights.append(m.mean(0))
            else:
                m = F.gumbel_softmax(alpha, tau=self.temperature, dim=-1) if self.training else F.softmax(alpha, -1)
                x = sum(m[j] * op(x) for j, op in enumerate(cands))
                weights.append(m)
        self._last_weights = weights
        return x

    def _forward_proxyless(self, x: torch.Tensor) -> torch.Tensor:
        sampled, current, gates = [], [], []
        for alpha, cands in zip(self.alphas, self.layers_):
            p = F.softmax(alpha, -1)
            ph = host_probs(p)
            if not self.training:
                j = int(ph.argmax())
                x = cands[j](x)
                sampled.append((j,))
            elif not self._arch_phase or self.proxyless_paths == 1:
                j = int(torch.multinomial(ph, 1))
                if self._arch_phase:  # one path: gate g_j = 1 with straight-through gradient
                    g = 1 + p[j] - p[j].detach()
                    gates.append(([j], g))
                    x = g * cands[j](x)
                else:
                    x = cands[j](x)
                sampled.append((j,))
                current.append(p)
            else:
                idx = torch.multinomial(ph, 2, replacement=False).tolist()
                p2 = F.softmax(alpha[idx], -1)
                a = int(torch.multinomial(host_probs(p2), 1))
                active, other = idx[a], idx[1 - a]
                onehot = torch.zeros_like(p2.detach())
                onehot[a] = 1
                g = onehot + p2 - p2.detach()  # binary gate, straight-through gradient (BinaryConnect)
                gates.append((idx, g))
                y = cands[active](x)
                with torch.no_grad():
                    y_other = cands[other](x)
                x = g[a] * y + g[1 - a] * y_other
                sampled.append((idx[0], idx[1]) if a == 0 else (idx[1], idx[0]))
                # the reference's current_prob_over_ops: softmax over the two sampled α, 0 elsewhere
                current.append(torch.zeros_like(p).index_add(0, torch.as_tensor(idx, device=p.device), p2))
        self._sampled = [tuple(sorted(s)) for s in sampled]
        self._current_probs = current if self._arch_phase and self.training else None
        self._gates = gates
        return x

    # ------------------------------------------------------------------ sampling / derivation
    def sample_choices(self, rng: random.Random | None = None) -> tuple[int, ...]:
        """A uniformly random member (SPOS sampling); uses the torch RNG unless ``rng`` is given."""
        if rng is not None:
            return tuple(rng.randrange(len(l)) for l in self.slot_layers)
        return tuple(int(torch.randint(len(l), ())) for l in self.slot_layers)

    def probabilities(self) -> list[torch.Tensor]:
        """Per layer, a probability vector over its candidates (decision order), detached.

        fbnet/proxyless: ``softmax(α)``; singlepath: the product-form weights with sigmoid values;
        spos: uniform.
        """
        if self.mode in ("fbnet", "proxyless"):
            return [F.softmax(a.detach(), -1) for a in self.alphas]
        ref = next(self.parameters())
        if self.mode == "spos":
            return [ref.new_full((len(l),), 1.0 / len(l)).detach() for l in self.slot_layers]
        out = []
        with torch.no_grad():
            for i, m in enumerate(self.layers_):
                p = ref.new_zeros(len(self.slot_layers[i]))
                for cfg, w in m.candidate_weights(soft=True).items():
                    p[self._config_candidate(i, cfg)] += w
                out.append(p / p.sum().clamp_min(1e-12))
        return out

    def entropy(self) -> float:
        """Mean per-layer entropy (nats) of :meth:`probabilities`."""
        ps = self.probabilities()
        return float(sum(-(p * torch.log(p.clamp_min(1e-12))).sum() for p in ps) / max(1, len(ps)))

    def derive(self) -> tuple[int, ...]:
        """The chosen member: per layer the argmax candidate (singlepath: the hard selection)."""
        if self.mode == "singlepath":
            return tuple(self._config_candidate(i, m.selection()) for i, m in enumerate(self.layers_))
        if self.mode == "spos":
            raise SearchError("an spos supernet has no architecture parameters to derive from; "
                              "search over it with --method mnasnet|evolution|random")
        return tuple(int(p.argmax()) for p in self.probabilities())

    def _config_candidate(self, i: int, cfg: tuple[int, int, int]) -> int:
        m: Superkernel = self.layers_[i]
        kidx, groups, se = cfg
        lays = self.slot_layers[i]
        if groups == 0:
            return next(j for j, lay in enumerate(lays) if lay.block.kind == "skip")
        k, e = m.kernels[kidx], m.expansions[groups - 1]
        for j, lay in enumerate(lays):
            b = lay.block
            if b.kind == m.kind and b.groups == 1 and b.kernel == k and b.expansion == e and (b.se_ratio > 0) == bool(se):
                return j
        raise SearchError(f"singlepath: no candidate k{k}_e{e:g} in layer {i}")  # pragma: no cover

    def _superkernel_config(self, i: int, c: int) -> tuple[int, int, int]:
        """``(kernel index, groups, SE on)`` of candidate ``c`` of layer ``i``.

        Raises:
            SearchError: the candidate is not the one the superkernel stands for (another kind, a
                grouped conv, or a later duplicate of a (kernel, expansion, SE), e.g. MnasNet's no-skip
                variants): running it through the superkernel would compute another block.
        """
        m: Superkernel = self.layers_[i]
        b = self.slot_layers[i][c].block
        if b.kind == "skip":
            return (0, 0, 0)
        if b.kind == m.kind and b.groups == 1 and b.kernel in m.kernels and b.expansion in m.expansions:
            cfg = (m.kernels.index(b.kernel), m.expansions.index(b.expansion) + 1, int(b.se_ratio > 0))
            if self._config_candidate(i, cfg) == c:
                return cfg
        raise SearchError(f"singlepath cannot run candidate '{b.to_compact()}' of layer {i}: its superkernel "
                          f"stands for the first ungrouped {m.kind} candidate per kernel, expansion and SE")

    # ------------------------------------------------------------------ latency
    def layer_weights(self) -> list[torch.Tensor]:
        """Per layer, differentiable weights over candidates used by :meth:`expected_latency`.

        fbnet: the Gumbel-softmax weights ``m`` of the last forward (FBNet eq. 5 uses the same
        mask), ``softmax(α)`` before any forward; proxyless: inside an architecture step, after the
        forward that sampled the paths, the reference code's ``current_prob_over_ops`` — with two
        sampled paths the softmax over *their* α and 0 for every other candidate, so the latency
        term moves only the two sampled α (as the BinaryConnect CE gradient; mit-han-lab/proxylessnas
        ``MixedEdge.binarize`` and ``SuperProxylessNASNets.expected_latency``), with one path
        ``softmax(α)``; otherwise ``softmax(α)`` (ProxylessNAS eq. 4, the expectation reported in
        logs); singlepath: the hard indicator product (one-hot, sigmoid-relaxed gradient;
        Single-Path NAS eq. 7); spos: uniform.
        """
        if self.mode == "fbnet":
            if self._last_weights is not None and self.training:
                return self._last_weights
            return [F.softmax(a, -1) for a in self.alphas]
        if self.mode == "proxyless":
            if self._arch_phase and self._current_probs is not None:
                return self._current_probs
            return [F.softmax(a, -1) for a in self.alphas]
        if self.mode == "spos":
            return self.probabilities()
        out = []
        zero = next(self.parameters()).new_zeros(())
        for i, m in enumerate(self.layers_):
            ws = m.candidate_weights()
            vec = [zero for _ in self.slot_layers[i]]
            for cfg, w in ws.items():
                j = self._config_candidate(i, cfg)
                vec[j] = vec[j] + w
            out.append(torch.stack(vec))
        return out

    def expected_latency(self, table) -> torch.Tensor:
        """Differentiable expected latency in ms: ``fixed_ms + Σ_i Σ_c w_ic · per_layer[i][c]``.

        Args:
            table: a ``LayerLatencyTable`` (``fixed_ms``, ``per_layer``: per layer a list of
                per-candidate latencies in ms, in decision order) from
                :func:`hwnas.latency.predict.layer_latency_table`.

        Raises:
            SearchError: the table does not fit the space (layer or candidate counts differ).
        """
        per_layer = table.per_layer
        if len(per_layer) != self.num_layers or any(len(r) != len(l) for r, l in zip(per_layer, self.slot_layers)):
            raise SearchError("latency table does not fit the supernet's layers/candidates")
        return table.expected(self.layer_weights())

    # ------------------------------------------------------------------ export
    def subnet(self, choices: Sequence[int]) -> HwnasNet:
        """An ordinary :class:`HwnasNet` of ``space.decode(choices)`` with the supernet's weights
        copied (singlepath: sliced from the superkernels), on the supernet's device, in eval mode. Recalibrate BatchNorm
        statistics before evaluating it (:func:`hwnas.search.train.recalibrate_bn`)."""
        choices = self.space.check(choices)
        ref = next(self.parameters())
        net = HwnasNet(self.space.decode(choices)).to(device=ref.device)
        net.stem.load_state_dict(self.stem.state_dict())
        if self.n_fixed:
            net.stages[0].load_state_dict(self.fixed.state_dict())
        net.head.load_state_dict(self.head.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        blocks = [b for stage in list(net.stages)[1 if self.n_fixed else 0:] for b in stage]
        for i, (c, block) in enumerate(zip(choices, blocks)):
            if self.mode == "singlepath":
                kidx, groups, _ = self._superkernel_config(i, c)
                if groups:
                    m: Superkernel = self.layers_[i]
                    m.load_into(block, m.kernels[kidx], groups - 1)
            else:
                self.layers_[i].load_candidate_into(c, block)
        return net.eval()

    def extra_repr(self) -> str:
        return f"mode={self.mode}, space={self.space.name}, layers={self.num_layers}"


__all__ = ["Supernet", "Superkernel", "FusedSuperkernel", "DSSuperkernel", "make_superkernel", "MODES", "indicator", "host_probs"]
