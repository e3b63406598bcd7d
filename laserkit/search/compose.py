"""Composition (SPEC §1): start at the last layer and keep stacking reductions, one layer at a
time towards the first, while validation accuracy does not drop. At each layer every (τ, ρ) of
the grid is tried on top of the stack and the best (by the paper's rule) is the candidate.

Every trial at layer ℓ edits only layers ≥ ℓ, so the prefix cache serves all of them."""

from __future__ import annotations

from pathlib import Path

from ..interventions import Intervention
from . import trial
from .grid import pick
from .runner import Context
from .sequential import Progress, Steps, headline


def compose_config(model: str, objective: dict, lnames: list[str], layers: list[int],
                   rhos: list[float], intervention: dict, *, dtype: str = "auto",
                   storage: str | None = None, prefix_cache: bool = True, seed: int = 0) -> dict:
    return {"command": "compose", "model": model, "objective": objective,
            "compose": {"lnames": lnames, "layers": sorted(layers, reverse=True),
                        "rhos": sorted(rhos, reverse=True)},
            "intervention": intervention, "dtype": dtype, "storage": storage,
            "prefix_cache": prefix_cache, "seed": seed}


def run_compose(run_dir: Path, cfg: dict, ctx: Context, *, resume: bool = False,
                progress: Progress | None = None) -> dict:
    run = Steps(run_dir, cfg, ctx, resume, progress)
    c = run.cfg["compose"]
    iv = run.cfg["intervention"]
    options = [(lname, rho) for lname in c["lnames"] for rho in c["rhos"]]
    total = len(c["layers"]) * len(options) + 3
    base = current = run.score([], -1, total=total)
    stack: list[dict] = []
    steps = []
    for layer in c["layers"]:
        tried = []
        for j, (lname, rho) in enumerate(options):
            one = trial.edit(lname, layer, Intervention.from_dict({**iv, "rho": rho}))
            tried.append(run.score(stack + [one], layer * len(options) + j, total=total))
        best = pick(tried, run.hib)
        keep = (headline(best.summary) >= headline(current.summary) if run.hib
                else headline(best.summary) <= headline(current.summary))
        step_edit = best.spec["edits"][-1]
        steps.append({"step": len(steps), "layer": layer, "edit": trial.describe_edit(step_edit),
                      "score": best.summary.get("score"), "accuracy": best.summary.get("accuracy"),
                      "log_loss": best.summary.get("log_loss"), "kept": keep,
                      "best_score": (best if keep else current).summary.get("score")})
        if not keep:
            break
        stack.append(step_edit)
        current = best
    return run.finish(base, current, stack, steps)
