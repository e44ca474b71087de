"""DP keywords per label: a Gaussian histogram of (label, word) pairs over a public vocabulary
(docs/ALGORITHMS.md §8, docs/DP_CORRECTNESS.md row 33).

The words that make a label recognisable are what a public prompt lacks ("Write one spam message"
says little; "… using the words: claim, prize, txt" says much). They are released like any count:

* the vocabulary is public — the tokenizer's whole-word tokens (or a word list you declare), never
  read from the data; its public rank (the tokenizer's merge order: earlier = more common in the
  tokenizer's own corpus) skips the ``skip_most_common`` commonest words;
* each record contributes at most ``k`` distinct terms, chosen by a rule that reads that record
  alone (a hash of the record's text and the word; no data-derived IDF, stop-list or position);
* at user level each user contributes each (label, term) pair at most once and at most ``k``
  pairs in all (chosen by the same rule over the user's pairs): L2 sensitivity √k either way
  (without the per-user dedupe it would be cap·√k);
* Gaussian noise N(0, (σ√k)²) per cell from OS entropy, charged to the ledger before it is drawn;
* post-processing: cells below a public threshold (``threshold_sigmas`` × the noise std, by
  default the z for one expected false positive over all cells) are dropped; the rest are each
  label's keyword distribution, sampled into prompts (:meth:`DPKeywords.sample`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_dpsynth._io import JsonRelease
from hf_dpsynth.data.codecs import check_categories
from hf_dpsynth.data.loading import column_values, load_records
from hf_dpsynth.data.statistics import one_gaussian_noise_multiplier
from hf_dpsynth.data.units import check_user_level, group_rows_by_user
from hf_dpsynth.errors import DatasetError, InvalidPrivacyParameterError, SchemaError
from hf_dpsynth.privacy.events import gaussian_event

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["DPKeywords", "KeywordVocabulary", "dp_keywords", "keyword_sensitivity", "record_terms"]

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters (any script); digits and symbols split words
_WORD_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark a token that starts a word


@dataclass(frozen=True)
class KeywordVocabulary:
    """A public vocabulary: lowercase words, most common first (the rank is public too)."""

    terms: tuple[str, ...]
    source: str

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, *, min_length: int = 3, skip_most_common: int = 100,
                       name: str | None = None) -> KeywordVocabulary:
        """The tokenizer's whole-word tokens (a word-start marker, then letters only, lowercase, at least
        ``min_length`` letters) in token-id order, less the ``skip_most_common`` first. Public only if
        the tokenizer is: one that ships with a public model (its merge order ranks words by its own
        pre-training corpus), never one trained or extended on the private data. ``name`` (e.g. the
        model's Hub id) is what the release and the card call it."""
        vocab = tokenizer.get_vocab()
        words: dict[str, int] = {}
        for token, index in vocab.items():
            if not token.startswith(_WORD_MARKERS):
                continue
            word = token[1:]
            if len(word) >= min_length and word.isalpha() and word == word.lower():
                words[word] = min(index, words.get(word, index))
        ranked = sorted(words, key=words.__getitem__)
        if len(ranked) <= skip_most_common:
            raise SchemaError(
                f"the tokenizer has {len(ranked)} whole-word tokens of {min_length}+ letters, not more than the "
                f"{skip_most_common} skipped as most common: declare a public word list instead (keywords.vocabulary)."
            )
        terms = tuple(ranked[skip_most_common:])
        return cls(terms, f"whole-word tokens of the tokenizer of {name or type(tokenizer).__name__}, {min_length}+ "
                          f"letters, the {skip_most_common} most common skipped (sha256 {_digest(terms)})")

    @classmethod
    def from_words(cls, words: Sequence[str], *, source: str = "declared public word list") -> KeywordVocabulary:
        """A declared public word list (most common first); words are lowercased letters only."""
        seen: dict[str, None] = {}
        for position, w in enumerate(words):
            if not isinstance(w, str) or not _WORD.fullmatch(w.strip()):
                raise SchemaError(f"a vocabulary word must be letters only; word {position + 1} of the list is not.")
            seen.setdefault(w.strip().lower())
        if not seen:
            raise SchemaError("the keyword vocabulary is empty: declare at least one public word.")
        terms = tuple(seen)
        return cls(terms, f"{source} (sha256 {_digest(terms)})")

    def __len__(self) -> int:
        return len(self.terms)


def _digest(terms: Sequence[str]) -> str:
    """A short SHA-256 of the vocabulary (names exactly which public word list a release used)."""
    return hashlib.sha256("\n".join(terms).encode()).hexdigest()[:16]


def _order_key(text: str, word: str) -> bytes:
    return hashlib.blake2b(f"{word}\x00{text}".encode(), digest_size=8).digest()


def record_terms(text: str, vocabulary: set[str] | KeywordVocabulary, k: int) -> list[str]:
    """The at most ``k`` distinct vocabulary words one record contributes.

    Privacy: the choice reads this record's text alone (its distinct lowercase words, ordered by a
    hash of the text and the word), so it does not depend on any other record or on where the
    record sits in the data (1-stable preparation, docs/DP_CORRECTNESS.md row 30).
    """
    vocab = set(vocabulary.terms) if isinstance(vocabulary, KeywordVocabulary) else vocabulary
    words = {w for w in (m.lower() for m in _WORD.findall(text)) if w in vocab}
    return sorted(words, key=lambda w: _order_key(text, w))[:k]


def keyword_sensitivity(k: int) -> float:
    """The L2 sensitivity of the (label, term) count vector: √k for one unit added or removed (a
    record, or a user whose pairs are deduplicated and capped at k)."""
    return math.sqrt(k)


def default_threshold_sigmas(num_cells: int) -> float:
    """The z at which one cell of pure noise in ``num_cells`` is expected to pass (public)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - 1.0 / max(num_cells, 2))


@dataclass(frozen=True)
class DPKeywords(JsonRelease):
    """The released keywords of each label and their noisy counts (every number a mechanism output).

    ``keywords[label]`` (a value of the label ``column``) lists ``(term, noisy_count)`` for the cells above the threshold, largest
    first. Everything here is shareable: the counts are DP, the rest is public.
    """

    stage: str
    column: str
    keywords: Mapping[str, tuple[tuple[str, float], ...]]
    k: int
    noise_multiplier: float
    sensitivity: float
    noise_std: float
    threshold: float
    vocabulary_size: int
    vocabulary_source: str
    privacy_unit: str
    num_units: int

    def weights(self, label: str, weighting: str = "count") -> np.ndarray:
        """The sampling weight of each released keyword of ``label``: its noisy count (``"count"``), or
        that times the share of the term's released counts that falls in this label (``"contrast"``:
        words that tell the labels apart first). Post-processing."""
        released = self.keywords.get(label, ())
        counts = np.asarray([c for _, c in released], dtype=np.float64)
        if weighting == "count":
            return counts
        if weighting != "contrast":
            raise ValueError(f"weighting must be 'count' or 'contrast'; got {weighting!r}.")
        totals: dict[str, float] = {}
        for terms in self.keywords.values():
            for term, count in terms:
                totals[term] = totals.get(term, 0.0) + count
        return counts * counts / np.asarray([totals[t] for t, _ in released], dtype=np.float64)

    def sample(self, label: str, size: int, rng: np.random.Generator, *, weighting: str = "count") -> list[str]:
        """``size`` distinct keywords of ``label`` drawn in proportion to their :meth:`weights` (fewer when
        fewer were released). Post-processing."""
        released = self.keywords.get(label, ())
        if not released or size < 1:
            return []
        weights = self.weights(label, weighting)
        picks = rng.choice(len(released), size=min(size, len(released)), replace=False, p=weights / weights.sum())
        return [released[i][0] for i in picks]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keywords"] = {label: [[t, c] for t, c in terms] for label, terms in self.keywords.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPKeywords:
        words = {label: tuple((str(t), float(c)) for t, c in terms) for label, terms in data["keywords"].items()}
        return cls(**{**dict(data), "keywords": words})


def _pre_noise_counts(texts: Sequence[str], label_index: np.ndarray, vocabulary: KeywordVocabulary, k: int,
                      user_ids: Sequence[Any] | None) -> np.ndarray:
    """The (label, term) counts before noise (private; never returned to callers)."""
    term_index = {t: i for i, t in enumerate(vocabulary.terms)}
    vocab = set(term_index)
    counts = np.zeros((int(label_index.max(initial=0)) + 1, len(term_index)), dtype=np.float64)
    if user_ids is None:
        for text, label in zip(texts, label_index):
            for term in record_terms(text, vocab, k):
                counts[label, term_index[term]] += 1.0
        return counts
    for user, rows in group_rows_by_user(user_ids).items():
        pairs: dict[tuple[int, str], bytes] = {}  # each (label, term) once per user
        for row in rows:
            for term in record_terms(texts[row], vocab, k):
                key = _order_key(texts[row], term)
                pair = (int(label_index[row]), term)
                pairs[pair] = min(key, pairs.get(pair, key))
        # At most k pairs per user, by the same per-record hash order (reads this user's data alone).
        for label, term in sorted(pairs, key=lambda p: (pairs[p], p))[:k]:
            counts[label, term_index[term]] += 1.0
    return counts


def released_keywords(labels: Sequence[str], counts: np.ndarray, vocabulary: KeywordVocabulary,
                      threshold: float) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each label's terms whose count is above ``threshold``, largest first (post-processing of the
    noisy counts; the benchmark's non-private ε = ∞ reference uses it on exact counts)."""
    released = {}
    for label, row in zip(labels, counts):
        keep = np.flatnonzero(row > threshold)
        keep = keep[np.argsort(-row[keep], kind="stable")]
        released[label] = tuple((vocabulary.terms[i], float(row[i])) for i in keep)
    return released


