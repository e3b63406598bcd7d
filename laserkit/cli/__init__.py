"""The ``laserkit`` command: a thin typer layer over the library. One module per command family.

Each module defines its commands on ``app`` below; ``main`` turns a LaserkitError into one line
on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import LaserkitError

app = typer.Typer(
    name="laserkit",
    help="Layer-selective rank reduction for Hugging Face transformer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command families, each a module of this package that adds its commands to ``app``.
COMMAND_MODULES = ("reduce", "evaluate", "scan", "search", "cache")


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except LaserkitError as e:
        print(f"laserkit: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("laserkit: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise
