"""Options and helpers shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

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
DtypeOpt = typer.Option("auto", "--dtype",
                        help="auto (bf16 on GPU, fp32 on CPU), float32, bf16, fp16")
DeviceOpt = typer.Option("auto", "--device", help="auto (GPU when there is one), cpu, cuda, cuda:N")


def load_with_status(model: str, dtype: str, device: str):
    """Load a model with a spinner (loading a GGUF the first time takes ~15 s)."""
    from ..loading import load

    with console.status(f"loading {model} ..."):
        return load(model, dtype=dtype, device=device)
