"""One exception type for everything a user can get wrong, and the one-line form of any error.

The CLI prints a LaserkitError as a single line and exits with its ``exit_code`` (2 for bad
input, 1 for a write the file system refused); anything else is a bug.
"""

from __future__ import annotations


class LaserkitError(Exception):
    """A user-facing error: the message says what was wrong and what is accepted."""

    exit_code = 2  # the CLI's status: bad input, like click's usage errors


class WriteFailed(LaserkitError):
    """The file system refused a write (full disk, quota, read-only): not the user's input."""

    exit_code = 1


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none).

    Library errors (safetensors, transformers, yaml) carry multi-line messages or whole dumps;
    a user-facing error quotes only their first line, shortened to ``limit`` characters.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Ctrl-C is remembered as well as raised: a KeyboardInterrupt that lands inside a finalizer or a
# weakref callback (SQLAlchemy runs some) is printed as "Exception ignored" and lost, and the
# command would go on as if nothing had happened. Long loops call ``check_interrupt`` so such an
# interrupt still stops them, and the CLI exits 130 if one was seen at all.
_interrupts: list[int] = []


def interrupt_handler(signum: int, frame: object) -> None:
    """The SIGINT (and SIGTERM) handler the CLI installs: remember the interrupt, then raise
    it, so a SIGTERM cleans up exactly as a Ctrl-C does.

    Not while a module is being imported: an extension's initialiser (torch's pybind11 code)
    that calls back into Python and gets a KeyboardInterrupt aborts the whole process (C++
    ``terminate``, status -6, a core dump, no cleanup). Such a signal is re-sent to this process
    shortly after, until it lands outside the import and is raised as usual.
    """
    if _importing(frame):
        _redeliver(signum)
        return
    _interrupts.append(signum)
    raise KeyboardInterrupt


def _importing(frame: object) -> bool:
    """Whether the interrupted Python code runs inside an ``import`` (importlib is on its stack)."""
    f = frame
    while f is not None:
        if getattr(getattr(f, "f_code", None), "co_filename", "").startswith("<frozen importlib"):
            return True
        f = getattr(f, "f_back", None)
    return False


_pending: set[int] = set()


def _redeliver(signum: int, delay: float = 0.02) -> None:
    """Send ``signum`` to this process again after ``delay`` seconds (once per signal kind)."""
    import os
    import threading

    if signum in _pending:
        return
    _pending.add(signum)

    def again() -> None:
        _pending.discard(signum)
        os.kill(os.getpid(), signum)

    t = threading.Timer(delay, again)
    t.daemon = True
    t.start()


def interrupted() -> bool:
    """Whether a Ctrl-C has been seen since the command started."""
    return bool(_interrupts)


def terminated() -> bool:
    """Whether the interrupt seen was a SIGTERM (kill, timeout, SLURM): exit 143, not 130."""
    import signal

    return signal.SIGTERM in _interrupts


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C was seen, even one that a finalizer swallowed."""
    if _interrupts:
        raise KeyboardInterrupt
