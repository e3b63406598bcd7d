"""Search for interventions that help: the paper's grid (validation selection, test for base and
best), laserRMT's greedy, composition across layers; durable trial store, prefix cache, reports."""

from __future__ import annotations

from .grid import DEFAULT_LNAMES, DEFAULT_RHOS, GridPlan, grid_edits, pick, selection_key
from .objective import (
    CallableObjective,
    NextTokenObjective,
    Objective,
    Scored,
    TaskObjective,
    build_objective,
)
from .prefix_cache import PrefixCache
from .runner import Context, finalize, read_config, run_grid, search_config
from .store import TrialStore

__all__ = [
    "DEFAULT_LNAMES",
    "DEFAULT_RHOS",
    "CallableObjective",
    "Context",
    "GridPlan",
    "NextTokenObjective",
    "Objective",
    "PrefixCache",
    "Scored",
    "TaskObjective",
    "TrialStore",
    "build_objective",
    "finalize",
    "grid_edits",
    "pick",
    "read_config",
    "run_grid",
    "search_config",
    "selection_key",
]
