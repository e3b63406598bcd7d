"""Which files make a model, how they are copied, and whether a saved one loads.

One answer for the out-of-core writer, the in-memory save and the post-save check, so a saved
model is exactly a model: config, generation config, tokenizer files, chat template, the weight
files and their index (and the Python files a trusted ``auto_map`` names). Never a Trainer's
``checkpoint-*/``, ``optimizer.pt``, ``training_args.bin``, ``runs/`` or an earlier output
saved inside the source.

Copies never share an inode with their source (a hard link would let a later edit of the copy
change the user's model, and chmod-ing it would change the source's mode): a reflink where the
file system offers one (FICLONE), else ``os.copy_file_range`` (in-kernel), else a byte copy.
Symlinks (a Hugging Face cache snapshot's ``../../blobs/<hash>``) are followed: the copy holds the
bytes they point to.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path

from ..core.errors import LaserkitError

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)
VOCAB_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)  # one of them defines a tokenizer's vocabulary
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SHARD = re.compile(r"^(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)$")
FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int)


def _index_files(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise LaserkitError(
            f"corrupt shard index {index}: expected JSON with a weight_map"
        ) from None


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: those its index names, else the top-level
    ``*.safetensors``, else ``pytorch_model*.bin`` / ``model*.bin`` shards (never
    ``training_args.bin``, optimizer or scheduler states)."""
    for name in WEIGHT_INDEXES:
        if (folder / name).is_file():
            return [folder / f for f in _index_files(folder / name)]
    st = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if st:
        return st
    return sorted(p for p in folder.glob("*.bin") if _SHARD.match(p.name) and p.is_file())


def _code_files(folder: Path) -> list[Path]:
    """The Python modules a config's or tokenizer config's ``auto_map`` names."""
    out = set()
    for name in ("config.json", "tokenizer_config.json"):
        for ref in auto_map_refs(folder / name):
            module = ref.split("--")[-1].rsplit(".", 1)[0]
            if (folder / f"{module}.py").is_file():
                out.add(folder / f"{module}.py")
    return sorted(out)


def auto_map_refs(config: Path) -> list[str]:
    """The ``module.Class`` references of a JSON file's ``auto_map`` (empty when it has none)."""
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    amap = doc.get("auto_map") if isinstance(doc, dict) else None
    refs: list[str] = []
    for v in (amap or {}).values() if isinstance(amap, dict) else []:
        refs.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))
    return refs


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds a tokenizer (a vocabulary file, not only its config)."""
    return any((folder / n).is_file() for n in VOCAB_FILES) or any(folder.glob("*.tiktoken"))


def model_files(folder: os.PathLike | str) -> list[Path]:
    """Every file that makes the model in ``folder`` (see the module docstring), sorted."""
    folder = Path(folder)
    names = [folder / n for n in (*CONFIG_FILES, *TOKENIZER_FILES, *WEIGHT_INDEXES)]
    files = {p for p in names if p.is_file()}
    files.update(p for p in folder.glob("*.tiktoken") if p.is_file())
    files.update(weight_files(folder))
    files.update(_code_files(folder))
    return sorted(files)


def clone_file(src: Path, dst: Path) -> None:
    """Copy ``src``'s bytes (through any symlink) into a new ``dst``, never as a hard link."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return
        except OSError:
            pass  # no reflinks here (ext4, tmpfs, another file system)
        size = os.fstat(fin.fileno()).st_size
        try:
            done = 0
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break
                done += n
            if done == size:
                return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        fin.seek(0)
        fout.seek(0)
        fout.truncate()
        shutil.copyfileobj(fin, fout, 1 << 24)


def refuse_overlap(source: Path, out: Path, what: str = "--out") -> None:
    """An output must not be its source, inside it, or contain it (symlinks resolved): the
    save would replace or bury the model it reads."""
    src = source.resolve()
    dst = out.resolve()  # resolves the existing part; the rest is taken as written
    if dst == src:
        raise LaserkitError(
            f"{what} {out} is the source model {source}: write the edit "
            "elsewhere (the source is never replaced)"
        )
    if src in dst.parents:
        raise LaserkitError(
            f"{what} {out} is inside the source model {source}: write the edit outside it"
        )
    if dst in src.parents:
        raise LaserkitError(
            f"{what} {out} contains the source model {source}: replacing it "
            "would delete the source; choose another directory"
        )
