"""Atomic writes: a file or directory appears whole at its final path, or not at all.

Everything is written to a hidden temporary sibling and renamed into place, so an interrupted or
failing write (Ctrl-C, a full disk, a crash) leaves the user's earlier file intact and no partial
file behind. Temporary files made by ``tempfile`` are private (0600 / 0700); what is published
gets the permissions an ordinary ``open`` or ``mkdir`` would give under the user's umask, so a
colleague or a serving container can read the result. Ctrl-C is held back during the final
renames and the clean-up, which must not be cut in half.

Write failures from the operating system (ENOSPC, EFBIG, EROFS, EACCES, ...) become one
LaserkitError naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LaserkitError, WriteFailed, first_line

PARTIAL = ".partial-"  # marks temporary siblings: ``.<name>.partial-<pid>-<random>``
# what an evaluation's --out holds (lm_eval_results.json: lm-eval tasks only; the last two while
# it runs: eval_stream.py)
EVAL_FILES = {
    "records.jsonl",
    "summary.json",
    "lm_eval_results.json",
    "records.partial.jsonl",
    "evaluation.json",
}


def umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them (main thread only;
    elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s in sigs:
            signal.signal(s, old[s])
        for s in dict.fromkeys(got):
            handler = old[s]
            if handler in (signal.SIG_IGN, None):
                continue
            if callable(handler):
                handler(s, None)
            elif s == signal.SIGINT:
                raise KeyboardInterrupt
            else:
                signal.raise_signal(s)  # SIG_DFL: end as the signal would have


_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def write_error(path: os.PathLike | str, e: BaseException) -> WriteFailed | None:
    """A one-line error for an operating-system write failure, or None for anything else."""
    text = str(e)
    code = getattr(e, "errno", None)
    if (
        code in _DISK_FULL
        or "os error 28" in text
        or "No space left" in text
        or "File too large" in text
    ):
        return WriteFailed(
            f"cannot write {path}: no space left (disk or quota full, or file "
            "size limit); nothing was written there, your earlier files are "
            "intact; free some space or choose another location"
        )
    if isinstance(e, OSError) and code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteFailed(f"cannot write {path}: {e.strerror} (choose a writable location)")
    if isinstance(e, OSError) and code is not None:
        return WriteFailed(f"cannot write {path}: {first_line(e)}")
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_file(path: os.PathLike | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling, then rename it to ``path``."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sigint_deferred():  # a Ctrl-C now must not orphan the file just made
            sweep_partials(path)
            fd, name = tempfile.mkstemp(prefix=partial_prefix(path), dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        write(tmp)
        with sigint_deferred():
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
    except BaseException as e:
        with sigint_deferred():
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        err = write_error(path, e)
        if err is not None:
            raise err from None
        raise
    return path


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_file(path, write)


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: os.PathLike | str, obj: object, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def refuse_file(out: os.PathLike | str, what: str = "--out") -> Path:
    """A directory is wanted at ``out``: refuse an existing regular file there, in one line."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LaserkitError(
            f"{what} {out} is an existing file, not a directory: give a new or empty directory path"
        )
    return out


def check_dir_holds_only(
    out: os.PathLike | str, allowed: set[str], *, what: str = "--out", kind: str = "output"
) -> Path:
    """``out`` may be new, empty, or hold only ``allowed`` names (an earlier output of this
    kind, which will be replaced); a file, or a directory holding anything else, is refused."""
    out = refuse_file(out, what)
    check_writable_parent(out, what)
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in allowed)
        if other:
            raise LaserkitError(
                f"{what} {out} holds other files ({', '.join(other[:3])}); give a "
                f"new directory, or one that holds only an earlier {kind}"
            )
    return out


def refuse_unreplaceable(out: os.PathLike | str, what: str = "--out") -> Path:
    """``--out ""`` (the current directory), ``.``, ``/`` or any folder holding the current
    directory can never be replaced by an output, even with --force: refused in one line."""
    text = os.fspath(out)
    if text.strip() in ("", "."):
        raise LaserkitError(
            f"{what} is empty or the current directory: give the path of a new "
            "directory or file to write"
        )
    dst = Path(text).resolve()
    cwd = Path.cwd().resolve()
    if dst == dst.parent:
        raise LaserkitError(
            f"{what} {text} is the file system root: give the path of a new "
            "directory or file to write"
        )
    if dst == cwd or dst in cwd.parents:
        raise LaserkitError(
            f"{what} {text} holds the current directory: give the path of a new "
            "directory or file to write"
        )
    return Path(text)


