"""`laserkit demo`'s run: the one configuration the main job uses (README, docs/search.md)."""

from __future__ import annotations

from typing import Any

from ..interventions import Intervention
from .config import ObjectiveConfig, RunConfig

# The main job: a small LASER search on the packaged SmolLM2 and BIG-bench's FEVER claims (first
# 300: 60 validation, 240 test; fc_in/fc_out × last 6 layers × ρ 0.2, 0.1, 0.05, 0.01: 48 trials).
DEMO: dict[str, Any] = {
    "task": "fever-bigbench",
    "limit": 300,
    "lname": "fc_in,fc_out",
    "lnum": "-6:",
    "rho": "0.2,0.1,0.05,0.01",
}


def demo_config(num_layers: int) -> RunConfig:
    return RunConfig.from_cli(
        "grid",
        "default",
        ObjectiveConfig.from_cli(DEMO["task"], limit=DEMO["limit"]),
        num_layers=num_layers,
        lname=DEMO["lname"],
        lnum=DEMO["lnum"],
        rho=DEMO["rho"],
        intervention=Intervention(kind="rank-reduction", rho=1.0).to_dict(),
    )
