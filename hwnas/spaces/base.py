"""Search-space interface.

A space is a fixed skeleton (stem, stage widths and strides, head) plus a tuple of
:class:`Decision` s. A member is a tuple of option indices, one per decision:

* ``decode(choices) -> ArchSpec`` and ``encode(arch) -> choices`` (``encode(decode(c)) == c``);
* ``sample(rng)`` draws a uniform member; ``size`` is the number of members;
* ``op_keys(resolution)`` is every latency-table key any member can place (stem, blocks, head,
  classifier), the list the profiler measures.

Layer-wise spaces (``mobilenetv2``, ``fbnet``) also expose ``layer_candidates()`` for
weight-sharing supernets: per searchable layer the candidate blocks in decision order.
"""

from __future__ import annotations

import copy
import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from hwnas.arch import ArchSpec
from hwnas.errors import SpecError
from hwnas.opkey import OpKey, arch_op_keys

Choices = tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    """One decision of a space: its name and the labels of its options (index = choice value)."""

    name: str
    options: tuple[str, ...]


class SearchSpace(ABC):
    """Base class of all spaces. Subclasses set ``name`` and implement the abstract methods.

    Args:
        resolution: input resolution the space decodes to.
        num_classes, in_channels: classifier outputs and input channels (e.g. 10 and 1 for MNIST).
        width_multiplier: channel multiplier applied to every decoded member.
    """

    name: str = "space"
    default_resolution: int = 224

    def __init__(self, resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3,
                 width_multiplier: float = 1.0):
        self.resolution = int(resolution or self.default_resolution)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.width_multiplier = float(width_multiplier)

    # ------------------------------------------------------------------ to implement
    @property
    @abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        """The decisions, in choice order."""

    @abstractmethod
    def _decode(self, choices: Choices) -> ArchSpec:
        """ArchSpec of a validated member (width/resolution/classes applied by :meth:`decode`)."""

    @abstractmethod
    def _covering_members(self) -> Iterable[Choices]:
        """Members that together place every (decision, option) the op keys depend on."""

    # ------------------------------------------------------------------ common
    @property
    def size(self) -> int:
        """Number of members (product of the option counts)."""
        return math.prod(len(d.options) for d in self.decisions)

    def check(self, choices: Sequence[int]) -> Choices:
        """Validate ``choices``; raises :class:`SpecError` naming the decision."""
        choices = tuple(int(c) for c in choices)
        decisions = self.decisions
        if len(choices) != len(decisions):
            raise SpecError(f"expected {len(decisions)} choices, got {len(choices)}", source=f"space '{self.name}'")
        for c, d in zip(choices, decisions):
            if not 0 <= c < len(d.options):
                raise SpecError(f"choice {c} out of range 0..{len(d.options) - 1}", source=f"space '{self.name}'",
                                field=d.name)
        return choices

    #: activation substitutions of a restricted copy (:meth:`restricted`); empty: none
    activation_map: dict[str, str] = {}

    def decode(self, choices: Sequence[int]) -> ArchSpec:
        """The ArchSpec of a member."""
        arch = self._decode(self.check(choices)).with_activations(self.activation_map)
        return replace(arch, resolution=self.resolution, in_channels=self.in_channels,
                       width_multiplier=self.width_multiplier,
                       classifier=replace(arch.classifier, num_classes=self.num_classes))

    def encode(self, arch: ArchSpec) -> Choices:
        """The member whose decode equals ``arch`` (ignoring resolution, width, classes, name).

        Raises:
            SpecError: ``arch`` is not a member of this space.
        """
        target = self._normalise(arch)
        for choices in self._encode_candidates(arch):
            if self._normalise(self.decode(choices)) == target:
                return choices
        raise SpecError(f"'{arch.name or 'architecture'}' is not a member of space '{self.name}'",
                        source=f"space '{self.name}'")

    def _encode_candidates(self, arch: ArchSpec) -> Iterable[Choices]:
        """Candidate members for :meth:`encode`; subclasses narrow this down."""
        raise NotImplementedError

    def _normalise(self, arch: ArchSpec) -> ArchSpec:
        return replace(arch, name="", resolution=self.resolution, in_channels=self.in_channels,
                       width_multiplier=self.width_multiplier,
                       classifier=replace(arch.classifier, num_classes=self.num_classes))

    def sample(self, rng: random.Random | None = None) -> Choices:
        """A uniformly random member (``rng``: a :class:`random.Random`; default the module RNG)."""
        rng = rng or random
        return tuple(rng.randrange(len(d.options)) for d in self.decisions)

    def op_keys(self, resolution: int | None = None) -> list[OpKey]:
        """Every op key any member can place at ``resolution`` (default: the space's), sorted."""
        space = self if resolution in (None, self.resolution) else self.at(resolution=resolution)
        keys: set[OpKey] = set()
        for choices in space._covering_members():
            keys.update(key for _, key in arch_op_keys(space.decode(choices)))
        return sorted(keys)

    def at(self, *, resolution: int | None = None, num_classes: int | None = None, in_channels: int | None = None,
           width_multiplier: float | None = None) -> "SearchSpace":
        """A copy of this space with other input/classifier/width settings (restrictions kept)."""
        space = type(self)(resolution=resolution or self.resolution,
                           num_classes=num_classes or self.num_classes,
                           in_channels=in_channels or self.in_channels,
                           width_multiplier=width_multiplier or self.width_multiplier,
                           **self._extra_kwargs())
        return space.restricted(self.activation_map)

    def restricted(self, activation_map: dict[str, str]) -> "SearchSpace":
        """A copy whose members (and supernet candidates) use ``activation_map[a]`` wherever they would
        use activation ``a``, e.g. ``{"hswish": "relu"}`` for an accelerator without HARD_SWISH
        (:meth:`hwnas.latency.devices.Device.activation_substitutes`). Same decisions and sizes; the op
        keys are those of the substituted blocks. Returns ``self`` for an empty map.

        Raises:
            SpecError: an unknown activation name.
        """
        mapping = {**self.activation_map, **dict(activation_map or {})}
        if mapping == self.activation_map:
            return self
        space = copy.copy(self)
        space.activation_map = mapping
        space._restrict()
        return space

    def _restrict(self) -> None:
        """Apply :attr:`activation_map` to precomputed candidates (layer-wise spaces); decode applies it to
        every member."""

    def _extra_kwargs(self) -> dict:
        """Constructor arguments of a subclass beyond the common ones (kept by :meth:`at`)."""
        return {}

    def describe(self, choices: Sequence[int]) -> dict[str, str]:
        """``{decision name: option label}`` of a member."""
        return {d.name: d.options[c] for d, c in zip(self.decisions, self.check(choices))}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, resolution={self.resolution}, "
                f"num_classes={self.num_classes}, size={self.size:.3g})")
