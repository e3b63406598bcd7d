"""What a run found, as typed values: the chosen edits, base and best scored on validation and
test, the strategy's table, and the significance of the difference.

A strategy's ``summarize`` returns an ``Outcome``; ``runner.finalize`` adds the run's name, model
and objective and the significance to make a ``RunResult``. The result is stored (the trial
database, result.json) and returned to the command line as JSON: ``to_json`` writes exactly the
keys and values of laserkit 0.1's result, and ``from_json`` reads any stored before (keys it
does not know are kept and written back as they were).

A trial's summary (task, n, metric, score, accuracy, log_loss, ci95, ...) stays a dict: its keys
depend on the task's kind and metric (``Summary``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .trial import describe_edit

Summary = dict[str, Any]  # one scoring pass's metrics, as the objective reports them


@dataclass
class Chosen:
    """The edits a run chose ([] for the base model), the key of the trial that scored them on
    the decision split, and a readable label ("fc_in@3:rank-reduction(ρ=0.1)" or "base")."""

    edits: list[dict]
    key: str | None = None
    label: str = "base"

    @classmethod
    def of(cls, edits: list[dict], key: str | None = None) -> Chosen:
        return cls(list(edits), key, ", ".join(map(describe_edit, edits)) or "base")

    def to_json(self) -> dict[str, Any]:
        return {"edits": self.edits, "key": self.key, "label": self.label}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Chosen:
        return cls(list(d.get("edits") or []), d.get("key"), d.get("label", "base"))


@dataclass
class Scores:
    """One model's summaries on the split the run decided on and on the held-out test."""

    validation: Summary
    test: Summary

    def to_json(self) -> dict[str, Any]:
        return {"validation": self.validation, "test": self.test}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scores:
        return cls(dict(d.get("validation") or {}), dict(d.get("test") or {}))


@dataclass
class Outcome:
    """What a strategy decided: the chosen edits, base and best, and its table (``trials`` for
    a search, one row per validation trial; ``steps`` for greedy and compose)."""

    chosen: Chosen
    base: Scores
    best: Scores
    trials: list[dict] | None = None
    steps: list[dict] | None = None
    decided_on: str | None = None  # "validation", or "all" (one text: no held-out test)
    held_out_test: bool | None = None
    note: str | None = None


# result.json's keys, in 0.1's order; a key whose value is None is not written
ORDER = (
    "command",
    "strategy",
    "run",
    "model",
    "objective",
    "chosen",
    "base",
    "best",
    "trials",
    "steps",
    "decided_on",
    "held_out_test",
    "note",
    "significance",
    "final_eval",
)


@dataclass
class RunResult:
    """A finished run's result (docs/search.md, "Outputs")."""

    command: str  # "search", "greedy" or "compose" (config.RunConfig.command)
    model: str
    objective: dict[str, Any]  # ObjectiveConfig.public()
    chosen: Chosen
    base: Scores
    best: Scores
    strategy: str | None = None  # None: stored before runs recorded it (then: the command)
    run: str | None = None
    trials: list[dict] | None = None
    steps: list[dict] | None = None
    decided_on: str | None = None
    held_out_test: bool | None = None
    note: str | None = None
    significance: dict[str, Any] | None = None
    final_eval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept

    @classmethod
    def of(
        cls,
        outcome: Outcome | dict[str, Any],
        *,
        command: str,
        strategy: str,
        run: str,
        model: str,
        objective: dict,
    ) -> RunResult:
        """The run's result from its strategy's outcome (a strategy written for laserkit 0.1
        returns it as JSON, which is read as stored results are)."""
        if isinstance(outcome, dict):
            head = {"command": command, "strategy": strategy, "run": run, "model": model}
            return cls.from_json({**head, "objective": objective, **outcome})
        parts = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(Outcome)}
        return cls(
            command=command, strategy=strategy, run=run, model=model, objective=objective, **parts
        )

    @property
    def how(self) -> str:
        """The strategy, or the command for results stored before strategies were recorded."""
        return self.strategy or self.command

    @property
    def same_text(self) -> bool:
        """Whether the run decided on every example and reports its score on them too (one
        perplexity text, as laserRMT's), instead of "chosen on validation, reported on test"."""
        return self.decided_on == "all"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ORDER:
            v = getattr(self, k)
            if v is not None:
                out[k] = v.to_json() if isinstance(v, (Chosen, Scores)) else v
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        known = {k: d[k] for k in ORDER if k in d}
        known["chosen"] = Chosen.from_json(d.get("chosen") or {})
        known["base"] = Scores.from_json(d.get("base") or {})
        known["best"] = Scores.from_json(d.get("best") or {})
        # a partial result (as a plot is given in tests) is read with these
        known.setdefault("command", "search")
        known.setdefault("model", "")
        known.setdefault("objective", {})
        extra = {k: v for k, v in d.items() if k not in ORDER}
        return cls(**known, extra=extra)

    @classmethod
    def read(cls, result: RunResult | dict[str, Any]) -> RunResult:
        """A result as given: typed already, or as stored (JSON)."""
        return result if isinstance(result, RunResult) else cls.from_json(result)
