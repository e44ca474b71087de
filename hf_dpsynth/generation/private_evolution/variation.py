"""Private Evolution's post-processing: which candidates survive a noisy vote, and their variations.

Everything here reads only public inputs (the prompts, the candidates, which are model outputs
from public prompts, and the noisy vote histogram, a DP release), so it costs nothing.

* :func:`select_and_allocate` keeps a label's best candidates by noisy votes and shares the freed
  population slots among them in proportion to their (thresholded) votes.
* :class:`VariationPrompts` writes the public prompts that ask the model for a variation of a
  candidate: a paraphrase, or the candidate with some words blanked out to fill in (Aug-PE,
  Xie et al., ICML 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_dpsynth.errors import DPConfigError

__all__ = ["DEFAULT_FILL_IN_PROMPT", "DEFAULT_PARAPHRASE_PROMPT", "VariationPrompts", "mask_words", "select_and_allocate"]

#: The default paraphrase instruction; ``{description}`` is the label's public description (or
#: name), ``{candidate}`` the candidate. Generic: nothing in it is about any one dataset.
DEFAULT_PARAPHRASE_PROMPT = (
    "Rewrite the following {description} in different words, keeping its meaning, tone and length. "
    "Reply with the rewritten text only.\n\n{candidate}"
)
#: The default fill-in-the-blanks instruction; ``{masked}`` is the candidate with words blanked as ``_``.
DEFAULT_FILL_IN_PROMPT = (
    "Here is {description} with some words replaced by _. Write the complete text, filling every _ with "
    "fitting words. Reply with the complete text only.\n\n{masked}"
)
BLANK = "_"


def select_and_allocate(noisy_votes: Sequence[float], valid: Sequence[bool], *, keep: int, size: int,
                        threshold: float = 0.0) -> tuple[list[int], list[int]]:
    """The candidates a label keeps and how many variations each gets, from its noisy votes.

    Keeps the ``keep`` valid candidates with the most votes (ties to the lower index), then shares
    ``size - keep`` variation slots among them in proportion to their votes above ``threshold``
    (votes at or below it count 0; largest remainder, ties to the better-ranked candidate; all
    equal shares when no vote clears it). Returns (kept indices, best first; variations of each).
    Invalid candidates are never kept; with fewer valid than ``keep``, all valid ones are kept."""
    votes = np.asarray(noisy_votes, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool)
    if votes.shape != ok.shape or votes.ndim != 1:
        raise ValueError("noisy_votes and valid must be 1-D and of the same length.")
    if not 0 < keep <= size:
        raise ValueError(f"keep must be in [1, size]; got keep={keep}, size={size}.")
    candidates = [int(i) for i in np.argsort(-votes, kind="stable") if ok[i]]
    kept = candidates[:keep]
    if not kept:
        return [], []
    weights = np.maximum(votes[kept] - threshold, 0.0)
    if not weights.sum() > 0:
        weights = np.ones(len(kept))
    slots = size - len(kept)
    raw = weights / weights.sum() * slots
    shares = np.floor(raw).astype(int)
    for i in sorted(range(len(kept)), key=lambda i: (-(raw[i] - shares[i]), i))[: slots - int(shares.sum())]:
        shares[i] += 1
    return kept, [int(s) for s in shares]


def mask_words(text: str, fraction: float, rng: np.random.Generator) -> str:
    """``text`` with ⌈fraction × words⌉ of its words (at least one, at most all) replaced by ``_``."""
    words = text.split()
    if not words:
        return text
    count = min(len(words), max(1, math.ceil(fraction * len(words))))
    for i in rng.choice(len(words), size=count, replace=False):
        words[int(i)] = BLANK
    return " ".join(words)


@dataclass(frozen=True)
class VariationPrompts:
    """Public prompts that ask the model for variations of a candidate.

    Args:
        paraphrase: instruction with ``{candidate}`` (and optionally ``{description}``), or None.
        fill_in: instruction with ``{masked}`` (and optionally ``{description}``), or None.
        mask_fraction: the share of a candidate's words blanked for fill-in-the-blanks.
        descriptions: each label's public description, written as ``{description}``.

    Variations alternate between the kinds given (paraphrase first). Each instruction is put in
    the tokenizer's chat format when it has one.
    """

    paraphrase: str | None = DEFAULT_PARAPHRASE_PROMPT
    fill_in: str | None = DEFAULT_FILL_IN_PROMPT
    mask_fraction: float = 0.3
    descriptions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.paraphrase is None and self.fill_in is None:
            raise DPConfigError("Private Evolution needs at least one variation prompt (paraphrase or fill_in).")
        for name, template, field in (("paraphrase", self.paraphrase, "{candidate}"), ("fill_in", self.fill_in, "{masked}")):
            if template is not None and (not isinstance(template, str) or field not in template):
                raise DPConfigError(f"The {name} variation prompt must be a string containing {field}; got {template!r}.")
        if not (isinstance(self.mask_fraction, (int, float)) and 0 < self.mask_fraction < 1):
            raise DPConfigError(f"mask_fraction must be in (0, 1); got {self.mask_fraction!r}.")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, t in (("paraphrase", self.paraphrase), ("fill_in", self.fill_in)) if t is not None)

    def instruction(self, kind: str, candidate: str, label: str | None, rng: np.random.Generator) -> str:
        description = dict(self.descriptions).get(label or "", label or "text")
        if kind == "paraphrase":
            return self.paraphrase.format(description=description, candidate=candidate)
        return self.fill_in.format(description=description, masked=mask_words(candidate, self.mask_fraction, rng))

    def prompts(self, parents: Sequence[str], labels: Sequence[str | None], tokenizer: Any,
                rng: np.random.Generator) -> list[str]:
        """One variation prompt per parent, the kinds alternating, in the tokenizer's chat format."""
        kinds = self.kinds
        return [chat_prompt(tokenizer, self.instruction(kinds[i % len(kinds)], parent, label, rng))
                for i, (parent, label) in enumerate(zip(parents, labels))]


def chat_prompt(tokenizer: Any, instruction: str) -> str:
    """``instruction`` as a user turn in the tokenizer's chat format (plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    return instruction + "\n\n"
