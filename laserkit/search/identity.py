"""A run's identity: what makes two sessions one experiment, as one typed value compared in one
place (``RunIdentity.differences``), for ``--resume``, ``laserkit worker`` and compare's reuse
of base trials.

The identity is the stored configuration's identity fields (strategy, space, intervention,
objective, seed, dtype, model as named) plus two fingerprints of what was actually computed on:
the model's weights and the examples the objective scores. The configuration alone does not
see a data file edited in place (labels flipped) or ``worker --model OTHER``; the fingerprints
do. A run made before fingerprints were recorded has none: it is compared on its configuration,
and its fingerprints are recorded on its next session (docs/search.md, "Runs stay one
experiment").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..core.errors import LaserkitError

# identity field → how the user sets it (named in refusals instead of "objective")
OPTION = {
    "strategy": "--strategy",
    "model": "MODEL",
    "intervention": "the intervention options",
    "lnames": "--lname",
    "layers": "--lnum",
    "rhos": "--rho",
    "candidates": "--candidates",
    "halving": "--halving",
    "trials": "--trials",
    "batch": "--batch",
    "seed": "--seed",
    "dtype": "--dtype",
    "objective.task": "--task",
    "objective.data": "--data",
    "objective.limit": "--limit",
    "objective.batch_size": "--batch-size",
    "objective.batch_tokens": "--batch-tokens",
    "objective.seed": "--shuffle",
    "objective.max_new_tokens": "--max-new-tokens",
    "objective.type": "the objective",
    "objective.sequences": "the objective's sequences",
    "objective.metric": "the objective's metric",
    "selection": "--selection",
}
SHOWN_NONE = {"objective.batch_tokens": "auto"}  # what an unset field means, in refusals
SPACE = (
    "strategy",
    "model",
    "intervention",
    "lnames",
    "layers",
    "rhos",
    "candidates",
    "halving",
    "trials",
    "batch",
    "seed",
    "dtype",
    "selection",
)


@dataclass(frozen=True)
class Fingerprints:
    """SHA-256 prefixes of the base model's weights and of the scored examples (None: not
    known, e.g. a run made before they were recorded, or an objective without examples)."""

    weights: str | None = None
    data: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> Fingerprints:
        d = d or {}
        return cls(weights=d.get("weights"), data=d.get("data"))


@dataclass(frozen=True)
class RunIdentity:
    """What must agree for two sessions to be one run. ``space`` and ``objective`` are the
    configuration's identity fields (ℓ and ρ sorted: their order does not change a run)."""

    space: dict[str, Any]
    objective: dict[str, Any]
    fingerprints: Fingerprints = Fingerprints()

    @classmethod
    def of(cls, cfg, fingerprints: Fingerprints | None = None) -> RunIdentity:
        """The identity of a RunConfig (with the fingerprints of a loaded model, if any)."""
        d = cfg.to_json()
        d["layers"], d["rhos"] = sorted(d["layers"]), sorted(d["rhos"])
        objective = {"batch_tokens": None, **d["objective"]}  # stored only when set
        return cls({k: d[k] for k in SPACE}, objective, fingerprints or Fingerprints())

    def differences(
        self,
        other: RunIdentity,
        fields: tuple[str, ...] | None = None,
        with_fingerprints: bool = True,
    ) -> list[str]:
        """The names of what differs (``objective.limit``, ``weights``...), in a fixed order;
        ``fields`` limits the configuration fields compared. A fingerprint unknown on either
        side is not compared."""
        mine, theirs = self._flat(), other._flat()
        names = [k for k in mine if fields is None or k.split(".")[0] in fields]
        out = [k for k in names if mine[k] != theirs.get(k)]
        if with_fingerprints:
            for k in ("weights", "data"):
                a, b = getattr(self.fingerprints, k), getattr(other.fingerprints, k)
                if a is not None and b is not None and a != b:
                    out.append(k)
        return out

    def _flat(self) -> dict[str, Any]:
        return {**self.space, **{f"objective.{k}": v for k, v in self.objective.items()}}

    def describe(self, other: RunIdentity, names: list[str]) -> str:
        """One phrase per difference: the option (or what changed) and both values."""
        mine, theirs = self._flat(), other._flat()
        parts = []
        for k in names:
            if k == "weights":
                parts.append(
                    f"the model's weights (fingerprint {self.fingerprints.weights} "
                    f"in the run, {other.fingerprints.weights} here)"
                )
            elif k == "data":
                parts.append(
                    f"the examples scored (data fingerprint {self.fingerprints.data} "
                    f"in the run, {other.fingerprints.data} here: the task's data "
                    "changed)"
                )
            else:
                label = k.removeprefix("objective.") if k.startswith("objective.") else k
                a, b = (SHOWN_NONE.get(k) if v is None else v for v in (mine.get(k), theirs.get(k)))
                parts.append(
                    f"{label} ({OPTION.get(k, k)}: {_short(a)} in the run, {_short(b)} here)"
                )
        return "; ".join(parts)


def check_same(
    stored: RunIdentity,
    given: RunIdentity,
    run: str,
    who: str,
    fix: str = "repeat the original options",
) -> None:
    """The one comparison: refuse, in one line naming what changed, a session whose identity
    differs from the run's."""
    diff = stored.differences(given)
    if diff:
        raise LaserkitError(
            f"{who}: this command differs from run {run!r} in {stored.describe(given, diff)}; {fix}"
        )


def _short(v: Any, limit: int = 60) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= limit else text[: limit - 1] + "…"
