"""`laserkit compare`: every method's own search on the same validation/test split, as named runs
in one trial store, and one table of what each chose and what it did on test (docs/compare.md).

A method is data: a strategy of the engine and an intervention, registered by name in
``METHODS`` (another package adds one through the entry-point group ``laserkit.compare_methods``,
docs/extending.md). The grid methods
(LASER's SVD and the Vendi variants) search the same (τ, ℓ, ρ) grid; the Marchenko–Pastur methods
run laserRMT's greedy over the k lowest-SNR matrices of one scan. Each method is the run
``<compare>/<method>`` in the store (SQLite in the compare directory by default, or ``storage``),
so a compare resumes, workers can join any of its runs by name, and a rerun of a finished
compare runs no trial. The base model's trials are the same for every method (same model,
objective and split), so they are scored once and copied into the other runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import LaserkitError
from ..core.registry import Registry
from ..interventions import Intervention
from .config import ObjectiveConfig, RunConfig
from .params import GridParams
from .result import RunResult
from .rundir import check_run_dir
from .store import TrialStore, default_url


@dataclass(frozen=True)
class Method:
    """One row of the comparison: how it searches (``strategy``) and what it does to a matrix
    (``intervention``: Intervention fields; the grid fills in ρ)."""

    name: str
    strategy: str  # "grid" over (τ, ℓ, ρ), or "greedy" over the lowest-SNR candidates
    intervention: dict = field(default_factory=dict)
    about: str = ""

    def iv(self) -> Intervention:
        rho = 1.0 if self.strategy == "grid" else None
        return Intervention(rho=rho, **self.intervention)


# Vendi with quality uses the median bandwidth: at σ = 1 the kernel of real weight rows is nearly
# the identity (docs/methods.md: median off-diagonal entry 8.4e-08 on SmolLM2's gate_proj), so
# VS(S) ≈ |S| for every set and the quality factor alone would decide (the rows of smallest
# norm); at the median bandwidth diversity and quality both count.
METHODS: Registry[Method] = Registry("method", group="compare_methods")
for _m in (
    Method(
        "svd",
        "grid",
        {"kind": "rank-reduction"},
        "LASER: best rank-⌊ρ·min(m,n)⌋ approximation by exact SVD",
    ),
    Method(
        "vendi-fork",
        "grid",
        {"kind": "vendi-score", "bandwidth": 1.0},
        "Vendi row selection, the fork's kernel (bandwidth 1)",
    ),
    Method(
        "vendi-median",
        "grid",
        {"kind": "vendi-score", "bandwidth": "median"},
        "Vendi row selection, bandwidth = median pairwise row distance",
    ),
    Method(
        "vendi-quality",
        "grid",
        {"kind": "vendi-score", "use_quality": True, "bandwidth": "median"},
        "quality-weighted Vendi, median bandwidth",
    ),
    Method(
        "mp-iqr",
        "greedy",
        {"kind": "mp-threshold", "estimator": "iqr"},
        "laserRMT greedy, Marchenko–Pastur threshold with σ̂ from the IQR (laserRMT's)",
    ),
    Method(
        "mp-gavish-donoho",
        "greedy",
        {"kind": "mp-threshold", "estimator": "gavish-donoho"},
        "laserRMT greedy, Marchenko–Pastur threshold with Gavish–Donoho's σ̂",
    ),
):
    METHODS.register(_m.name, _m)

BASE_KEYS = ("validation|base", "test|base", "all|base")
OUTPUTS = ("compare.json", "compare.md", "compare.png")
STORE_FILES = {
    "trials.db",
    "trials.db-journal",
    "trials.db-wal",
    "trials.db-shm",
    "trials.db.lock",
    "scan",
    *OUTPUTS,
}


def parse_methods(text: str | None) -> list[str]:
    """A comma list of method names (None or "all": every method, in the registry's order)."""
    if text is None or text.strip() in ("", "all"):
        return METHODS.names()
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in METHODS]
    if bad or not names:
        raise LaserkitError(
            f"unknown method {', '.join(bad) or repr(text)} in --methods: use "
            f"a comma list of {', '.join(METHODS.names())} (or all)"
        )
    return list(dict.fromkeys(names))


def check_compare_dir(run_dir: Path, resume: bool) -> None:
    """Refuse, before any work, a compare directory that is a file, holds something else, or
    holds a compare that --resume was not asked to continue."""
    check_run_dir(
        run_dir,
        resume,
        markers=("trials.db", "compare.json", *METHODS.names()),
        allowed=STORE_FILES | set(METHODS.names()),
        what="compare",
    )


@dataclass
class Space:
    """What the methods search: the grid (τ, ℓ expression, ρ) and the greedy's candidates."""

    lname: str = "fc_in,fc_out"
    lnum: str = "all"
    rho: str | None = None  # default: the paper's ρ values
    candidates: int = 15
    types: str = "mlp,attn"


