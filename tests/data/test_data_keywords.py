"""DP keywords per label (hf_dpsynth/data/keywords.py) against independent oracles
(docs/ALGORITHMS.md §8, docs/DP_CORRECTNESS.md row 33).

* the sensitivity: one record (example level) or one whole user (user level) added or removed moves
  the pre-noise (label, term) count vector by at most √k in L2, with equality reached, on
  hypothesis-generated neighbouring datasets; a user who repeats words in many records still moves
  it by √k (the per-user dedupe: without it the move would be larger, as the test shows);
* the per-record rule reads the record alone (1-stable): the same terms wherever the record sits;
* the accounting: the charge is ``GaussianDpEvent(σ)`` and its ε is dp-accounting's own; a refused
  charge draws no noise and releases nothing;
* the noise: noisy minus true counts have the std σ√k (chi-square bounds a factor √2 cannot pass);
* the threshold: with no data at all, about one cell of pure noise passes the default threshold.
"""

from __future__ import annotations

import collections
import hashlib
import math
import re

import dp_accounting
import numpy as np
import pytest
from datasets import Dataset
from dp_accounting.pld import PLDAccountant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from hf_dpsynth.data.keywords import (
    DPKeywords,
    KeywordVocabulary,
    _pre_noise_counts,
    default_threshold_sigmas,
    dp_keywords,
    keyword_sensitivity,
    record_terms,
)
from hf_dpsynth.errors import PrivacyBudgetExceededError, DatasetError, InvalidPrivacyParameterError, SchemaError
from hf_dpsynth.privacy import PrivacyLedger

WORDS = ["free", "prize", "claim", "call", "home", "later", "sorry", "love", "cash", "reply", "stop", "win"]
VOCAB = KeywordVocabulary.from_words(WORDS)
LABELS = ["ham", "spam"]


def _ledger(epsilon=4.0, unit="example", n=100, shares=None):
    ledger = PrivacyLedger(epsilon=epsilon, delta=1e-5, privacy_unit=unit, num_units=n)
    ledger.plan(shares or {"keywords": 1.0})
    return ledger


def _counts(rows, k, *, users=False):
    texts = [r[0] for r in rows]
    labels = np.asarray([LABELS.index(r[1]) for r in rows], dtype=np.int64)
    out = _pre_noise_counts(texts, labels, VOCAB, k, [r[2] for r in rows] if users else None)
    full = np.zeros((len(LABELS), len(VOCAB)))
    full[: out.shape[0]] = out
    return full


# --------------------------------------------------------------------------------------------
# The per-record rule: the record alone
# --------------------------------------------------------------------------------------------

def _oracle_terms(text, k):
    """The rule written again from its description: distinct lowercase letter-words in the vocabulary,
    ordered by BLAKE2b-64 of "word NUL text", the first k."""
    words = {w.lower() for w in re.findall(r"[^\W\d_]+", text)} & set(WORDS)
    return sorted(words, key=lambda w: hashlib.blake2b(f"{w}\x00{text}".encode(), digest_size=8).digest())[:k]


@pytest.mark.parametrize("text", ["FREE prize! Claim your cash now, call 0800", "sorry, home later... love", "nothing here",
                                  "free free FREE Free"])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_record_terms_follow_the_declared_rule(text, k):
    assert record_terms(text, VOCAB, k) == _oracle_terms(text, k)
    assert len(record_terms(text, VOCAB, k)) <= k


def test_record_terms_do_not_depend_on_other_records_or_position():
    texts = ["free prize claim cash call win", "sorry home later love", "reply stop win free"]
    rows = [(t, "spam", i) for i, t in enumerate(texts)]
    alone = _counts(rows[:1], 3)
    reordered = _counts(list(reversed(rows)), 3) - _counts(list(reversed(rows[1:])), 3)
    np.testing.assert_array_equal(alone, reordered)


# --------------------------------------------------------------------------------------------
# Sensitivity: √k for one unit added or removed, reached
# --------------------------------------------------------------------------------------------

_text = st.lists(st.sampled_from(WORDS + ["the", "and", "xyz", "42"]), min_size=0, max_size=14).map(" ".join)
_row = st.tuples(_text, st.sampled_from(LABELS), st.integers(0, 4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=0, max_size=12), extra=_row, k=st.integers(1, 6))
def test_one_record_moves_the_counts_by_at_most_sqrt_k(rows, extra, k):
    before, after = _counts(rows, k), _counts(rows + [extra], k)
    assert np.linalg.norm(after - before) <= keyword_sensitivity(k) + 1e-12


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=0, max_size=12), user_rows=st.lists(st.tuples(_text, st.sampled_from(LABELS)),
                                                                         min_size=1, max_size=6), k=st.integers(1, 6))
