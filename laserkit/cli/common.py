"""Options and helpers shared by several commands."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)

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
