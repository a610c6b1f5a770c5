"""The ``hwnas`` command line: thin wrappers that parse arguments, call the library and print.

Each command group lives in its own module and registers itself on :data:`main`. User errors
(:class:`hwnas.errors.HwnasError`) print one line ``hwnas: error: …`` to stderr and exit 2,
without a traceback.
"""

from __future__ import annotations

import sys

import click

from hwnas import __version__
from hwnas.errors import HwnasError, missing_extra


class HwnasGroup(click.Group):
    """A click group that turns :class:`HwnasError` into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context):
        import warnings

        from hwnas.errors import HwnasWarning

        show = warnings.showwarning

        def one_line(message, category, *args, **kwargs):
            if issubclass(category, HwnasWarning):
                click.echo(f"hwnas: warning: {message}", err=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        try:
            return super().invoke(ctx)
        except HwnasError as err:
            click.echo(f"hwnas: error: {err}", err=True)
            sys.exit(err.exit_code)
        except ModuleNotFoundError as err:  # an optional backend (extra) is not installed
            hint = missing_extra(err)
            if hint is None:
                raise
            click.echo(f"hwnas: error: {hint}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("hwnas: interrupted; progress saved so far is kept (rerun to resume)", err=True)
            sys.exit(130)
        finally:
            warnings.showwarning = show


@click.group(cls=HwnasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnas")
def main() -> None:
    """hwnas: hardware-aware mobile model compiler.

    Profile devices into latency tables, predict the latency of architectures, search
    hardware-aware architectures and export them to .tflite / ONNX / TVM.
    """


def _register() -> None:
    import importlib

    for module in ("arch_cmds", "export_cmds", "latency_cmds", "search_cmds", "table_cmds", "ofa_cmds"):
        try:
            importlib.import_module(f"hwnas.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"hwnas.cli.{module}":
                raise


_register()

__all__ = ["main"]
