"""Batches by a token budget and results that cross to the host once (issue 22).

References: a copy of the scoring loops as they were before token budgets (one host transfer
per row, a finiteness check per batch), and one-sequence-at-a-time scoring; a stub model whose
forward never synchronises lets the test count the synchronisations of laserkit's own code."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny
from test_search_cli import tiny_dir  # noqa: F401 - a fixture
from torch import nn
from torch.overrides import TorchFunctionMode

from laserkit.core.errors import LaserkitError
from laserkit.eval import batching
from laserkit.eval import scoring as S
from laserkit.eval.batching import parse_batch_tokens, plan_batches, resolve_batch_tokens
from laserkit.search.config import ObjectiveConfig, RunConfig
from laserkit.search.identity import RunIdentity
from laserkit.search.objective import NextTokenObjective

LAKIT = str(Path(sys.executable).parent / "laserkit")


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("llama", vocab_size=128, num_hidden_layers=2)


def _requests(n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """Rows of many lengths, some sharing a prompt (one-token answers) or a prefix."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(1, 128) for _ in range(rng.randrange(1, 14))]
        for _ in range(rng.randrange(1, 3)):
            cont = [rng.randrange(1, 128) for _ in range(rng.randrange(1, 4))]
            out.append((prompt + cont, len(prompt)))
    return out


# --- the planner against a direct reading of its rule ---------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_plan_batches_follows_the_rule(seed):
    rng = random.Random(seed)
    lengths = sorted((rng.randrange(1, 40) for _ in range(60)), reverse=seed % 2 == 0)
    for cap in (None, 1, 3, 7):
        for budget in (1, 20, 64, 200, 10_000):
            plan = plan_batches(lengths, cap, budget)
            assert [i for r in plan for i in r] == list(range(len(lengths)))
            for k, r in enumerate(plan):
                rows = [lengths[i] for i in r]
                assert len(rows) == 1 or len(rows) * max(rows) <= budget
                assert cap is None or len(rows) <= cap
                if k + 1 < len(plan):  # greedy: the next row would break the budget or the cap
                    nxt = rows + [lengths[plan[k + 1][0]]]
                    assert len(nxt) * max(nxt) > budget or (cap is not None and len(rows) == cap)
    assert plan_batches([5, 4, 3, 2, 1], 2, None) == [range(0, 2), range(2, 4), range(4, 5)]


def test_batch_tokens_values():
    assert parse_batch_tokens("auto") is None and parse_batch_tokens(None) is None
    assert parse_batch_tokens("off") == "off" and parse_batch_tokens("4096") == 4096
    for bad in ("0", "-3", "1.5", "lots", "", "1e3"):
        with pytest.raises(LaserkitError, match=r"--batch-tokens .*: give auto, off, or a whole"):
            parse_batch_tokens(bad)
    model = nn.Linear(2, 2)  # on the CPU "auto" is no budget: today's fixed rows
    assert resolve_batch_tokens(model, None) is None
    assert resolve_batch_tokens(model, "off") is None and resolve_batch_tokens(model, 99) == 99


class FakeCuda:
    """Just enough of a bfloat16 model on a CUDA device for sizing a budget."""

    config = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, vocab_size=32000)

    def parameters(self):
        yield SimpleNamespace(device=torch.device("cuda", 0), element_size=lambda: 2)


