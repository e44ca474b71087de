"""Utility and fidelity of synthetic text (ALGORITHMS.md §7).

* :func:`tstr_text` — train on synthetic, test on real: logistic regression on TF-IDF features or
  on MiniLM sentence embeddings, scored on held-out real data.
* :func:`frechet_distance` and :func:`knn_precision_recall` on MiniLM embeddings (defined in
  :mod:`hf_dpsynth.evaluation.embeddings`, re-exported here).
* :func:`distinct_n` — lexical diversity; :func:`invalid_rate` — the share of unusable generations.
* :func:`evaluate_text` — all of them for one synthetic set, as a :class:`TextEvaluation`.

This module also holds what every modality shares: :class:`ClassificationResult` (the TSTR
scores, also returned by the tabular and image TSTR) and the rule that turns results into
:class:`~hf_dpsynth.evaluation.metric.Metric` rows.

Privacy: these metrics are not DP. A metric that reads private data (a private test split, the
real training data, a non-private reference run) is owner-only; ``to_metrics`` marks it so from
the flags its caller gives. Metrics of a DP synthetic set alone (distinct-n, the invalid rate)
are post-processing of the release and shareable.
"""

from __future__ import annotations

import collections
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hf_dpsynth.errors import DatasetError, SchemaError, missing_extra
from hf_dpsynth.evaluation.embeddings import (
    EMBEDDING_MODEL,
    PrecisionRecall,
    embed_texts,
    frechet_distance,
    knn_precision_recall,
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

#: The note on every metric computed on private data without DP.
OWNER_ONLY_NOTE = "computed on private data without DP: for the data owner only"
#: The setting name of the real-data ceiling (a classifier trained on the real training data).
REAL_DATA_SETTING = "real data (ceiling)"
UTILITY_SECTION = "downstream utility"
TEXT_SECTION = "text fidelity"
_C = 10.0  # inverse L2 strength of the TSTR logistic regressions
_FEATURE_NAMES = {"tfidf": "TF-IDF + logistic regression", "minilm": "MiniLM embeddings + logistic regression"}


# -- shared by every modality ------------------------------------------------------------------


def make_metric(name: str, value: float | str | None, *, section: str, setting: str, shareable: bool) -> Metric:
    """A :class:`Metric`, with the owner-only note when it is not shareable."""
    return Metric(name, value, shareable, section, setting, "" if shareable else OWNER_ONLY_NOTE)


def sharing(shareable: bool, synthetic_shareable: bool | None) -> tuple[bool, bool]:
    """(synthetic-only metrics shareable, synthetic-vs-real metrics shareable) from a ``to_metrics``
    call's flags: the first needs a publishable synthetic set (``synthetic_shareable``, defaulting
    to ``shareable``), the second that and a public real set (``shareable``)."""
    synthetic_ok = shareable if synthetic_shareable is None else bool(synthetic_shareable)
    return synthetic_ok, bool(shareable) and synthetic_ok


def require_sklearn() -> None:
    """MissingDependencyError naming the ``evaluation`` extra when scikit-learn is absent."""
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise missing_extra("scikit-learn", "evaluation") from exc


def num_rows(data: Any) -> int:
    """The number of rows of a Dataset, a pandas DataFrame or a mapping of column lists."""
    if hasattr(data, "num_rows"):
        return int(data.num_rows)
    if hasattr(data, "shape") and hasattr(data, "columns"):
        return int(data.shape[0])
    if isinstance(data, Mapping):
        return len(next(iter(data.values()), []))
    raise DatasetError(f"expected a datasets.Dataset or a pandas DataFrame; got {type(data).__name__}.")


def column_names(data: Any) -> list[str]:
    """The column names of a Dataset, a pandas DataFrame or a mapping of column lists."""
    if hasattr(data, "column_names"):
        return list(data.column_names)
    if hasattr(data, "columns"):
        return [str(c) for c in data.columns]
    if isinstance(data, Mapping):
        return list(data)
    raise DatasetError(f"expected a datasets.Dataset or a pandas DataFrame; got {type(data).__name__}.")


def get_column(data: Any, name: str, *, what: str) -> list[Any]:
    """Column ``name`` of ``data`` (described as ``what`` in errors) as a Python list.

    A ``datasets.ClassLabel`` column comes back as its label names, so that integer-coded real
    data and string-labelled synthetic data compare. SchemaError when the column is absent.
    """
    available = column_names(data)
    if name not in available:
        raise SchemaError(
            f"the {what} has no column {name!r}; it has {available}. Real and synthetic data must have the "
            "same columns: rename the column, or pass the column name that both use."
        )
    if hasattr(data, "features"):  # datasets.Dataset
        values = data[name][:]
        feature = data.features[name]
        from datasets import ClassLabel

        if isinstance(feature, ClassLabel):
            return [None if v is None else feature.int2str(int(v)) for v in values]
        return values
    if hasattr(data, "columns") and hasattr(data, "shape"):  # pandas
        return data[name].tolist()
    return list(data[name])


def check_not_empty(data: Any, what: str, *, minimum: str) -> int:
    """The number of rows, or DatasetError when there are none (saying what ``minimum`` works)."""
    n = num_rows(data)
    if n == 0:
        raise DatasetError(f"the {what} is empty (0 rows). {minimum}")
    return n


def check_classes(labels: Sequence[str], what: str) -> list[str]:
    """The sorted classes of training ``labels``; DatasetError when there are fewer than two."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no rows"
        raise DatasetError(
            f"the {what} set has {found}: a classifier needs at least 2 classes with at least one "
            "row each. Generate records for every class (e.g. one prompt per label)."
        )
    return classes


def labels_as_strings(values: Sequence[Any], what: str) -> list[str]:
    """Labels as strings (so 1 and "1" match); DatasetError naming the first missing one."""
    missing = [i for i, v in enumerate(values) if v is None or isinstance(v, float) and math.isnan(v)]
    if missing:
        raise DatasetError(
            f"the {what} labels have {len(missing)} missing value(s) (first at row {missing[0]}); "
            "drop those rows or fill them before evaluating."
        )
    return [str(v) for v in values]


@dataclass(frozen=True)
class ClassificationResult:
    """Scores of a classifier trained on one set and tested on held-out real data (TSTR).

    ``macro_f1`` averages the per-class F1 over the classes present in the test labels. For a
    two-class task ``positive_f1`` is the F1 of ``positive_label`` (the given one, or else the
    class that is rarer in the test labels, e.g. ``spam`` or ``>50K``); None otherwise.
    """

    accuracy: float
    macro_f1: float
    n_train: int
    n_test: int
    model: str = ""
    positive_label: str | None = None
    positive_f1: float | None = None

    @property
    def accuracy_name(self) -> str:
        """The name of the accuracy metric (the primary downstream metric)."""
        return f"TSTR accuracy ({self.model})" if self.model else "TSTR accuracy"

    def to_metrics(self, *, setting: str, shareable: bool, section: str = UTILITY_SECTION) -> list[Metric]:
        """The scores as metrics; ``shareable`` only when both the training and the test data may be
        published (a DP or public-only synthetic set, and a public test set)."""
        model = f" ({self.model})" if self.model else ""
        rows = [
            make_metric(self.accuracy_name, self.accuracy, section=section, setting=setting, shareable=shareable),
            make_metric(f"TSTR macro F1{model}", self.macro_f1, section=section, setting=setting, shareable=shareable),
        ]
        if self.positive_label is not None:
            rows.append(make_metric(f"TSTR F1 of {self.positive_label!r}{model}", self.positive_f1,
                                    section=section, setting=setting, shareable=shareable))
        rows.append(make_metric(f"TSTR rows (train / test){model}", f"{self.n_train} / {self.n_test}",
                                section=section, setting=setting, shareable=shareable))
        return rows


def classification_scores(
    make_model: Callable[[], Any],
    train_x: Any,
    train_y: Sequence[Any],
    test_x: Any,
    test_y: Sequence[Any],
    *,
    model: str,
    positive_label: str | None = None,
    what: str = "synthetic",
) -> ClassificationResult:
    """Fit ``make_model()`` on (train_x, train_y), score it on (test_x, test_y): the TSTR core.

    Labels are compared as strings. DatasetError when a side is empty, when the training labels
    have fewer than two classes (``what`` names the training set in messages: "synthetic",
    "real training"), or when no training class occurs in the test labels.
    """
    require_sklearn()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score

    y_train = labels_as_strings(train_y, what)
    y_test = labels_as_strings(test_y, "real test")
    if not y_test:
        raise DatasetError("the real test set is empty: TSTR needs at least one labelled test row.")
    classes = check_classes(y_train, what)
    if not set(classes) & set(y_test):
        raise DatasetError(
            f"no {what} class occurs in the real test labels (training: {classes[:10]}, test: "
            f"{sorted(set(y_test))[:10]}): the label columns use different names or codes; map them to the same ones."
        )
    test_classes = sorted(set(y_test))
    all_classes = sorted(set(classes) | set(test_classes))
    if positive_label is not None:
        positive_label = str(positive_label)
        if len(all_classes) != 2 or positive_label not in all_classes:
            raise DatasetError(
                f"positive_label={positive_label!r} must be one of the two classes of a two-class task; "
                f"this one has the classes {all_classes[:10]}."
            )
    elif len(all_classes) == 2:
        counts = collections.Counter(y_test)
        positive_label = min(all_classes, key=lambda c: counts[c])  # the rarer test class; ties: first sorted
    estimator = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # small synthetic sets; the score says enough
        estimator.fit(train_x, np.asarray(y_train, dtype=object))
    predicted = [str(p) for p in estimator.predict(test_x)]
    positive_f1 = None
    if positive_label is not None:
        positive_f1 = float(f1_score(y_test, predicted, labels=[positive_label], average="macro", zero_division=0))
    return ClassificationResult(
        accuracy=float(accuracy_score(y_test, predicted)),
        macro_f1=float(f1_score(y_test, predicted, labels=test_classes, average="macro", zero_division=0)),
        n_train=len(y_train),
        n_test=len(y_test),
        model=model,
        positive_label=positive_label,
        positive_f1=positive_f1,
    )


# -- text metrics ------------------------------------------------------------------------------


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


def invalid_rate(num_generated: int, num_valid: int) -> float:
    """The fraction of generated outputs that could not be parsed into a valid record.

    Privacy: counts of a DP generator's outputs are post-processing of the release: shareable.
    """
    for name, value in (("num_generated", num_generated), ("num_valid", num_valid)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}.")
    if num_generated == 0:
        raise ValueError("num_generated is 0: nothing was generated, so there is no invalid rate.")
    if num_valid > num_generated:
        raise ValueError(f"num_valid ({num_valid}) cannot exceed num_generated ({num_generated}).")
    return (int(num_generated) - int(num_valid)) / int(num_generated)


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
