"""Atomic writes under a Ctrl-C that lands at the worst moment: right after the temporary sibling
is created, before any cleanup could know about it (a race seen once in the CLI's SIGINT test)."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from laserkit.core import fileio


def _interrupt_after(real):
    """``real`` (mkstemp or mkdtemp), then a SIGINT to this process, as if the user pressed
    Ctrl-C the moment the temporary file or directory appeared."""

    def make(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    return make


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own Ctrl-C handler for these tests: a background job starts with SIGINT ignored,
    and a handler left by an earlier test would swallow the signal instead of raising."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_right_after_the_temporary_directory_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "mkdtemp", _interrupt_after(tempfile.mkdtemp))
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_dir(tmp_path / "model", lambda tmp: (tmp / "w").write_text("x"))
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_right_after_the_temporary_file_leaves_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old")
    monkeypatch.setattr(tempfile, "mkstemp", _interrupt_after(tempfile.mkstemp))
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_text(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert target.read_text() == "old"
