"""Bayesian search over the grid's space (τ, ℓ, ρ) with Optuna's TPE sampler, seeded; registered
as ``tpe``. The best of the trials run is chosen by the paper's rule and scored on test with the
base model, as in the grid.

Deterministic whatever the number of workers: the proposals are a pure function of the results
done. The sampler is replayed in an in-memory study from the start each time the engine asks:
proposals come ``batch`` at a time (TPE's "constant liar" is not needed: a round is told only
when all of it is done), so round k's proposals depend only on rounds < k, never on which worker
finished first. ``batch`` = the number of workers keeps them all busy; ``batch`` = 1 is the
sequential TPE. A proposal already run is reused (not run again) and does not count against
``trials``, which is the number of distinct (τ, ℓ, ρ) run on validation.

ℓ and ρ are integer axes (ρ by its index in the sorted list), so TPE can exploit their order;
τ is categorical.
"""

from __future__ import annotations

import logging

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from ..interventions import Intervention
from . import trial
from .config import RunConfig
from .grid import choose, trial_row
from .params import TPEParams
from .result import Chosen, Outcome, Scores
from .trial import Result, objective_value

N_STARTUP = 10  # random proposals before TPE models the results (Optuna's default)
MAX_REPEATS = 50  # proposals in a row that repeat done trials: take an untried point instead


