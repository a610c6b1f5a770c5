"""Search spaces and the one resolver every command uses: ``resolve_space("fbnet", ...)``.

Names: ``mobilenetv2`` (ProxylessNAS), ``fbnet``, ``mnasnet``, ``efficientnet``,
``efficientnet-lite``, ``mobilenetv3`` (OFA), ``efficientnetv2``, and a ``-cifar`` small-input
variant of each (fewer stride-2 stages, for 32×32 data).

**Names are literal everywhere** (``hwnas search``, ``profile``, ``predict``, the predictor and the
Python API): ``mobilenetv2`` is the ImageNet skeleton at any resolution (a 32×32 input ends at
1×1 in the last stage), ``mobilenetv2-cifar`` is the small-input skeleton, and only when asked
for. No resolution switches a space silently.
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
SMALL_INPUT_SUFFIX = "-cifar"


def space_names() -> list[str]:
    """Every registered space name, base names and their ``-cifar`` variants."""
    return [n for base in _BASE for n in (base, f"{base}{SMALL_INPUT_SUFFIX}")]


def resolve_space(name: str, *, resolution: int | None = None, width: float = 1.0, in_channels: int = 3,
                  classes: int = 1000, device=None) -> SearchSpace:
    """The space called ``name``, taken literally, at the given input and width.

    Args:
        name: a registered name (:func:`space_names`); ``_`` and case are normalised.
        resolution: input height = width in pixels (default 224, or 32 for a ``-cifar`` name).
        width: width (channel) multiplier of every member.
        in_channels: input channels (e.g. 1 for MNIST); NCHW in PyTorch, NHWC in exported models.
        classes: classifier outputs.
        device: the target :class:`hwnas.latency.devices.Device`, or None. When its accelerator lacks an
            activation the space offers (Edge TPU: no HARD_SWISH), the space is
            :meth:`SearchSpace.restricted` to ReLU there, so a search never places it and a profile
            never measures it.

    Raises:
        UnknownNameError: listing the valid names.
    """
    key = name.lower().replace("_", "-")
    small = key.endswith(SMALL_INPUT_SUFFIX)
    base = key[: -len(SMALL_INPUT_SUFFIX)] if small else key
    if base not in _BASE:
        raise UnknownNameError("space", name, space_names())
    if resolution is None:
        resolution = 32 if small else 224
    space = _BASE[base](resolution=int(resolution), num_classes=int(classes), in_channels=int(in_channels),
                        width_multiplier=float(width), small_input=small)
    return space.restricted(device.activation_substitutes()) if device is not None else space


def get_space(name: str, *, resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3,
              width_multiplier: float = 1.0) -> SearchSpace:
    """Alias of :func:`resolve_space` with the older keyword names (same literal rule)."""
    return resolve_space(name, resolution=resolution, width=width_multiplier, in_channels=in_channels,
                         classes=num_classes)


__all__ = ["SearchSpace", "Decision", "Choices", "LayerwiseSpace", "StagewiseSpace", "resolve_space", "get_space",
           "space_names", "MobileNetV2Space", "FBNetSpace", "MnasNetSpace", "EfficientNetSpace",
           "EfficientNetLiteSpace", "MobileNetV3Space", "EfficientNetV2Space"]
