"""Read a checkpoint one tensor at a time, without building the model.

The scan needs every 2-D weight once, and never the model: a 70B checkpoint must scan on a machine
with far less memory than the model. Sources:

- a directory of safetensors (one file, or shards listed in ``model.safetensors.index.json``).
  Tensors are read with plain positioned reads from the offsets in the file's header, not through
  a memory map, so pages of tensors already scanned do not stay in the process (a mapped 70B file
  would show up as 70B of resident memory by the end of the scan).
- a directory of PyTorch ``.bin`` files (fallback; ``torch.load(mmap=True, weights_only=True)``).
- a GGUF file: tensors are dequantized one by one with the ``gguf`` package and renamed to the
  Hugging Face names by transformers' own GGUF mapping (computed on a model built on the meta
  device, which holds no weights). llama.cpp stores llama-family q/k weights with their rows
  permuted for its rotary layout; they are permuted back here, although singular values (and so
  every scan statistic) are invariant under a row permutation.
- ``default`` (the packaged SmolLM2, as its cached safetensors directory) or a hub id, resolved
  through the local Hugging Face cache or a download.

Damaged files (truncated, garbled header) raise one LaserkitError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.errors import LaserkitError, first_line

if TYPE_CHECKING:  # heavy imports, made on demand where the code runs
    from gguf import GGUFReader, ReaderTensor
    from transformers import PretrainedConfig
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8),
    "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8),
}


class Checkpoint:
    """Lazy access to the tensors of one checkpoint: names and shapes first, data on request."""

    source: str
    config: object | None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, in checkpoint order, read from headers only."""
        raise NotImplementedError

    def get(self, name: str) -> torch.Tensor:
        """One tensor, in its stored dtype (dequantized to float32 for GGUF), on the CPU."""
        raise NotImplementedError

    def dtype_name(self, name: str) -> str:
        """Stored dtype (or GGUF quantization type) of one tensor, for records and resumes."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash telling this checkpoint's weights from any other's, cheaply (see _file_identity).

        A scan reuses stored results only under the same fingerprint.
        """
        raise NotImplementedError


_SAMPLE = 1 << 16


