"""laserRMT's greedy search (docs/methods.md): candidates are the k matrices of lowest SNR; each
in turn is reduced by Marchenko–Pastur thresholding and kept only if the score improves (or,
for perplexity, stays equal);
otherwise that step alone is dropped and the kept ones stay. Registered as ``greedy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..interventions import Intervention
from . import trial
from .config import ObjectiveConfig, RunConfig
from .params import GreedyParams
from .sequential import Sequential, Walk, keeps, step_row
from .trial import Result


def candidate_edits(
    candidates: list[tuple[str, int, str]], iv: Intervention | None = None
) -> list[dict]:
    """Edits from laserkit.spectral.scan.lowest_snr's (module, layer, lname) list, in its order."""
    iv = iv or Intervention(kind="mp-threshold")
    return [trial.edit(lname, layer, iv) for _module, layer, lname in candidates]


def scan_candidates(
    model_path: str | Path,
    scan_dir: Path,
    k: int,
    types: str,
    device: str = "auto",
    iv: Intervention | None = None,
) -> list[dict]:
    """laserRMT's candidate list: scan the model, the k matrices of lowest SNR, in order (each
    an edit with ``iv``, default mp-threshold with laserRMT's estimator)."""
    from ..spectral.scan import lowest_snr, scan  # noqa: PLC0415

    scanned = scan(model_path, scan_dir, types=types, device=device, progress=True, plots=False)
    return candidate_edits(lowest_snr(scanned, k, types), iv)


def greedy_config(model: str, objective: dict, candidates: list[dict], **kw: Any) -> RunConfig:
    """A greedy run's config (library and tests; the CLI builds it from its options)."""
    return RunConfig(
        strategy="greedy",
        model=model,
        objective=ObjectiveConfig.from_json(objective),
        params=GreedyParams(candidates=candidates),
        **kw,
    )


class Greedy(Sequential):
    """Try every candidate in order on top of the kept ones; keep improvements (and, for
    perplexity, equal scores, as laserRMT does: ``sequential.keeps``)."""

    command = "greedy"

    def __init__(
        self, cfg: RunConfig, higher_is_better: bool = True, split: str = "validation"
    ) -> None:
        super().__init__(higher_is_better, split)
        self.cands = cfg.params_as(GreedyParams).candidates

    def layers(self) -> set[int]:
        return {int(c["layer"]) for c in self.cands}

    def all_edits(self) -> list[dict]:
        return list(self.cands)

    def total(self) -> int:
        return len(self.cands) + 3

    def walk(self, done: dict[str, Result]) -> Walk:
        w = Walk()
        base = self.spec([], -1)
        if base["key"] not in done:
            w.need = [base]
            return w
        w.base = w.final = done[base["key"]]
        for i, cand in enumerate(self.cands):
            s = self.spec(w.kept + [cand], i)
            if s["key"] not in done:
                w.need = [s]
                return w
            r = done[s["key"]]
            keep = keeps(r.summary, w.final.summary, self.hib)
            w.steps.append(step_row(i, cand, r, keep, r if keep else w.final))
            if keep:
                w.kept.append(cand)
                w.final = r
        return w