def test_one_user_moves_the_counts_by_at_most_sqrt_k(rows, user_rows, k):
    others = [r for r in rows if r[2] != 99]
    user = [(t, label, 99) for t, label in user_rows]
    before, after = _counts(others, k, users=True), _counts(others + user, k, users=True)
    assert np.linalg.norm(after - before) <= keyword_sensitivity(k) + 1e-12


@pytest.mark.parametrize("k", [1, 3, 8])
def test_the_sensitivity_is_reached(k):
    record = (" ".join(WORDS), "spam", 0)  # 12 vocabulary words: every k here is filled
    assert np.linalg.norm(_counts([record], k)) == pytest.approx(math.sqrt(k))
    user = [(" ".join(WORDS[i:] + WORDS[:i]), LABELS[i % 2], 7) for i in range(5)]
    assert np.linalg.norm(_counts(user, k, users=True)) == pytest.approx(math.sqrt(k))


def test_a_user_repeating_words_counts_each_pair_once():
    k = 4
    user = [("free prize claim cash", "spam", 1)] * 6  # the same words in six records
    counts = _counts(user, k, users=True)
    assert counts.max() == 1.0 and counts.sum() == k
    # Per record, as at example level, the same user would move the vector by cap·√k: the dedupe is the protection.
    per_record = _counts(user, k)
    assert np.linalg.norm(per_record) == pytest.approx(6 * math.sqrt(k))


# --------------------------------------------------------------------------------------------
# The release: charge first, the noise, the threshold
# --------------------------------------------------------------------------------------------

def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    spam, ham = WORDS[:6], WORDS[6:]
    texts, labels = [], []
    for i in range(n):
        label = "spam" if i % 4 == 0 else "ham"
        pool = spam if label == "spam" else ham
        texts.append(" ".join(rng.choice(pool, size=4)))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels, "user": [i % 50 for i in range(n)]})


def test_charge_is_one_gaussian_and_its_epsilon_is_dp_accountings():
    data = _data()
    ledger = _ledger(n=len(data))
    release = dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=VOCAB,
                          ledger=ledger, k=4)
    (charge,) = ledger.charges
    assert charge.stage == "keywords"
    assert charge.event == dp_accounting.GaussianDpEvent(release.noise_multiplier)
    assert charge.metadata["l2_sensitivity"] == pytest.approx(2.0)
    acc = PLDAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(release.noise_multiplier))
    assert ledger.epsilon_spent("keywords") == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)
    assert ledger.epsilon_spent() <= 4.0 + 1e-9
    assert release.noise_std == pytest.approx(release.noise_multiplier * 2.0)
    # The clear signal passes: spam words are spam keywords.
    assert {t for t, _ in release.keywords["spam"]} >= {"free", "prize"}


def test_a_refused_charge_draws_no_noise_and_releases_nothing(monkeypatch):
    data = _data()
    ledger = _ledger(n=len(data))
    ledger.charge("keywords", dp_accounting.GaussianDpEvent(1.5), privacy_unit="example", num_units=len(data))
    drawn = []
    monkeypatch.setattr(np.random, "default_rng", lambda *a, **k: drawn.append(1))
    with pytest.raises(PrivacyBudgetExceededError):
        dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=VOCAB, ledger=ledger,
                    noise_multiplier=1.5, k=4)
    assert drawn == [] and len(ledger.charges) == 1


def test_noise_std_is_sigma_sqrt_k():
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(26) for j in range(26)]
    vocab = KeywordVocabulary.from_words([w.replace("w", "z") for w in words])
    data = Dataset.from_dict({"text": ["nothing"], "label": ["ham"]})
    k, sigma = 9, 1.7
    release = dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=vocab,
                          ledger=_ledger(epsilon=100.0, n=1), noise_multiplier=sigma, k=k, threshold_sigmas=-0.0,
                          seed=3)
    # With threshold 0 only positive noise passes; a half-normal's mean is std·√(2/π).
    values = np.asarray([c for terms in release.keywords.values() for _, c in terms])
    cells = 2 * len(vocab)
    assert abs(len(values) / cells - 0.5) < 0.05
    std = math.sqrt(np.mean(values ** 2))  # E[X² | X > 0] = std² for a centred normal
    df = len(values)
    lo, hi = math.sqrt(stats.chi2.ppf(1e-6, df) / df), math.sqrt(stats.chi2.ppf(1 - 1e-6, df) / df)
    assert lo * sigma * 3 < std < hi * sigma * 3
    assert release.noise_std == pytest.approx(sigma * 3)


