"""Helpers shared by the CLI modules: printing tables and JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import click
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_json(obj: Any) -> None:
    """One JSON object on stdout (for scripts)."""
    from hwnas.io import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                right: Sequence[str] = ()) -> None:
    """A rich table; ``right`` names the right-aligned (numeric) columns."""
    table = Table(title=title, show_lines=False, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=col in right,
                         overflow="fold")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)


#: ``--width``: a width multiplier must be positive (checked by click, so the error names ``--width``).
WIDTH = click.FloatRange(min=0, min_open=True)


class _Resolution(click.ParamType):
    """``--resolution``: an input resolution in pixels within
    :data:`hwnas.latency.predict.RESOLUTION_RANGE` (checked by click, so 0 is an error naming
    ``--resolution``, never a silent "use the default")."""

    name = "pixels"

    def convert(self, value, param, ctx):
        from hwnas.errors import SpecError
        from hwnas.latency.predict import check_resolution

        try:
            pixels = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number of pixels", param, ctx)
        try:
            return check_resolution(pixels, option=param.opts[0] if param is not None else "--resolution")
        except SpecError as e:
            self.fail(str(e), param, ctx)


#: ``--resolution`` of every command.
RESOLUTION = _Resolution()


def arch_argument(func):
    """The ``ARCH`` argument (YAML path, compact string or zoo name) with --width/--resolution."""
    func = click.option("--resolution", type=RESOLUTION, default=None,
                        help="Input resolution (pixels) instead of the architecture's.")(func)
    func = click.option("--width", type=WIDTH, default=None,
                        help="Width multiplier (MobileNet depth multiplier) instead of the architecture's.")(func)
    func = click.argument("arch")(func)
    return func


def fmt_millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def strict_option(func):
    """``--strict``: refuse a latency table measured in another environment than the device's now
    (threads, runtime version, precision, delegate, governor) instead of warning. Turns
    :class:`hwnas.latency.table.TableEnvironmentWarning` into an error for the command."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, strict: bool = False, **kwargs):
        import warnings

        from hwnas.latency.table import TableEnvironmentWarning

        with warnings.catch_warnings():
            if strict:
                warnings.simplefilter("error", TableEnvironmentWarning)
            return func(*args, **kwargs)

    return click.option("--strict", is_flag=True,
                        help="Refuse a latency table measured with other threads, runtime version, precision, "
                             "delegate or governor than the device's now (default: warn).")(wrapper)
