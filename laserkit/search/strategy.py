"""What every search strategy is to the engine: a pure function from the trials done to the
trials needed next, and a summary once none is needed.

The engine (laserkit.search.runner) asks ``next_specs(done)`` whenever the queue is empty and
enqueues what it returns; any worker may ask, and all get the same answer because it depends on
the completed results only, so workers on many machines need no coordinator. A strategy is one
module that defines a class; ``STRATEGIES`` names it as ``"module:Class"``, imported the first
time the name is used (so listing the strategies imports neither Optuna nor the engine). Another
package adds one through the entry-point group ``laserkit.strategies`` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .config import RunConfig
from .params import STRATEGIES
from .result import Outcome
from .trial import Result


class Strategy(Protocol):
    """Built as ``cls(cfg, higher_is_better, split)``; ``split`` is the split decisions are
    made on: "validation", or "all" for an objective too small to split (greedy on one text)."""

    def next_specs(self, done: dict[str, Result]) -> list[dict] | None:
        """Specs to enqueue now (they may run in parallel), [] to wait, None when finished."""
        ...

    def total(self) -> int:
        """Trials in the whole run (an upper bound where the run may stop early)."""
        ...

    def layers(self) -> set[int]:
        """Every layer the run may edit (the prefix cache records their inputs)."""
        ...

    def all_edits(self) -> list[dict]:
        """Every edit the run may apply, checked against the model before any trial runs."""
        ...

    def summarize(self, done: dict[str, Result]) -> Outcome:
        """The chosen edits, base and best on validation and test, and the strategy's table."""
        ...


def register(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    """Class decorator for a strategy defined outside laserkit (``STRATEGIES.register``)."""
    return STRATEGIES.register(name)


def names() -> list[str]:
    """The strategies' names, sorted; none of them is imported."""
    return sorted(STRATEGIES.names())


def make_strategy(
    cfg: RunConfig, higher_is_better: bool = True, split: str = "validation"
) -> Strategy:
    """The strategy ``cfg.strategy`` names, built for this run; an unknown name is one line."""
    return STRATEGIES.get(cfg.strategy)(cfg, higher_is_better, split)
