"""Options and helpers shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from ..core.errors import LaserkitError

console = Console(stderr=True)

_NOTHING = "nothing was written"
_interrupt: list[str | Callable[[], str]] = [_NOTHING]


def on_interrupt(note: str | Callable[[], str]) -> None:
    """Say what a Ctrl-C from now on leaves behind and how to continue (printed by ``main``);
    a callable is asked at the moment of the interrupt."""
    _interrupt[0] = note


def interrupt_note() -> str:
    note = _interrupt[0]
    return note() if callable(note) else note


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def on_interrupt_publishing(out: Path, what: str, again: str) -> None:
    """The note for a Ctrl-C around an atomic publish of ``out``: a new directory put in place
    is a new inode, so the note can tell "already complete" from "nothing written"."""
    before = _identity(out)

    def note() -> str:
        if _identity(out) not in (None, before):
            return f"{what} was already complete and is in {out}"
        kept = "is as it was" if before is not None else "was not created"
        return f"nothing was written and no partial files were left; {out} {kept}; {again}"

    on_interrupt(note)


ModelArg = typer.Argument(
    "default", help="hub id, local model directory, .gguf file, or 'default' (packaged SmolLM2)"
)
DtypeOpt = typer.Option(
    "auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bf16, fp16"
)
DeviceOpt = typer.Option(
    "auto",
    "--device",
    help="auto (GPU when there is one), cpu, cuda, cuda:N; map: a model larger than one GPU "
    "spread over the GPUs, the CPU, then disk (map:0=70GiB,cpu=200GiB caps each; docs/models.md)",
)
TrustOpt = typer.Option(
    False,
    "--trust-remote-code",
    help="allow a model directory's own Python "
    "code (its config's auto_map) to run; off by default: such a model is "
    "refused, never prompted for",
)


def load_with_status(model: str, dtype: str, device: str, trust_remote_code: bool = False):
    """Load a model with a spinner (loading a GGUF the first time takes ~15 s)."""
    from ..io.load import load

    with console.status(f"loading {model} ..."):
        return load(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


def check_model_input(model: str, trust_remote_code: bool = False) -> None:
    """Checks of a model argument that need no loading: a local directory with its own code
    (without --trust-remote-code) is refused before any work."""
    from ..io.source import ModelSource, refuse_remote_code

    src = ModelSource.parse(model)
    if src.kind == "dir":
        refuse_remote_code(src.local_path, trust_remote_code)


def check_source_out(model: str, out: Path) -> None:
    """``--out`` must not be the source model, inside it, or contain it: checked before any
    work."""
    from ..io.modelfiles import refuse_overlap
    from ..io.source import ModelSource

    src = ModelSource.parse(model)
    path = src.path or (src.gguf_file if src.kind == "default" else None)
    if path is not None:
        refuse_overlap(path, out)


def require_tokenizer(model: str, option: str = "MODEL") -> None:
    """A task needs the model's tokenizer: a local directory without tokenizer files is refused
    in one line before anything is loaded or created."""
    from ..io.modelfiles import has_tokenizer
    from ..io.source import ModelSource

    src = ModelSource.parse(model)
    if src.kind == "dir" and not has_tokenizer(src.local_path):
        raise LaserkitError(
            f"{option} {model} has no tokenizer files (tokenizer.json, "
            "tokenizer_config.json, tokenizer.model, vocab.json, ...): scoring a "
            "task needs them; copy the base model's tokenizer files into it"
        )
