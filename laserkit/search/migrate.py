"""Runs made before runs had names: a run directory with a run.json and one study named
"laserkit" is adopted (given its configuration and its directory) so that it resumes with zero
new trials and reports like a new run. Nothing here changes a trial or a number."""

from __future__ import annotations

import json
from pathlib import Path

from .catalog import run_names
from .config import ObjectiveConfig, RunConfig
from .store import LEGACY_STUDY, TrialStore, default_url

LEGACY_CONFIG = "run.json"  # the configuration of a run directory made before runs had names


def legacy_config(run_dir: Path) -> RunConfig | None:
    """The RunConfig of an old run directory's run.json (one study named "laserkit", records
    in RUN_DIR/trials/), or None if this is not one."""
    path = Path(run_dir) / LEGACY_CONFIG
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    grid = old.get("grid") or {}
    comp = old.get("compose") or {}
    edits = [e for es in grid.get("edits", []) for e in es]
    rhos = comp.get("rhos") or sorted({e["intervention"]["rho"] for e in edits}, reverse=True)
    lnames = (
        comp.get("lnames") or grid.get("lnames") or list(dict.fromkeys(e["lname"] for e in edits))
    )
    layers = comp.get("layers") or grid.get("layers") or sorted({e["layer"] for e in edits})
    return RunConfig(
        strategy={"search": "grid"}.get(old["command"], old["command"]),
        model=old["model"],
        objective=ObjectiveConfig.from_json(old["objective"]),
        intervention=old.get("intervention") or {"kind": "rank-reduction"},
        lnames=lnames,
        layers=layers,
        rhos=rhos,
        candidates=old.get("candidates") or [],
        halving=old.get("halving"),
        seed=old.get("seed", 0),
        dtype=old.get("dtype", "auto"),
        prefix_cache=old.get("prefix_cache", True),
        cache_bytes=old.get("cache_bytes", 1 << 30),
        heartbeat_s=old.get("heartbeat_s", 5),
        grace_s=old.get("grace_s", 20),
    )


def adopt_legacy(run_dir: Path) -> bool:
    """Give an old run directory's study its configuration (from run.json) and its directory
    (for the records files), so that it resumes and reports like a new run. True if it is one."""
    cfg = legacy_config(run_dir)
    if cfg is None or LEGACY_STUDY not in run_names(default_url(run_dir), legacy=True):
        return False
    store = TrialStore(default_url(run_dir), LEGACY_STUDY, create=cfg, resume=True)
    store.study.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    return True
