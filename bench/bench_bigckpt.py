"""Out-of-core `reduce` on a checkpoint larger than the memory it is allowed.

Builds a synthetic sharded safetensors checkpoint in Mistral-7B's shapes (hidden 4096, MLP 14336,
32 query / 8 key-value heads, vocabulary 32000, bfloat16), with fewer layers so it fits this
machine's disk and time: ``--layers 7`` is 3.6 GB. Then, each in its own process:

1. `laserkit reduce CKPT --lname fc_in --lnum -1 --rho 0.05 --out OUT` under an address-space
   limit (RLIMIT_AS, ``--limit-gb``, default 2.5) below the checkpoint's size: out of core;
2. the same command with ``--in-memory --dtype bfloat16`` (the model is loaded, at the stored
   dtype) under the same limit: expected to fail (it must hold the model);
3. a plain copy of the checkpoint directory (`cp -r`), the floor for writing a new model;
4. on a 2-layer copy (same shapes), in-memory vs out-of-core: the edited tensor bit for bit.

Peak RSS is each process's ru_maxrss. Usage:

    .venv/bin/python bench/bench_bigckpt.py [--layers 7] [--limit-gb 2.5] [--dir /tmp/bigckpt]

``--copy-only``: only what an out-of-core save costs to copy the files it does not edit (every
model file cloned by modelfiles.clone_file: a reflink where the file system offers one, else
copy_file_range, never a hard link) against `cp -r` of the same directory, alternating, in the
same run. (Outputs used to hard-link unedited shards, which let a later edit of the output
reach the source.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPES = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32000,
)
EDIT = ["--lname", "fc_in", "--lnum", "-1", "--rho", "0.05"]
IN_MEMORY = ["--in-memory", "--dtype", "bfloat16"]


def build(folder: Path, layers: int) -> int:
    """A random bfloat16 checkpoint, one shard per layer plus one for embeddings and head."""
    import torch
    from safetensors.torch import save_file
    from transformers import MistralConfig

    if (folder / "config.json").exists():
        return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = MistralConfig(num_hidden_layers=layers, dtype="bfloat16", **SHAPES)
    cfg.save_pretrained(tmp)
    h, f, kv = SHAPES["hidden_size"], SHAPES["intermediate_size"], 8 * 128
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    weight_map = {}
    one = torch.ones(h, dtype=torch.bfloat16)
    shards = [
        (
            "model-embed.safetensors",
            {
                "model.embed_tokens.weight": rnd(32000, h),
                "lm_head.weight": rnd(32000, h),
                "model.norm.weight": one,
            },
        )
    ]
    for i in range(layers):
        p = f"model.layers.{i}."
        shards.append(
            (
                f"model-layer-{i:03d}.safetensors",
                {
                    p + "self_attn.q_proj.weight": rnd(h, h),
                    p + "self_attn.k_proj.weight": rnd(kv, h),
                    p + "self_attn.v_proj.weight": rnd(kv, h),
                    p + "self_attn.o_proj.weight": rnd(h, h),
                    p + "mlp.gate_proj.weight": rnd(f, h),
                    p + "mlp.up_proj.weight": rnd(f, h),
                    p + "mlp.down_proj.weight": rnd(h, f),
                    p + "input_layernorm.weight": one.clone(),
                    p + "post_attention_layernorm.weight": one.clone(),
                },
            )
        )
    total = 0
    for name, tensors in shards:
        save_file(tensors, tmp / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += (tmp / name).stat().st_size
        del tensors
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    os.replace(tmp, folder)
    return total


def run_limited(args: list[str], limit_gb: float | None, env: dict | None = None) -> dict:
    """Run a command with RLIMIT_AS; its wall time, exit status, peak RSS and stderr tail."""

    def limit() -> None:
        if limit_gb:
            n = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (n, n))

    t = time.perf_counter()
    p = subprocess.Popen(
        args,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=limit,
        env={**os.environ, **(env or {})},
    )
    _, err = p.communicate()
    wall = time.perf_counter() - t
    return {"rc": p.returncode, "seconds": wall, "stderr": err.strip().splitlines()[-1:] or [""]}


def peak_child(args: list[str], limit_gb: float | None, env: dict | None = None) -> dict:
    """run_limited in a fresh helper process, so RUSAGE_CHILDREN is this command's alone."""
    here = str(Path(__file__).parent)
    code = (
        f"import json,resource,sys; sys.path.insert(0, {here!r}); import bench_bigckpt as b; "
        f"r = b.run_limited({args!r}, {limit_gb!r}, {env!r}); "
        "r['peak_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
        "print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reflinks(folder: Path) -> bool:
    """Whether this file system clones files (FICLONE) where the checkpoint lies."""
    import fcntl

    from laserkit.io.modelfiles import FICLONE

    a, b = folder / ".probe-a", folder / ".probe-b"
    a.write_bytes(b"x" * 4096)
    try:
        with open(a, "rb") as fin, open(b, "wb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        return True
    except OSError:
        return False
    finally:
        a.unlink(missing_ok=True)
        b.unlink(missing_ok=True)


def copy_cost(big: Path, work: Path, rounds: int = 2) -> None:
    """clone_file of every model file (what a save does for unedited files) vs `cp -r`."""
    from laserkit.io.modelfiles import clone_file, model_files

    size = sum(p.stat().st_size for p in model_files(big))
    times: dict[str, list[float]] = {"cp -r": [], "clone_file": []}
    for _ in range(rounds):
        for label in times:
            dst = work / "copy-bench"
            shutil.rmtree(dst, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            t = time.perf_counter()
            if label == "cp -r":
                subprocess.run(["cp", "-r", str(big), str(dst)], check=True)
            else:
                dst.mkdir()
                for p in model_files(big):
                    clone_file(p, dst / p.name)
            os.sync()
            times[label].append(time.perf_counter() - t)
            shutil.rmtree(dst, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"copy of {size / 2**30:.2f} GiB, reflinks offered here: {_reflinks(big)}; best of "
        f"{rounds}: cp -r {best['cp -r']:.1f} s, clone_file {best['clone_file']:.1f} s, "
        f"ratio clone_file / cp -r {best['clone_file'] / best['cp -r']:.2f} "
        f"(all: {json.dumps({k: [round(x, 1) for x in v] for k, v in times.items()})})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--limit-gb", type=float, default=2.5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/laserkit-bigckpt"))
    ap.add_argument("--copy-only", action="store_true", help="only the copy cost vs cp -r")
    args = ap.parse_args()
    if args.copy_only:
        big = args.dir / f"mistral-shapes-{args.layers}l"
        build(big, args.layers)
        copy_cost(big, args.dir)
        return
    import torch
    from safetensors import safe_open

    exe = str(Path(sys.executable).with_name("laserkit"))
    big, small = args.dir / f"mistral-shapes-{args.layers}l", args.dir / "mistral-shapes-2l"
    t = time.perf_counter()
    size = build(big, args.layers)
    build(small, 2)
    print(
        f"checkpoint: {size / 2**30:.2f} GiB in {len(list(big.glob('*.safetensors')))} shards "
        f"(built in {time.perf_counter() - t:.0f} s); memory limit RLIMIT_AS "
        f"{args.limit_gb} GiB"
    )
    for d in ("out-ooc", "out-mem", "copy", "small-ooc", "small-mem"):
        shutil.rmtree(args.dir / d, ignore_errors=True)
    ooc = peak_child(
        [exe, "reduce", str(big), *EDIT, "--out", str(args.dir / "out-ooc")], args.limit_gb
    )
    mem = peak_child(
        [exe, "reduce", str(big), *EDIT, *IN_MEMORY, "--out", str(args.dir / "out-mem")],
        args.limit_gb,
    )
    subprocess.run(["sync"], check=True)
    cp = peak_child(["cp", "-r", str(big), str(args.dir / "copy")], None)
    for label, r in (("reduce out of core", ooc), ("reduce in memory", mem), ("cp -r", cp)):
        print(
            f"{label:20s} rc {r['rc']:3d}  {r['seconds']:7.1f} s  peak RSS {r['peak_mb']:7.0f} MB"
            f"  {r['stderr'][0][:110] if r['rc'] else ''}"
        )
    print(
        f"out of core / cp time: {ooc['seconds'] / cp['seconds']:.2f}x; peak RSS / checkpoint "
        f"size: {ooc['peak_mb'] * 2**20 / size:.3f}"
    )
    # the edited tensor against the in-memory path, on the 2-layer copy (no limit)
    small_ooc = peak_child(
        [exe, "reduce", str(small), *EDIT, "--out", str(args.dir / "small-ooc")], None
    )
    small_mem = peak_child(
        [exe, "reduce", str(small), *EDIT, *IN_MEMORY, "--out", str(args.dir / "small-mem")], None
    )
    name = "model.layers.1.mlp.gate_proj.weight"

    def tensor(folder: Path) -> torch.Tensor:
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                if name in st.keys():
                    return st.get_tensor(name)
        raise KeyError(name)

    a, b = tensor(args.dir / "small-ooc"), tensor(args.dir / "small-mem")
    print(
        f"2-layer copy: out of core {small_ooc['seconds']:.1f} s / {small_ooc['peak_mb']:.0f} MB,"
        f" in memory {small_mem['seconds']:.1f} s / {small_mem['peak_mb']:.0f} MB; {name} "
        f"bit-equal: {torch.equal(a.view(torch.int16), b.view(torch.int16))}, rank "
        f"{int(torch.linalg.matrix_rank(a.float()))}"
    )


if __name__ == "__main__":
    main()
