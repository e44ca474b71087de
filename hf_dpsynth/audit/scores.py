"""Membership scores for canaries: higher means "more likely to have been trained on".

* :func:`model_scores` (model access, the primary score whenever the adapter exists):
  log p_adapter(canary) − log p_base(canary), the base being the same model with the adapter
  switched off — the reference removes how likely the text is to any language model.
* :func:`ngram_scores` (synthetic data only): the canary's mean log-probability under a word
  n-gram language model (interpolated add-k) fitted on the synthetic corpus. Weaker: a canary
  inserted once often leaves no trace in sampled text.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_dpsynth.errors import DatasetError
from hf_dpsynth.data.tokenize import prompt_ids

__all__ = ["NGramModel", "model_scores", "ngram_scores", "sequence_log_probs"]


def sequence_log_probs(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 16
) -> np.ndarray:
    """Σ log p(completion tokens | prompt) for each pair (no EOS), in fp32."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = np.empty(len(prompts), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            rows = []
            for prompt, completion in zip(prompts[start : start + batch_size], completions[start : start + batch_size]):
                (p,) = prompt_ids(tokenizer, [prompt])  # as training saw it (an empty prompt is the start token)
                c = tokenizer(completion, add_special_tokens=False)["input_ids"]
                rows.append((p, c))
            width = max(len(p) + len(c) for p, c in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            target = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, (p, c) in enumerate(rows):
                seq = p + c
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
                target[i, len(p) : len(seq)] = True
            with torch.inference_mode():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            picked = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            out[start : start + len(rows)] = (picked * target[:, 1:].to(device)).sum(dim=1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def model_scores(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """log p_adapter − log p_base per canary; ``model`` must be a PeftModel (the base is the same
    model with its adapter disabled)."""
    if not hasattr(model, "disable_adapter"):
        raise TypeError(
            "model_scores needs the fine-tuned PeftModel: the reference score is the same model with its adapter "
            "disabled. Without model access, use ngram_scores on the synthetic data."
        )
    adapted = sequence_log_probs(model, tokenizer, prompts, completions)
    with model.disable_adapter():
        base = sequence_log_probs(model, tokenizer, prompts, completions)
    return adapted - base


class NGramModel:
    """A word n-gram language model with interpolated add-k smoothing (own code, offline)."""

    MIN_TOKENS = 200

    def __init__(self, texts: Sequence[str], *, n: int = 3, k: float = 0.1) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}.")
        self.n, self.k = n, k
        tokenized = [self._tokens(t) for t in texts]
        total = sum(len(t) - n + 1 for t in tokenized)
        if total < self.MIN_TOKENS:
            raise DatasetError(
                f"The synthetic corpus has {total} tokens, too few to fit a {n}-gram model: it needs at least "
                f"{self.MIN_TOKENS} (generate more records, or audit with model access)."
            )
        self.counts = [collections.Counter() for _ in range(n + 1)]  # counts[j]: j-grams
        for tokens in tokenized:
            for j in range(1, n + 1):
                for i in range(len(tokens) - j + 1):
                    self.counts[j][tuple(tokens[i : i + j])] += 1
        self.vocab = len(self.counts[1]) + 1  # + unknown
        self.total_unigrams = sum(self.counts[1].values())

    def _tokens(self, text: str) -> list[str]:
        return ["<s>"] * (self.n - 1) + text.lower().split() + ["</s>"]

    def _prob(self, history: tuple[str, ...], word: str) -> float:
        # Interpolate orders equally, each add-k smoothed: never 0 for an unseen word.
        p = (self.counts[1][(word,)] + self.k) / (self.total_unigrams + self.k * self.vocab)
        for j in range(1, len(history) + 1):
            ctx = history[-j:]
            ctx_count = self.counts[j][ctx]
            p_j = (self.counts[j + 1][ctx + (word,)] + self.k) / (ctx_count + self.k * self.vocab)
            p = (p + p_j) / 2
        return p

    def mean_log_prob(self, text: str) -> float:
        tokens = self._tokens(text)
        logs = [
            math.log(self._prob(tuple(tokens[max(0, i - self.n + 1) : i]), tokens[i]))
            for i in range(self.n - 1, len(tokens))
        ]
        return float(np.mean(logs))


def ngram_scores(synthetic_texts: Sequence[str], canary_texts: Sequence[str], *, n: int = 3) -> np.ndarray:
    """Each canary's mean log-probability under an n-gram model of the synthetic corpus."""
    lm = NGramModel(synthetic_texts, n=n)
    return np.asarray([lm.mean_log_prob(t) for t in canary_texts])
