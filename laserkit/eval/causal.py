"""The causal-LM scorer: task kinds' requests (tasks/requests.py) answered with the scoring
primitives of scoring.py (docs/methods.md for the conventions).

- Continuations: the prompt is tokenized on its own (with the tokenizer's special tokens), the
  answer on its own without special tokens, and the two are concatenated; whitespace between
  them belongs to the answer (``scoring.split_boundary``). Batched and one-at-a-time scoring
  build exactly the same token sequences. Over-long prompts lose tokens from the left.
- Prompts are raw text unless a chat template is in force; then the prompt is the user turn and
  the answer continues the assistant's turn (docs/tasks.md).
- Generation is greedy; only the generated tokens are decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import LaserkitError
from ..tasks import requests as R
from . import scoring as S
from .scorer import Scorer

PPL_WINDOW = 2048  # default perplexity window, capped by the model's context
PPL_CHUNK = 128  # laserRMT's chunk length (rmt_laser_snr.py: seqlen=128)
PPL_BATCH_TOKENS = 8192


class CausalScorer(Scorer):
    """Any model that is not a masked LM: log-probabilities of continuations, greedy generation."""

    what = "a causal language model"

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        return True

    @property
    def pad_id(self) -> int:
        t = self.tokenizer
        return next((i for i in (t.pad_token_id, t.eos_token_id) if i is not None), 0)

    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids |= set(extra if isinstance(extra, list) else [extra])
        return sorted(i for i in ids if i is not None)

    def prompt_ids(self, prompt: str, system: str | None) -> list[int]:
        """Generation prompt tokens: the chat text, or the raw prompt without trailing spaces
        (a final newline is kept)."""
        st = self.settings
        if st.chat:
            return S.chat_prompt(self.tokenizer, prompt, st.chat_template, st.system(system))
        return S.encode_prompt(self.tokenizer, prompt.rstrip(" \t"))

    def continuation_requests(
        self, prompt: str, answers: Sequence[str], system: str | None
    ) -> tuple[list, bool]:
        """(ids, start) for each answer as a continuation of the prompt, fitted to the context."""
        st, tok = self.settings, self.tokenizer
        reqs, truncated = [], False
        if st.chat:  # the answer opens the assistant's turn, right after the template's text
            prompt = S.chat_text(tok, prompt, st.chat_template, st.system(system))
        for ans in answers:
            p, cont = S.split_boundary(prompt, ans, "" if st.chat else st.answer_prefix)
            if st.chat:
                cont = cont.lstrip(" \t")
            ids = S.chat_encode(tok, p, st.chat_template) if st.chat else S.encode_prompt(tok, p)
            ids, start, cut = S.fit(ids, S.encode_continuation(tok, cont), st.max_len)
            reqs.append((ids, start))
            truncated |= cut
        return reqs, truncated

    def _logprobs(self, reqs: list, at_start: Any = None, desc: str = "scoring") -> tuple:
        return S.token_logprobs(
            self.model,
            reqs,
            pad_id=self.pad_id,
            batch_size=self.settings.batch_size,
            batch_tokens=self.settings.batch_tokens,
            at_start=at_start,
            progress=self.settings.progress,
            desc=desc,
        )

    def _built(self, requests: Sequence[Any]) -> tuple[list, list[slice], list]:
        built = [self.continuation_requests(r.prompt, r.continuations, r.system) for r in requests]
        flat, slices = _flatten([b[0] for b in built])
        return flat, slices, built

    def loglikelihood(self, requests: list[R.Loglikelihood]) -> list[R.Scores]:
        flat, slices, built = self._built(requests)
        lps, _ = self._logprobs(flat) if flat else ([], [])
        return [
            R.Scores(_sums(lps[sl]), [len(ids) - start for ids, start in reqs], cut)
            for sl, (reqs, cut) in zip(slices, built, strict=True)
        ]

    def next_token(self, requests: list[R.NextToken]) -> list[R.Ranked]:
        """The answer's first token (any token that decodes to the same stripped, lower-cased
        text) ranked at the position after the prompt."""
        tok = self.tokenizer
        head: Any = self.model.get_output_embeddings()  # type: ignore[operator]
        vocab = S.vocab_index(tok, head.weight.shape[0])
        flat, slices, built = self._built(requests)
        targets: dict[int, torch.Tensor] = {}  # first request of an example → equivalent ids
        for sl in slices:
            firsts = [vocab.same_as(tok, flat[i][0][flat[i][1]]) for i in range(sl.start, sl.stop)]
            targets[sl.start] = torch.cat(firsts).unique()

        on_dev = _on_device(targets, S.model_device(self.model))

        def rank(i: int, lp: torch.Tensor) -> torch.Tensor | None:
            """(rank, argmax) kept on the device: they come to the host with the log-probs."""
            if i not in on_dev:
                return None
            best = lp[on_dev[i]].max()
            return torch.stack([(lp > best).sum() + 1, lp.argmax()])

        lps, extra = self._logprobs(flat, at_start=rank)
        out = []
        for sl, (_, cut) in zip(slices, built, strict=True):
            r, top = (int(v) for v in extra[sl.start].tolist())
            out.append(R.Ranked(r, tok.decode([top]), best_mean_loss(lps[sl]), cut))
        return out

    def generate(self, requests: list[R.Generate]) -> list[str]:
        st = self.settings
        prompts = [self.prompt_ids(r.prompt, r.system) for r in requests]
        keep = max(1, st.max_len - st.max_new_tokens)
        gens = S.greedy_generate(
            self.model,
            [p[-keep:] for p in prompts],
            max_new_tokens=st.max_new_tokens,
            pad_id=self.pad_id,
            eos_ids=self.eos_ids(),
            batch_size=st.batch_size,
            batch_tokens=st.batch_tokens,
            progress=st.progress,
            desc="generating",
        )
        return [self.tokenizer.decode(g, skip_special_tokens=True) for g in gens]

    def perplexity(self, requests: list[R.Perplexity]) -> list[R.Windows]:
        """Every text of one task in one pass (its requests share the window settings)."""
        r0 = requests[0]
        if r0.chunking == "fixed":
            return self._chunks(requests)
        window = S.context_length(self.model, r0.length or PPL_WINDOW)
        stride = r0.stride or max(1, window // 2)
        texts = [S.encode_prompt(self.tokenizer, r.text) for r in requests]
        per_doc = [
            [(ids[b:e], first) for b, e, first in S.sliding_windows(len(ids), window, stride)]
            for ids in texts
        ]
        flat, slices = _flatten(per_doc)
        # full-vocabulary logits of long windows are large: at most PPL_BATCH_TOKENS per batch
        # unless a token budget is in force
        lps = self._text_logprobs(flat, window)
        return [
            R.Windows(
                _sums(lps[sl]),
                [len(t) for t in lps[sl]],
                [],
                len(ids),
                {"window": window, "stride": stride},
            )
            for sl, ids in zip(slices, texts, strict=True)
        ]

    def _chunks(self, requests: list[R.Perplexity]) -> list[R.Windows]:
        """laserRMT's perplexity: each text tokenized as one string, cut into ⌊n/L⌋ chunks of L
        tokens (tail dropped); a chunk's loss is the mean cross-entropy of its L−1 next-token
        predictions."""
        r0 = requests[0]
        length = r0.length or PPL_CHUNK
        if length > S.context_length(self.model):
            raise LaserkitError(
                f"{r0.where}: chunk length {length} exceeds the model's "
                f"context of {S.context_length(self.model)} tokens"
            )
        texts = [S.encode_prompt(self.tokenizer, r.text) for r in requests]
        per_doc = [[(ids[b:e], 1) for b, e in S.fixed_chunks(len(ids), length)] for ids in texts]
        flat, slices = _flatten(per_doc)
        if not flat:
            raise LaserkitError(
                f"{r0.where}: the text is shorter than one chunk of "
                f"{length} tokens; use a longer text or a smaller max_length"
            )
        losses = [-float(t.double().mean()) for t in self._text_logprobs(flat, length)]
        return [
            R.Windows([], [], losses[sl], len(ids), {"chunk_length": length})
            for sl, ids in zip(slices, texts, strict=True)
        ]

    def _text_logprobs(self, flat: list, window: int) -> list[torch.Tensor]:
        st = self.settings
        fixed = max(1, min(st.batch_size or 1, PPL_BATCH_TOKENS // window))
        lps, _ = S.token_logprobs(
            self.model,
            flat,
            pad_id=self.pad_id,
            progress=st.progress,
            batch_size=st.batch_size if st.batch_tokens is not None else fixed,
            batch_tokens=st.batch_tokens,
            desc="perplexity",
        )
        return lps

    def cosines(self, requests: list[R.Cosines]) -> list[R.Similarity]:
        """Every text, chosen and rejected answer embedded in one call (unit norm)."""
        n, embedder = len(requests), self.settings.embedder
        emb = S.embed(
            [r.text for r in requests]
            + [r.chosen for r in requests]
            + [r.rejected for r in requests],
            embedder,
            model=self.model,
            tokenizer=self.tokenizer,
        )
        gen, chosen, rejected = emb[:n].double(), emb[n : 2 * n].double(), emb[2 * n :].double()
        cos_c, cos_r = (gen * chosen).sum(-1).tolist(), (gen * rejected).sum(-1).tolist()
        return [R.Similarity(c, r, embedder) for c, r in zip(cos_c, cos_r, strict=True)]

    def harness(self, requests: list[R.Harness]) -> list[R.HarnessResults]:
        from .harness import run_lm_eval  # noqa: PLC0415 - lm-eval only when its tasks are asked

        return [run_lm_eval(self.model, self.tokenizer, r, self.settings) for r in requests]


def _on_device(targets: dict[int, torch.Tensor], dev: torch.device) -> dict[int, torch.Tensor]:
    """The target ids moved to the device in one transfer (indexing a device tensor with CPU
    ids would copy them, and wait, once per example)."""
    if not targets:
        return {}
    keys = list(targets)
    flat = torch.cat([targets[k] for k in keys]).to(dev)
    parts = flat.split([len(targets[k]) for k in keys])
    return dict(zip(keys, parts, strict=True))


def _flatten(per_item: list[list]) -> tuple[list, list[slice]]:
    """Flatten per-item request lists, remembering each item's slice."""
    flat: list = []
    slices = []
    for reqs in per_item:
        slices.append(slice(len(flat), len(flat) + len(reqs)))
        flat += reqs
    return flat, slices


def _sums(lps: list[torch.Tensor]) -> list[float]:
    return [float(t.double().sum()) for t in lps]


def best_mean_loss(lps: list[torch.Tensor]) -> float:
    """The reference's log-loss of an answer: −(sum of its tokens' log-probs) / its token count;
    with several acceptable answers, that of the most likely one (by summed log-probability)."""
    best = max(lps, key=lambda t: float(t.double().sum()))
    return -float(best.double().sum()) / max(1, len(best))
