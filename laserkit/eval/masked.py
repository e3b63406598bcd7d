"""Masked language models (BERT, RoBERTa) scored as the LASER reference's RoBERTa scripts score
them: the answer at mask positions.

- choice / next_token: "prompt <mask>…<mask>" with one mask per answer token (the answer is
  tokenized with its leading space, as the reference's " true" / " " + answer); the answer's
  log-probability is the sum of its tokens' log-probabilities at the masks, all masked at once.
  next_token ranks the answer's first token at the first of one mask (CounterFact).
- generate: the prompt followed by five masks, each filled by its argmax token (the reference's
  HotPotQA / WikidataQA rule), and the decoded fill must contain the answer.
The log-loss is −(summed log-probability) / (number of answer tokens) (the reference divides by
one more than that, a miscount in its ``masked_answer_log_prob``; see docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import LaserkitError

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
    model: nn.Module, tok, rows: Sequence[tuple[list[int], list[int]]], batch_size: int = 8
) -> list[torch.Tensor]:
    """Log-softmax over the vocabulary (float32, CPU) at each row's mask positions."""
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[torch.Tensor] = []
    for b0 in range(0, len(rows), batch_size):
        batch = rows[b0 : b0 + batch_size]
        width = max(len(ids) for ids, _ in batch)
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        m = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (ids, _) in enumerate(batch):
            x[j, : len(ids)] = torch.tensor(ids)
            m[j, : len(ids)] = 1
        logits = model(input_ids=x.to(dev), attention_mask=m.to(dev)).logits
        for j, (_, pos) in enumerate(batch):
            out.append(logits[j, pos].float().log_softmax(-1).cpu())
    return out


def evaluate_masked(
    model: nn.Module, tok, kind: str, examples, batch_size: int, topk: Sequence[int] = (1, 5, 10)
) -> tuple[list[dict], dict]:
    """Records and metrics of a masked LM on choice, next_token or generate examples."""
    from .evaluate import _mean, answer_found, token_f1  # noqa: PLC0415

    records = []
    if kind == "choice":
        for ex in examples:
            answers = [answer_ids(tok, c) for c in ex.choices]
            lps = mask_logprobs(
                model, tok, [_masked(tok, ex.prompt, len(a)) for a in answers], batch_size
            )
            sums = [
                float(lp[range(len(a)), a].double().sum())
                for lp, a in zip(lps, answers, strict=True)
            ]
            pred = max(range(len(sums)), key=lambda i: (sums[i], -i))
            g = max(ex.gold, key=lambda i: (sums[i], -i))
            records.append(
                {
                    "id": ex.id,
                    "prediction": ex.choices[pred],
                    "gold": [ex.choices[i] for i in ex.gold],
                    "correct": pred in ex.gold,
                    "log_loss": -sums[g] / len(answers[g]),
                    "answer_logprob": sums[g],
                    "logprobs": sums,
                    "n_tokens": [len(a) for a in answers],
                }
            )
        return records, {
            "accuracy": _mean(r["correct"] for r in records),
            "log_loss": _mean(r["log_loss"] for r in records),
        }
    if kind == "next_token":
        lps = mask_logprobs(model, tok, [_masked(tok, ex.prompt, 1) for ex in examples], batch_size)
        for ex, lp in zip(examples, lps, strict=True):
            first = answer_ids(tok, ex.answers[0])[0]
            rank = int((lp[0] > lp[0, first]).sum()) + 1
            rec = {
                "id": ex.id,
                "prediction": tok.decode([int(lp[0].argmax())]),
                "answers": list(ex.answers),
                "correct": rank == 1,
                "log_loss": -float(lp[0, first]),
                "answer_rank": rank,
            }
            rec.update({f"top{k}": rank <= k for k in topk})
            records.append(rec)
        out = {
            "accuracy": _mean(r["correct"] for r in records),
            "log_loss": _mean(r["log_loss"] for r in records),
        }
        out.update({f"top{k}_accuracy": _mean(r[f"top{k}"] for r in records) for k in topk})
        return records, out
    if kind == "generate":
        fills = mask_logprobs(
            model, tok, [_masked(tok, ex.prompt, N_FILL) for ex in examples], batch_size
        )
        for ex, lp in zip(examples, fills, strict=True):
            text = tok.decode(lp.argmax(-1).tolist(), skip_special_tokens=True)
            a = answer_ids(tok, ex.answers[0])
            lpa = mask_logprobs(model, tok, [_masked(tok, ex.prompt, len(a))])[0]
            loss = -float(lpa[range(len(a)), a].double().sum()) / len(a)
            records.append(
                {
                    "id": ex.id,
                    "prediction": text,
                    "answers": list(ex.answers),
                    "correct": answer_found(text, ex.answers),
                    "f1": max(token_f1(text, x) for x in ex.answers),
                    "log_loss": loss,
                }
            )
        return records, {
            "accuracy": _mean(r["correct"] for r in records),
            "f1": _mean(r["f1"] for r in records),
            "log_loss": _mean(r["log_loss"] for r in records),
        }
    raise LaserkitError(
        f"masked language models score choice, next_token and generate tasks, not {kind!r}"
    )
