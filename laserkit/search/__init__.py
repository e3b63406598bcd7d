"""Search for interventions that help: the paper's grid (validation selection, test for base and
best), TPE over the same space, laserRMT's greedy, composition across layers; one engine for all
of them over a trial database shared by workers on any number of machines."""

from __future__ import annotations

from .config import ObjectiveConfig, RunConfig
from .grid import DEFAULT_LNAMES, DEFAULT_RHOS, GridPlan, grid_edits, pick, selection_key
from .objective import (
    CallableObjective,
    NextTokenObjective,
    Objective,
    Scored,
    TaskObjective,
    build_objective,
)
from .outputs import save_chosen
from .params import ComposeParams, GreedyParams, GridParams, StrategyParams, TPEParams
from .prefix_cache import PrefixCache
from .result import RunResult
from .runner import Context, finalize, run, work
from .session import paired_records, start, status
from .store import TrialStore
from .strategy import make_strategy, names, register
from .trial import Result
from .where import locate, open_run

__all__ = [
    "DEFAULT_LNAMES",
    "DEFAULT_RHOS",
    "CallableObjective",
    "ComposeParams",
    "Context",
    "GreedyParams",
    "GridParams",
    "GridPlan",
    "NextTokenObjective",
    "Objective",
    "ObjectiveConfig",
    "PrefixCache",
    "Result",
    "RunConfig",
    "RunResult",
    "Scored",
    "StrategyParams",
    "TPEParams",
    "TaskObjective",
    "TrialStore",
    "build_objective",
    "finalize",
    "grid_edits",
    "locate",
    "make_strategy",
    "names",
    "open_run",
    "paired_records",
    "pick",
    "register",
    "run",
    "save_chosen",
    "selection_key",
    "start",
    "status",
    "work",
]