def check_dir_target(
    out: os.PathLike | str, *, what: str = "--out", overwrite: bool = False
) -> Path:
    """Fail now, before any expensive work, if ``out`` can never receive a directory.

    A regular file there, a non-empty directory without ``overwrite``, the root or the current
    directory, or no writable folder to create it in: one LaserkitError each.
    """
    out = refuse_file(refuse_unreplaceable(out, what), what)
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise LaserkitError(
            f"{what} {out} exists and is not empty; choose another {what} or add "
            "--force to replace it"
        )
    check_writable_parent(out, what)
    return out


def check_out_target(
    out: os.PathLike | str, *, what: str = "--out", overwrite: bool = False
) -> Path:
    """``check_dir_target`` for a model directory, or the same checks for a ``FILE.gguf``."""
    out = refuse_unreplaceable(out, what)
    if out.suffix != ".gguf":
        return check_dir_target(out, what=what, overwrite=overwrite)
    if out.is_dir():
        raise LaserkitError(f"{what} {out} is a directory; give a new .gguf file path")
    if out.exists() and not overwrite:
        raise LaserkitError(
            f"{what} {out} exists; choose another {what} or add --force to replace it"
        )
    check_writable_parent(out, what)
    return out


def check_writable_parent(out: Path, what: str) -> None:
    """The nearest existing ancestor of ``out`` must be a directory we may write into."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LaserkitError(f"{what} {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):  # read-only mount or no permission: the file
        # system refuses the write, status 1 as for a write refused midway (README)
        raise WriteFailed(
            f"{what} {out}: cannot write in {parent} (read-only or no "
            "permission); choose a writable location"
        )


def atomic_dir(
    out: os.PathLike | str, write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling directory, then publish it as ``out``.

    An existing ``out`` is replaced only with ``overwrite`` and only once the new one is whole;
    on any failure (or Ctrl-C) nothing appears at ``out``, the old one is intact and the
    temporary directory is removed.
    """
    out = check_dir_target(out, overwrite=overwrite)
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with sigint_deferred():  # a Ctrl-C now must not orphan the directory just made
            sweep_partials(out)
            tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(out), dir=out.parent))
        write(tmp)
        with sigint_deferred():
            _publish_modes(tmp)
            if out.exists() and not overwrite:
                try:
                    os.replace(tmp, out)  # an empty directory is replaced, a full one refused
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise LaserkitError(
                        f"{out} was filled by another process meanwhile; "
                        "nothing of this run was written there"
                    ) from None
            elif out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
                try:
                    os.replace(tmp, out)
                except BaseException:
                    os.replace(old, out)  # put the previous one back
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
    except BaseException as e:
        with sigint_deferred():
            if tmp is not None:
                _remove(tmp)
        err = write_error(out, e)
        if err is not None:
            raise err from None
        raise
    return out


def _publish_modes(tmp: Path) -> None:
    """mkdtemp's 0700 → the umask's directory mode; files keep what ``open`` gave them, except
    any made private by mkstemp, which get the umask's file mode."""
    os.chmod(tmp, dir_mode())
    fmode, dmode = file_mode(), dir_mode()
    for root, dirs, files in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(root, d), dmode)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, fmode)


def partial_prefix(path: Path) -> str:
    """``.<name>.partial-<pid>-``: the writer's pid, so a later save can tell a partial whose
    writer was killed (SIGKILL, a crash) from one being written now."""
    return f".{path.name}{PARTIAL}{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def sweep_partials(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that are gone (partials of
    other names, and of writers still running, are left alone)."""
    removed: list[Path] = []
    prefix = f".{path.name}{PARTIAL}"
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            _remove(p)
            removed.append(p)
    return removed


def partial_files(folder: os.PathLike | str) -> list[Path]:
    """Temporary siblings left in ``folder`` (recursively): there should never be any."""
    return sorted(p for p in Path(folder).rglob(f"*{PARTIAL}*"))
