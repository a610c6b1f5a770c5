"""PyTorch side of hwnas (NCHW): blocks, the ArchSpec builder, the params/MACs counter."""

from hwnas.nn.build import HwnasNet, build_model
from hwnas.nn.count import ArchCost, LayerCost, count

__all__ = ["HwnasNet", "build_model", "count", "ArchCost", "LayerCost"]
