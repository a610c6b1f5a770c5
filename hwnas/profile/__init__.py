"""Device profiling: builder (single-op artifact) → runner (LiteRT local, adb, TVM local/RPC) → table.

See :mod:`hwnas.profile.run` for the pipeline and its journal (the resume state).
"""

from hwnas.profile.run import Measurement, ProfileResult, profile

__all__ = ["profile", "Measurement", "ProfileResult"]