def method_config(
    method: Method,
    model: str,
    objective: ObjectiveConfig,
    space: Space,
    num_layers: int,
    candidates: list | None,
    dtype: str = "auto",
) -> RunConfig:
    """The run one method is: its strategy over the shared space."""
    from .grid import DEFAULT_RHOS  # noqa: PLC0415

    if method.strategy == "grid":
        return RunConfig.from_cli(
            "grid",
            model,
            objective,
            num_layers=num_layers,
            lname=space.lname,
            lnum=space.lnum,
            rho=space.rho,
            default_rhos=DEFAULT_RHOS,
            intervention=method.iv().to_dict(),
            dtype=dtype,
        )
    from .greedy import candidate_edits  # noqa: PLC0415

    return RunConfig.from_cli(
        "greedy",
        model,
        objective,
        dtype=dtype,
        intervention=method.iv().to_dict(),
        candidates=candidate_edits(candidates or [], method.iv()),
    )


def run_name(run_dir: Path, method: str) -> str:
    return f"{Path(run_dir).resolve().name}/{method}"


def lowest_snr_candidates(
    model_path: str, scan_dir: Path, k: int, types: str, device: str = "auto"
) -> list[tuple[str, int, str]]:
    """The greedy's candidates, from one scan kept in the compare directory (reused on resume)."""
    from ..spectral.scan import lowest_snr, scan  # noqa: PLC0415

    scanned = scan(model_path, scan_dir, types=types, device=device, progress=True, plots=False)
    return lowest_snr(scanned, k, types)


def copy_base(store: TrialStore, siblings: list[TrialStore]) -> int:
    """Copy the base model's completed trials from sibling runs that score the same model on
    the same objective (the same numbers, computed once); returns how many were copied."""
    from .objective import Scored  # noqa: PLC0415

    have = store.results()
    mine = store.identity()
    copied = 0
    for key in BASE_KEYS:
        if key in have:
            continue
        for sib in siblings:
            if (
                mine.differences(sib.identity(), fields=("model", "objective", "dtype"))
                or sib.config.definitions != store.config.definitions
            ):  # no mixing
                continue
            r = sib.results().get(key)
            if r is not None:
                value = sib.study.trials[r.number].value
                assert value is not None  # results() holds COMPLETE trials, which have a value
                store.add_complete(
                    r.spec, Scored(r.summary, sib.records(r)), value, attrs={"copied_from": sib.run}
                )
                copied += 1
                break
    return copied


def check_fingerprints(
    stores: dict[str, TrialStore], configs: dict[str, RunConfig], loaded
) -> None:
    """Every method's run scores this model on these examples: checked (and recorded) before a
    base trial is copied from one run to another, so a compare resumed on changed data or
    another model is refused rather than mixed."""
    from .runner import Context  # noqa: PLC0415 - torch

    first = next(iter(configs))
    fp = Context(configs[first], loaded.model, loaded.tokenizer, prefix_cache=False).fingerprints()
    for store in stores.values():
        store.check_fingerprints(fp, "--resume")


def _scored_here(store: TrialStore, base: bool) -> list:
    """The run's completed trials that its own workers scored (not copied from another run):
    the base model's (``base``) or the method's own (with edits)."""
    keep = {r.number for r in store.results().values()}
    return [
        t
        for t in store.study.get_trials(deepcopy=False)
        if t.number in keep
        and "copied_from" not in t.user_attrs
        and (not t.user_attrs["spec"]["edits"]) == base
    ]


def trials_and_seconds(store: TrialStore, base: bool = False) -> tuple[int, float]:
    """How many trials the run scored and the seconds they took, summed from their start and
    completion times in the store (the edit and the scoring; not model loading, the scan, or
    waiting). ``base``: the base model's trials, else the method's own."""
    ts = _scored_here(store, base)
    return len(ts), sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in ts
        if t.datetime_start and t.datetime_complete
    )


def worked_trials(store: TrialStore) -> int:
    """Every trial this run's workers scored, base included."""
    return len(_scored_here(store, True)) + len(_scored_here(store, False))


def row(method: Method, result: RunResult | dict, store: TrialStore, ran_now: int) -> dict:
    """One method's line of the table, from its run's result (significance as finalize
    computed it)."""
    result = RunResult.read(result)
    sig = result.significance or {}
    test = sig.get("test") or {}
    edits = result.best.test.get("edits") or []
    errors = [e["rel_error"] for e in edits if e.get("rel_error") is not None]
    return {
        "method": method.name,
        "about": method.about,
        "strategy": method.strategy,
        "intervention": method.iv().describe(),
        "run": store.run,
        "chosen": result.chosen.label,
        "edits": result.chosen.edits,
        "validation": _score(result.best.validation),
        "test": _score(result.best.test),
        "base_test": _score(result.base.test),
        "diff": test.get("diff"),
        "ci95": test.get("ci95"),
        "p_value": test.get("p_value"),
        "n_test": test.get("n"),
        "verdict": test.get("verdict", test.get("unavailable")),
        "log_loss_diff": (test.get("log_loss") or {}).get("diff"),
        "log_loss_ci95": (test.get("log_loss") or {}).get("ci95"),
        "selection": (sig.get("selection") or {}).get("verdict"),
        "rel_error": errors,
        "rel_error_mean": sum(errors) / len(errors) if errors else None,
        "trials": trials_and_seconds(store)[0],
        "trials_run_now": ran_now,
        "seconds": trials_and_seconds(store)[1],
    }


