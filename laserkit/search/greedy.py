"""laserRMT's greedy search (SPEC §3): candidates are the k matrices of lowest SNR; each in turn
is reduced by Marchenko–Pastur thresholding and kept only if the score improves; otherwise that
step alone is dropped and the kept ones stay."""

from __future__ import annotations

from pathlib import Path

from ..interventions import Intervention
from . import trial
from .runner import Context
from .sequential import Progress, Steps, better


def candidate_edits(candidates: list[tuple[str, int, str]],
                    iv: Intervention | None = None) -> list[dict]:
    """Edits from laserkit.scan.lowest_snr's (module, layer, lname) list, in its order."""
    iv = iv or Intervention(kind="mp-threshold")
    return [trial.edit(lname, layer, iv) for _module, layer, lname in candidates]


def greedy_config(model: str, objective: dict, candidates: list[dict], *, dtype: str = "auto",
                  storage: str | None = None, prefix_cache: bool = True, seed: int = 0) -> dict:
    return {"command": "greedy", "model": model, "objective": objective,
            "candidates": candidates, "dtype": dtype, "storage": storage,
            "prefix_cache": prefix_cache, "seed": seed}


def run_greedy(run_dir: Path, cfg: dict, ctx: Context, *, resume: bool = False,
               progress: Progress | None = None) -> dict:
    """Try every candidate in order on top of the kept ones; keep strict improvements only."""
    run = Steps(run_dir, cfg, ctx, resume, progress)
    cands = run.cfg["candidates"]
    total = len(cands) + 3
    base = best = run.score([], -1, total=total)
    kept: list[dict] = []
    steps = []
    for i, cand in enumerate(cands):
        r = run.score(kept + [cand], i, total=total)
        keep = better(r.summary, best.summary, run.hib)
        steps.append({"step": i, "edit": trial.describe_edit(cand), "layer": cand["layer"],
                      "lname": cand.get("lname"), "score": r.summary.get("score"),
                      "accuracy": r.summary.get("accuracy"), "log_loss": r.summary.get("log_loss"),
                      "kept": keep, "best_score": (r if keep else best).summary.get("score")})
        if keep:
            kept.append(cand)
            best = r
    return run.finish(base, best, kept, steps)
