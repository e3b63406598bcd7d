"""The search engine on tiny random models: selection rule, test split only for base and best,
prefix cache equivalence, successive halving, resume checks, greedy and compose."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny

from laserkit import Intervention, LaserkitError
from laserkit.model.targets import find_blocks
from laserkit.search import (
    CallableObjective,
    Context,
    ObjectiveConfig,
    PrefixCache,
    RunConfig,
    TrialStore,
    run,
)
from laserkit.search.compose import compose_config
from laserkit.search.greedy import greedy_config
from laserkit.search.objective import NextTokenObjective, split_slice
from laserkit.search.store import default_url

pytestmark = pytest.mark.usefixtures("one_thread")


def next_token_data(model, n: int = 40, length: int = 8, seed: int = 1) -> list[list[int]]:
    """Sequences whose answer is the model's own prediction for half of them, so that accuracy
    is neither 0 nor 1 and interventions move it."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, model.config.vocab_size, (n, length), generator=g)
    with torch.no_grad():
        pred = model(input_ids=seqs[:, :-1]).logits[:, -1].argmax(-1)
    seqs[::2, -1] = pred[::2]
    return seqs.tolist()


def grid_cfg(
    model, lnames=("fc_in", "fc_out"), layers=(9, 10, 11), rhos=(0.5, 0.1), strategy="grid", **kw
) -> RunConfig:
    obj = ObjectiveConfig(type="next-token", sequences=next_token_data(model), batch_size=8)
    return RunConfig(
        strategy=strategy,
        model="tiny",
        objective=obj,
        intervention=Intervention(rho=1.0).to_dict(),
        lnames=list(lnames),
        layers=list(layers),
        rhos=list(rhos),
        **kw,
    )


def store_at(path, cfg: RunConfig | None = None, resume: bool = False) -> TrialStore:
    """The run in PATH's SQLite database (as `laserkit search --run-dir PATH` makes it)."""
    path.mkdir(parents=True, exist_ok=True)
    return TrialStore(default_url(path), "run", create=cfg, resume=resume)


def run_grid(
    path,
    cfg: RunConfig,
    model=None,
    objective=None,
    resume: bool = False,
    ctx: Context | None = None,
) -> dict:
    """Create (or resume) the run in PATH and run it to the end in this process."""
    store = store_at(path, cfg, resume)
    return run(store, ctx=ctx or Context(store.config, model, objective=objective))


def better_or_equal(a: dict, b: dict) -> bool:
    return (a["accuracy"], -a["log_loss"]) >= (b["accuracy"], -b["log_loss"])


def test_chosen_is_best_on_validation_and_test_only_for_base_and_best(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model)
    result = run_grid(tmp_path, cfg, model)
    rows = result["trials"]
    assert len(rows) == 12
    best_val = result["best"]["validation"]
    assert all(better_or_equal(best_val, r) for r in rows)
    assert better_or_equal(best_val, result["base"]["validation"])
    n_val = len(split_slice(40, "validation"))
    assert {r["n"] for r in rows} == {n_val}

    store = store_at(tmp_path)
    done = store.results()
    test_keys = sorted(k for k, r in done.items() if r.spec["split"] == "test")
    chosen = result["chosen"]["edits"]
    expected = ["test|base"] + ([f"test|{result['chosen']['label']}"] if chosen else [])
    assert test_keys == sorted(expected)
    for key in test_keys:
        assert done[key].summary["n"] == 40 - n_val
        assert len(store.records(done[key])) == 40 - n_val


