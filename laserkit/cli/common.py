"""Options and helpers shared by several commands."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)

_NOTHING = "nothing was written"
_interrupt = [_NOTHING]


def on_interrupt(note: str) -> None:
    """Say what a Ctrl-C from now on leaves behind and how to continue (printed by ``main``)."""
    _interrupt[0] = note


def interrupt_note() -> str:
    return _interrupt[0]

ModelArg = typer.Argument(
    "default", help="hub id, local model directory, .gguf file, or 'default' (packaged SmolLM2)"
)
DtypeOpt = typer.Option("auto", "--dtype",
                        help="auto (bf16 on GPU, fp32 on CPU), float32, bf16, fp16")
DeviceOpt = typer.Option("auto", "--device", help="auto (GPU when there is one), cpu, cuda, cuda:N")


def load_with_status(model: str, dtype: str, device: str):
    """Load a model with a spinner (loading a GGUF the first time takes ~15 s)."""
    from ..loading import load

    on_interrupt(_NOTHING)
    with console.status(f"loading {model} ..."):
        return load(model, dtype=dtype, device=device)
