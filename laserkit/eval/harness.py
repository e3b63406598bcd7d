"""lm-evaluation-harness requests answered by laserkit's scorer (docs/tasks.md, "lm-eval tasks").

lm-eval's tasks turn documents into requests (``loglikelihood``, ``loglikelihood_rolling``,
``generate_until``) and turn the answers into metrics. ``LaserkitLM`` is the model side of that
exchange: an ``lm_eval.api.model.TemplateLM`` whose token-level work goes through
``scoring.token_logprobs`` and ``scoring.greedy_generate``, so that the prefix cache, the SVD
reuse and the batching of laserkit apply to a harness task exactly as to its own.

Tokenization is not re-implemented: the text → token steps are lm-eval's own ``HFLM`` methods
(borrowed, not copied), so a request becomes the same token ids it becomes in
``simple_evaluate(model=HFLM(pretrained=model))``; only the forward passes differ (batching and
padding), which changes log-likelihoods by float rounding at most (tests/test_lm_eval.py).

``run_lm_eval`` answers a ``Harness`` request (tasks/kinds/lm_eval.py, the task side) with
lm-eval's evaluation of the model through ``LaserkitLM``. Imported only when an ``lm-eval:``
task is asked for (lm-eval is the ``harness`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)
from torch import nn

from ..core.errors import LaserkitError
from ..tasks.kinds.lm_eval import BOOTSTRAP_ITERS, FEWSHOT_SEED, plain
from ..tasks.requests import Harness, HarnessResults
from . import scoring as S
from .scorer import Settings

DEFAULT_MAX_LENGTH = 2048  # HFLM's, when neither config nor tokenizer names a context
DEFAULT_MAX_GEN_TOKS = 256  # HFLM's max_gen_toks


class LaserkitLM(TemplateLM):
    """The model as it is now (edited in memory or not), seen by lm-eval as an LM."""

    backend = "causal"

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        batch_size: int | None = 4,
        progress: bool = False,
        batch_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens  # the token budget in force (scoring.plan_batches)
        self.progress = progress
        self.add_bos_token = None  # HFLM's default: the tokenizer decides
        self.custom_prefix_token_id = None
        self.think_end_token = None

    # lm-eval's own text → token rules, so requests become HFLM's token ids
    tok_encode = HFLM.tok_encode
    tok_decode = HFLM.tok_decode
    tok_batch_encode = HFLM.tok_batch_encode
    eot_token_id = HFLM.eot_token_id
    prefix_token_id = HFLM.prefix_token_id

    @property
    def max_length(self) -> int:
        return resolve_max_length(self.model.config, self.tokenizer, default=DEFAULT_MAX_LENGTH)

    @property
    def _pad_id(self) -> int:
        t = self.tokenizer
        return next((i for i in (t.pad_token_id, t.eos_token_id) if i is not None), 0)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """TemplateLM's (lm-eval's tokenization); its progress bar only when laserkit shows
        progress (a search's trials run quietly)."""
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _loglikelihood_tokens(
        self, requests: Sequence, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        """(sum of log p(continuation), whether greedy decoding gives the continuation) for each
        (key, context ids, continuation ids), with HFLM's left truncation to max_length + 1."""
        reqs = []
        for _, ctx, cont in requests:
            ids = (list(ctx) + list(cont))[-(self.max_length + 1) :]
            reqs.append((ids, len(ids) - len(cont)))
        lps, greedy = S.token_logprobs(
            self.model,
            reqs,
            pad_id=self._pad_id,
            batch_size=self.batch_size,
            batch_tokens=self.batch_tokens,
            progress=self.progress,
            desc="lm-eval loglikelihood",
            at_tokens=_is_greedy,
        )
        return [(float(lp.double().sum()), bool(g)) for lp, g in zip(lps, greedy, strict=True)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-likelihood over lm-eval's disjoint rolling windows."""
        windows, counts = [], []
        for (text,) in (r.args for r in requests):
            ws = [
                lm_utils.make_disjoint_window(w)
                for w in lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            windows += [(None, *w) for w in ws]
            counts.append(len(ws))
        scores = self._loglikelihood_tokens(windows) if windows else []
        out, at = [], 0
        for n in counts:
            out.append(sum(s for s, _ in scores[at : at + n]))
            at += n
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generations cut at the request's stop sequences, as HFLM's: requests that
        share generation settings are generated together."""
        out: list[str | None] = [None] * len(requests)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        by_kwargs: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_kwargs.setdefault(repr(sorted(r.args[1].items(), key=str)), []).append(i)
        for idx in by_kwargs.values():
            kwargs = normalize_gen_kwargs(dict(requests[idx[0]].args[1]), DEFAULT_MAX_GEN_TOKS)
            if kwargs.get("do_sample"):
                raise LaserkitError(
                    "this lm-eval task samples its generations (do_sample: true);"
                    " laserkit scores greedy generations only"
                )
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            keep = self.max_length - max_gen
            if keep < 1:
                raise LaserkitError(
                    f"lm-eval task asks for {max_gen} new tokens, more than the "
                    f"model's context of {self.max_length}"
                )
            prompts = [self._context_ids(requests[i].args[0])[-keep:] for i in idx]
            gens = S.greedy_generate(
                self.model,
                prompts,
                max_new_tokens=max_gen,
                pad_id=self._pad_id,
                eos_ids=self._eos_ids(),
                batch_size=self.batch_size,
                batch_tokens=self.batch_tokens,
                progress=self.progress,
                desc="lm-eval generate_until",
                min_new_tokens=0,
            )
            for i, g in zip(idx, gens, strict=True):
                out[i] = postprocess_generated_text(self.tok_decode(g), until, None)
        return out  # type: ignore[return-value]

    def _context_ids(self, text: str) -> list[int]:
        """A generation context as HFLM's tok_batch_encode makes it (one string at a time)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        kw = {"add_special_tokens": False} if bos and text.startswith(bos) else {}
        return list(self.tokenizer(text, **kw)["input_ids"])

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(extra if isinstance(extra, list) else [extra])
        return sorted(i for i in ids if i is not None)


def _is_greedy(ids: Sequence[int], lp: torch.Tensor) -> bool:
    """Whether every scored token is the argmax of its row (lm-eval's ``is_greedy``)."""
    return bool((lp.argmax(-1) == torch.as_tensor(ids, dtype=torch.long)).all())


def run_lm_eval(
    model: nn.Module, tokenizer, request: Harness, settings: Settings
) -> HarnessResults:
    """lm-eval's evaluation of the request's tasks on its documents, with the model as it is
    now: its results with per-sample logs, and its results file as ``lm_eval`` writes it."""
    from lm_eval.evaluator import evaluate as lm_evaluate  # noqa: PLC0415

    lm = LaserkitLM(model, tokenizer, settings.batch_size, settings.progress, settings.batch_tokens)
    res = lm_evaluate(
        lm,
        request.tasks,
        samples=request.samples,
        bootstrap_iters=BOOTSTRAP_ITERS,
        log_samples=True,
    )
    return HarnessResults(res, _results_json(res, model, settings.batch_size))


def _results_json(res: dict, model: nn.Module, batch_size: int | None) -> dict:
    """lm-eval's results as ``lm_eval --output_path`` writes them (results, groups,
    group_subtasks, configs, versions, n-shot, higher_is_better, n-samples, config, date,
    model_name), without the per-sample logs: those are laserkit's records."""
    import time  # noqa: PLC0415

    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    out = {k: v for k, v in res.items() if k != "samples"}
    out["config"] = {
        "model": name,
        "model_args": None,
        "batch_size": batch_size,
        "batch_sizes": [],
        "device": str(S.model_device(model)),
        "use_cache": None,
        "limit": None,
        "bootstrap_iters": BOOTSTRAP_ITERS,
        "gen_kwargs": None,
        "random_seed": None,
        "numpy_seed": None,
        "torch_seed": None,
        "fewshot_seed": FEWSHOT_SEED,
        "scorer": "laserkit (harness.LaserkitLM)",
    }
    out["date"] = time.time()
    out["model_name"] = name
    return plain(out)