def test_auto_budget_from_free_memory(monkeypatch):
    free = 64 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (free, 80 << 30))
    per_token = 4096 * 32 * 2 + 32000 * (2 + 8)  # activations + logits (docs/usage.md)
    assert resolve_batch_tokens(FakeCuda(), None) == (free // 2) // per_token
    assert resolve_batch_tokens(FakeCuda(), "off") is None
    assert resolve_batch_tokens(FakeCuda(), 512) == 512


def test_a_search_resolves_auto_once(tiny, monkeypatch):
    calls = []

    def resolve(model, tokens):
        calls.append(tokens)
        return 10 + len(calls)  # free memory that changes between trials

    monkeypatch.setattr(batching, "resolve_batch_tokens", resolve)  # search_batching's
    obj = NextTokenObjective([[1, 2, 3], [4, 5], [6, 7, 8, 9]], batch_size=2)
    first = obj.score(tiny, "all").records
    assert obj.score(tiny, "all").records == first and calls == [None]


# --- results: the old loop and one-at-a-time as references ----------------------------------


@torch.inference_mode()
def _old_token_logprobs(model, requests, pad_id, batch_size):
    """token_logprobs as it was before token budgets (commit 2eabd20), without callbacks."""
    keys = [tuple(int(t) for t in ids) for ids, _ in requests]
    inputs = [k[:-1] for k in keys]
    uniq = sorted(set(inputs))
    rep: dict = {}
    for i in range(len(uniq) - 1, -1, -1):
        s = uniq[i]
        nxt = uniq[i + 1] if i + 1 < len(uniq) else None
        rep[s] = rep[nxt] if nxt is not None and nxt[: len(s)] == s else s
    users: dict = {}
    for i, k in enumerate(inputs):
        users.setdefault(rep[k], []).append(i)
    rows = sorted(users, key=lambda r: (-len(r), r))
    out: list = [None] * len(requests)
    for b0 in range(0, len(rows), batch_size):
        batch = rows[b0 : b0 + batch_size]
        x, mask = S.pad_batch(batch, pad_id)
        spans = [
            (min(requests[i][1] for i in users[r]) - 1, max(len(keys[i]) for i in users[r]) - 1)
            for r in batch
        ]
        first = min(lo for lo, _ in spans)
        keep = torch.arange(first, max(hi for _, hi in spans))
        logits = model(input_ids=x, attention_mask=mask, logits_to_keep=keep).logits
        S.check_finite_outputs(logits)
        for j, r in enumerate(batch):
            lo, hi = spans[j]
            lp = logits[j, lo - first : hi - first].float().log_softmax(-1).cpu()
            for i in users[r]:
                ids, start = keys[i], requests[i][1]
                pos = torch.arange(start - 1, len(ids) - 1) - lo
                out[i] = lp[pos, torch.tensor(ids[start:], dtype=torch.long)]
    return out


def test_fixed_rows_equal_the_old_loop_bit_for_bit(tiny):
    reqs = _requests(8)
    for batch_size in (1, 4):
        got, _ = S.token_logprobs(tiny, reqs, pad_id=0, batch_size=batch_size)
        want = _old_token_logprobs(tiny, reqs, 0, batch_size)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_token_budgets_equal_one_row_at_a_time(tiny):
    reqs = _requests(8, seed=1)
    want = _old_token_logprobs(tiny, reqs, 0, 1)
    direct = []
    for ids, start in reqs:
        with torch.no_grad():
            lp = tiny(torch.tensor([ids[:start]])).logits[0, -1].float().log_softmax(-1)
        direct.append([int((lp > lp[0]).sum()), int(lp.argmax())])
    lengths = sorted((len(ids) - 1 for ids, _ in reqs), reverse=True)
    cuts = set()
    for cap, budget in [(None, 1), (None, 40), (3, 60), (None, 10_000)]:
        cuts.add(len(plan_batches(lengths, cap, budget)))
        got, ranks = S.token_logprobs(
            tiny,
            reqs,
            pad_id=0,
            batch_size=cap,
            batch_tokens=budget,
            at_start=lambda i, lp: torch.stack([(lp > lp[0]).sum(), lp.argmax()]),
        )
        for g, w in zip(got, want, strict=True):
            assert g.device.type == "cpu" and torch.allclose(g, w, atol=1e-5)
        assert [r.tolist() for r in ranks] == direct
    assert len(cuts) >= 3  # the budgets cut the rows differently


def test_generation_under_budgets_equals_fixed_rows(tiny):
    rng = random.Random(2)
    prompts = [[rng.randrange(1, 128) for _ in range(rng.randrange(1, 9))] for _ in range(5)]
    eos = _direct_greedy(tiny, prompts[0], 2, eos=None)[1]  # the first prompt stops early
    kw = dict(max_new_tokens=5, pad_id=0, eos_ids=[eos])
    want = [_direct_greedy(tiny, p, 5, eos=eos) for p in prompts]
    assert len(want[0]) == 1 and max(map(len, want)) == 5
    assert S.greedy_generate(tiny, prompts, batch_size=3, **kw) == want
    for budget in (1, 30):
        assert S.greedy_generate(tiny, prompts, batch_size=None, batch_tokens=budget, **kw) == want


@torch.no_grad()
def _direct_greedy(model, prompt: list[int], n: int, eos: int | None) -> list[int]:
    """Greedy decoding the slow way: the whole sequence again at every step, no padding; the
    end-of-sequence token barred from the first step (generate's min_new_tokens=1)."""
    new: list[int] = []
    for step in range(n):
        logits = model(torch.tensor([prompt + new])).logits[0, -1].clone()
        if step == 0 and eos is not None:
            logits[eos] = float("-inf")
        nxt = int(logits.argmax())
        if nxt == eos:
            break
        new.append(nxt)
    return new


def test_next_token_objective_equals_the_old_loop(tiny):
    rng = random.Random(3)
    seqs = [[rng.randrange(1, 128) for _ in range(rng.randrange(2, 10))] for _ in range(12)]
    want = _old_next_token(tiny, seqs, 5)
    got = NextTokenObjective(seqs, batch_size=5).score(tiny, "all").records
    assert got == want  # the same floats: fixed rows are the old batches
    for budget in (1, 25, 1000):
        obj = NextTokenObjective(seqs, batch_size=5, batch_tokens=budget)
        recs = obj.score(tiny, "all").records
        assert [r["predicted"] for r in recs] == [r["predicted"] for r in want]
        for a, b in zip(recs, want, strict=True):
            assert a["log_loss"] == pytest.approx(b["log_loss"], abs=1e-5)


@torch.no_grad()
def _old_next_token(model, sequences, batch_size):
    """NextTokenObjective.score's loop before token budgets (a float per element)."""
    records = []
    for start in range(0, len(sequences), batch_size):
        batch = [s[:-1] for s in sequences[start : start + batch_size]]
        answers = [s[-1] for s in sequences[start : start + batch_size]]
        width = max(map(len, batch))
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, seq in enumerate(batch):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = mask.sum(1) - 1
        logp = torch.log_softmax(logits[torch.arange(len(batch)), last].float(), -1)
        for r, ans in enumerate(answers):
            records.append(
                {
                    "index": start + r,
                    "answer": ans,
                    "predicted": int(logp[r].argmax()),
                    "log_loss": float(-logp[r, ans]),
                }
            )
    return records


def test_non_finite_outputs_are_refused_once(tiny):
    broken = make_tiny("llama", vocab_size=128, num_hidden_layers=2)
    with torch.no_grad():
        broken.lm_head.weight[5, 0] = float("nan")
    msg = "the model's outputs are NaN or infinite, so no answer can be scored"
    with pytest.raises(LaserkitError, match=msg):
        S.token_logprobs(broken, _requests(6), pad_id=0, batch_size=2)
    with pytest.raises(LaserkitError, match=msg):
        S.greedy_generate(broken, [[1, 2], [3]], max_new_tokens=3, pad_id=0, eos_ids=[])


# --- host synchronisations do not grow with the number of batches ---------------------------

SYNCS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "cpu", "numpy"}


