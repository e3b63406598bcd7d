"""GGUF files converted once to safetensors directories, cached by content, with a size cap.

Building a model from a GGUF file means dequantizing every tensor (100-150 s for a 270M-500M file
on a 2-core CPU); a safetensors directory loads in seconds. So the first command on a GGUF file
converts it into ``<cache>/gguf/<fingerprint>/`` and every later command loads that directory.

- The key is the file's content fingerprint (size, header, and the first and middle 4 KiB of every
  tensor), not its name or mtime: a copied or renamed file hits the cache, and a file whose
  weights differ (even in one tensor, as a laserkit edit does) does not.
- The cache is capped at ``$LASERKIT_CACHE_MAX_GB`` (default 50); past it, the least recently
  used conversions are removed after each new one. ``laserkit cache --clear`` empties it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

DEFAULT_MAX_GB = 50.0
_SAMPLE = 4096
# Part of every fingerprint: a conversion made by an earlier laserkit (version 1 skipped the
# Gemma norm offset: tensor processors were looked up by model_type) is never reused.
CONVERSION_VERSION = 2


def cache_root() -> Path:
    from .source import cache_dir

    return cache_dir() / "gguf"


def max_bytes() -> int:
    from ..core.errors import LaserkitError

    raw = os.environ.get("LASERKIT_CACHE_MAX_GB", str(DEFAULT_MAX_GB))
    try:
        gb = float(raw)
    except ValueError:
        raise LaserkitError(f"LASERKIT_CACHE_MAX_GB={raw!r} is not a number of GB") from None
    return int(gb * 2**30)


def fingerprint(path: Path) -> str:
    """Content fingerprint of a GGUF file (see _content_fingerprint), remembered per file identity
    (path, inode, size, mtime) so a second command does not parse the file's header again."""
    st = path.stat()
    ident = f"v{CONVERSION_VERSION}|{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"
    index = cache_root() / "index.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    if ident in known:
        return known[ident]
    fp = _content_fingerprint(path)
    known[ident] = fp
    try:
        from ..core.fileio import atomic_write_text

        atomic_write_text(index, json.dumps(known))
    except OSError:
        pass  # a read-only cache still works, only slower
    return fp


