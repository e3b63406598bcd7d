"""What every search strategy is to the engine: a pure function from the trials done to the
trials needed next, and a summary once none is needed.

The engine (laserkit.search.runner) asks ``next_specs(done)`` whenever the queue is empty and
enqueues what it returns; any worker may ask, and all get the same answer because it depends on
the completed results only, so workers on many machines need no coordinator. A strategy is one
module that defines a class and decorates it with ``@register("name")``; the module must be
listed in ``MODULES`` so that looking a name up imports it.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from ..core.errors import LaserkitError
from .config import RunConfig
from .result import Outcome
from .trial import Result

MODULES = ("grid", "tpe", "greedy", "compose")
_REGISTRY: dict[str, type] = {}


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


def register(name: str):
    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    for m in MODULES:
        importlib.import_module(f"{__package__}.{m}")
    return sorted(_REGISTRY)


def make_strategy(
    cfg: RunConfig, higher_is_better: bool = True, split: str = "validation"
) -> Strategy:
    if cfg.strategy not in names():
        raise LaserkitError(f"unknown strategy {cfg.strategy!r}: use {', '.join(names())}")
    return _REGISTRY[cfg.strategy](cfg, higher_is_better, split)