class CountSyncs(TorchFunctionMode):
    """Counts the calls that bring a tensor's values to the host (or copy to the CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        to_cpu = name == "to" and any(
            str(a) == "cpu" for a in (*args[1:], kwargs.get("device", None))
        )
        self.n += name in SYNCS or to_cpu
        return func(*args, **kwargs)


class StubLM(nn.Module):
    """A causal model whose forward never synchronises: logits at t from a prefix sum of
    embeddings up to t (the shared-row rule holds), with logits_to_keep."""

    def __init__(self, vocab: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask, logits_to_keep=None):
        h = (self.emb(input_ids) * attention_mask[..., None]).cumsum(1)
        if logits_to_keep is not None:
            h = h[:, logits_to_keep]
        return SimpleNamespace(logits=self.head(h))


def _syncs(fn) -> int:
    with CountSyncs() as c:
        fn()
    return c.n


def test_scoring_synchronises_a_fixed_number_of_times():
    model = StubLM()
    reqs = [([(7 * i + j) % 63 + 1 for j in range(3 + i % 5)], 2) for i in range(24)]
    ranks = lambda i, lp: torch.stack([(lp > lp[1]).sum(), lp.argmax()])  # noqa: E731
    counts = {
        b: _syncs(lambda b=b: S.token_logprobs(model, reqs, pad_id=0, batch_size=b, at_start=ranks))
        for b in (1, 5, 24)
    }
    assert len(set(counts.values())) == 1, counts  # 24 batches cost what one does
    old = [_syncs(lambda b=b: _old_token_logprobs(model, reqs, 0, b)) for b in (1, 24)]
    assert old[0] > old[1]  # the counter sees the old loop's transfer per row
    budgets = {
        t: _syncs(
            lambda t=t: S.token_logprobs(model, reqs, pad_id=0, batch_size=None, batch_tokens=t)
        )
        for t in (1, 30, 1000)
    }
    assert len(set(budgets.values())) == 1, budgets
    seqs = [r[0] for r in reqs]
    obj = {
        b: _syncs(lambda b=b: NextTokenObjective(seqs, batch_size=b).score(model, "all"))
        for b in (1, 24)
    }
    assert obj[1] == obj[24], obj


# --- the option, from the command line to the run's identity --------------------------------


def test_objective_config_stores_auto_as_before():
    default = ObjectiveConfig.from_cli("fever")
    assert default.batch_tokens is None  # runs made before the option compare equal
    assert ObjectiveConfig.from_cli("fever", batch_tokens="auto") == default
    assert ObjectiveConfig.from_cli("fever", batch_tokens="2048").batch_tokens == 2048
    assert "batch_tokens" not in default.to_json()  # stored as runs stored it before
    assert ObjectiveConfig.from_json(default.to_json()) == default


def test_a_resume_with_another_budget_is_refused():
    def identity(tokens):
        obj = ObjectiveConfig.from_cli("fever", batch_tokens=tokens)
        cfg = RunConfig(strategy="grid", model="m", lnames=["fc_in"], layers=[0], objective=obj)
        return RunIdentity.of(cfg)

    run, same, other = identity(None), identity("auto"), identity("2048")
    assert run.differences(same) == [] and same.differences(run) == []
    assert run.differences(other) == ["objective.batch_tokens"]
    assert other.differences(run) == ["objective.batch_tokens"]
    assert "batch_tokens (--batch-tokens: auto in the run, 2048 here)" in run.describe(
        other, ["objective.batch_tokens"]
    )


@pytest.mark.parametrize("cmd", ["eval", "search"])
def test_bad_batch_tokens_is_one_line(cmd, tmp_path):
    res = subprocess.run(
        [LAKIT, cmd, str(tmp_path / "none"), "--task", "fever", "--batch-tokens", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "laserkit: error: --batch-tokens 0: give auto, off, or a whole number of "
        "tokens of at least 1"
    ], res.stderr


# --- whole tasks, through evaluate() and the installed command ------------------------------


def _close(a: dict, b: dict, keys: tuple[str, ...]) -> None:
    for k in keys:
        if isinstance(a[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
        else:
            assert a[k] == b[k], k


def test_tasks_under_a_budget_equal_fixed_rows(tiny_dir, tmp_path):  # noqa: F811
    from laserkit.eval.evaluate import evaluate
    from laserkit.io.load import load
    from laserkit.tasks import get_task

    loaded = load(tiny_dir, dtype="float32", device="cpu")
    text = tmp_path / "notes.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 16)
    tasks = [
        (get_task("fever-bigbench"), ("accuracy", "log_loss")),
        (get_task("bbh-wikidata-bigbench"), ("accuracy", "log_loss")),
        (get_task("perplexity", data=str(text)), ("perplexity",)),
    ]
    kw = dict(limit=4, progress=False, max_new_tokens=3, max_length=64)
    for task, keys in tasks:
        fixed = evaluate(loaded.model, loaded.tokenizer, task, batch_tokens="off", **kw)
        for budget in (40,):  # one row a batch here, where fixed rows put 4
            got = evaluate(loaded.model, loaded.tokenizer, task, batch_tokens=budget, **kw)
            assert got.summary["batch_tokens"] == budget and "batch_tokens" not in fixed.summary
            _close(got.summary, fixed.summary, keys)
            for a, b in zip(got.records, fixed.records, strict=True):
                _close(a, b, tuple(k for k in keys if k in a))


def test_the_command_takes_a_budget(tiny_dir, tmp_path):  # noqa: F811
    out = tmp_path / "e"
    res = subprocess.run(
        [LAKIT, "eval", str(tiny_dir), "-t", "fever-bigbench", "--limit", "4"]
        + ["--batch-tokens", "64", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text())["batch_tokens"] == 64


def test_prefix_cache_keys_batches_from_the_host_copy():
    """Inside ``Padded.batch`` the prefix cache keys a batch by the host copy of its ids: the
    device tensors' values are never read (here they live on ``meta``, where reading fails), and
    the key is the one the device ids would give, so hits do not depend on the path."""
    from laserkit.search.prefix_cache import batch_key

    pad = S.Padded.of([[5, 6, 7, 8], [9, 10], [11, 12, 13]], 0, torch.device("cpu"))
    sel = range(1, 3)
    with pad.batch(sel, 3) as (ids, mask):
        plain = batch_key((), {"input_ids": ids, "attention_mask": mask})
        on_meta = {"input_ids": ids.to("meta"), "attention_mask": mask.to("meta")}
        assert batch_key((), on_meta) == plain
    with pytest.raises(NotImplementedError):  # outside, the values would be read from meta
        batch_key((), on_meta)
    other = S.Padded.of([[5, 6, 7, 8], [9, 10], [11, 12, 14]], 0, torch.device("cpu"))
    with other.batch(sel, 3) as (ids2, mask2):
        assert batch_key((), {"input_ids": ids2, "attention_mask": mask2}) != plain
