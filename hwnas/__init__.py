"""hwnas: a hardware-aware mobile model compiler.

One currency flows through the package: :class:`hwnas.arch.ArchSpec`. Search spaces produce
ArchSpecs, builders turn them into PyTorch modules or Keras models, exporters into artifacts,
and the latency predictor prices them through tables keyed by :func:`hwnas.opkey.op_key`.
"""

__version__ = "0.1.0"

from hwnas.arch import ArchSpec, BlockSpec, HeadSpec, ClassifierSpec  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402

__all__ = ["ArchSpec", "BlockSpec", "HeadSpec", "ClassifierSpec", "HwnasError", "__version__"]
