"""Each search strategy's own parameters, as one typed class that checks them (as peft gives
each method its own config): the grid's space and successive halving, TPE's space, budget and
batch, greedy's candidate edits, compose's space. ``RunConfig`` holds the fields every run has
and one of these.

A run's stored configuration keeps the flat layout of laserkit 0.1, where every strategy's keys
sit side by side (``STORED``): ``to_stored`` writes a strategy's own fields and the others at
their defaults, ``from_json`` reads its own and ignores the rest, so a run stored before reads
back, resumes and compares equal (docs/search.md, "Runs stay one experiment").

A new strategy registers its parameters here by name, beside its class in
``laserkit.search.strategy``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..core.errors import LaserkitError
from ..core.registry import Registry

P = TypeVar("P", bound="StrategyParams")

# The stored configuration's strategy keys, in 0.1's order, with the value a strategy that does
# not take one writes.
STORED: dict[str, Any] = {
    "lnames": [],
    "layers": [],
    "rhos": [],
    "candidates": [],
    "halving": None,
    "trials": None,
    "batch": 1,
}
# An option given to a strategy that does not take it: why, in one line. An option not listed
# here (``batch`` with the grid, as 0.1 accepted it) is accepted and has no effect.
NOT_HERE = {
    "halving": "--halving applies to the grid strategy only",
    "trials": "--trials applies to --strategy tpe (the grid runs all of it)",
}

PARAMS: Registry[type[StrategyParams]] = Registry("strategy", group="strategy_params")

# name → the strategy's class, built as ``cls(cfg, higher_is_better, split)``; kept here, beside
# the parameters, because a configuration is checked against it (strategy.py imports this module,
# never the reverse). Entries are "module:Class", imported on first use.
STRATEGIES: Registry[Any] = Registry("strategy", group="strategies")
STRATEGIES.register("grid", "laserkit.search.grid:GridPlan")
STRATEGIES.register("tpe", "laserkit.search.tpe:TPE")
STRATEGIES.register("greedy", "laserkit.search.greedy:Greedy")
STRATEGIES.register("compose", "laserkit.search.compose:Compose")


@dataclass
class StrategyParams:
    """What one strategy searches over and how; subclasses add fields and checks."""

    # Whether the reference's selection (the base model never a candidate) means anything here:
    # only for strategies that pick one trial from a space (config.SELECTIONS).
    selects: ClassVar[bool] = False

    @classmethod
    def from_options(cls: type[P], given: dict[str, Any]) -> P:
        """From 0.1's flat keywords (``RunConfig(strategy=..., lnames=..., trials=...)``): this
        strategy's own; the other strategies' are dropped, as 0.1 ignored them."""
        own = _names(cls)
        unknown = [k for k in given if k not in own and k not in STORED]
        if unknown:
            raise LaserkitError(f"unknown strategy parameter {unknown[0]!r}")
        return cls(**{k: v for k, v in given.items() if k in own})

    @classmethod
    def refuse(cls, given: dict[str, Any]) -> None:
        """Refuse, in one line, an option the user set that this strategy does not take, or a
        count below 1 (the command line's options, before the run is built)."""
        own = _names(cls)
        for k, why in NOT_HERE.items():
            if k not in own and given.get(k, STORED[k]) != STORED[k]:
                raise LaserkitError(why)
        counts = (given.get("trials"), given.get("batch"))
        if any(v is not None and v < 1 for v in counts):
            raise LaserkitError("--trials and --batch must be at least 1")

    @classmethod
    def from_json(cls: type[P], d: dict[str, Any]) -> P:
        """From a stored configuration: this strategy's keys; the others' are ignored."""
        own = _names(cls)
        return cls(**{k: v for k, v in d.items() if k in own})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_stored(self) -> dict[str, Any]:
        """Every key of the stored layout, in its order: this strategy's values, the others'
        defaults (copied, so that no caller shares a default list)."""
        mine = self.to_json()
        return {k: mine[k] if k in mine else _copy(v) for k, v in STORED.items()}

    def check(self, strategy: str) -> None:
        """Refuse values the strategy cannot run with, in one line."""

    def identity(self) -> dict[str, Any]:
        """The stored keys as a resume compares them: ℓ and ρ sorted (their order does not
        change a run)."""
        d = self.to_stored()
        d["layers"], d["rhos"] = sorted(d["layers"]), sorted(d["rhos"])
        return d


@dataclass
class SpaceParams(StrategyParams):
    """The paper's space: matrix types τ, layers ℓ and fractions ρ of the rank kept."""

    lnames: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    rhos: list[float] = field(default_factory=list)

    def check(self, strategy: str) -> None:
        if not (self.lnames and self.layers and self.rhos):
            raise LaserkitError(
                f"{strategy} needs τ (--lname), layers (--lnum) and ρ (--rho) to search over"
            )


@PARAMS.register("grid")
@dataclass
class GridParams(SpaceParams):
    """Every (τ, ℓ, ρ) on validation; ``halving`` η > 1 first scores the head 1/η of validation
    and keeps the best 1/η of the grid (successive halving)."""

    selects: ClassVar[bool] = True
    halving: int | None = None


@PARAMS.register("tpe")
@dataclass
class TPEParams(SpaceParams):
    """The grid's space searched by TPE: ``trials`` distinct (τ, ℓ, ρ) at most (None: the whole
    space), proposed ``batch`` at a time (the number of workers keeps them all busy)."""

    selects: ClassVar[bool] = True
    trials: int | None = None
    batch: int = 1


@PARAMS.register("greedy")
@dataclass
class GreedyParams(StrategyParams):
    """laserRMT's candidate edits, tried in order (trial.edit dicts: lname, layer,
    intervention)."""

    candidates: list[dict] = field(default_factory=list)


@PARAMS.register("compose")
@dataclass
class ComposeParams(SpaceParams):
    """The (τ, ρ) tried at each layer of ``layers``, from the last one down."""


def params_for(strategy: str) -> type[StrategyParams]:
    """The parameter class of a strategy: a shipped one's from ``PARAMS``; another package's
    strategy names its own as the class attribute ``params`` (else it takes none of its own).
    An unknown name is one line listing the strategies."""
    if strategy in PARAMS:
        return PARAMS.get(strategy)
    return getattr(STRATEGIES.get(strategy), "params", StrategyParams)


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v