def test_default_threshold_lets_about_one_noise_cell_through():
    data = Dataset.from_dict({"text": ["nothing"], "label": ["ham"]})
    vocab = KeywordVocabulary.from_words([f"z{chr(97 + i)}{chr(97 + j)}{chr(97 + l)}" for i in range(10) for j in range(10)
                                          for l in range(10)])
    passed = []
    for seed in range(20):
        release = dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=vocab,
                              ledger=_ledger(epsilon=10.0, n=1), noise_multiplier=1.0, k=4, seed=seed)
        passed.append(sum(len(v) for v in release.keywords.values()))
    assert release.threshold == pytest.approx(default_threshold_sigmas(2000) * 2.0)
    assert 0.2 < np.mean(passed) < 3.0  # one expected per run


def test_user_level_needs_the_user_column_and_counts_users():
    data = _data()
    ledger = _ledger(unit="user", n=50)
    with pytest.raises(DatasetError, match="user_id_column"):
        dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=VOCAB, ledger=ledger)
    release = dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=VOCAB,
                          ledger=ledger, user_id_column="user", k=4)
    assert release.num_units == 50 and release.privacy_unit == "user"
    assert ledger.charges[0].metadata["contribution"] == "k distinct (label, term) pairs per user"


def test_bad_input_is_refused_before_any_charge():
    data = _data()
    ledger = _ledger(n=len(data))
    with pytest.raises(SchemaError, match="outside the declared labels"):
        dp_keywords(data, text_column="text", label_column="label", labels=["ham", "other"], vocabulary=VOCAB,
                    ledger=ledger)
    with pytest.raises(InvalidPrivacyParameterError, match="positive integer"):
        dp_keywords(data, text_column="text", label_column="label", labels=LABELS, vocabulary=VOCAB, ledger=ledger, k=0)
    with pytest.raises(DatasetError, match="must hold texts"):
        dp_keywords(Dataset.from_dict({"text": [1], "label": ["ham"]}), text_column="text", label_column="label",
                    labels=LABELS, vocabulary=VOCAB, ledger=ledger)
    with pytest.raises(SchemaError, match="letters only; word 2"):
        KeywordVocabulary.from_words(["ok", "two words"])
    assert len(ledger.charges) == 0


# --------------------------------------------------------------------------------------------
# Vocabulary, sampling (post-processing), saving
# --------------------------------------------------------------------------------------------

def test_tokenizer_vocabulary_is_whole_lowercase_words_in_rank_order(tiny_lm):
    _, tok = tiny_lm
    vocab = KeywordVocabulary.from_tokenizer(tok, min_length=3, skip_most_common=0)
    ids = tok.get_vocab()
    assert all(t.isalpha() and t == t.lower() and len(t) >= 3 for t in vocab.terms)
    assert [ids["Ġ" + t] for t in vocab.terms] == sorted(ids["Ġ" + t] for t in vocab.terms)
    assert KeywordVocabulary.from_tokenizer(tok, skip_most_common=2).terms == vocab.terms[2:]
    with pytest.raises(SchemaError, match="declare a public word list"):
        KeywordVocabulary.from_tokenizer(tok, skip_most_common=100)


def _release(words):
    return DPKeywords(stage="keywords", column="label", keywords=words, k=4, noise_multiplier=1.0, sensitivity=2.0,
                      noise_std=2.0, threshold=8.0, vocabulary_size=12, vocabulary_source="test", privacy_unit="example",
                      num_units=10)


def test_sampling_follows_the_noisy_counts_and_contrast_favours_distinct_words(tmp_path):
    release = _release({"spam": (("free", 90.0), ("call", 10.0)), "ham": (("call", 90.0), ("home", 10.0))})
    rng = np.random.default_rng(0)
    draws = collections.Counter(release.sample("spam", 1, rng)[0] for _ in range(4000))
    assert draws["free"] / 4000 == pytest.approx(0.9, abs=0.03)
    contrast = release.weights("spam", "contrast")
    np.testing.assert_allclose(contrast, [90.0 * 90 / 90, 10.0 * 10 / 100])
    assert sorted(release.sample("ham", 5, rng)) == ["call", "home"]  # no more than were released
    assert release.sample("unknown", 3, rng) == []
    release.save(tmp_path / "k.json")
    assert DPKeywords.load(tmp_path / "k.json") == release
