"""A model source → its files on this machine or a ``Checkpoint`` reading them: a GGUF source
is converted on first use (``convert``), a hub id is fetched from the Hugging Face cache or hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import LaserkitError
from .checkpoint import BinCheckpoint, Checkpoint, GGUFCheckpoint, SafetensorsCheckpoint
from .convert import converted
from .source import ModelSource, default_gguf, hub_fetch, refuse_remote_code


def default_model_dir() -> Path:
    """The cached safetensors copy of the default model, converted on first use."""
    from .convert import converted

    return converted(default_gguf())


def open_checkpoint(
    source: str | os.PathLike | ModelSource, trust_remote_code: bool = False
) -> Checkpoint:
    """A Checkpoint for a directory, a .gguf file, ``default``, or a hub id (see ModelSource).

    A directory whose config names its own code is refused unless ``trust_remote_code``."""

    src = ModelSource.parse(source)
    if src.kind == "dir":
        refuse_remote_code(src.local_path, trust_remote_code)
    text = src.text
    if src.kind == "default":  # read from the packaged GGUF's cached conversion
        return SafetensorsCheckpoint(local_dir(src), source=text)
    if src.kind == "gguf":
        return GGUFCheckpoint(src.local_path, source=text)
    p = local_dir(src, ["*.json", "*.safetensors", "*.bin"])
    if any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists():
        return SafetensorsCheckpoint(p, source=text)
    if any(p.glob("*.bin")):
        from .modelfiles import weight_files

        if not weight_files(p):
            raise LaserkitError(
                f"no weights in {p}: its .bin files ("
                f"{', '.join(sorted(x.name for x in p.glob('*.bin'))[:3])}) are "
                "not model weights (expected pytorch_model.bin or model*.bin "
                "shards, or *.safetensors)"
            )
        return BinCheckpoint(p, source=text)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return GGUFCheckpoint(ggufs[0], source=text)
    raise LaserkitError(f"no weights in {p}: expected *.safetensors, *.bin or one .gguf file")


def local_dir(src: ModelSource, patterns: list[str] | None = None) -> Path:
    """A local directory with the weights: a GGUF source converted once (cached), a hub id's
    files from the Hugging Face cache or hub (only ``patterns`` when given)."""
    if src.kind == "dir":
        return src.local_path
    gguf = src.gguf_file
    if gguf is not None:  # a default or gguf source
        return converted(gguf)
    from huggingface_hub import snapshot_download

    return Path(
        hub_fetch(
            src.text,
            lambda local: snapshot_download(
                src.text, allow_patterns=patterns, local_files_only=local
            ),
        )
    )
