"""The ``laserkit`` command: a thin typer layer over the library. One module per command family.

Each module defines its commands on ``app`` below. ``main`` runs them and turns every way a run
can end into one line on stderr and an exit status, whatever typer/click version is installed
(typer ≥ 0.22 vendors its own click as ``typer._click``, whose exceptions are not click's, so they
are recognised by what they do, not by class):

- ``laserkit`` alone: the help, status 0;
- a usage mistake (unknown command or option, missing option, a value of the wrong type): click's
  message on one line, status 2;
- a LaserkitError (bad input, damaged file, unusable output path): its line, status 2;
- a file system that refuses a write (full disk, read-only): one line naming the path, status 1;
- Ctrl-C: one line saying what was kept and how to continue (see ``common.on_interrupt``), 130;
  SIGTERM (kill, timeout, SLURM, containers) the same, 143;
- anything else is a bug: one line naming it, status 1 (``LASERKIT_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import signal
import sys


def _early_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C (or SIGTERM) while Python is still importing: nothing has been written yet."""
    word = b"terminated" if signum == signal.SIGTERM else b"interrupted"
    os.write(2, b"laserkit: " + word + b" while starting; nothing was written\n")
    os._exit(128 + signum)


def _is_console_script() -> bool:
    """Started as ``laserkit`` or ``python -m laserkit`` (not imported by a test or a library)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (
        os.path.basename(sys.argv[0] if sys.argv else "") == "laserkit"
        or getattr(spec, "name", None) == "laserkit.__main__"
    )


if _is_console_script() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _early_interrupt)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # kill, timeout, SLURM, containers
        signal.signal(signal.SIGTERM, _early_interrupt)

import importlib  # noqa: E402
import logging  # noqa: E402

import typer  # noqa: E402

from ..core.errors import (  # noqa: E402
    LaserkitError,
    first_line,
    interrupt_handler,
    interrupted,
    terminated,
)

app = typer.Typer(
    name="laserkit",
    help="Layer-selective rank reduction for Hugging Face transformer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command families, each a module of this package that adds its commands to ``app``.
COMMAND_MODULES = ("reduce", "evaluate", "scan", "search", "cache", "compare", "reproduce")

EXIT_USAGE = 2  # click's status for usage errors; also laserkit's for bad input
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd command
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def _say(text: str) -> None:
    print("laserkit: " + " ".join(text.split()), file=sys.stderr, flush=True)


def _is(e: BaseException, name: str) -> bool:
    """Whether ``e`` is a click (or vendored click) exception of this class name."""
    return any(c.__name__ == name and c.__module__.endswith("exceptions") for c in type(e).__mro__)


def _click_exit(e: BaseException) -> int | None:
    """Handle click's own control-flow exceptions; the exit status, or None if ``e`` is not one."""
    if _is(e, "Exit"):  # --help, --version: click has already printed what it should
        return int(getattr(e, "exit_code", 0) or 0)
    if _is(e, "Abort"):
        return None
    if _is(e, "ClickException"):
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _say(f"error: {message}{hint}")
        return int(getattr(e, "exit_code", EXIT_USAGE))
    return None


def _unraisable(hook):
    """A Ctrl-C raised inside a finalizer is remembered (errors.interrupted), not printed."""

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    return quiet


class _LogLines(logging.Handler):
    """Warnings and errors logged by laserkit and the libraries it drives, on stderr as Python
    prints them when nothing is configured (the message alone), but on one line and with no
    traceback; and none from the libraries once the user has interrupted.

    Why: a library that logs an error with its traceback (SQLAlchemy's "Error closing cursor",
    when Ctrl-C lands while it reads the trial store and the unwinding has already closed the
    database) would put a traceback on the user's terminal after the interrupt's own line; such
    complaints are the interrupt's echo, not news."""

    def emit(self, record: logging.LogRecord) -> None:
        if interrupted() and not record.name.startswith("laserkit"):
            return
        try:
            lines = record.getMessage().splitlines()
        except Exception:  # a library's bad format arguments: its raw message
            lines = str(record.msg).splitlines()
        sys.stderr.write((lines[0] if lines else "") + "\n")


def _log_lines() -> None:
    """Install `_LogLines` on the root logger (once per process), at WARNING."""
    root = logging.getLogger()
    if not any(isinstance(h, _LogLines) for h in root.handlers):
        root.addHandler(_LogLines(logging.WARNING))


def run(args: list[str]) -> int:
    """Run one command line; returns the exit status (never raises, never prints a traceback
    unless LASERKIT_DEBUG is set)."""
    from .common import interrupt_note

    if not args:
        args = ["--help"]  # a newcomer's first try: the help, and success
    try:
        _log_lines()
        _register()
        command = typer.main.get_command(app)
        if signal.getsignal(signal.SIGINT) is _early_interrupt:
            signal.signal(signal.SIGINT, interrupt_handler)  # from here Ctrl-C cleans up
            if signal.getsignal(signal.SIGTERM) is _early_interrupt:  # and SIGTERM alike
                signal.signal(signal.SIGTERM, interrupt_handler)
            sys.unraisablehook = _unraisable(sys.unraisablehook)
        with command.make_context("laserkit", list(args)) as ctx:
            command.invoke(ctx)
        if interrupted():  # a Ctrl-C that a finalizer swallowed: still not a success
            raise KeyboardInterrupt
        return 0
    except KeyboardInterrupt:
        if terminated():
            _say(f"terminated (SIGTERM); {interrupt_note()}")
            return EXIT_TERMINATED
        _say(f"interrupted; {interrupt_note()}")
        return EXIT_INTERRUPTED
    except LaserkitError as e:
        _say(f"error: {e}")
        return int(getattr(e, "exit_code", EXIT_USAGE))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
    except Exception as e:
        if interrupted():  # a library turned the Ctrl-C into its own error (transformers'
            #                lazy import: "Could not import module 'LlamaConfig'")
            if terminated():
                _say(f"terminated (SIGTERM); {interrupt_note()}")
                return EXIT_TERMINATED
            _say(f"interrupted; {interrupt_note()}")
            return EXIT_INTERRUPTED
        status = _click_exit(e)
        if status is not None:
            return status
        if _is(e, "Abort"):  # an older click turned the Ctrl-C into Abort itself
            _say(f"interrupted; {interrupt_note()}")
            return EXIT_INTERRUPTED
        from ..core.fileio import write_error

        err = write_error(getattr(e, "filename", None) or "a file", e)
        if err is not None:
            _say(f"error: {err}")
            return EXIT_FAILED
        if os.environ.get("LASERKIT_DEBUG"):
            raise
        if isinstance(e, MemoryError):
            _say(
                "error: out of memory (try a smaller --batch-size, fewer workers, or a smaller "
                "model)"
            )
            return EXIT_FAILED
        _say(
            f"internal error: {type(e).__name__}: {first_line(e)} (a bug: please report it; "
            "LASERKIT_DEBUG=1 shows the traceback)"
        )
        return EXIT_FAILED


def main() -> None:
    """The console script ``laserkit``.

    Once ``run`` has returned, the work is done and its status decided: a SIGTERM from then on
    is ignored. Left to Python, it would meet our handler in an ``atexit`` callback (a stray
    traceback) or, once the interpreter's teardown has put back the default action, kill the
    finished process (status −15 instead of the command's own)."""
    status = run(sys.argv[1:])
    if signal.getsignal(signal.SIGTERM) is interrupt_handler:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)
