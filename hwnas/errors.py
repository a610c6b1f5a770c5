"""Errors a user can cause.

Every error a user can trigger (a bad file, a bad field, an unknown name) is a subclass of
:class:`HwnasError`. The CLI prints its message on one line and exits with status 2, without a
traceback. Messages name the input (file or string), the field and what was expected.
"""

from __future__ import annotations


class HwnasError(Exception):
    """Base class of user-facing errors (CLI exit status 2)."""

    exit_code = 2


class SpecError(HwnasError, ValueError):
    """An architecture (YAML, compact string or field) is malformed or invalid."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnknownNameError(HwnasError, KeyError):
    """A name (zoo net, space, device, format) is not known; the message lists the valid ones."""

    def __init__(self, what: str, name: str, valid):
        self.what = what
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {what} '{name}'; valid {what}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(HwnasError):
    """A configuration file (device, table, run config) is malformed or does not fit."""


class ExportError(HwnasError):
    """An export failed a check (parity, op lint) or got bad input (weights, calibration data)."""


class TableError(HwnasError):
    """A latency table is missing, corrupt, or does not match the device/space/resolution asked for."""


class MissingOpError(TableError, KeyError):
    """An op key is absent from a latency table; the message names the key and the nearest keys."""

    def __str__(self) -> str:
        return self.args[0]


class SearchError(HwnasError):
    """A search cannot run as configured (e.g. an infeasible latency budget)."""


class HwnasWarning(UserWarning):
    """Something a user should know but that does not stop the command (a table made with another
    thread count, a corrupt table of another device skipped, a prediction mostly priced by fallbacks).
    The CLI prints it as one line ``hwnas: warning: …``."""


#: Top-level module → the ``hwnas`` extra that installs it (pyproject.toml's optional dependencies).
EXTRAS = {"tensorflow": "tflite", "keras": "tflite", "ai_edge_litert": "tflite", "onnx": "onnx",
          "onnxruntime": "onnx", "onnxscript": "onnx", "tvm": "tvm", "tvm_ffi": "tvm", "mlxtend": "data",
          "sklearn": "data", "pymoo": "search"}


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """One line naming the extra that provides the missing module of ``err`` (None: not an extra's)."""
    top = (err.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"this command needs the '{top}' module: pip install 'hwnas[{extra}]'"

