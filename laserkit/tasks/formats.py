"""Readers: turn raw records (from a packaged file, a local release file or the hub) into
Examples, driven by a reader spec from a task definition. Every problem names the record.

Readers: ``bigbench`` (task.json examples), ``fields`` (any flat records: a prompt template and
field names; also user task files), ``counterfact`` (ROME's counterfact.json), ``truthfulqa``
(questions with true and false answers, several release layouts), ``text`` (perplexity), and
the LASER reference protocol's constructions: ``fever`` (consistent unique claims),
``hotpot`` (answer-length filter), ``truthfulqa_mc2`` (mc2 statements), ``bigbench_rows``
(tasksource/bigbench rows; single-target items for open answers).
Each reader takes the records, the task's ``SourceSpec`` (its reader's own keys in ``spec.own``),
the task kind, the file's metadata and the origin for messages. They are registered by name in
``READERS``; another package adds readers through the entry-point group ``laserkit.readers``
(docs/extending.md), and a task may name a function of its own as ``module:function``, marked
with ``reader_keys`` (which also declares the keys of its own). Answers keep their types
(docs/tasks.md).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from ..core.errors import LaserkitError
from ..core.registry import Registry
from .kinds import kind_of
from .matching import normalize_answer  # noqa: F401 - kept importable from here
from .spec import Example, SourceSpec

Reader = Callable[[list, SourceSpec, str, dict, str], list[Example]]


def reader_keys(**keys: str) -> Callable[[Reader], Reader]:
    """Declare the spec keys a reader understands beyond SourceSpec's ({key: meaning}); the
    schema validation accepts them for tasks that use this reader."""

    def mark(fn: Reader) -> Reader:
        fn.keys = dict(keys)  # type: ignore[attr-defined]
        return fn

    return mark


def _prompt(spec: SourceSpec, default: str | None = None) -> str:
    """The spec's prompt template, else the reader's default; one line when there is neither."""
    prompt = spec.prompt if spec.prompt is not None else default
    if prompt is None:
        raise LaserkitError(f"sources.{spec.location}: reader {spec.reader} needs 'prompt'")
    return prompt


def _where(origin: str, i: int, rec: object) -> str:
    rid = rec.get("id", rec.get("_id", rec.get("case_id"))) if isinstance(rec, dict) else None
    return f"{origin} record {i}" + (f" (id {rid})" if rid is not None else "")


def fill(template: str, ctx: dict, where: str) -> str:
    """``template.format_map(ctx)`` with a one-line error naming the record and the field."""
    try:
        return template.format_map(ctx)
    except KeyError as e:
        have = ", ".join(sorted(str(k) for k in ctx)[:12])
        raise LaserkitError(
            f"{where}: missing field {e.args[0]!r} needed by the prompt "
            f"{template!r} (record has: {have})"
        ) from None
    except (ValueError, IndexError) as e:
        raise LaserkitError(f"{where}: bad prompt template {template!r}: {e}") from None


def make_example(kind: str, where: str, **kw) -> Example:
    """Build an Example and check that it has what its kind needs (kinds/*.py)."""
    ex = Example(**kw)
    kind_of(kind).check(ex, where)
    return ex


def _message_text(value: object) -> object:
    """A chat transcript (list of {role, content}) stands for its last message's content."""
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return value[-1]["content"]
    return value


def _as_list(value: object) -> list:
    """A list, or a CSV cell holding a JSON list or '|'-separated items, or one item."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                return list(json.loads(s))
            except json.JSONDecodeError:
                pass
        return [p.strip() for p in s.split("|")] if "|" in s else [value]
    return [value]


def _field(rec: dict, name: str, where: str) -> object:
    if name not in rec or rec[name] is None or rec[name] == "":
        raise LaserkitError(f"{where}: missing field {name!r}")
    return _message_text(rec[name])


def _gold(values: list, choices: list[str], spec: SourceSpec, where: str) -> list[int] | None:
    """Indices of the gold answers: a choice string (after label_map) or an integer index.
    None when the label is unmapped and the spec says to skip such records."""
    label_map = {str(k): str(v) for k, v in (spec.label_map or {}).items()}
    out = []
    for v in values:
        if label_map:
            if str(v) not in label_map:
                if spec.skip_unmapped:
                    return None
                raise LaserkitError(f"{where}: label {v!r} is not one of {list(label_map)}")
            v = label_map[str(v)]
        if isinstance(v, str) and v in choices:
            out.append(choices.index(v))
        elif isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
            out.append(int(v))
        else:
            raise LaserkitError(f"{where}: answer {v!r} is not one of the choices {choices}")
    return out


def terminate(text: str, mark: str) -> str:
    """The reference scripts' sentence rule: strip, then add ``mark`` ("." or "?") unless the
    text already ends with "." or "?"."""
    text = str(text).strip()
    return text if text.endswith((".", "?")) else text + mark


def _terminated(rec: dict, marks: dict, where: str) -> dict:
    """``terminate: {field: mark}``: those fields as ``terminate(value, mark)`` for the prompt."""
    return {f: terminate(str(_field(rec, f, where)), m) for f, m in marks.items()}


@reader_keys(
    terminate="{field: mark}: end those fields with the mark (e.g. '.') before the prompt "
    "is filled, as the LASER reference does for Bias in Bios"
)
def read_fields(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """Flat records described by field names; the reader behind user task files."""
    rename = spec.rename or {}
    fields = kind_of(kind).fields  # which Example fields the kind reads
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        if not isinstance(rec, dict):
            raise LaserkitError(f"{where}: expected an object, got {type(rec).__name__}")
        rec = dict(rec)
        for src, dst in rename.items():
            if dst not in rec and src in rec:
                rec[dst] = rec[src]
        rid = str(rec.get(spec.id, i))
        ctx = {**meta, **rec, **_terminated(rec, spec.own.get("terminate") or {}, where)}
        system = _system(rec, spec)
        if fields == "text":
            text = _field(rec, spec.text, where)
            out.append(make_example(kind, where, id=rid, text=str(text)))
            continue
        prompt = fill(spec.prompt or "{prompt}", ctx, where)
        if fields == "pair":
            out.append(
                make_example(
                    kind,
                    where,
                    id=rid,
                    prompt=prompt,
                    system=system,
                    chosen=str(_field(rec, spec.chosen, where)),
                    rejected=str(_field(rec, spec.rejected, where)),
                )
            )
            continue
        answer = _field(rec, spec.answer, where)
        if fields == "choices":
            if spec.choices is not None:
                choices = [str(c) for c in spec.choices]
            else:
                choices = [str(c) for c in _as_list(_field(rec, spec.choices_field, where))]
            gold = _gold(_as_list(answer), choices, spec, where)
            if gold is None:
                continue
            out.append(
                make_example(
                    kind,
                    where,
                    id=rid,
                    prompt=prompt,
                    choices=tuple(choices),
                    gold=tuple(gold),
                    system=system,
                )
            )
        else:
            answers = tuple(_as_list(answer))  # typed items: matching.py says what they mean
            out.append(
                make_example(kind, where, id=rid, prompt=prompt, answers=answers, system=system)
            )
    return out


def _system(rec: dict, spec: SourceSpec) -> str | None:
    """The record's own system turn (``system: FIELD``); None when the spec names no field or
    the record lacks it (the task's system_prompt then applies)."""
    name = spec.system
    value = rec.get(name) if name else None
    return None if value is None else str(value)


@reader_keys(
    max_prompt_chars="keep records whose system turn + prompt have at most N "
    "characters (laserRMT: 512)",
    max_answer_chars="keep records whose chosen and rejected answers each have at most "
    "N characters (laserRMT: 512)",
    first="then keep the first N records, in the data's order (laserRMT: 128)",
)
def read_preference_pairs(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """Preference pairs as laserRMT's load_benchmark_dataset builds them: the records that pass
    its character-length filters, the first ``first`` of them, no shuffle. Answers given as chat
    transcripts (ultrafeedback's message lists) stand for their last, assistant message."""
    prompt_max, answer_max = spec.own.get("max_prompt_chars"), spec.own.get("max_answer_chars")
    rename = spec.rename or {}
    kept = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise LaserkitError(
                f"{_where(origin, i, rec)}: expected an object, got {type(rec).__name__}"
            )
        full = {**rec, **{d: rec[s] for s, d in rename.items() if d not in rec and s in rec}}
        where = _where(origin, i, rec)
        if prompt_max is not None:
            prompt = fill(spec.prompt or "{prompt}", {**meta, **full}, where)
            if len(_system(full, spec) or "") + len(prompt) > prompt_max:
                continue
        if answer_max is not None and any(
            len(str(_field(full, getattr(spec, k), where))) > answer_max
            for k in ("chosen", "rejected")
        ):
            continue
        kept.append({"id": i, **rec})
        if spec.own.get("first") is not None and len(kept) == spec.own["first"]:
            break
    return read_fields(kept, spec, kind, meta, origin)


def read_bigbench(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """BIG-bench task.json examples: ``input`` with ``target_scores`` or ``target``. The file's
    top-level strings (task_prefix, ...) are available to the prompt template."""
    ctx0 = {k: v for k, v in meta.items() if isinstance(v, str)}
    fields = kind_of(kind).fields  # which Example fields the kind reads
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        if not isinstance(rec, dict) or "input" not in rec:
            raise LaserkitError(f"{where}: a BIG-bench example needs an 'input' field")
        prompt = fill(_prompt(spec, "{input}"), {**ctx0, **rec}, where)
        rid = str(rec.get("id", i))
        scores = rec.get("target_scores")
        if fields in ("choices", "pair"):
            if not isinstance(scores, dict) or not scores:
                raise LaserkitError(f"{where}: needs 'target_scores' {{answer: score}}")
            choices = list(scores)
            best = max(scores.values())
            if fields == "pair":
                chosen = max(choices, key=lambda c: scores[c])
                rejected = min(choices, key=lambda c: scores[c])
                out.append(
                    make_example(
                        kind, where, id=rid, prompt=prompt, chosen=chosen, rejected=rejected
                    )
                )
            else:
                gold = tuple(j for j, c in enumerate(choices) if best > 0 and scores[c] == best)
                out.append(
                    make_example(
                        kind, where, id=rid, prompt=prompt, choices=tuple(choices), gold=gold
                    )
                )
        else:
            if "target" not in rec:
                raise LaserkitError(f"{where}: needs 'target' (an answer or a list of answers)")
            answers = tuple(
                a for a in _as_list(rec["target"]) if not (isinstance(a, str) and not a.strip())
            )
            out.append(make_example(kind, where, id=rid, prompt=prompt, answers=answers))
    return out


@reader_keys(paraphrases="also each paraphrase prompt, with the same answer (default true)")
def read_counterfact(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """ROME's counterfact.json: the rewrite prompt (``{}`` = subject) and, as in the paper, each
    of its paraphrases, all with the true object as the answer."""
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        try:
            rw = rec["requested_rewrite"]
            prompts = [rw["prompt"].replace("{}", rw["subject"])]
            answer = rw["target_true"]["str"]
        except (KeyError, TypeError, AttributeError) as e:
            raise LaserkitError(f"{where}: not a CounterFact record (missing {e})") from None
        if spec.own.get("paraphrases", True):
            prompts += [str(p) for p in rec.get("paraphrase_prompts", [])]
        cid = str(rec.get("case_id", i))
        for j, p in enumerate(prompts):
            out.append(
                make_example(
                    kind,
                    where,
                    id=cid if j == 0 else f"{cid}-p{j}",
                    prompt=fill(_prompt(spec, "{prompt}"), {"prompt": p}, where),
                    answers=(answer,),
                    group=f"case-{cid}",
                )
            )
    return out


_TQA_FIELDS = {
    "question": ("Question", "question"),
    "true": ("True answers", "Correct Answers", "correct_answers"),
    "false": ("False answers", "Incorrect Answers", "incorrect_answers"),
}


def _tqa(rec: dict, what: str, where: str) -> Any:
    for name in _TQA_FIELDS[what]:
        if name in rec:
            v = rec[name]
            return (
                [a.strip() for a in v.split(";") if a.strip()]
                if isinstance(v, str) and what != "question"
                else v
            )
    raise LaserkitError(f"{where}: missing field {_TQA_FIELDS[what][0]!r}")


@reader_keys(mode="statements (every answer a true/false statement) or mc (pick a true one)")
def read_truthfulqa(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """TruthfulQA questions with true and false answers (BIG-bench questions.json, the original
    TruthfulQA.csv, the hub's ``generation`` config). ``mode: statements`` flattens every answer
    into a true/false statement (the paper); ``mode: mc`` asks for a true answer among all."""
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        question = str(_tqa(rec, "question", where))
        trues, falses = list(_tqa(rec, "true", where)), list(_tqa(rec, "false", where))
        if spec.own.get("mode", "statements") == "mc":
            out.append(
                make_example(
                    kind,
                    where,
                    id=str(i),
                    prompt=fill(_prompt(spec), {"question": question}, where),
                    choices=tuple(trues + falses),
                    gold=tuple(range(len(trues))),
                )
            )
            continue
        for j, (ans, ok) in enumerate([(a, True) for a in trues] + [(a, False) for a in falses]):
            prompt = fill(_prompt(spec), {"question": question, "answer": ans}, where)
            out.append(
                make_example(
                    kind,
                    where,
                    id=f"{i}-{j}",
                    prompt=prompt,
                    choices=("true", "false"),
                    gold=(0 if ok else 1,),
                    group=f"q{i}",
                )
            )
    return out


FEVER_LABELS = {"SUPPORTS": "true", "REFUTES": "false", "1": "true", "0": "false"}


def read_fever(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """FEVER (the release's paper_dev.jsonl / paper_test.jsonl, or the hub's rows): every claim
    once, in order of first appearance, and only when all its records agree on the label (the
    reference's "consistent unique" claims). NOT ENOUGH INFO records are dropped first (the
    hub's v1.0 labels are SUPPORTS = 1 and REFUTES = 0 only). Several parts (dev, then test)
    are deduplicated each on its own, as the reference does; pass them concatenated in that
    order (``cat paper_dev.jsonl paper_test.jsonl``) - the two never share a claim."""
    labels: dict[str, set[str]] = {}
    first: dict[str, tuple[int, dict]] = {}
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        if not isinstance(rec, dict):
            raise LaserkitError(f"{where}: expected an object, got {type(rec).__name__}")
        claim, label = _field(rec, "claim", where), rec.get("label")
        if str(label) not in FEVER_LABELS:
            if str(label).upper().replace("_", " ") in ("NOT ENOUGH INFO", "2"):
                continue
            raise LaserkitError(
                f"{where}: label {label!r} is not SUPPORTS, REFUTES or NOT ENOUGH INFO"
            )
        labels.setdefault(str(claim), set()).add(FEVER_LABELS[str(label)])
        first.setdefault(str(claim), (i, rec))
    out = []
    for claim, found in labels.items():
        if len(found) != 1:
            continue
        i, rec = first[claim]
        where = _where(origin, i, rec)
        prompt = fill(_prompt(spec), {**rec, "claim": terminate(claim, ".")}, where)
        answer = next(iter(found))
        out.append(
            make_example(
                kind,
                where,
                id=str(rec.get("id", i)),
                prompt=prompt,
                choices=("true", "false"),
                gold=(0 if answer == "true" else 1,),
            )
        )
    return out


def answer_tokens(name: str | None):
    """The token counter of the HotPotQA answer-length filter: the tokenizer the reference used
    (Llama-2's) when it is in the local Hugging Face cache, else None."""
    if not name:
        return None
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415

        tok = AutoTokenizer.from_pretrained(name, local_files_only=True, trust_remote_code=False)
    except Exception:  # not cached (offline): the caller falls back and says so
        return None
    return lambda text: len(tok(text)["input_ids"])


def _approx_tokens(text: str) -> int:
    """Fallback token count when Llama-2's tokenizer is unavailable: words and punctuation
    marks, a lower bound of a sentencepiece count (documented as a difference)."""
    import re  # noqa: PLC0415

    return len(re.findall(r"\w+|[^\w\s]", text)) + 1  # + the BOS token Llama-2 counts


@reader_keys(
    max_answer_tokens="drop items whose answer has more tokens than this (default 15)",
    answer_tokenizer="tokenizer that counts them (a hub id, used from the local cache)",
)
def read_hotpot(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """HotPotQA (hotpot_train_v1.1.json / hotpot_dev_*_v1.json, or the hub's rows): question and
    answer stripped; answers of more than ``max_answer_tokens`` tokens (Llama-2's tokenizer,
    BOS included, as the reference counts) are dropped. The reference's train[:7405] is the hub
    source's ``limit``, applied before this filter."""
    count = answer_tokens(spec.own.get("answer_tokenizer")) or _approx_tokens
    max_tok = int(spec.own.get("max_answer_tokens", 15))
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        if not isinstance(rec, dict):
            raise LaserkitError(f"{where}: expected an object, got {type(rec).__name__}")
        question = str(_field(rec, "question", where)).strip()
        answer = str(_field(rec, "answer", where)).strip()
        if count(answer) > max_tok:
            continue
        prompt = fill(_prompt(spec), {**rec, "question": terminate(question, "?")}, where)
        out.append(
            make_example(
                kind,
                where,
                id=str(rec.get("_id", rec.get("id", i))),
                prompt=prompt,
                answers=(answer,),
            )
        )
    return out


def _mc2(rec: dict, where: str) -> tuple[list[str], list[int]]:
    """mc2 targets as (choices, labels): the hub's {choices, labels} or the release's
    mc_task.json {answer: label}."""
    t = rec.get("mc2_targets")
    if isinstance(t, dict) and "choices" in t and "labels" in t:
        return [str(c) for c in t["choices"]], [int(v) for v in t["labels"]]
    if isinstance(t, dict) and t:
        return [str(c) for c in t], [int(v) for v in t.values()]
    raise LaserkitError(f"{where}: needs 'mc2_targets' (the multiple_choice release)")


def read_truthfulqa_mc2(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """TruthfulQA's multiple_choice release (hub ``multiple_choice`` config or mc_task.json),
    the reference's pointwise data: every mc2 target becomes one true/false statement,
    "question answer." + "Is this statement true or false? This statement is"; one question's
    statements form a group (never split between validation and test)."""
    out = []
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        question = str(_field(rec, "question", where))
        choices, labels = _mc2(rec, where)
        if not any(labels):
            raise LaserkitError(f"{where}: no true answer among the mc2 targets")
        for j, (ans, lab) in enumerate(zip(choices, labels, strict=True)):
            statement = question + " " + ans
            statement += "" if statement.endswith(".") else "."
            prompt = fill(_prompt(spec), {"statement": statement}, where)
            out.append(
                make_example(
                    kind,
                    where,
                    id=f"{i}-{j}",
                    prompt=prompt,
                    choices=("true", "false"),
                    gold=(0 if lab == 1 else 1,),
                    group=f"q{i}",
                )
            )
    return out


def read_bigbench_rows(
    records: list, spec: SourceSpec, kind: str, meta: dict, origin: str
) -> list[Example]:
    """BIG-bench rows as tasksource/bigbench serves them (``inputs``, ``targets``), or a
    BIG-bench task.json (``input``, ``target`` / ``target_scores``). Choice tasks: the single
    target among ``choices``; open answers: only single-target items are kept (WikidataQA)."""
    out = []
    fields = kind_of(kind).fields  # which Example fields the kind reads
    for i, rec in enumerate(records):
        where = _where(origin, i, rec)
        if not isinstance(rec, dict):
            raise LaserkitError(f"{where}: expected an object, got {type(rec).__name__}")
        text = rec.get("inputs", rec.get("input"))
        if "targets" in rec:
            targets = _as_list(rec["targets"])
        elif isinstance(rec.get("target_scores"), dict):
            targets = [
                c
                for c, v in rec["target_scores"].items()
                if v == max(rec["target_scores"].values())
            ]
        else:
            targets = _as_list(rec.get("target", []))
        if not isinstance(text, str) or not targets:
            raise LaserkitError(f"{where}: a BIG-bench row needs 'inputs' and 'targets'")
        if len(targets) != 1:
            if fields == "choices":
                raise LaserkitError(f"{where}: expected one target, got {targets}")
            continue
        # the reference strips open questions' inputs (bbh_qa: dataset[i][0].strip()) and
        # scores choice tasks' inputs unchanged (intervention_*_bbh.py: prompt = dataset[i][0])
        shown = text if fields == "choices" else text.strip()
        prompt = fill(_prompt(spec, "{inputs}"), {**rec, "inputs": shown}, where)
        target = str(targets[0]).strip()
        if fields == "choices":
            choices = [str(c) for c in spec.choices or ()]
            if target not in choices:
                raise LaserkitError(f"{where}: target {target!r} is not one of {choices}")
            out.append(
                make_example(
                    kind,
                    where,
                    id=str(rec.get("idx", rec.get("id", i))),
                    prompt=prompt,
                    choices=tuple(choices),
                    gold=(choices.index(target),),
                )
            )
        else:
            out.append(
                make_example(
                    kind,
                    where,
                    id=str(rec.get("idx", rec.get("id", i))),
                    prompt=prompt,
                    answers=(target,),
                )
            )
    return out


@reader_keys(
    join="join all records into one text: true (blank lines, as wikitext) or the "
    "separator itself (laserRMT: '\\n\\n' for wikitext, ' ' for PTB); default false"
)
def read_text(records: list, spec: SourceSpec, kind: str, meta: dict, origin: str) -> list[Example]:
    """Text for perplexity: one document per record, or all records joined into one string
    (``join``), exactly as laserRMT's gptq_data_utils joins a test split (nothing stripped)."""
    field = spec.text
    join = spec.own.get("join")
    if join:
        sep = join if isinstance(join, str) else "\n\n"
        text = sep.join(str(r.get(field) or "") for r in records)
        return [make_example(kind, f"{origin} (joined)", id="0", text=text)]
    return read_fields(records, spec, kind, meta, origin)


# name → reader, in listing order; entry points of other packages come after these
READERS: Registry[Reader] = Registry("reader", group="readers")
for _name, _reader in (
    ("fields", read_fields),
    ("bigbench", read_bigbench),
    ("counterfact", read_counterfact),
    ("truthfulqa", read_truthfulqa),
    ("text", read_text),
    ("preference_pairs", read_preference_pairs),
    ("fever", read_fever),
    ("hotpot", read_hotpot),
    ("truthfulqa_mc2", read_truthfulqa_mc2),
    ("bigbench_rows", read_bigbench_rows),
):
    READERS.register(_name, _reader)


def resolve_reader(name: str, where: str = "task") -> Reader:
    """A registered reader by name, or ``module:function`` (imported on first use)."""
    if name in READERS:
        try:
            return READERS.get(name)
        except LaserkitError as e:  # an entry point that does not import
            raise LaserkitError(f"{where}: {e}") from None
    readers = ", ".join(READERS.names())
    if ":" not in name:
        raise LaserkitError(
            f"{where}: unknown reader {name!r}; use one of {readers}, or module:function"
        )
    module, _, func = name.partition(":")
    if module.split(".")[0] in _NOT_READERS:  # refused before importing it (no side effects)
        raise LaserkitError(
            f"{where}: reader {name!r} is not a task reader: use one of "
            f"{readers}, or a function of your own marked with "
            "@laserkit.tasks.formats.reader_keys (docs/tasks.md)"
        )
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise LaserkitError(f"{where}: cannot import reader {name!r} ({e})") from None
    if not callable(fn) or not isinstance(getattr(fn, "keys", None), dict):
        raise LaserkitError(
            f"{where}: {name!r} is not marked as a task reader: decorate it "
            "with @laserkit.tasks.formats.reader_keys(...) (no keys if it has "
            "none; docs/tasks.md)"
        )
    return fn


# a task file is data: it may name a reader of the user's own, never run the standard library's
# functions (os:system) or import its modules for their side effects
_NOT_READERS = frozenset(sys.stdlib_module_names) | {"laserkit", "builtins", "__main__"}
