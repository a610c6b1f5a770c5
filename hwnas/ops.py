"""The op vocabulary: one :class:`OpKind` per block kind, registered in one place.

Every block of an :class:`hwnas.arch.ArchSpec` is a path through the same parts,

    [1×1 expansion conv] → k×k conv (depthwise, or full) → [squeeze-excite] → [1×1 linear projection]
    → [+ identity]

and a kind says which parts it has (mobile-vision's / FBNetV2's ``PRIMITIVES`` registry idea: a
table of block kinds instead of ``if kind == ...`` chains in every module):

============  =====  ===============================================================================
kind          token  parts
============  =====  ===============================================================================
mbconv        ir     1×1 expansion (groups g) → [shuffle] → depthwise k×k → [SE] → 1×1 projection
                     (groups g) → [+ identity]  (MobileNetV2 §3.3; FBNet's grouped ``g2``)
fused_mbconv  er     full k×k conv ``in → mid`` → [SE] → 1×1 projection → [+ identity]
                     (EfficientNetV2 §3.2)
dsconv        ds     depthwise k×k → [SE] → 1×1 projection → [+ identity]
conv          cn     full k×k conv ``in → out`` (→ BN → act) → [+ identity]
skip          skip   identity (the zero op of a searchable layer)
============  =====  ===============================================================================

Every layer-level function reads the parts from here: the compact-string tokens and validation
(:mod:`hwnas.arch`), op keys (:mod:`hwnas.opkey`), params/MACs (:mod:`hwnas.nn.count`), the
PyTorch modules (:mod:`hwnas.nn.blocks`, whose class is named by :attr:`OpKind.torch`), the Keras
lowering (:mod:`hwnas.export.keras`), the cost-model kernels (:mod:`hwnas.latency.costmodel`) and
the Single-Path superkernels (:attr:`OpKind.superkernel`). The framework code stays in its own
module and is imported only when asked for (:func:`torch_class`), so this module imports neither
torch nor TensorFlow. A new block kind is one entry here plus its framework classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from hwnas.errors import SpecError


@dataclass(frozen=True)
class OpKind:
    """One block kind of the vocabulary.

    Attributes:
        name: the :attr:`hwnas.arch.BlockSpec.kind` (``mbconv``).
        token: the compact-string prefix (``ir``).
        title: the field-standard name for messages (``MBConv``).
        expanding: has an expansion ratio; mid channels ``make_divisible(in × e, 8)``.
        expand_1x1: a 1×1 expansion conv before the k×k conv (MBConv keeps it even at e = 1).
        kxk: the k×k conv: ``depthwise`` | ``full`` | None (skip).
        project: a 1×1 linear projection after the k×k conv (and SE).
        se: may carry squeeze-excite.
        grouped: its 1×1 convs may be grouped (``g2``).
        torch: ``module:Class`` of the PyTorch module, built as ``Class(layer, se_style)``.
        superkernel: ``module:Class`` of its Single-Path superkernel, or None.
    """

    name: str
    token: str
    title: str
    expanding: bool = False
    expand_1x1: bool = False
    kxk: str | None = None
    project: bool = False
    se: bool = False
    grouped: bool = False
    torch: str = ""
    superkernel: str | None = None

    @property
    def residual(self) -> bool:
        """May add the identity shortcut (where the shape is kept); every kind with a conv."""
        return self.kxk is not None

    @property
    def parametric(self) -> bool:
        """Has weights, a kernel, a stride and output channels (everything but ``skip``)."""
        return self.kxk is not None


#: the vocabulary, in the order kinds are listed to users; superkernels are tried in this order
OP_KINDS: tuple[OpKind, ...] = (
    OpKind("mbconv", "ir", "MBConv", expanding=True, expand_1x1=True, kxk="depthwise", project=True, se=True,
           grouped=True, torch="hwnas.nn.blocks:MBConv", superkernel="hwnas.nn.supernet:Superkernel"),
    OpKind("fused_mbconv", "er", "fused-MBConv", expanding=True, kxk="full", project=True, se=True,
           torch="hwnas.nn.blocks:FusedMBConv", superkernel="hwnas.nn.supernet:FusedSuperkernel"),
    OpKind("dsconv", "ds", "depthwise-separable conv", kxk="depthwise", project=True, se=True,
           torch="hwnas.nn.blocks:DSConv", superkernel="hwnas.nn.supernet:DSSuperkernel"),
    OpKind("conv", "cn", "plain conv", kxk="full", torch="hwnas.nn.blocks:ConvBlock"),
    OpKind("skip", "skip", "skip", torch="hwnas.nn.blocks:SkipBlock"),
)

_BY_NAME = {k.name: k for k in OP_KINDS}
_BY_TOKEN = {k.token: k for k in OP_KINDS}

#: every block kind name (``BlockSpec.kind`` values)
KIND_NAMES: tuple[str, ...] = tuple(_BY_NAME)
#: every compact-string prefix
TOKENS: tuple[str, ...] = tuple(_BY_TOKEN)


def op_kind(name: str) -> OpKind:
    """The entry of block kind ``name``.

    Raises:
        SpecError: unknown kind, naming the valid ones.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise SpecError(f"unknown block kind '{name}'; expected one of {', '.join(KIND_NAMES)}",
                        field="kind") from None


def kind_of_token(token: str) -> OpKind | None:
    """The entry whose compact prefix is ``token`` (``ir`` → mbconv), or None."""
    return _BY_TOKEN.get(token)


def token_help() -> str:
    """``ir=mbconv, er=fused_mbconv, ...`` for error messages."""
    return ", ".join(f"{k.token}={k.name}" for k in OP_KINDS if k.token != k.name)


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def torch_class(kind: str):
    """The PyTorch module class of ``kind`` (imports torch)."""
    return _load(op_kind(kind).torch)


def superkernel_class(kind: str):
    """The Single-Path superkernel class of ``kind``, or None where it has none (imports torch)."""
    path = op_kind(kind).superkernel
    return _load(path) if path else None


__all__ = ["OpKind", "OP_KINDS", "KIND_NAMES", "TOKENS", "op_kind", "kind_of_token", "token_help", "torch_class",
           "superkernel_class"]
