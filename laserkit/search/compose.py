"""Composition (docs/search.md): start at the last layer and keep stacking reductions, one layer
at a time towards the first, while validation accuracy does not drop. At each layer every
(τ, ρ) of the grid is tried on top of the stack (in parallel when there are several workers)
and the best, by the paper's rule, is the candidate. Registered as ``compose``.

Every trial at layer ℓ edits only layers ≥ ℓ, so the prefix cache serves all of them."""

from __future__ import annotations

from typing import Any

from ..interventions import Intervention
from . import trial
from .config import ObjectiveConfig, RunConfig
from .grid import pick
from .params import ComposeParams
from .sequential import Sequential, Walk, headline, step_row
from .trial import Result


def compose_config(
    model: str,
    objective: dict,
    lnames: list[str],
    layers: list[int],
    rhos: list[float],
    intervention: dict,
    **kw: Any,
) -> RunConfig:
    """A compose run's config (library and tests; the CLI builds it from its options)."""
    return RunConfig(
        strategy="compose",
        model=model,
        objective=ObjectiveConfig.from_json(objective),
        params=ComposeParams(lnames=list(lnames), layers=list(layers), rhos=list(rhos)),
        intervention=intervention,
        **kw,
    )


class Compose(Sequential):
    command = "compose"

    def __init__(
        self, cfg: RunConfig, higher_is_better: bool = True, split: str = "validation"
    ) -> None:
        super().__init__(higher_is_better, split)
        p = cfg.params_as(ComposeParams)
        self.order = sorted(p.layers, reverse=True)
        self.options = [(lname, rho) for lname in p.lnames for rho in sorted(p.rhos, reverse=True)]
        self.iv = cfg.intervention

    def _edit(self, lname: str, layer: int, rho: float) -> dict:
        return trial.edit(lname, layer, Intervention.from_dict({**self.iv, "rho": rho}))

    def layers(self) -> set[int]:
        return set(self.order)

    def all_edits(self) -> list[dict]:
        return [self._edit(n, layer, r) for layer in self.order for n, r in self.options]

    def total(self) -> int:
        return len(self.order) * len(self.options) + 3

    def walk(self, done: dict[str, Result]) -> Walk:
        w = Walk()
        base = self.spec([], -1)
        if base["key"] not in done:
            w.need = [base]
            return w
        w.base = w.final = done[base["key"]]
        for layer in self.order:
            specs = [
                self.spec(w.kept + [self._edit(n, layer, r)], layer * len(self.options) + j)
                for j, (n, r) in enumerate(self.options)
            ]
            w.need = [s for s in specs if s["key"] not in done]
            if w.need:
                return w
            best = pick([done[s["key"]] for s in specs], self.hib)
            keep = (
                headline(best.summary) >= headline(w.final.summary)
                if self.hib
                else headline(best.summary) <= headline(w.final.summary)
            )
            edit = best.spec["edits"][-1]
            w.steps.append(step_row(len(w.steps), edit, best, keep, best if keep else w.final))
            if not keep:
                break
            w.kept.append(edit)
            w.final = best
        return w