def _file_identity(path: Path, h: Any) -> None:  # h: a hashlib hash
    """Feed a file's name, size, modification time and three 64 KiB samples into ``h``.

    Headers alone do not tell two checkpoints apart (same architecture ⇒ same header); the
    mtime catches a file re-saved after an edit, the samples a different file with a kept mtime.
    """
    st = path.stat()
    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    with open(path, "rb") as f:
        for pos in (0, max(0, st.st_size // 2 - _SAMPLE // 2), max(0, st.st_size - _SAMPLE)):
            f.seek(pos)
            h.update(f.read(_SAMPLE))


# ----------------------------------------------------------------------------- safetensors


class _SafetensorsFile:
    """One safetensors file: header parsed and checked against the file size at open."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise ValueError("file shorter than its 8-byte header length")
                (hlen,) = struct.unpack("<Q", raw)
                if hlen > size - 8:
                    raise ValueError(f"header length {hlen} exceeds the file size {size}")
                self.header_bytes = f.read(hlen)
            header = json.loads(self.header_bytes)
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise LaserkitError(f"corrupt safetensors file {path}: {e}") from None
        self.data_start = 8 + hlen
        header.pop("__metadata__", None)
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        end = 0
        for name, info in header.items():
            try:
                dtype, shape, (a, b) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise LaserkitError(
                    f"corrupt safetensors file {path}: bad entry {name!r}"
                ) from None
            if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
                raise LaserkitError(f"unsupported dtype {dtype} for {name} in {path}")
            _check_entry(path, name, _ST_DTYPES[dtype], shape, a, b)
            self.entries[name] = (dtype, shape, int(a), int(b))
            end = max(end, int(b))
        if self.data_start + end > size:
            raise LaserkitError(
                f"truncated safetensors file {path}: the header needs {self.data_start + end} "
                f"bytes, the file has {size} (re-download or re-save it)"
            )

    def read(self, name: str) -> torch.Tensor:
        dtype, shape, a, b = self.entries[name]
        buf = torch.empty(b - a, dtype=torch.uint8)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.data_start + a)
            got = f.readinto(buf.numpy().data)
        if got != b - a:
            raise LaserkitError(f"truncated safetensors file {self.path}: short read of {name}")
        return buf.view(_ST_DTYPES[dtype]).reshape(shape)


def _check_entry(
    path: Path, name: str, dtype: torch.dtype, shape: tuple, a: object, b: object
) -> None:
    """A header entry's shape (whole numbers ≥ 0) and data offsets (0 ≤ a ≤ b, as many bytes
    as the shape needs), as the safetensors library checks them: a damaged header is named in
    one line rather than failing later inside torch."""
    if (
        type(a) is not int
        or type(b) is not int
        or not all(type(x) is int for x in shape)
        or min(shape, default=0) < 0
        or not 0 <= a <= b
    ):
        raise LaserkitError(f"corrupt safetensors file {path}: bad shape or offsets for {name!r}")
    if math.prod(shape) * dtype.itemsize != b - a:
        raise LaserkitError(
            f"corrupt safetensors file {path}: {name!r} has shape {list(shape)} but {b - a} bytes"
        )


class SafetensorsCheckpoint(Checkpoint):
    """A directory of one or more safetensors files."""

    def __init__(self, folder: Path, source: str | None = None):
        self.source = source or str(folder)
        self.config = _config(folder)
        index = folder / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise LaserkitError(f"corrupt shard index {index}") from None
            names = sorted(set(weight_map.values()))
        else:
            names = sorted(p.name for p in folder.glob("*.safetensors"))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise LaserkitError(f"{folder}: shard(s) missing: {', '.join(missing[:3])}")
        self.files = [_SafetensorsFile(folder / n) for n in names]
        self._where = {t: f for f in self.files for t in f.entries}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t: f.entries[t][1] for f in self.files for t in f.entries}

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].read(name)

    def dtype_name(self, name: str) -> str:
        return self._where[name].entries[name][0]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            _file_identity(f.path, h)
            h.update(f.header_bytes)
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- torch .bin


class BinCheckpoint(Checkpoint):
    """A directory of PyTorch ``.bin`` files, memory-mapped; a fallback for old checkpoints."""

    def __init__(self, folder: Path, source: str | None = None):
        self.source = source or str(folder)
        self.config = _config(folder)
        from .modelfiles import weight_files

        # weight files only: a Trainer folder's training_args.bin is a pickle of settings
        self.paths = [p for p in weight_files(folder) if p.suffix == ".bin"]
        self._loaded: tuple[Path, dict] | None = None
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        for p in self.paths:
            for name, t in self._load(p).items():
                if isinstance(t, torch.Tensor):
                    self._where[name] = p
                    self._shapes[name] = tuple(t.shape)
                    self._dtypes[name] = str(t.dtype).removeprefix("torch.")

    def _load(self, path: Path) -> dict:
        if self._loaded is None or self._loaded[0] != path:
            try:
                sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            except Exception as e:  # zip errors, unpickling errors, legacy formats
                raise LaserkitError(
                    f"corrupt or unsupported PyTorch file {path}: {_plain(first_line(e))}"
                ) from None
            self._loaded = (path, sd)
        return self._loaded[1]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def get(self, name: str) -> torch.Tensor:
        return self._load(self._where[name])[name].clone()

    def dtype_name(self, name: str) -> str:
        return self._dtypes[name]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.paths:
            _file_identity(p, h)
        for name, shape in self._shapes.items():
            h.update(f"{name}{shape}{self._dtypes[name]};".encode())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- GGUF


class GGUFCheckpoint(Checkpoint):
    """A GGUF file, dequantized tensor by tensor and renamed to Hugging Face names."""

    config: PretrainedConfig  # built from the file's metadata, never None

    def __init__(self, path: Path, source: str | None = None):
        self.source = source or str(path)
        self.path = path
        self.reader = gguf_reader(path)
        self.config, processor, hf_names = _gguf_naming(path)
        self._processor = processor
        self._names = hf_names
        self._tensors = {}
        for t in self.reader.tensors:
            hf = hf_names.get(t.name)
            if hf is not None:
                self._tensors[hf] = t

    def shapes(self) -> dict[str, tuple[int, ...]]:
        # GGUF lists dimensions fastest-first; PyTorch order is the reverse.
        return {
            n: tuple(int(d) for d in reversed(t.shape.tolist())) for n, t in self._tensors.items()
        }

    def get(self, name: str) -> torch.Tensor:
        from gguf import dequantize

        t = self._tensors[name]
        weights = dequantize(t.data, t.tensor_type)
        # as transformers' load_gguf_checkpoint calls it: a processor may store a tensor under
        # another name itself (gpt2's output.weight → lm_head.weight) and return no name
        stored: dict[str, dict] = {"tensors": {}}
        out = self._processor.process(
            weights=weights, name=t.name, tensor_key_mapping=self._names, parsed_parameters=stored
        )
        if out.name is None and len(stored["tensors"]) == 1:
            tensor = next(iter(stored["tensors"].values())).clone()
        else:
            tensor = torch.from_numpy(out.weights.copy())
        _release(self.reader, t)
        return tensor

    def dtype_name(self, name: str) -> str:
        return self._tensors[name].tensor_type.name

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        _file_identity(self.path, h)
        for t in self.reader.tensors:
            h.update(f"{t.name}{t.shape.tolist()}{t.tensor_type.name}{t.data_offset};".encode())
        return h.hexdigest()[:16]


def _plain(text: str) -> str:
    """Text without terminal escape sequences (torch's weights_only message carries some)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def gguf_reader(path: Path) -> GGUFReader:
    """A gguf.GGUFReader of the file; one LaserkitError when it is damaged."""
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/struct/numpy errors on damage
        raise LaserkitError(f"corrupt or truncated GGUF file {path}: {e}") from None


# GGUF architectures (general.architecture) whose tensor-by-tensor conversion here is checked
# against transformers' own GGUF load in tests/test_gguf_convert.py. Others transformers reads
# (mixture-of-experts processors merge several GGUF tensors into one, t5/umt5/deci are not causal
# LMs here) are refused in one line rather than converted unverified.
VERIFIED_GGUF_ARCHS = (
    "llama",
    "qwen2",
    "qwen3",
    "falcon",
    "phi3",
    "bloom",
    "stablelm",
    "gpt2",
    "starcoder2",
    "mamba",
    "nemotron",
    "gemma2",
    "gemma3",
)


def gguf_processor(arch: str, config: PretrainedConfig) -> TensorProcessor:
    """transformers' tensor processor for a GGUF file, looked up as transformers does: by the
    file's GGUF architecture (``gemma3``), not by the config's model_type (``gemma3_text``),
    which would skip the Gemma norm offset."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())


def check_gguf_arch(arch: str, path: Path) -> None:
    """Refuse, in one line, a GGUF architecture whose conversion is not verified."""
    if arch not in VERIFIED_GGUF_ARCHS:
        raise LaserkitError(
            f"GGUF file {path} has architecture {arch!r}, which laserkit does not convert "
            f"(verified against transformers: {', '.join(VERIFIED_GGUF_ARCHS)}); load it with "
            "transformers' AutoModelForCausalLM.from_pretrained(DIR, gguf_file=...), "
            "save_pretrained it and pass that directory"
        )


def _gguf_naming(path: Path) -> tuple[PretrainedConfig, TensorProcessor, dict[str, str]]:
    """(config, transformers' tensor processor, GGUF name → HF name) for a GGUF file.

    The config, architecture and name map are cached per file content (gguf_cache.naming).
    """
    from transformers import AutoConfig

    from .cache import naming

    doc = naming(path, lambda: _gguf_naming_uncached(path))
    config = AutoConfig.for_model(**doc["config"])
    return config, gguf_processor(doc["arch"], config), doc["names"]


def _gguf_naming_uncached(path: Path) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    try:
        arch = read_field(gguf_reader(path), "general.architecture")[0]
    except (IndexError, KeyError, ValueError, TypeError):
        raise LaserkitError(f"GGUF file {path} names no general.architecture") from None
    check_gguf_arch(arch, path)
    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
        config = AutoConfig.for_model(**parsed)
        with torch.device("meta"):  # names only: a model without storage
            model = AutoModelForCausalLM.from_config(config)
        names = get_gguf_hf_weights_map(model, gguf_processor(arch, config))
    except (ValueError, KeyError, NotImplementedError) as e:
        raise LaserkitError(
            f"cannot map the tensors of GGUF file {path}: {first_line(e)}"
        ) from None
    return {"config": parsed, "names": names, "arch": arch}


def _release(reader: GGUFReader, tensor: ReaderTensor) -> None:
    """Drop the mapped pages of a tensor already read, so resident memory stays bounded."""
    mm = getattr(getattr(reader, "data", None), "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    page = mmap.PAGESIZE
    start = (int(tensor.data_offset) // page) * page
    length = int(tensor.data_offset) + int(tensor.n_bytes) - start
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, length)
    except (OSError, ValueError, AttributeError):
        pass


# ----------------------------------------------------------------------------- opening


def _config(folder: Path) -> object | None:
    """The checkpoint's config, or None when it has none or transformers cannot read it (also
    one that needs its own code: it is never run here, and never asked about on stdout)."""
    if not (folder / "config.json").exists():
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError):
        return None