def _content_fingerprint(path: Path) -> str:
    """Size + header + two 4 KiB samples of every tensor, hashed."""
    size = path.stat().st_size
    h = hashlib.sha256(f"gguf-v{CONVERSION_VERSION}:{size};".encode())
    import struct

    from ..core.errors import LaserkitError

    with open(path, "rb") as f:
        try:
            data_start, tensors = _tensor_extents(f, size)
        except (struct.error, ValueError, KeyError, MemoryError, OverflowError):
            raise LaserkitError(f"corrupt GGUF file {path}: unreadable header") from None
        f.seek(0)
        h.update(f.read(data_start))  # metadata + tensor infos
        for start, n in tensors:
            for pos in (start, start + max(0, n // 2 - _SAMPLE // 2)):
                f.seek(data_start + pos)
                h.update(f.read(min(_SAMPLE, n)))
    return h.hexdigest()[:20]


_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value sizes


def _tensor_extents(f, size: int) -> tuple[int, list[tuple[int, int]]]:
    """(data start, [(offset, bytes)]) from a GGUF header, read directly: gguf.GGUFReader builds
    an object per token of the vocabulary, seconds per file, where this needs milliseconds."""
    import struct

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    from ..core.errors import LaserkitError

    buf = f.read(min(size, 64 << 20))
    pos = 0

    def take(fmt: str):
        nonlocal buf, pos
        n = struct.calcsize(fmt)
        while pos + n > len(buf):
            more = f.read(max(n, 64 << 20))
            if not more:
                raise LaserkitError(f"corrupt or truncated GGUF file {f.name}: header cut short")
            buf += more
        out = struct.unpack_from(fmt, buf, pos)
        pos += n
        return out if len(out) > 1 else out[0]

    def skip_string() -> bytes:
        nonlocal pos
        n = take("<Q")
        take(f"<{n}s")
        return buf[pos - n : pos]

    def skip_value(vtype: int):
        if vtype in _SCALAR:
            return take(f"<{_SCALAR[vtype]}s")
        if vtype == 8:
            return skip_string()
        if vtype == 9:
            sub, count = take("<IQ")
            if sub in _SCALAR:
                return take(f"<{_SCALAR[sub] * count}s")
            for _ in range(count):
                skip_value(sub)
            return None
        raise LaserkitError(f"corrupt GGUF file {f.name}: unknown value type {vtype}")

    if take("<4s") != b"GGUF":
        raise LaserkitError(f"{f.name} is not a GGUF file (bad magic)")
    _, n_tensors, n_kv = take("<IQQ")
    align = 32
    for _ in range(n_kv):
        key = skip_string()
        vtype = take("<I")
        value = skip_value(vtype)
        if key == b"general.alignment" and vtype == 4:
            align = struct.unpack("<I", value)[0]
    tensors = []
    for _ in range(n_tensors):
        skip_string()
        dims = take(f"<{take('<I')}Q")
        dims = dims if isinstance(dims, tuple) else (dims,)
        ttype, offset = take("<IQ")
        block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        count = 1
        for d in dims:
            count *= d
        tensors.append((offset, count // block * nbytes))
    return (pos + align - 1) // align * align, tensors


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _stamp(d: Path) -> Path:
    """The file whose mtime says when a conversion was last used. It lies beside the conversion,
    not in it: touching config.json would change a file that saved models may once have shared."""
    return d.with_name(d.name + ".used")


def _last_used(d: Path) -> float:
    stamp = _stamp(d)
    return (stamp if stamp.exists() else d / "config.json").stat().st_mtime


def entries() -> list[tuple[Path, int, float]]:
    """(directory, bytes, last used) of every finished conversion, least recently used first."""
    root = cache_root()
    if not root.is_dir():
        return []
    out = [
        (d, _size(d), _last_used(d))
        for d in root.iterdir()
        if d.is_dir() and (d / "config.json").exists()
    ]
    return sorted(out, key=lambda e: e[2])


def evict(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove least recently used conversions until the cache fits ``limit`` (default: the cap)."""
    limit = max_bytes() if limit is None else limit
    items = entries()
    total = sum(n for _, n, _ in items)
    removed = []
    for d, n, _ in items:
        if total <= limit:
            break
        if keep is not None and d == keep:
            continue
        shutil.rmtree(d, ignore_errors=True)
        _stamp(d).unlink(missing_ok=True)
        total -= n
        removed.append(d)
    return removed


def clear() -> tuple[int, int]:
    """Remove every cached conversion (and leftovers of interrupted ones): (count, bytes)."""
    root = cache_root()
    if not root.is_dir():
        return 0, 0
    count = size = 0
    for d in root.iterdir():
        if d.is_dir():
            size += _size(d)
            count += (d / "config.json").exists()
            shutil.rmtree(d, ignore_errors=True)
        else:  # fingerprint index, name maps
            size += d.stat().st_size
            d.unlink(missing_ok=True)
    return count, size


def naming(path: Path, compute: Callable[[], dict]) -> dict:
    """{config, names, arch} of a GGUF file (config dict, GGUF → HF tensor names, GGUF
    architecture), computed once per content: mapping the names builds transformers' name table
    once per module (~7 s for a 135M model)."""
    file = cache_root() / f"{fingerprint(path)}.naming.json"
    try:
        doc = json.loads(file.read_text())
        if {"config", "names", "arch"} <= set(doc):
            return doc
    except (OSError, ValueError, TypeError):
        pass
    doc = compute()
    try:
        from ..core.fileio import atomic_write_text

        atomic_write_text(file, json.dumps(doc))
    except OSError:
        pass
    return doc