def test_base_wins_ties_so_an_intervention_must_beat_it(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(1.0,))  # ρ = 1 keeps the matrix: same scores
    result = run_grid(tmp_path, cfg, model)
    assert result["chosen"]["edits"] == []
    assert result["best"]["test"] == result["base"]["test"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_prefix_cache_is_bit_exact_and_skips_earlier_blocks(family):
    model = make_tiny(family)
    blocks = find_blocks(model)[1]
    layer = len(blocks) - 1
    ids = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ref = model(input_ids=ids, attention_mask=mask).logits
    calls = []
    hook = blocks[0].register_forward_hook(lambda *a: calls.append(1))
    cache = PrefixCache(model)
    with torch.no_grad(), cache.at(layer):
        first = model(input_ids=ids, attention_mask=mask).logits
        again = model(input_ids=ids, attention_mask=mask).logits
    hook.remove()
    assert torch.equal(ref, first) and torch.equal(ref, again)  # bit-exact, not allclose
    assert len(calls) == 1  # block 0 ran on the recording pass only
    assert cache.stats["hits"] == 1
    assert all(b is blocks[i] for i, b in enumerate(find_blocks(model)[1]))  # blocks put back


def test_one_unedited_pass_fills_the_cache_for_every_wanted_layer():
    model = make_tiny("llama")
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
    cache = PrefixCache(model, wanted={3, 7, 11})
    with torch.no_grad():
        with cache.at(None):
            ref = model(input_ids=ids).logits
        assert cache.stats["recorded"] == 3
        for layer in (11, 7, 3):
            with cache.at(layer):
                assert torch.equal(model(input_ids=ids).logits, ref)
    assert cache.stats["hits"] == 3 and cache.stats["recorded"] == 3


def test_prefix_cache_budget_recomputes_or_spills(tmp_path):
    model = make_tiny("llama")
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
    ref = model(input_ids=ids).logits
    for cache, stat in (
        (PrefixCache(model, budget_bytes=0), "not_kept"),
        (PrefixCache(model, budget_bytes=0, spill_dir=tmp_path), "spilled"),
    ):
        with torch.no_grad(), cache.at(5):
            outs = [model(input_ids=ids).logits for _ in range(2)]
        assert cache.stats[stat] >= 1 and cache.stats["recorded"] == 0
        assert all(torch.equal(ref, o) for o in outs)
        cache.close()


def test_grid_results_equal_with_and_without_prefix_cache(tmp_path):
    model = make_tiny("gpt2")
    results = []
    for use in (True, False):
        cfg = grid_cfg(model, layers=(1, 2), prefix_cache=use)
        ctx = Context(cfg, model)
        results.append(run_grid(tmp_path / str(use), cfg, ctx=ctx))
        assert (ctx.prefix is not None) == use
    with_cache, without = results
    assert with_cache["trials"] == without["trials"]  # exactly equal summaries
    assert with_cache["chosen"] == without["chosen"]


def test_successive_halving_scores_a_head_then_the_best_fraction(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, halving=3)
    result = run_grid(tmp_path, cfg, model)
    rows = result["trials"]
    heads = [r for r in rows if r["fraction"] < 1]
    full = [r for r in rows if r["fraction"] == 1]
    assert len(heads) == 12 and len(full) == 4
    assert all(r["n"] == 3 for r in heads)  # ceil(8 / 3) validation examples
    assert all(better_or_equal(result["best"]["validation"], r) for r in full)


def test_resume_refuses_a_different_configuration(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,))
    run_grid(tmp_path, cfg, model)
    with pytest.raises(LaserkitError, match="add --resume"):
        run_grid(tmp_path, cfg, model)
    other = grid_cfg(model, layers=(10,))
    with pytest.raises(LaserkitError, match="differs from run 'run' in layers"):
        run_grid(tmp_path, other, model, resume=True)
    first = store_at(tmp_path).result()
    again = run_grid(tmp_path, cfg, model, resume=True)  # nothing left to do
    assert json.loads(json.dumps(first)) == again


def changed_layers(model) -> tuple[dict, callable]:
    """A constructed score: which MLP matrices differ from their original values."""
    blocks = find_blocks(model)[1]
    original = {i: b.mlp.gate_proj.weight.detach().clone() for i, b in enumerate(blocks)}

    def changed() -> set[int]:
        return {
            i for i, w in original.items() if not torch.equal(blocks[i].mlp.gate_proj.weight, w)
        }

    return original, changed


def test_greedy_keeps_exactly_the_improving_steps(tmp_path):
    model = make_tiny("llama")
    _, changed = changed_layers(model)
    good, bad = {11, 8}, {10, 9}
    objective = CallableObjective(
        lambda m, split: len(changed() & good) - len(changed() & bad), name="constructed"
    )
    iv = Intervention(rho=0.5)
    cands = [{"lname": "fc_in", "layer": i, "intervention": iv.to_dict()} for i in (11, 10, 9, 8)]
    cfg = greedy_config("tiny", {"type": "constructed"}, cands)
    result = run_grid(tmp_path, cfg, model, objective)
    assert [s["kept"] for s in result["steps"]] == [True, False, False, True]
    assert [e["layer"] for e in result["chosen"]["edits"]] == [11, 8]
    assert result["best"]["test"]["score"] == 2
    assert changed() == set()  # the model is left as it was loaded


def test_compose_stacks_from_the_last_layer_until_accuracy_drops(tmp_path):
    model = make_tiny("llama")
    _, changed = changed_layers(model)
    objective = CallableObjective(
        lambda m, split: len(changed() & {11, 10}) - 5 * (9 in changed()), name="constructed"
    )
    cfg = compose_config(
        "tiny",
        {"type": "constructed"},
        ["fc_in"],
        [8, 9, 10, 11],
        [0.5, 0.1],
        Intervention(rho=0.5).to_dict(),
    )
    result = run_grid(tmp_path, cfg, model, objective)
    assert [s["layer"] for s in result["steps"]] == [11, 10, 9]
    assert [s["kept"] for s in result["steps"]] == [True, True, False]
    assert [e["layer"] for e in result["chosen"]["edits"]] == [11, 10]
    assert result["best"]["validation"]["score"] == 2


