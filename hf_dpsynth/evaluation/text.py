"""Utility and fidelity of synthetic text (docs/ALGORITHMS.md §7).

* :func:`tstr_text` — train on synthetic, test on real: logistic regression on TF-IDF features or
  on MiniLM sentence embeddings, scored on held-out real data.
* :func:`frechet_distance` and :func:`knn_precision_recall` on MiniLM embeddings (defined in
  :mod:`hf_dpsynth.evaluation.embeddings`, re-exported here).
* :func:`distinct_n` — lexical diversity; :func:`invalid_rate` — the share of unusable generations.
* :func:`evaluate_text` — all of them for one synthetic set, as a :class:`TextEvaluation`.

Privacy: these metrics are not DP. A metric that reads private data (a private test split, the
real training data, a non-private reference run) is owner-only; ``to_metrics`` marks it so from
the flags its caller gives. Metrics of a DP synthetic set alone (distinct-n, the invalid rate)
are post-processing of the release and shareable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hf_dpsynth.errors import DatasetError
from hf_dpsynth.evaluation.embeddings import (
    EMBEDDING_MODEL,
    PrecisionRecall,
    embed_texts,
    frechet_distance,
    knn_precision_recall,
)
from hf_dpsynth.evaluation._common import (  # noqa: F401  (re-exported: shared by every modality)
    OWNER_ONLY_NOTE,
    REAL_DATA_SETTING,
    UTILITY_SECTION,
    ClassificationResult,
    check_classes,
    check_not_empty,
    classification_scores,
    column_names,
    get_column,
    invalid_rate,
    labels_as_strings,
    make_metric,
    num_rows,
    require_sklearn,
    sharing,
)
from hf_dpsynth.evaluation.metric import Metric

__all__ = [
    "OWNER_ONLY_NOTE",
    "REAL_DATA_SETTING",
    "ClassificationResult",
    "PrecisionRecall",
    "TextEvaluation",
    "distinct_n",
    "evaluate_text",
    "frechet_distance",
    "invalid_rate",
    "knn_precision_recall",
    "tstr_text",
]

TEXT_SECTION = "text fidelity"
_C = 10.0  # inverse L2 strength of the TSTR logistic regressions
_FEATURE_NAMES = {"tfidf": "TF-IDF + logistic regression", "minilm": "MiniLM embeddings + logistic regression"}


def _text_list(texts: Sequence[Any], what: str) -> list[str]:
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DatasetError(f"the {what} texts must be strings; row {bad} is {type(texts[bad]).__name__}.")
    return texts


def _tfidf_model() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    # The vocabulary is fitted on the training (synthetic) texts only, as TSTR requires.
    return make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)), _linear_model())


def _linear_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    # Both feature kinds have unit-norm rows, for which the default C = 1 under-fits small sets
    # (SMS, 300 training rows: spam F1 0.00 at C = 1, 0.55 at C = 10).
    return LogisticRegression(C=_C, max_iter=1000)


def tstr_text(
    train_texts: Sequence[str],
    train_labels: Sequence[Any],
    test_texts: Sequence[str],
    test_labels: Sequence[Any],
    *,
    features: Literal["tfidf", "minilm"] = "tfidf",
    positive_label: str | None = None,
) -> ClassificationResult:
    """Train a text classifier on (synthetic) ``train_*``, report its scores on real ``test_*``.

    ``features="tfidf"``: logistic regression on TF-IDF of word uni- and bigrams (sublinear tf,
    vocabulary from the training texts); ``"minilm"``: logistic regression on all-MiniLM-L6-v2
    sentence embeddings (offline, see :func:`~hf_dpsynth.evaluation.embeddings.embed_texts`).
    Both are deterministic. DatasetError when the training labels have fewer than 2 classes.
    """
    if features not in _FEATURE_NAMES:
        raise ValueError(f"features must be 'tfidf' or 'minilm'; got {features!r}.")
    train = _text_list(train_texts, "training")
    test = _text_list(test_texts, "test")
    _check_lengths(train, train_labels, "training")
    _check_lengths(test, test_labels, "test")
    if features == "tfidf":
        return classification_scores(_tfidf_model, train, train_labels, test, test_labels,
                                     model=_FEATURE_NAMES["tfidf"], positive_label=positive_label)
    return classification_scores(_linear_model, embed_texts(train), train_labels, embed_texts(test), test_labels,
                                 model=_FEATURE_NAMES["minilm"], positive_label=positive_label)


def _check_lengths(texts: Sequence[Any], labels: Sequence[Any], what: str) -> None:
    if len(texts) != len(labels):
        raise DatasetError(f"the {what} set has {len(texts)} texts but {len(labels)} labels.")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams, over whitespace tokens of all ``texts`` together.

    Tokens are case-sensitive and keep their punctuation; n-grams never cross two texts. NaN when
    no text has ``n`` tokens. DatasetError for an empty list.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    texts = _text_list(texts, "given")
    if not texts:
        raise DatasetError("distinct_n needs at least one text; got none.")
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = text.split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else math.nan


@dataclass(frozen=True)
class TextEvaluation:
    """Every text metric of one synthetic set against a real test set.

    ``tstr_tfidf`` / ``tstr_minilm`` are None without labels (``tstr_minilm``, ``frechet`` and
    ``precision_recall`` also without embeddings). ``distinct_1`` / ``distinct_2`` describe the
    synthetic texts alone. ``ceiling`` is the same evaluation of the real training data, when given.
    """

    n_synthetic: int
    n_real: int
    distinct_1: float
    distinct_2: float
    tstr_tfidf: ClassificationResult | None = None
    tstr_minilm: ClassificationResult | None = None
    frechet: float | None = None
    precision_recall: PrecisionRecall | None = None
    ceiling: TextEvaluation | None = None

    @property
    def primary(self) -> ClassificationResult | None:
        """The headline downstream result (TF-IDF TSTR: it needs no embedding model)."""
        return self.tstr_tfidf

    def to_metrics(self, *, setting: str, shareable: bool, synthetic_shareable: bool | None = None) -> list[Metric]:
        """The metrics of this evaluation (then of its ceiling, under :data:`REAL_DATA_SETTING`).

        Args:
            setting: the run these synthetic texts come from (``"ε = 4"``, ``"public-only (ε = 0)"``).
            shareable: whether the real test data is public.
            synthetic_shareable: whether the synthetic texts may be published (a DP or public-only
                run); defaults to ``shareable``. Metrics that read both sets need both; distinct-n
                needs only this one. The ceiling is never shareable.
        """
        synth_ok, both_ok = sharing(shareable, synthetic_shareable)
        rows: list[Metric] = []
        for result in (self.tstr_tfidf, self.tstr_minilm):
            if result is not None:
                rows += result.to_metrics(setting=setting, shareable=both_ok)
        if self.frechet is not None:
            rows.append(make_metric(f"Fréchet distance ({EMBEDDING_MODEL} embeddings)", self.frechet,
                                    section=TEXT_SECTION, setting=setting, shareable=both_ok))
        if self.precision_recall is not None:
            pr = self.precision_recall
            for label, value in (("precision", pr.precision), ("recall", pr.recall)):
                rows.append(make_metric(f"k-NN {label} (k = {pr.k}, {EMBEDDING_MODEL})", value,
                                        section=TEXT_SECTION, setting=setting, shareable=both_ok))
        for n, value in ((1, self.distinct_1), (2, self.distinct_2)):
            rows.append(make_metric(f"distinct-{n}", value, section=TEXT_SECTION, setting=setting, shareable=synth_ok))
        if self.ceiling is not None:
            rows += self.ceiling.to_metrics(setting=REAL_DATA_SETTING, shareable=False, synthetic_shareable=False)
        return rows


def evaluate_text(
    synthetic: Any,
    real_test: Any,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    real_train: Any | None = None,
    embeddings: bool = True,
    k: int = 5,
    positive_label: str | None = None,
    real_test_embeddings: np.ndarray | None = None,
) -> TextEvaluation:
    """Evaluate synthetic texts against a real test set (Datasets or pandas DataFrames).

    Computes TSTR with TF-IDF and (with ``embeddings``) MiniLM features when ``label_column`` is
    set, the Fréchet distance and k-NN precision/recall of MiniLM embeddings, and distinct-1/2 of
    the synthetic texts. With ``real_train`` the same evaluation of the real training data is the
    ceiling. ``real_test_embeddings`` (``embed_texts`` of the test texts) avoids embedding the test
    set again when several synthetic sets are evaluated against it.
    """
    return _evaluate_text(synthetic, real_test, text_column=text_column, label_column=label_column,
                          real_train=real_train, embeddings=embeddings, k=k, positive_label=positive_label,
                          real_test_embeddings=real_test_embeddings, role="synthetic")


def _evaluate_text(synthetic: Any, real_test: Any, *, text_column: str, label_column: str | None, real_train: Any,
                   embeddings: bool, k: int, positive_label: str | None, real_test_embeddings: np.ndarray | None,
                   role: str) -> TextEvaluation:
    """evaluate_text, with ``role`` naming the evaluated set in errors ("synthetic", "real training")."""
    n_synth = check_not_empty(
        synthetic, f"{role} dataset",
        minimum=f"Text evaluation needs at least {k + 1 if embeddings else 1} rows"
                + (", with at least 2 label classes for TSTR." if label_column else "."),
    )
    n_real = check_not_empty(real_test, "real test set", minimum="Evaluation needs held-out real rows to compare with.")
    if embeddings and n_synth <= k:
        raise DatasetError(
            f"the {role} dataset has {n_synth} rows; k-NN precision/recall with k = {k} needs at least {k + 1} "
            "(generate more records, lower k, or pass embeddings=False)."
        )
    synth_texts = _text_list(get_column(synthetic, text_column, what=f"{role} dataset"), role)
    real_texts = _text_list(get_column(real_test, text_column, what="real test set"), "real test")
    synth_labels = real_labels = None
    if label_column is not None:
        synth_labels = get_column(synthetic, label_column, what=f"{role} dataset")
        real_labels = get_column(real_test, label_column, what="real test set")
    tstr_tfidf = tstr_minilm = frechet = pr = real_emb = None
    if synth_labels is not None:
        tstr_tfidf = classification_scores(_tfidf_model, synth_texts, synth_labels, real_texts, real_labels,
                                           model=_FEATURE_NAMES["tfidf"], positive_label=positive_label, what=role)
    if embeddings:
        real_emb = embed_texts(real_texts) if real_test_embeddings is None else np.asarray(real_test_embeddings)
        if len(real_emb) != n_real:
            raise DatasetError(f"real_test_embeddings has {len(real_emb)} rows but the real test set has {n_real}.")
        synth_emb = embed_texts(synth_texts)
        if synth_labels is not None:
            tstr_minilm = classification_scores(
                _linear_model, synth_emb, synth_labels, real_emb, real_labels,
                model=_FEATURE_NAMES["minilm"], positive_label=positive_label, what=role,
            )
        frechet = frechet_distance(real_emb, synth_emb)
        pr = knn_precision_recall(real_emb, synth_emb, k=k)
    ceiling = None
    if real_train is not None:
        ceiling = _evaluate_text(real_train, real_test, text_column=text_column, label_column=label_column,
                                 real_train=None, embeddings=embeddings, k=k, positive_label=positive_label,
                                 real_test_embeddings=real_emb, role="real training")
    return TextEvaluation(
        n_synthetic=n_synth, n_real=n_real,
        distinct_1=distinct_n(synth_texts, 1), distinct_2=distinct_n(synth_texts, 2),
        tstr_tfidf=tstr_tfidf, tstr_minilm=tstr_minilm, frechet=frechet, precision_recall=pr, ceiling=ceiling,
    )
