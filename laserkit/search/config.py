"""Run configurations as typed data: what a run computes, stored in the trial database so that a
worker anywhere needs only the database URL and the run's name (as mergekit's
MergeConfiguration or lm-eval's EvaluatorConfig: built once from the command line, written as
JSON, read back without ``.get`` defaults scattered through the code)."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError
from .identity import SPACE
from .params import P, StrategyParams, params_for

# Fields that define what a run computes: a resume must agree on all of them. The rest (cache
# size, heartbeat) may change between sessions without changing any number.
IDENTITY = (*SPACE[:2], "objective", *SPACE[2:])  # identity.SPACE plus the objective

# Which definitions a run's numbers follow (stored with the run; a run stored without it is 1).
# 1: generation tasks' log-loss summed over the answer's tokens; k = ⌊min(m,n)·ρ + 1e-9⌋ and
#    ρ = 1 − 0.1·rate. 2: the reference's: per-token mean log-loss, k = int(min(m,n)·ρ),
#    ρ = (10 − rate)·0.1 (docs/methods.md, "Definitions of a run").
DEFINITIONS = 2

# How a search picks its result from the validation trials (docs/search.md, "Selection").
SELECTIONS: dict[str, str] = {
    "laserkit": "the base model is a candidate and wins ties: an edit must beat it to be chosen",
    "reference": "the base model is never a candidate: the best intervention is reported even "
    "when it is worse than the base (the reference's grid loop)",
}


@dataclass
class ObjectiveConfig:
    """What a trial is scored on: a laserkit task (``task``), or next-token sequences given
    inline (``next-token``: tiny models in tests and benchmarks need no tokenizer)."""

    type: str = "task"
    task: str | None = None
    data: str | None = None
    limit: int | None = None
    batch_size: int = 16
    seed: int | None = None  # shuffle the examples before the split (None: the paper's order)
    sequences: list[list[int]] | None = None
    metric: str = "accuracy"
    max_new_tokens: int | None = None  # generation length; None: the task's (older runs)
    # token budget per batch: None "auto" (the default, and runs made before it existed), "off"
    # or a number of tokens (docs/usage.md, "Batches")
    batch_tokens: int | str | None = None

    @classmethod
    def from_cli(
        cls,
        task: str | None,
        data: str | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        batch_tokens: str | None = None,
    ) -> ObjectiveConfig:
        """From command-line options. A semantic task's generation length is stored resolved
        (the user's, else the task's: laserRMT's 512), so that it is part of the run's identity
        and a resume under other defaults is refused rather than mixed."""
        if not task:
            raise LaserkitError(
                "say what to score with --task (e.g. fever, bbh-epistemic, perplexity --data FILE)"
            )
        from ..tasks.spec import check_max_new_tokens  # noqa: PLC0415 - torch-free leaf

        check_max_new_tokens(max_new_tokens)
        check_counts(limit=limit, batch_size=batch_size)
        from ..eval.batching import parse_batch_tokens  # noqa: PLC0415 - torch-free

        tokens = parse_batch_tokens(batch_tokens)  # "auto" is stored as None: old runs' value
        if data is not None and Path(data).exists():
            data = str(Path(data).resolve())  # workers may start in other directories
        if max_new_tokens is None:
            from ..tasks import get_task  # noqa: PLC0415 - definitions only, no data read
            from ..tasks.kinds import kind_of  # noqa: PLC0415

            t = get_task(task, data)
            if kind_of(t.kind).legacy_max_new_tokens is not None:  # runs store its length
                max_new_tokens = t.max_new_tokens
        return cls(
            type="task",
            task=task,
            data=data,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            max_new_tokens=max_new_tokens,
            batch_tokens=tokens,
        )

    def to_json(self) -> dict[str, Any]:
        """As stored; ``batch_tokens`` only when set, so a run with the default stores the
        configuration runs stored before the option (identity.py compares it as None)."""
        d = dataclasses.asdict(self)
        if d["batch_tokens"] is None:
            del d["batch_tokens"]
        return d

    def public(self) -> dict[str, Any]:
        """Without bulky inline data (token sequences), for results and reports."""
        return {k: v for k, v in self.to_json().items() if k != "sequences" and v is not None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObjectiveConfig:
        return cls(**_known(cls, d))


# The fields every run has (the strategy's own are in ``RunConfig.params``), in the stored
# configuration's order; the strategy's keys sit after ``intervention`` (params.STORED).
COMMON = (
    "strategy",
    "model",
    "objective",
    "intervention",
    "seed",
    "dtype",
    "prefix_cache",
    "cache_bytes",
    "heartbeat_s",
    "grace_s",
    "trust_remote_code",
    "selection",
    "definitions",
)


@dataclass(init=False)
class RunConfig:
    """One run: the strategy and its parameters, the model, the objective, the engine's settings.

    ``strategy`` names a registered strategy (grid, tpe, greedy, compose) and ``params`` is its
    own typed parameters (search/params.py): the grid's lnames × layers × rhos and ``halving``,
    tpe's space with a budget of ``trials`` proposed ``batch`` at a time, greedy's
    ``candidates`` (edits in order), compose's lnames, layers and rhos tried at each layer.

    0.1's flat keywords (``RunConfig(strategy="grid", lnames=..., rhos=...)``) are still
    accepted: the strategy's class takes its own. ``from_cli`` refuses, in one line, an option
    the user set that the strategy does not take (params.NOT_HERE)."""

    strategy: str
    model: str
    objective: ObjectiveConfig
    params: StrategyParams
    intervention: dict[str, Any]
    seed: int = 0
    dtype: str = "auto"
    prefix_cache: bool = True
    cache_bytes: int = 1 << 30
    heartbeat_s: int = 5
    grace_s: int = 20
    trust_remote_code: bool = False  # the user allowed the model's own code (--trust-remote-code)
    selection: str = "laserkit"
    definitions: int = DEFINITIONS

    def __init__(
        self,
        strategy: str,
        model: str,
        objective: ObjectiveConfig,
        params: StrategyParams | None = None,
        intervention: dict[str, Any] | None = None,
        seed: int = 0,
        dtype: str = "auto",
        prefix_cache: bool = True,
        cache_bytes: int = 1 << 30,
        heartbeat_s: int = 5,
        grace_s: int = 20,
        trust_remote_code: bool = False,
        selection: str = "laserkit",
        definitions: int = DEFINITIONS,
        **space: Any,
    ) -> None:
        kind = params_for(strategy)
        if params is None or space or type(params) is not kind:
            # flat keywords, or another strategy's parameters (dataclasses.replace): the
            # strategy's class takes what is its own
            params = kind.from_options({**(params.to_json() if params else {}), **space})
        self.strategy, self.model, self.objective, self.params = strategy, model, objective, params
        self.intervention = {"kind": "rank-reduction"} if intervention is None else intervention
        self.seed, self.dtype, self.prefix_cache = seed, dtype, prefix_cache
        self.cache_bytes, self.heartbeat_s, self.grace_s = cache_bytes, heartbeat_s, grace_s
        self.trust_remote_code, self.selection = trust_remote_code, selection
        self.definitions = definitions

    def params_as(self, kind: type[P]) -> P:
        """The parameters, as the strategy ``kind`` belongs to reads them (a strategy built on
        another's configuration is a mistake in the code, not in the user's options)."""
        if not isinstance(self.params, kind):
            raise TypeError(f"a {self.strategy} run has no {kind.__name__}")
        return self.params

    @property
    def command(self) -> str:
        """The family a result belongs to: a search over (τ, ℓ, ρ), or a sequence of steps."""
        return self.strategy if self.strategy in ("greedy", "compose") else "search"

    @classmethod
    def from_cli(
        cls,
        strategy: str,
        model: str,
        objective: ObjectiveConfig,
        *,
        num_layers: int | None = None,
        lname: str | None = None,
        lnum: str | None = None,
        rho: str | None = None,
        rate: str | None = None,
        default_rhos: tuple[float, ...] = (),
        intervention: dict | None = None,
        **rest: Any,
    ) -> RunConfig:
        """From the command line's strings: comma lists of τ and ρ (or reference rates), a
        layer expression resolved against the model's depth; other fields as given."""
        from ..model.targets import parse_layers  # noqa: PLC0415 - torch-free import path for status

        if Path(model).exists():
            model = str(Path(model).resolve())  # workers may start in other directories
        params_for(strategy).refuse(rest)
        lnames = [x.strip() for x in (lname or "").split(",") if x.strip()]
        layers = parse_layers(lnum, num_layers) if lnum is not None and num_layers else []
        cfg = cls(
            strategy=strategy,
            model=model,
            objective=objective,
            intervention=intervention or {"kind": "rank-reduction"},
            lnames=lnames,
            layers=[int(x) for x in layers],
            rhos=parse_rhos(rho, rate, default_rhos),
            **rest,
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse options that do not fit the run, in one line each (the strategy's own are
        checked by its parameters' class)."""
        if self.selection not in SELECTIONS:
            raise LaserkitError(
                f"unknown --selection {self.selection!r}: use {', '.join(SELECTIONS)}"
            )
        if self.selection != "laserkit" and not self.params.selects:
            raise LaserkitError("--selection reference applies to search (grid or tpe) only")
        self.params.check(self.strategy)

    def to_json(self) -> dict[str, Any]:
        """The stored layout of 0.1, key for key: the strategy's keys after ``intervention``."""
        head = {
            "strategy": self.strategy,
            "model": self.model,
            "objective": self.objective.to_json(),
            "intervention": copy.deepcopy(self.intervention),
        }
        stored = copy.deepcopy(self.params.to_stored())
        return {**head, **stored, **{k: getattr(self, k) for k in COMMON if k not in head}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunConfig:
        common = {k: d[k] for k in COMMON if k in d}
        common["objective"] = ObjectiveConfig.from_json(d.get("objective", {}))
        common.setdefault("definitions", 1)  # stored before runs recorded their definitions
        params = params_for(d["strategy"]).from_json(d)
        return cls(**common, params=params)

    def legacy_conflicts(self) -> list[str]:
        """Why continuing this run under the current definitions would mix two definitions in
        one run ([] when none of its numbers depends on what changed since its definitions)."""
        if self.definitions >= DEFINITIONS:
            return []
        why = []
        obj = self.objective
        if obj.type == "task" and obj.task:
            from ..tasks import get_task  # noqa: PLC0415 - definitions only, no data read
            from ..tasks.kinds import kind_of  # noqa: PLC0415

            t = get_task(obj.task, obj.data)
            why += kind_of(t.kind).changed_since(t, self.definitions, obj.task)
        if self.intervention.get("kind") in ("rank-reduction", "vendi-score"):
            bad = [r for r in self.params.to_stored()["rhos"] if rank_rules_differ(r)]
            if bad:
                why.append(
                    f"its ρ {bad[0]!r} keeps another rank under the reference's "
                    "k = int(min(m,n)·ρ) than under the old ⌊min(m,n)·ρ + 1e-9⌋ on some "
                    "matrix widths"
                )
        return why

    def identity(self) -> dict[str, Any]:
        """The fields a resume must repeat; the order of ℓ and ρ does not change a run."""
        d = {**self.to_json(), **self.params.identity()}
        return {k: d[k] for k in IDENTITY}

    def differs(self, other: RunConfig) -> list[str]:
        """The identity fields where two configs disagree (``objective`` for any of its
        fields); the comparison itself is RunIdentity's (identity.py)."""
        from .identity import RunIdentity  # noqa: PLC0415

        diff = {k.split(".")[0] for k in RunIdentity.of(self).differences(RunIdentity.of(other))}
        return [k for k in IDENTITY if k in diff]


def check_counts(**values: int | None) -> None:
    """Refuse a count option (--limit, --batch-size) below 1 before anything is created."""
    for name, v in values.items():
        if v is not None and v < 1:
            raise LaserkitError(
                f"--{name.replace('_', '-')} {v}: give a whole number of at least 1"
            )


def cache_bytes(gb: float) -> int:
    """--cache-gb as bytes: a finite number of gigabytes, 0 or more."""
    if not math.isfinite(gb) or gb < 0:
        raise LaserkitError(
            f"--cache-gb {gb}: give a finite number of gigabytes, 0 or more (e.g. 1 or 0.5)"
        )
    return int(gb * (1 << 30))


def rank_rules_differ(rho: float, widths: int = 1 << 16) -> bool:
    """Does the old rank rule ⌊w·ρ + 1e-9⌋ keep another rank than int(w·ρ) for some matrix
    width w ≤ ``widths``? (Old runs whose ρ never differ resume unchanged.)"""
    import math  # noqa: PLC0415

    return any(math.floor(w * rho + 1e-9) != int(w * rho) for w in range(1, widths + 1))


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def parse_floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LaserkitError(f"cannot read {text!r}: give comma-separated numbers") from None


def check_rhos(rhos: list[float], text: str | None) -> list[float]:
    """Every ρ a number in [0, 1], refused before a run is created (a NaN would reach the
    first trial only)."""
    bad = [r for r in rhos if not 0.0 <= r <= 1.0]  # NaN fails both comparisons
    if bad:
        raise LaserkitError(
            f"--rho {text if text is not None else bad[0]}: {bad[0]} is not a "
            "fraction of the rank kept; give numbers in [0, 1], e.g. 0.1,0.01"
        )
    return rhos


def parse_rhos(rho: str | None, rate: str | None, default: tuple[float, ...] = ()) -> list[float]:
    """ρ values from --rho, or from the reference CLI's --rate, or the default."""
    from ..interventions import rho_from_rate  # noqa: PLC0415

    if rho is not None and rate is not None:
        raise LaserkitError("give --rho or --rate, not both")
    if rate is not None:
        return [rho_from_rate(r) for r in parse_floats(rate) or []]
    return check_rhos(parse_floats(rho) or list(default), rho)
