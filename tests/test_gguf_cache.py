"""GGUF conversions: cached by content, capped in size, cleared by `laserkit cache --clear`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from laserkit.io import cache as gguf_cache
from laserkit.io.open import local_dir
from laserkit.io.source import ModelSource, default_gguf


def test_a_copied_gguf_hits_the_conversion_of_its_content(tmp_path, default_model_dir):
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(default_gguf(), copy)
    t = time.perf_counter()
    got = local_dir(ModelSource.parse(str(copy)))
    assert got == default_model_dir  # no second conversion
    assert time.perf_counter() - t < 15  # a header parse, not a 15-100 s conversion
    with open(copy, "r+b") as f:  # one changed byte inside a tensor: another content
        f.seek(os.path.getsize(copy) - 100)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    assert gguf_cache._content_fingerprint(copy) != gguf_cache._content_fingerprint(default_gguf())


def _fake(root: Path, name: str, size: int, used: float) -> Path:
    d = root / "gguf" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * size)
    os.utime(d / "config.json", (used, used))
    return d


def test_size_cap_removes_least_recently_used(tmp_path, monkeypatch):
    monkeypatch.setenv("LASERKIT_CACHE", str(tmp_path))
    old = _fake(tmp_path, "a", 3000, 100)
    mid = _fake(tmp_path, "b", 3000, 200)
    new = _fake(tmp_path, "c", 3000, 300)
    removed = gguf_cache.evict(keep=new, limit=7000)
    assert removed == [old] and mid.exists() and new.exists()


def test_cli_cache_clear(tmp_path):
    _fake(tmp_path, "a", 1000, 100)
    env = {**os.environ, "LASERKIT_CACHE": str(tmp_path), "COLUMNS": "200"}
    exe = str(Path(sys.executable).with_name("laserkit"))
    r = subprocess.run([exe, "cache"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "1 conversion(s)" in r.stdout  # a listing: the result, on stdout
    r = subprocess.run([exe, "cache", "--clear"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "removed 1 cached conversion(s)" in r.stderr
    assert not any((tmp_path / "gguf").iterdir())