def dp_keywords(
    source: Dataset | Any,
    *,
    text_column: str,
    label_column: str,
    labels: Sequence[str],
    vocabulary: KeywordVocabulary,
    ledger: PrivacyLedger,
    stage: str = "keywords",
    k: int = 8,
    noise_multiplier: float | None = None,
    threshold_sigmas: float | None = None,
    user_id_column: str | None = None,
    seed: int | None = None,
) -> DPKeywords:
    """Release each label's keywords: the noisy (label, term) counts above a public threshold.

    Args:
        source: the private records (after preparation: scrubbed, bounded), with ``text_column``
            and ``label_column`` (and ``user_id_column`` at user level).
        labels: the public label list; a row with another label is an error.
        vocabulary: the public vocabulary (:class:`KeywordVocabulary`).
        ledger: charged before any noise is drawn; its privacy unit decides the grouping.
        k: the most terms (pairs, at user level) one privacy unit contributes.
        noise_multiplier: σ (noise std σ√k); None calibrates to the stage's planned share.
        threshold_sigmas: the threshold in noise stds (post-processing); None: one expected
            false positive over all cells.
        seed: fixes the noise — for tests only; by default it comes from OS entropy.

    Privacy: (ε, δ) of ``GaussianDpEvent(σ)`` for one unit under add/remove (sensitivity √k).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidPrivacyParameterError(f"k (terms per {ledger.privacy_unit}) must be a positive integer; got {k!r}.")
    if not isinstance(vocabulary, KeywordVocabulary):
        raise SchemaError("vocabulary must be a KeywordVocabulary (public: from the tokenizer or a declared list).")
    labels = check_categories("labels", labels)
    unit = ledger.privacy_unit
    check_user_level(unit, user_id_column, 1)  # the per-user rule bounds the contribution, not a record cap
    dataset = load_records(source, columns=[text_column, label_column] + ([user_id_column] if unit == "user" else []))
    texts = column_values(dataset, text_column)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DatasetError(f"column {text_column!r} must hold texts; row {bad} is {type(texts[bad]).__name__}.")
    index = {label: i for i, label in enumerate(labels)}
    raw_labels = [str(v) for v in column_values(dataset, label_column)]
    unknown = [row for row, v in enumerate(raw_labels) if v not in index]
    if unknown:  # the values themselves are private: say where, not what
        raise SchemaError(f"column {label_column!r} has {len(unknown)} value(s) outside the declared labels "
                          f"{list(labels)} (first at row {unknown[0]}): declare every label, or drop those rows first.")
    label_index = np.asarray([index[v] for v in raw_labels], dtype=np.int64)
    user_ids = column_values(dataset, user_id_column) if unit == "user" else None
    num_units = len(group_rows_by_user(user_ids, column=user_id_column)) if user_ids is not None else len(dataset)
    sensitivity = keyword_sensitivity(k)
    num_cells = len(labels) * len(vocabulary)
    z = default_threshold_sigmas(num_cells) if threshold_sigmas is None else float(threshold_sigmas)
    if not math.isfinite(z) or z < 0:
        raise InvalidPrivacyParameterError(f"threshold_sigmas must be a non-negative number; got {threshold_sigmas!r}.")
    noise_multiplier = one_gaussian_noise_multiplier(ledger, stage, noise_multiplier, what="the keywords")
    metadata = {
        "mechanism": "gaussian_keyword_histogram", "k": k, "num_labels": len(labels),
        "vocabulary_size": len(vocabulary), "vocabulary": vocabulary.source + "; assumed public (not derived from "
                                                                                 "the private data)",
        "noise_multiplier": float(noise_multiplier), "l2_sensitivity": sensitivity,
        "contribution": "k distinct terms per record" if unit == "example" else "k distinct (label, term) pairs per user",
    }
    # Charge first: if the ledger refuses, no noise is drawn and nothing is released.
    ledger.charge(stage, gaussian_event(noise_multiplier=noise_multiplier), privacy_unit=unit, num_units=num_units,
                  metadata=metadata)
    counts = _pre_noise_counts(texts, label_index, vocabulary, k, user_ids)
    if counts.shape[0] < len(labels):
        counts = np.vstack([counts, np.zeros((len(labels) - counts.shape[0], counts.shape[1]))])
    noise_std = float(noise_multiplier) * sensitivity
    rng = np.random.default_rng(seed)
    noisy = counts + rng.normal(0.0, noise_std, size=counts.shape) if noise_std > 0 else counts.copy()
    del counts
    threshold = z * noise_std
    released = released_keywords(labels, noisy, vocabulary, threshold)
    return DPKeywords(
        stage=stage, column=label_column, keywords=released, k=k, noise_multiplier=float(noise_multiplier), sensitivity=sensitivity,
        noise_std=noise_std, threshold=float(threshold), vocabulary_size=len(vocabulary),
        vocabulary_source=vocabulary.source, privacy_unit=unit, num_units=num_units,
    )
