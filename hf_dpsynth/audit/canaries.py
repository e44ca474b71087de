"""Canaries: fresh records, each inserted with probability ½, whose traces the audit looks for.

Text canaries (Meeus et al., ICML 2025) are an in-distribution prefix plus a random,
high-perplexity suffix of made-up words — generated fresh, never public text. Tabular canaries are
rows with uniformly random values in the schema (rare combinations); image canaries are random
grey-level grids. The inclusion vector is drawn from a seeded RNG and its hash recorded before any
training, so the guesses can be checked against a commitment.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_dpsynth.data.codecs import Codec, TextCodec
from hf_dpsynth.data.image import ImageCodec
from hf_dpsynth.data.tabular import CategoricalColumn, FloatColumn, IntegerColumn, TabularCodec
from hf_dpsynth.errors import InvalidPrivacyParameterError

__all__ = ["CanarySet", "make_canaries"]

MIN_CANARIES = 200
_DEFAULT_PREFIXES = ("Hey, just so you know", "Reminder:", "Ok see you", "Call me when", "Did you get")


@dataclass(frozen=True)
class CanarySet:
    """m canary records, which of them are inserted, and the commitment to that choice.

    ``inclusion_hash`` (SHA-256 of the inclusion bits) is recorded before training; the inclusion
    vector itself is the audit's secret until the scores are in.
    """

    records: list[dict[str, Any]]
    included: np.ndarray = field(repr=False)
    inclusion_hash: str
    codec: Codec = field(repr=False)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_included(self) -> int:
        return int(self.included.sum())

    def prompts_and_completions(self) -> tuple[list[str], list[str]]:
        """Every canary as the trainer's ``prompt`` / ``completion`` pair."""
        prompts = [self.codec.encode_prompt(r) for r in self.records]
        completions = [self.codec.encode_body(r, order_seed=None) for r in self.records]
        return prompts, completions

    def save(self, path: str) -> None:
        """Write the canaries' texts and the inclusion commitment (owner-only, atomically).

        Kept so that nothing downstream can ship a canary: the Hub push gate reads this file and
        refuses a synthetic dataset that contains one. The inclusion vector is not written.
        """
        import json

        from hf_dpsynth._io import atomic_write_text

        texts = [self.codec.encode(r) for r in self.records]
        atomic_write_text(path, json.dumps({"inclusion_hash": self.inclusion_hash, "canaries": texts}, indent=2))

    def insert_into(self, dataset: Any, *, repeat: int = 1, user_id_column: str | None = None) -> Any:
        """``dataset`` (prompt/completion columns, e.g. a PreparedDataset's) plus the included canaries.

        ``repeat > 1`` inserts each canary several times: only for non-DP or planted-bug runs (in a
        correct DP run a repeated canary is protected at group level only, ≈ repeat·ε). At user
        level each canary is its own new user.
        """
        from datasets import Dataset, concatenate_datasets

        from hf_dpsynth.data.prepare import PreparedDataset

        base = dataset.dataset if isinstance(dataset, PreparedDataset) else dataset
        if not {"prompt", "completion"} <= set(base.column_names):
            raise ValueError("insert canaries into a dataset with 'prompt' and 'completion' columns (see prepare_dataset).")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1; got {repeat}.")
        prompts, completions = self.prompts_and_completions()
        rows = [i for i in np.flatnonzero(self.included) for _ in range(repeat)]
        extra: dict[str, list[Any]] = {
            "prompt": [prompts[i] for i in rows], "completion": [completions[i] for i in rows],
        }
        user_col = user_id_column or (dataset.user_id_column if isinstance(dataset, PreparedDataset) else None)
        if user_col:
            extra[user_col] = [f"__canary_{i}" for i in rows]
        for name in base.column_names:
            if name not in extra:
                extra[name] = [None] * len(rows)
        added = Dataset.from_dict({name: extra[name] for name in base.column_names}, features=base.features)
        return concatenate_datasets([base, added])


def _suffix(rng: np.random.Generator, words: int) -> str:
    letters = np.array(list(string.ascii_lowercase))
    return " ".join("".join(rng.choice(letters, size=int(rng.integers(4, 9)))) for _ in range(words))


def make_canaries(
    codec: Codec,
    num_canaries: int = 1000,
    *,
    seed: int,
    prefixes: Sequence[str] | None = None,
    suffix_words: int = 6,
    allow_few: bool = False,
) -> CanarySet:
    """m fresh canaries for ``codec``'s modality, each included with probability ½ (seeded).

    Args:
        codec: the release's codec (its conditions are filled with uniformly random declared values).
        num_canaries: m (at least 200 unless ``allow_few``: fewer cannot certify a useful ε̂).
        seed: the audit's seed (the inclusion vector and the random suffixes derive from it).
        prefixes: in-distribution openings for text canaries (default: a few generic ones).
        suffix_words: made-up words in each text canary's suffix.
    """
    if isinstance(num_canaries, bool) or not isinstance(num_canaries, int) or num_canaries < 1:
        raise InvalidPrivacyParameterError(f"num_canaries must be a positive integer; got {num_canaries!r}.")
    if num_canaries < MIN_CANARIES and not allow_few:
        raise InvalidPrivacyParameterError(
            f"{num_canaries} canaries are too few: with fewer than {MIN_CANARIES} the one-run bound cannot certify "
            f"ε̂ above about 2 even when every guess is right. Use at least {MIN_CANARIES} (default 1000)."
        )
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(num_canaries):
        record: dict[str, Any] = {name: str(rng.choice(values)) for name, values in codec.conditions.items()}
        if isinstance(codec, TextCodec):
            opening = prefixes or _DEFAULT_PREFIXES
            record[codec.text_field] = f"{opening[int(rng.integers(len(opening)))]} {_suffix(rng, suffix_words)}"
        elif isinstance(codec, TabularCodec):
            for column in codec.schema.columns:
                if isinstance(column, CategoricalColumn):
                    record[column.name] = str(rng.choice(column.categories))
                elif isinstance(column, IntegerColumn):
                    record[column.name] = int(rng.integers(column.lower, column.upper + 1))
                elif isinstance(column, FloatColumn):
                    record[column.name] = round(float(rng.uniform(column.lower, column.upper)), column.precision)
        elif isinstance(codec, ImageCodec):
            record[codec.image_field] = rng.integers(0, codec.levels, size=codec.shape) * (codec.input_max / (codec.levels - 1))
        else:  # pragma: no cover - every codec of this package is handled above
            raise TypeError(f"no canaries for codec {type(codec).__name__}")
        records.append(record)
    included = rng.random(num_canaries) < 0.5
    inclusion_hash = hashlib.sha256(np.packbits(included).tobytes() + str(num_canaries).encode()).hexdigest()
    return CanarySet(records=records, included=included, inclusion_hash=inclusion_hash, codec=codec)
