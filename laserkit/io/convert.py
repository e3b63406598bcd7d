"""GGUF → a safetensors model directory, tensor by tensor, equal to what transformers' own
``from_pretrained(dir, gguf_file=…)`` builds (tests/test_gguf_convert.py), kept in the cache
(``cache``) so that a GGUF file is dequantized once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..core.errors import LaserkitError
from ..core.fileio import atomic_dir
from .cache import _stamp, cache_root, evict, fingerprint
from .checkpoint import GGUFCheckpoint

SHARD_BYTES = 2 << 30  # tensors held before a shard is written, while converting a GGUF file


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF file to a safetensors model directory, atomically, tensor by tensor.

    The model is never built: tensors are read one at a time (checkpoint.GGUFCheckpoint, which
    renames and reorders them as transformers' GGUF loader does) and written in shards of about
    SHARD_BYTES, so memory stays near one shard whatever the model's size.
    """
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    ckpt = GGUFCheckpoint(gguf)

    def write(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, trust_remote_code=False
        )
        config = ckpt.config
        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        if arch:
            config.architectures = [arch]
        config.dtype = "float32"
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name in ckpt.shapes():
            if size >= SHARD_BYTES:
                shards.append({})
                size = 0
            t = ckpt.get(name).to(torch.float32).contiguous()
            shards[-1][name] = t
            size += t.numel() * 4
            if size >= SHARD_BYTES or len(shards) > 1:
                _flush(shards, tmp, save_file)
        n = len(shards)
        files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        if n == 1:
            files = ["model.safetensors"]
        weight_map = {}
        for i, (shard, fname) in enumerate(zip(shards, files, strict=True)):
            part = tmp / f".part-{i}.safetensors"
            if shard:  # the last shard, still in memory
                save_file(shard, tmp / fname, metadata={"format": "pt"})
                names = list(shard)
            else:
                os.replace(part, tmp / fname)
                names = json.loads((tmp / f".part-{i}.names").read_text())
                (tmp / f".part-{i}.names").unlink()
            weight_map.update(dict.fromkeys(names, fname))
        if n > 1:
            total = sum((tmp / f).stat().st_size for f in files)
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            )
        config.save_pretrained(tmp)
        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    try:
        atomic_dir(out, write)
    except LaserkitError:
        if not (out / "config.json").exists():  # another process won the race: keep theirs
            raise
    return out


def _flush(shards: list[dict], tmp: Path, save_file) -> None:
    """Write every full shard but the last to a numbered part file and drop its tensors."""
    for i, shard in enumerate(shards[:-1]):
        if shard:
            save_file(shard, tmp / f".part-{i}.safetensors", metadata={"format": "pt"})
            (tmp / f".part-{i}.names").write_text(json.dumps(list(shard)))
            shard.clear()


def converted(path: Path) -> Path:
    """The safetensors directory for a GGUF file, converting it on the first request."""
    from .convert import convert_gguf

    out = cache_root() / fingerprint(path)
    fresh = not (out / "config.json").exists()
    if fresh:
        convert_gguf(path, out)
    try:
        _stamp(out).touch()  # last used, for the LRU cap
    except OSError:
        pass  # a read-only cache still works
    if fresh:
        evict(keep=out)
    return out
