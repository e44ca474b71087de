"""What every modality's evaluation shares: the TSTR result type, column access that works for
Datasets and DataFrames, input checks, and the rule that turns results into :class:`Metric` rows.

Privacy: these metrics are not DP. A metric that reads private data is owner-only; ``make_metric``
adds the note that says so.
"""

from __future__ import annotations

import collections
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_dpsynth.errors import DatasetError, SchemaError, missing_extra
from hf_dpsynth.evaluation.metric import Metric

#: The note on every metric computed on private data without DP.
OWNER_ONLY_NOTE = "computed on private data without DP: for the data owner only"
#: The setting name of the real-data ceiling (a classifier trained on the real training data).
REAL_DATA_SETTING = "real data (ceiling)"
UTILITY_SECTION = "downstream utility"


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
