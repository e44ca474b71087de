"""Keyword-biased sampling: a logits processor that raises each prompt's keywords until they are used.

A small model told "use the words: claim, prize" mostly ignores them; a logit bias (as serving APIs
offer it) on the first token of each keyword (as a word start, any of its usual casings) makes the
keyword likely without forcing it, and the bias of a keyword stops once one of its first tokens has
been sampled in that row.

Privacy: post-processing. The keywords are a DP release (or public); the bias reads nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["KeywordBias", "keyword_first_tokens"]


def keyword_first_tokens(tokenizer: Any, word: str) -> frozenset[int]:
    """The first token of ``word`` as written after a space or at a line start, lower-case, Capitalised
    and UPPER case — only where that token carries at least three letters of the word (or all of a
    shorter one): a bare space or a single letter would raise every word that starts with it."""
    ids: set[int] = set()
    for variant in {word.lower(), word.capitalize(), word.upper()}:
        for text in (f" {variant}", variant):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not tokens:
                continue
            piece = tokenizer.decode(tokens[:1]).strip()
            if variant.startswith(piece) and len(piece) >= min(3, len(variant)):
                ids.add(int(tokens[0]))
    return frozenset(ids)


class KeywordBias:
    """A ``transformers`` logits processor: ``bias`` added to the first tokens of each row's unused keywords.

    Args:
        tokenizer: the model's tokenizer.
        keywords: one list of keywords per row of the batch (the same order as the prompts).
        prompt_length: the (padded) prompt width: tokens after it are the generated ones.
        bias: the logit added (0 turns it off).
    """

    def __init__(self, tokenizer: Any, keywords: Sequence[Sequence[str]], *, prompt_length: int, bias: float) -> None:
        self.bias = float(bias)
        self.prompt_length = int(prompt_length)
        cache: dict[str, frozenset[int]] = {}
        self._rows = [[cache.setdefault(w, keyword_first_tokens(tokenizer, w)) for w in row] for row in keywords]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.bias == 0:
            return scores
        generated = input_ids[:, self.prompt_length:]
        for row, words in enumerate(self._rows):
            if not words:
                continue
            seen = set(generated[row].tolist())
            boost = [t for first in words if not (first & seen) for t in first]
            if boost:
                scores[row, boost] += self.bias
        return scores
