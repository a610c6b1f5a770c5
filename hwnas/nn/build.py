"""ArchSpec → :class:`torch.nn.Module` (NCHW).

Module names follow :meth:`hwnas.arch.ArchSpec.layers`: ``stem``, ``stages.<i>.<j>``, ``head``,
``classifier``, so per-layer figures, weight maps and exporters meet on the same names.
"""

from __future__ import annotations


import torch
from torch import nn

from hwnas.arch import ArchSpec
from hwnas.nn.blocks import Classifier, ConvBnAct, build_layer


class HwnasNet(nn.Module):
    """A network built from an :class:`ArchSpec`.

    Input ``(N, in_channels, resolution, resolution)`` float NCHW; output ``(N, num_classes)`` logits.
    """

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        layers = arch.layers()
        by_name = {layer.name: layer for layer in layers}
        self.stem = build_layer(by_name["stem"], arch.se_style)
        self.stages = nn.Sequential(*[
            nn.Sequential(*[build_layer(by_name[f"stages.{si}.{bi}"], arch.se_style) for bi in range(len(stage))])
            for si, stage in enumerate(arch.stages)])
        self.head = build_layer(by_name["head"], arch.se_style) if "head" in by_name else nn.Identity()
        cls_layer = by_name["classifier"]
        self.classifier = Classifier(cls_layer.in_shape[2], arch.classifier.num_classes, arch.classifier.dropout,
                                     arch.head.prelogits_channels, arch.head.prelogits_activation)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` input → ``(N, C', H', W')`` features before pooling."""
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def layer_modules(self) -> list[tuple[str, nn.Module]]:
        """``(layer name, module)`` in the order of :meth:`ArchSpec.layers`."""
        out: list[tuple[str, nn.Module]] = [("stem", self.stem)]
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                out.append((f"stages.{si}.{bi}", block))
        if isinstance(self.head, ConvBnAct):
            out.append(("head", self.head))
        out.append(("classifier", self.classifier))
        return out


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, N(0, 0.01) for FC, BN γ=1 β=0 (torchvision's MobileNetV2 init)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(arch: ArchSpec, *, train: bool = False, seed: int | None = None) -> HwnasNet:
    """Build ``arch`` as a PyTorch module (NCHW), in eval mode unless ``train``.

    Args:
        arch: the architecture.
        train: return the module in training mode.
        seed: seed the weight initialisation (``torch.manual_seed``) for reproducible weights.
    """
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = HwnasNet(arch)
    else:
        model = HwnasNet(arch)
    return model.train(train)


__all__ = ["HwnasNet", "build_model", "init_weights"]