class _Replay:
    """The sampler's state part-way through a run: what it proposed and was told."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.ran: list[dict] = []  # distinct specs proposed and told, in order
        self.seen: set[str] = set()
        self.repeats = 0
        self.round: list | None = None  # (trial, spec) asked in the current round, not told
        self.round_new: list[dict] = []  # the current round's distinct new specs


class TPE:
    def __init__(
        self, cfg: RunConfig, higher_is_better: bool = True, split: str = "validation"
    ) -> None:
        p = cfg.params_as(TPEParams)
        self.lnames = list(p.lnames)
        self.selection = cfg.selection
        self.layer_list = sorted(p.layers)
        self.rhos = sorted(p.rhos)
        self.iv = cfg.intervention
        self.size = len(self.lnames) * len(self.layer_list) * len(self.rhos)
        self.budget = min(p.trials or self.size, self.size)
        self.batch = max(1, p.batch)
        self.seed = cfg.seed
        self.hib = higher_is_better
        contiguous = self.layer_list == list(range(self.layer_list[0], self.layer_list[-1] + 1))
        self._replay: _Replay | None = None
        self.dists: dict[str, BaseDistribution] = {
            "lname": CategoricalDistribution(self.lnames),
            "layer": (
                IntDistribution(self.layer_list[0], self.layer_list[-1])
                if contiguous
                else CategoricalDistribution(self.layer_list)
            ),
            "rho_index": IntDistribution(0, len(self.rhos) - 1),
        }

    def _spec(self, params: dict, order: int) -> dict:
        iv = Intervention.from_dict({**self.iv, "rho": self.rhos[params["rho_index"]]})
        edit = trial.edit(params["lname"], int(params["layer"]), iv)
        return trial.make("validation", "validation", [edit], order=order)

    def base(self, split: str) -> dict:
        return trial.make(split, split, [], order=-1)

    def _fresh(self) -> _Replay:
        optuna.logging.set_verbosity(logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=N_STARTUP)
        return _Replay(optuna.create_study(direction="maximize", sampler=sampler))

    def proposals(self, done: dict[str, Result]) -> tuple[list[dict], list[dict]]:
        """Replay the sampler: (the distinct specs proposed so far whose results are all known,
        the specs of the current round still to run).

        The replay is kept between calls and continued (results never change once done, so
        continuing is the same as replaying from the start, at O(new trials) instead of
        O(all trials) per call); a ``done`` that lacks what it consumed starts it afresh."""
        r = self._replay
        if r is None or any(s["key"] not in done for s in r.ran):
            r = self._replay = self._fresh()
        while True:
            if r.round is None:
                if len(r.ran) >= self.budget:
                    return list(r.ran), []
                self._ask_round(r, done)
                if not r.round_new:  # the whole space is done
                    return list(r.ran), []
            missing = [s for s in r.round_new if s["key"] not in done]
            if missing:
                return list(r.ran), missing
            assert r.round is not None  # _ask_round above made it a list
            for t, spec in r.round:
                r.study.tell(t, objective_value(done[spec["key"]].summary, self.hib))
            for spec in r.round_new:
                r.seen.add(spec["key"])
                r.ran.append(spec)
            r.round = None

    def _ask_round(self, r: _Replay, done: dict[str, Result]) -> None:
        """Ask up to ``batch`` new distinct specs; repeats of done trials are told at once.
        When the sampler only repeats itself (near the end of a small space), the next
        untried point in grid order is proposed instead, so the budget is always spent."""
        room = min(self.batch, self.budget - len(r.ran))
        r.round, r.round_new = [], []
        while len(r.round_new) < room:
            if r.repeats >= MAX_REPEATS:
                taken = r.seen | {s["key"] for s in r.round_new}
                left = [p for p in self._space() if self._spec(p, 0)["key"] not in taken]
                if not left:
                    return
                r.study.enqueue_trial(left[0])
                r.repeats = 0
            t = r.study.ask(self.dists)
            spec = self._spec(t.params, order=len(r.ran) + len(r.round_new))
            if spec["key"] in r.seen:  # known: tell at once, it costs no trial
                r.repeats += 1
                r.study.tell(t, objective_value(done[spec["key"]].summary, self.hib))
                continue
            r.round.append((t, spec))
            if any(s["key"] == spec["key"] for s in r.round_new):  # twice in one round
                r.repeats += 1
                continue
            r.repeats = 0
            r.round_new.append(spec)

    def _space(self) -> list[dict]:
        return [
            {"lname": n, "layer": layer, "rho_index": i}
            for n in self.lnames
            for layer in self.layer_list
            for i in range(len(self.rhos))
        ]

    # -- the strategy ---------------------------------------------------------------------------

    def next_specs(self, done: dict[str, Result]) -> list[dict] | None:
        base = self.base("validation")
        if base["key"] not in done:
            return [base]
        _, missing = self.proposals(done)
        if missing:
            return missing
        test = [s for s in self._tests(done) if s["key"] not in done]
        return test or None

    def _ran(self, done: dict[str, Result]) -> list[Result]:
        return [done[s["key"]] for s in self.proposals(done)[0]]

    def best(self, done: dict[str, Result]) -> Result:
        return choose(
            done[self.base("validation")["key"]],
            self._ran(done),
            self.hib,
            self.selection,
            self.lnames,
        )

    def _tests(self, done: dict[str, Result]) -> list[dict]:
        best = self.best(done)
        extra = [trial.make("test", "test", best.spec["edits"], order=best.spec["order"])]
        return [self.base("test")] + (extra if best.spec["edits"] else [])

    def total(self) -> int:
        return 1 + self.budget + 2

    def layers(self) -> set[int]:
        return set(self.layer_list)

    def all_edits(self) -> list[dict]:
        return [
            trial.edit(n, layer, Intervention.from_dict({**self.iv, "rho": r}))
            for n in self.lnames
            for layer in self.layer_list
            for r in self.rhos
        ]

    def summarize(self, done: dict[str, Result]) -> Outcome:
        """As the grid's, with the trials in the order TPE proposed them."""
        best = self.best(done)
        tests = [done[s["key"]] for s in self._tests(done)]
        return Outcome(
            chosen=Chosen.of(best.spec["edits"], best.key),
            base=Scores(done[self.base("validation")["key"]].summary, tests[0].summary),
            best=Scores(best.summary, tests[-1].summary),
            trials=[trial_row(r) for r in self._ran(done)],
        )