def test_next_token_objective_splits_first_fifth_for_validation():
    model = make_tiny("llama")
    obj = NextTokenObjective(next_token_data(model, n=10))
    val = obj.score(model, "validation")
    test = obj.score(model, "test")
    assert [r["index"] for r in val.records] == [0, 1]
    assert [r["index"] for r in test.records] == list(range(2, 10))
    assert 0 <= val.summary["accuracy"] <= 1 and val.summary["log_loss"] > 0


def test_ctrl_c_gives_the_running_trial_back_at_once(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), grace_s=600)
    calls = []

    def score(m, split):
        calls.append(split)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return float(len(calls))

    ctx = Context(cfg, model, objective=CallableObjective(score))
    with pytest.raises(KeyboardInterrupt):
        run_grid(tmp_path, cfg, ctx=ctx)
    store = store_at(tmp_path)
    assert store.running() == 0 and store.waiting() >= 1  # not stuck until the grace period
    result = run_grid(tmp_path, cfg, resume=True, ctx=ctx)
    assert len(result["trials"]) == 4
    assert len(store.results()) == 4 + 1 + (2 if result["chosen"]["edits"] else 1)


def test_greedy_on_a_single_text_decides_on_all_of_it_without_a_test_phase(tmp_path):
    model = make_tiny("llama")
    _, changed = changed_layers(model)
    objective = CallableObjective(lambda m, split: len(changed()), higher_is_better=False)
    objective.size = 1  # one text (laserRMT's perplexity on a file): nothing to split
    iv = Intervention(rho=0.5)
    cfg = greedy_config(
        "tiny",
        {"type": "constructed"},
        [{"lname": "fc_in", "layer": 11, "intervention": iv.to_dict()}],
    )
    result = run_grid(tmp_path, cfg, model, objective)
    assert result["decided_on"] == "all" and result["steps"][0]["kept"] is False
    assert {r.spec["split"] for r in store_at(tmp_path).results().values()} == {"all"}


def test_a_worker_dying_while_taking_a_trial_never_strands_it(tmp_path, monkeypatch):
    """Killed between its two writes (heartbeat, state), a worker leaves the trial takeable."""
    model = make_tiny("llama")
    store = store_at(tmp_path, grid_cfg(model, layers=(11,)))
    store.enqueue([{"key": "only"}])

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(store.storage, "record_heartbeat", killed)
    with pytest.raises(SystemExit):
        store.pop()
    other = store_at(tmp_path)
    other.fail_stale()
    taken = other.pop()
    assert taken is not None and taken.spec["key"] == "only"


def test_a_run_directory_from_before_named_runs_resumes_and_keeps_its_records(tmp_path):
    """The old layout: run.json, one study named "laserkit" in trials.db, records in
    trials/<n>.jsonl. Here with its validation phase done: status reads it, --resume runs only
    the test phase, and the table is the one a new run gives."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from laserkit.search import grid_edits, start, status
    from laserkit.search.where import open_run

    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(0.5,))
    reference = run_grid(tmp_path / "new", cfg, model)
    new = store_at(tmp_path / "new")
    old = tmp_path / "old"
    (old / "trials").mkdir(parents=True)
    p = cfg.params
    edits = grid_edits(p.lnames, p.layers, p.rhos, Intervention(rho=1.0))
    (old / "run.json").write_text(
        json.dumps(
            {
                "command": "search",
                "model": "tiny",
                "objective": cfg.objective.to_json(),
                "grid": {"edits": edits},
                "intervention": cfg.intervention,
                "halving": None,
                "seed": 0,
                "dtype": "auto",
                "storage": None,
            }
        )
    )
    study = optuna.create_study(
        study_name="laserkit", storage=default_url(old), direction="maximize"
    )
    val = [r for r in new.results().values() if r.spec["split"] == "validation"]
    for i, r in enumerate(val):
        (old / "trials" / f"{i}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in new.records(r))
        )
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=0.0,
                user_attrs={"spec": r.spec, "summary": r.summary, "records": f"{i}.jsonl"},
            )
        )

    s = status(open_run(old))
    assert (s["done"], s["finished"]) == (3, False)
    result, store = start(
        cfg,
        run_dir=old,
        resume=True,
        loaded=type("Loaded", (), {"model": model, "tokenizer": None}),
    )
    for r in (result, reference):
        r.pop("run")
        for summary in (*r["base"].values(), *r["best"].values()):
            summary.pop("seconds", None)
    assert result == reference
    assert len(store.results()) == len(val) + 2  # only the test phase was run
    for r in val:
        assert store.records(store.results()[r.key]) == new.records(r)  # read from trials/
