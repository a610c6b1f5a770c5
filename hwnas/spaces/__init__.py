"""Search spaces and their registry: ``get_space("fbnet")``.

Names: ``mobilenetv2`` (ProxylessNAS), ``fbnet``, ``mnasnet``, ``efficientnet``,
``efficientnet-lite``, ``mobilenetv3`` (OFA), ``efficientnetv2``, and a ``-cifar`` small-input
variant of each for 32×32 data. Asking for a base name with ``resolution <= 64`` picks the
small-input variant automatically.
"""

from __future__ import annotations

from hwnas.errors import UnknownNameError
from hwnas.spaces.base import Choices, Decision, SearchSpace
from hwnas.spaces.layerwise import FBNetSpace, LayerwiseSpace, MobileNetV2Space
from hwnas.spaces.mobile import EfficientNetV2Space, MobileNetV3Space
from hwnas.spaces.stagewise import EfficientNetLiteSpace, EfficientNetSpace, MnasNetSpace, StagewiseSpace

_BASE = {cls.name if hasattr(cls, "candidate_ops") else cls.base_name: cls
         for cls in (MobileNetV2Space, FBNetSpace, MnasNetSpace, EfficientNetSpace, EfficientNetLiteSpace,
                     MobileNetV3Space, EfficientNetV2Space)}
SMALL_INPUT_MAX_RESOLUTION = 64


def space_names() -> list[str]:
    """Every registered space name, base names and their ``-cifar`` variants."""
    return [n for base in _BASE for n in (base, f"{base}-cifar")]


def get_space(name: str, *, resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3,
              width_multiplier: float = 1.0) -> SearchSpace:
    """The space called ``name``.

    ``name-cifar`` is the small-input variant (default resolution 32); a base name with
    ``resolution <= 64`` selects it automatically.

    Raises:
        UnknownNameError: listing the valid names.
    """
    key = name.lower().replace("_", "-")
    small = key.endswith("-cifar")
    base = key[: -len("-cifar")] if small else key
    if base not in _BASE:
        raise UnknownNameError("space", name, space_names())
    if resolution is not None and resolution <= SMALL_INPUT_MAX_RESOLUTION:
        small = True
    if resolution is None:
        resolution = 32 if small else 224
    return _BASE[base](resolution=resolution, num_classes=num_classes, in_channels=in_channels,
                       width_multiplier=width_multiplier, small_input=small)


__all__ = ["SearchSpace", "Decision", "Choices", "LayerwiseSpace", "StagewiseSpace", "get_space", "space_names",
           "MobileNetV2Space", "FBNetSpace", "MnasNetSpace", "EfficientNetSpace", "EfficientNetLiteSpace",
           "MobileNetV3Space", "EfficientNetV2Space"]
