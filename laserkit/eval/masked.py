"""Masked language models (BERT, RoBERTa) scored as the LASER reference's RoBERTa scripts score
them: the answer at mask positions.

- choice / next_token: "prompt <mask>…<mask>" with one mask per answer token (the answer is
  tokenized with its leading space, as the reference's " true" / " " + answer); the answer's
  log-probability is the sum of its tokens' log-probabilities at the masks, all masked at once.
  next_token ranks the answer's first token at the first of one mask (CounterFact).
- generate: the prompt followed by five masks, each filled by its argmax token (the reference's
  HotPotQA / WikidataQA rule), judged by the task's match (the default, contains: the decoded
  fill must contain the answer); its log-loss is that of the answer's tokens at masks.

The kinds turn these answers into records exactly as they do a causal LM's (tasks/kinds/).
The log-loss is −(summed log-probability) / (number of answer tokens) (the reference divides by
one more than that, a miscount in its ``masked_answer_log_prob``; see docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import LaserkitError
from ..tasks import requests as R
from ..tasks.kinds import KINDS, TaskKind
from . import scoring as S
from .scorer import Scorer

N_FILL = 5  # masks the reference's RoBERTa scripts fill for open answers


def is_masked_lm(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForMaskedLM")


def _masked(tok, prompt: str, n_masks: int) -> tuple[list[int], list[int]]:
    """Token ids of "[CLS] prompt <mask>×n [SEP]" (<s> … </s> for RoBERTa; the special tokens
    the tokenizer has) and the mask positions."""
    if tok.mask_token_id is None:
        raise LaserkitError("this masked language model's tokenizer has no mask token")
    body = list(tok(prompt.rstrip(), add_special_tokens=False)["input_ids"])
    start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    ids = (
        ([start] if start is not None else [])
        + body
        + [tok.mask_token_id] * n_masks
        + ([end] if end is not None else [])
    )
    n = len(ids) - (end is not None)
    return ids, list(range(n - n_masks, n))


def answer_ids(tok, answer: str) -> list[int]:
    return list(tok(" " + answer.strip(), add_special_tokens=False)["input_ids"]) or [
        tok.unk_token_id
    ]


@torch.inference_mode()
def mask_logprobs(
    model: nn.Module,
    tok,
    rows: Sequence[tuple[list[int], list[int]]],
    batch_size: int | None = 8,
    batch_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Log-softmax over the vocabulary (float32, CPU) at each row's mask positions, in
    ``plan_batches``' batches (rows in the given order); the finiteness of nothing is checked
    here (as before), and the results come to the host in one transfer."""
    if not rows:
        return []
    dev = S.model_device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    padded = S.Padded.of([ids for ids, _ in rows], pad, dev)  # right padding: one transfer
    out: list[torch.Tensor] = []
    for sel in S.plan_batches([len(ids) for ids, _ in rows], batch_size, batch_tokens):
        batch = rows[sel.start : sel.stop]
        width = max(len(ids) for ids, _ in batch)
        with padded.batch(sel, width) as (x, m):
            logits = model(input_ids=x, attention_mask=m).logits
        for j, (_, pos) in enumerate(batch):
            out.append(logits[j, pos].float().log_softmax(-1))
    return S.to_host(out)  # type: ignore[return-value]


class MaskedScorer(Scorer):
    """A masked LM answering task kinds' requests at mask positions (choice, next_token and
    generate; the kinds that say ``supported_by_masked``)."""

    what = "a masked language model"

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        return is_masked_lm(model)

    @property
    def _batching(self) -> tuple[int | None, int | None]:
        return self.settings.batch_size, self.settings.batch_tokens

    def check(self, kind: TaskKind) -> None:
        if not kind.supported_by_masked:
            names = [n for n in KINDS.names() if KINDS.get(n).supported_by_masked]
            listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            raise LaserkitError(f"masked language models score {listed} tasks, not {kind.name!r}")

    def loglikelihood(self, requests: list[R.Loglikelihood]) -> list[R.Scores]:
        """Each continuation's tokens masked at once after the prompt; one request's
        continuations form one batch (as the reference scores one example's choices)."""
        tok, out = self.tokenizer, []
        for r in requests:
            answers = [answer_ids(tok, c) for c in r.continuations]
            rows = [_masked(tok, r.prompt, len(a)) for a in answers]
            lps = mask_logprobs(self.model, tok, rows, *self._batching) if rows else []
            sums = [
                float(lp[range(len(a)), a].double().sum())
                for lp, a in zip(lps, answers, strict=True)
            ]
            out.append(R.Scores(sums, [len(a) for a in answers]))
        return out

    def next_token(self, requests: list[R.NextToken]) -> list[R.Ranked]:
        """The first answer's first token ranked at one mask after the prompt."""
        tok = self.tokenizer
        rows = [_masked(tok, r.prompt, 1) for r in requests]
        lps = mask_logprobs(self.model, tok, rows, *self._batching)
        out = []
        for r, lp in zip(requests, lps, strict=True):
            first = answer_ids(tok, r.continuations[0])[0]
            rank = int((lp[0] > lp[0, first]).sum()) + 1
            out.append(R.Ranked(rank, tok.decode([int(lp[0].argmax())]), -float(lp[0, first])))
        return out

    def generate(self, requests: list[R.Generate]) -> list[str]:
        """The prompt followed by N_FILL masks, each filled by its argmax token."""
        tok = self.tokenizer
        rows = [_masked(tok, r.prompt, N_FILL) for r in requests]
        fills = mask_logprobs(self.model, tok, rows, *self._batching)
        return [tok.decode(lp.argmax(-1).tolist(), skip_special_tokens=True) for lp in fills]
