"""`reduce` of a 7B-shaped checkpoint against copying it plus the interpreter's start-up.

A synthetic safetensors checkpoint in Mistral-7B's shapes (bench_bigckpt.build, bfloat16) with
``--layers`` layers (default 1: the edited layer; a 7B's other 31 layers are untouched bytes,
which `reduce` copies like `cp` does), whose last fc_in (gate_proj, 14336×4096) is replaced by a
matrix with a power-law spectrum like real weights' (i.i.d. noise has a flat bulk where no top-k
solver has a gap to find; real weights do not look like that). Each command in its own process:

1. `laserkit reduce CKPT --lname fc_in --lnum -1 --rho RHO --out OUT` (out of core);
2. `cp -r CKPT COPY`;
3. the interpreter's start-up with what `reduce` must import (torch, transformers, safetensors).

    .venv/bin/python bench/bench_reduce_7b.py [--layers 1] [--rho 0.01] [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bigckpt import build  # noqa: E402

LASERKIT = str(Path(sys.executable).parent / "laserkit")


def realistic_fc_in(folder: Path, layer: int) -> None:
    """Overwrite the layer's gate_proj with G·diag((1+j)^-½)·0.02-scaled rows (bfloat16)."""
    import torch
    from safetensors.torch import load_file, save_file

    shard = folder / f"model-layer-{layer:03d}.safetensors"
    tensors = load_file(shard)
    name = f"model.layers.{layer}.mlp.gate_proj.weight"
    m, n = tensors[name].shape
    g = torch.Generator().manual_seed(1)
    W = torch.randn(m, n, generator=g) * (1.0 + torch.arange(n, dtype=torch.float32)) ** -0.5
    tensors[name] = (W * 0.5).to(torch.bfloat16)
    save_file(tensors, shard, metadata={"format": "pt"})


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rho", default="0.01")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/laserkit-reduce7b"))
    args = ap.parse_args()
    ckpt = args.dir / f"ckpt-{args.layers}"
    fresh = not (ckpt / "config.json").exists()
    size = build(ckpt, args.layers)
    if fresh:
        realistic_fc_in(ckpt, args.layers - 1)
    out, copy = args.dir / "out", args.dir / "copy"
    for p in (out, copy):
        shutil.rmtree(p, ignore_errors=True)
    t_reduce = timed(
        [
            LASERKIT,
            "reduce",
            str(ckpt),
            "--lname",
            "fc_in",
            "--lnum",
            "-1",
            "--rho",
            args.rho,
            "--out",
            str(out),
        ]
    )
    t_copy = timed(["cp", "-r", str(ckpt), str(copy)])
    t_start = timed([sys.executable, "-c", "import torch, transformers, safetensors"])
    print(
        f"checkpoint: {args.layers} layer(s) in Mistral-7B shapes, {size / 2**30:.2f} GiB; "
        f"edit fc_in (14336×4096) of the last layer at ρ {args.rho}"
    )
    print(
        f"reduce {t_reduce:.1f} s; cp -r {t_copy:.1f} s; start-up {t_start:.1f} s; "
        f"reduce / (copy + start-up) = {t_reduce / (t_copy + t_start):.2f}"
    )


if __name__ == "__main__":
    main()