def _score(summary: dict) -> dict:
    return {k: summary.get(k) for k in ("metric", "score", "accuracy", "log_loss", "n")}


def compare(
    model: str,
    objective: ObjectiveConfig,
    *,
    run_dir: Path,
    methods: list[str] | None = None,
    space: Space | None = None,
    storage: str | None = None,
    resume: bool = False,
    workers: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    loaded=None,
    progress: Callable[[str, int, int], None] | None = None,
    on_method: Callable[[str], object] | None = None,  # what it returns is ignored
) -> dict:
    """Run (or continue) every method's search and write compare.json, compare.md and
    compare.png in ``run_dir``; returns the comparison (what compare.json holds).

    ``loaded``: the model already loaded (else it is loaded here); ``progress(method, done,
    total)`` is told as trials finish; ``on_method(name)`` before each method starts."""
    from ..model.targets import model_layout  # noqa: PLC0415
    from . import session  # noqa: PLC0415
    from .compare_report import write_outputs  # noqa: PLC0415

    session.check_workers(workers, device)
    names = parse_methods(",".join(methods)) if methods else METHODS.names()
    space = space or Space()
    run_dir = Path(run_dir)
    check_compare_dir(run_dir, resume)
    if loaded is None:
        from ..io.load import load  # noqa: PLC0415

        loaded = load(model, dtype=dtype, device=device)
    from .catalog import probe_storage  # noqa: PLC0415

    probe_storage(storage)  # before the directory and the scan exist
    run_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_url(run_dir)
    num_layers = model_layout(loaded.model).num_layers
    candidates = None
    if any(METHODS.get(n).strategy == "greedy" for n in names):
        candidates = lowest_snr_candidates(
            loaded.path, run_dir / "scan", space.candidates, space.types, device
        )
    configs = {
        n: method_config(METHODS.get(n), model, objective, space, num_layers, candidates, dtype)
        for n in names
    }
    stores = {
        n: TrialStore(url, run_name(run_dir, n), create=cfg, resume=resume)
        for n, cfg in configs.items()
    }  # every run exists now: workers may join any
    check_fingerprints(stores, configs, loaded)
    rows, base_rows, copied = [], [], {}
    for n in names:
        if on_method is not None:
            on_method(n)
        store = stores[n]
        copied[n] = copy_base(store, [s for m, s in stores.items() if m != n])
        before = worked_trials(store)

        def tick(done: int, total: int, n: str = n) -> None:
            if progress is not None:
                progress(n, done, total)

        result, store = session.start(
            configs[n],
            run_dir=run_dir / n,
            storage=url,
            run=store.run,
            resume=True,
            workers=workers,
            device=device,
            loaded=loaded,
            progress=tick,
        )
        stores[n] = store
        assert result is not None  # only workers=0 leaves the run unworked
        done = RunResult.read(result)
        rows.append(row(METHODS.get(n), done, store, worked_trials(store) - before))
        base_rows.append(
            (
                n,
                _score(done.base.validation),
                _score(done.base.test),
                trials_and_seconds(store, base=True),
            )
        )
    out = {
        "model": model,
        "objective": objective.public(),
        "storage": _public(url),
        "space": {
            "lname": space.lname,
            "lnum": space.lnum,
            **_grid(configs),
            "candidates": space.candidates,
            "types": space.types,
        },
        "methods": names,
        "base": _base(base_rows),
        "rows": rows,
        "copied_base": copied,
        "time_measures": "seconds summed over the method's own trials (its edit applied and "
        "the split scored, start to completion as the trial store recorded "
        "them; with several workers, summed over workers); the base model's "
        "trials are counted in the base row only; model loading, the scan and "
        "idle time are not included",
    }
    write_outputs(out, run_dir)
    return out


def _grid(configs: dict[str, RunConfig]) -> dict:
    """The grid as the grid methods resolved it (layer numbers, ρ values), if any ran."""
    grid = next((c for c in configs.values() if c.strategy == "grid"), None)
    if grid is None:
        return {"layers": None, "rho": None}
    p = grid.params_as(GridParams)
    return {"layers": p.layers, "rho": p.rhos}


def _base(base_rows: list[tuple]) -> dict:
    """The base model's row; every run scored (or copied) the same base, which is checked."""
    _, val, test, _ = base_rows[0]
    same = all(v == val and t == test for _, v, t, _ in base_rows)
    return {
        "validation": val,
        "test": test,
        "same_in_every_run": same,
        "trials": sum(n for *_, (n, _) in base_rows),
        "seconds": sum(s for *_, (_, s) in base_rows),
    }


def _public(url: str) -> str:
    from .store import public_url  # noqa: PLC0415

    return public_url(url)


def read(run_dir: Path) -> dict:
    """compare.json of a compare directory."""
    path = Path(run_dir) / "compare.json"
    if not path.exists():
        raise LaserkitError(f"{run_dir} holds no compare.json")
    return json.loads(path.read_text())
