"""Utility and fidelity of synthetic tables against a public schema (docs/ALGORITHMS.md §7).

* :func:`marginal_tvd` — total-variation distance of 1-way (per column) or 2-way (per column
  pair) marginals, averaged;
* :func:`correlation_difference` — mean absolute difference of the pairwise association matrices;
* :func:`tstr_tabular` — gradient-boosted trees trained on synthetic rows, scored on real ones;
* :func:`evaluate_tabular` — all of them, as a :class:`TabularEvaluation`.

Every column is discretised on the schema's **public** declarations, never on the data: a
categorical column has one bin per declared category, a numeric column ``bins`` equal-width bins
over its declared ``[lower, upper]`` (an integer column with at most ``bins`` values has one bin
per value); values outside the bounds fall in the edge bins, and missing values (None / NaN) get
a bin of their own. So real and synthetic data are binned identically, and a histogram never
depends on which values happen to occur.

These few metrics are written here rather than taken from SDMetrics: each is a few lines of
numpy, binning on the declared schema (SDMetrics bins on the observed data), with missing values
as their own bin, and without a dependency that pins pandas/numpy versions.

Privacy: not DP. Metrics that read a private test set are owner-only (see ``to_metrics``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_dpsynth.data.loading import is_missing
from hf_dpsynth.data.statistics import bin_indices
from hf_dpsynth.data.tabular import (
    NULL_TOKEN,
    CategoricalColumn,
    IntegerColumn,
    TabularSchema,
)
from hf_dpsynth.errors import SchemaError
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth.evaluation._common import (
    REAL_DATA_SETTING,
    ClassificationResult,
    check_not_empty,
    classification_scores,
    get_column,
    make_metric,
    sharing,
)

__all__ = [
    "CorrelationDifference",
    "MarginalTVD",
    "TabularEvaluation",
    "correlation_difference",
    "evaluate_tabular",
    "marginal_tvd",
    "tstr_tabular",
]

TABULAR_SECTION = "tabular fidelity"
#: Equal-width bins per numeric column (over its declared bounds) for marginals and associations.
DEFAULT_BINS = 10
# HistGradientBoosting treats a column as categorical only up to max_bins (255) categories.
_HGB_MAX_CATEGORIES = 255


@dataclass(frozen=True)
class _Encoded:
    """A table discretised on the schema: bin codes per column (missing = last bin) and raw numbers."""

    n: int
    codes: dict[str, np.ndarray]
    sizes: dict[str, int]
    numbers: dict[str, np.ndarray]  # numeric columns only, NaN where missing


def _categorical_codes(values: Sequence[Any], column: CategoricalColumn, what: str) -> np.ndarray:
    """Declared-category indices, missing values in a last bin: the DP histograms' own rule."""
    try:
        return bin_indices(values, column.categories + (NULL_TOKEN,), column.name, True)
    except SchemaError as exc:  # name the table; real and synthetic data follow one schema
        raise SchemaError(f"the {what}: {exc}") from exc


def _numbers(values: Sequence[Any], name: str, what: str) -> np.ndarray:
    try:
        return np.asarray([np.nan if is_missing(v) else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise SchemaError(
            f"column {name!r} of the {what} is declared numeric but holds non-numeric values; "
            "real and synthetic data must follow the same schema."
        ) from None


def _numeric_codes(x: np.ndarray, column: IntegerColumn | Any, bins: int) -> tuple[np.ndarray, int]:
    lower, upper = float(column.lower), float(column.upper)
    missing = np.isnan(x)
    filled = np.where(missing, lower, x)
    if isinstance(column, IntegerColumn) and column.upper - column.lower + 1 <= bins:
        k = column.upper - column.lower + 1  # one bin per integer value
        codes = np.rint(filled - lower)
    elif upper == lower:
        k, codes = 1, np.zeros_like(filled)
    else:
        k = bins
        codes = np.floor((filled - lower) / (upper - lower) * bins)
    codes = np.clip(codes, 0, k - 1).astype(np.int64)
    codes[missing] = k
    return codes, k + 1


def _encode(data: Any, schema: TabularSchema, *, bins: int, what: str) -> _Encoded:
    n = check_not_empty(data, what, minimum="Tabular evaluation needs at least one row on each side.")
    codes, sizes, numbers = {}, {}, {}
    for column in schema.columns:
        values = get_column(data, column.name, what=what)
        if isinstance(column, CategoricalColumn):
            codes[column.name] = _categorical_codes(values, column, what)
            sizes[column.name] = len(column.categories) + 1
        else:
            numbers[column.name] = _numbers(values, column.name, what)
            codes[column.name], sizes[column.name] = _numeric_codes(numbers[column.name], column, bins)
    return _Encoded(n=n, codes=codes, sizes=sizes, numbers=numbers)


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}.")
    return bins


def _tvd(a: np.ndarray, b: np.ndarray, size: int) -> float:
    p = np.bincount(a, minlength=size) / len(a)
    q = np.bincount(b, minlength=size) / len(b)
    return float(0.5 * np.abs(p - q).sum())


def _pair_key(a: str, b: str) -> str:
    return f"{a} × {b}"


@dataclass(frozen=True)
class MarginalTVD:
    """Total-variation distance of ``order``-way marginals: ``mean`` over ``per_item`` (a column,
    or a pair ``"a × b"``, → its TVD in [0, 1]; 0 = identical histograms)."""

    order: int
    mean: float
    per_item: dict[str, float] = field(default_factory=dict)

    def to_metrics(self, *, setting: str, shareable: bool) -> list[Metric]:
        """One metric: the mean TVD (``shareable`` when both tables may be published)."""
        what = "columns" if self.order == 1 else "column pairs"
        return [make_metric(f"{self.order}-way marginal TVD (mean over {len(self.per_item)} {what})", self.mean,
                            section=TABULAR_SECTION, setting=setting, shareable=shareable)]


def _marginal_tvd(synth: _Encoded, real: _Encoded, schema: TabularSchema, order: int) -> MarginalTVD:
    if order == 1:
        per = {n: _tvd(synth.codes[n], real.codes[n], synth.sizes[n]) for n in schema.names}
    else:
        per = {}
        for a, b in itertools.combinations(schema.names, 2):
            size_b = synth.sizes[b]
            per[_pair_key(a, b)] = _tvd(synth.codes[a] * size_b + synth.codes[b],
                                        real.codes[a] * size_b + real.codes[b], synth.sizes[a] * size_b)
    return MarginalTVD(order=order, mean=float(np.mean(list(per.values()))), per_item=per)


def marginal_tvd(
    synthetic: Any, real: Any, schema: TabularSchema, *, order: int = 1, bins: int = DEFAULT_BINS
) -> MarginalTVD:
    """Mean total-variation distance between the synthetic and real ``order``-way marginals.

    For each column (order 1) or each pair of columns (order 2) of ``schema``: ½ Σ |p − q| over
    the bins (see the module doc for the binning), then the mean over columns / pairs.
    SchemaError when a column is missing or holds undeclared values; DatasetError when a table is empty.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2; got {order!r}.")
    if order == 2 and len(schema) < 2:
        raise SchemaError(f"2-way marginals need at least 2 columns; the schema has {list(schema.names)}.")
    bins = _check_bins(bins)
    return _marginal_tvd(_encode(synthetic, schema, bins=bins, what="synthetic table"),
                         _encode(real, schema, bins=bins, what="real table"), schema, order)


def _cramers_v(a: np.ndarray, b: np.ndarray, size_a: int, size_b: int) -> float:
    table = np.bincount(a * size_b + b, minlength=size_a * size_b).reshape(size_a, size_b).astype(np.float64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]  # bins that occur
    r, c = table.shape
    if min(r, c) < 2:
        return 0.0  # a constant column: no association
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * (min(r, c) - 1))))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0  # undefined (constant or too few values): counted as no association
    return float(np.corrcoef(x, y)[0, 1])


def _associations(enc: _Encoded, schema: TabularSchema) -> dict[str, float]:
    out = {}
    for a, b in itertools.combinations(schema.names, 2):
        if a in enc.numbers and b in enc.numbers:
            out[_pair_key(a, b)] = _pearson(enc.numbers[a], enc.numbers[b])
        else:
            out[_pair_key(a, b)] = _cramers_v(enc.codes[a], enc.codes[b], enc.sizes[a], enc.sizes[b])
    return out


@dataclass(frozen=True)
class CorrelationDifference:
    """Mean |association(synthetic) − association(real)| over column pairs (``per_pair``: each |Δ|).

    The association of two numeric columns is Pearson's r (rows where both are present); of any
    pair with a categorical column, Cramér's V of the binned columns (missing values as a bin).
    Undefined values (a constant column) count as 0.
    """

    mean: float
    per_pair: dict[str, float] = field(default_factory=dict)

    def to_metrics(self, *, setting: str, shareable: bool) -> list[Metric]:
        """One metric: the mean absolute difference."""
        return [make_metric(
            f"correlation difference (mean |Δ| over {len(self.per_pair)} pairs; "
            "Pearson r, Cramér's V with categories)",
            self.mean, section=TABULAR_SECTION, setting=setting, shareable=shareable,
        )]


def _correlation_difference(synth: _Encoded, real: _Encoded, schema: TabularSchema) -> CorrelationDifference:
    s, r = _associations(synth, schema), _associations(real, schema)
    per = {key: abs(s[key] - r[key]) for key in s}
    return CorrelationDifference(mean=float(np.mean(list(per.values()))), per_pair=per)


def correlation_difference(
    synthetic: Any, real: Any, schema: TabularSchema, *, bins: int = DEFAULT_BINS
) -> CorrelationDifference:
    """Mean absolute difference between the synthetic and real pairwise association matrices.

    Numeric pairs use Pearson's r (so a flipped sign counts double); every pair with a categorical
    column uses Cramér's V (0 to 1, no sign) on the binned values, so categorical structure counts
    too instead of only the numeric columns. Needs at least 2 columns.
    """
    if len(schema) < 2:
        raise SchemaError(f"a correlation needs at least 2 columns; the schema has {list(schema.names)}.")
    bins = _check_bins(bins)
    return _correlation_difference(_encode(synthetic, schema, bins=bins, what="synthetic table"),
                                   _encode(real, schema, bins=bins, what="real table"), schema)


def _target_column(schema: TabularSchema, target: str) -> CategoricalColumn:
    if target not in schema:
        raise SchemaError(f"the target {target!r} is not a schema column; the schema has {list(schema.names)}.")
    column = schema[target]
    if not isinstance(column, CategoricalColumn):
        raise SchemaError(
            f"TSTR needs a categorical target; {target!r} is declared {column.kind}. Declare it categorical, or "
            "pick a categorical target."
        )
    if len(schema) < 2:
        raise SchemaError("TSTR needs at least one feature column besides the target.")
    return column


def _features(enc: _Encoded, schema: TabularSchema, target: str) -> tuple[np.ndarray, list[bool]]:
    """The feature matrix: numbers as they are, categories as declared ordinal codes (NaN = missing)."""
    columns, categorical = [], []
    for column in schema.columns:
        if column.name == target:
            continue
        if isinstance(column, CategoricalColumn):
            codes = enc.codes[column.name].astype(np.float64)
            codes[codes == len(column.categories)] = np.nan
            columns.append(codes)
            categorical.append(len(column.categories) <= _HGB_MAX_CATEGORIES)
        else:
            columns.append(enc.numbers[column.name])
            categorical.append(False)
    return np.column_stack(columns), categorical


def _tstr(synth: _Encoded, real: _Encoded, schema: TabularSchema, target: str, positive_label: str | None,
          what: str = "synthetic") -> ClassificationResult:
    column = _target_column(schema, target)
    missing = len(column.categories)

    def split(enc: _Encoded) -> tuple[np.ndarray, list[str]]:
        x, _ = _features(enc, schema, target)
        codes = enc.codes[target]
        keep = codes != missing  # rows without a target value cannot be scored
        return x[keep], [column.categories[c] for c in codes[keep]]

    x_train, y_train = split(synth)
    x_test, y_test = split(real)
    _, categorical = _features(synth, schema, target)

    def model() -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(categorical_features=np.asarray(categorical), random_state=0)

    return classification_scores(model, x_train, y_train, x_test, y_test, what=what,
                                 model=f"gradient-boosted trees, target {target!r}", positive_label=positive_label)


def tstr_tabular(
    synthetic: Any, test: Any, schema: TabularSchema, target: str, *, positive_label: str | None = None
) -> ClassificationResult:
    """Train gradient-boosted trees on ``synthetic`` to predict ``target``, score them on real ``test``.

    scikit-learn's HistGradientBoostingClassifier (fixed ``random_state``) on every other schema
    column: numbers as they are, categories as their index in the *declared* list (so a category
    the synthetic data lacks still encodes), missing values as NaN (the trees route them). Rows
    without a target value are dropped. Reports accuracy, macro F1 and, for a two-class target,
    the F1 of ``positive_label`` (default: the rarer class in the test set, e.g. ``>50K``).
    """
    return _tstr(_encode(synthetic, schema, bins=DEFAULT_BINS, what="synthetic table"),
                 _encode(test, schema, bins=DEFAULT_BINS, what="real test table"), schema, target, positive_label)


@dataclass(frozen=True)
class TabularEvaluation:
    """Every tabular metric of one synthetic table against a real test table.

    ``marginals_2way`` and ``correlation`` are None for a one-column schema, ``tstr`` without a
    target; ``ceiling`` is the same evaluation of the real training table, when given.
    """

    n_synthetic: int
    n_real: int
    marginals_1way: MarginalTVD
    marginals_2way: MarginalTVD | None = None
    correlation: CorrelationDifference | None = None
    tstr: ClassificationResult | None = None
    ceiling: TabularEvaluation | None = None

    @property
    def primary(self) -> ClassificationResult | None:
        """The headline downstream result (TSTR)."""
        return self.tstr

    def to_metrics(self, *, setting: str, shareable: bool, synthetic_shareable: bool | None = None) -> list[Metric]:
        """The metrics (then the ceiling's, never shareable). ``shareable``: the real test table is
        public; ``synthetic_shareable`` (default ``shareable``): the synthetic table may be published.
        Every metric here compares both tables, so it needs both."""
        _, both = sharing(shareable, synthetic_shareable)
        rows: list[Metric] = []
        for part in (self.tstr, self.marginals_1way, self.marginals_2way, self.correlation):
            if part is not None:
                rows += part.to_metrics(setting=setting, shareable=both)
        if self.ceiling is not None:
            rows += self.ceiling.to_metrics(setting=REAL_DATA_SETTING, shareable=False, synthetic_shareable=False)
        return rows


def evaluate_tabular(
    synthetic: Any,
    real_test: Any,
    schema: TabularSchema,
    *,
    target: str | None = None,
    real_train: Any | None = None,
    bins: int = DEFAULT_BINS,
    positive_label: str | None = None,
) -> TabularEvaluation:
    """Evaluate a synthetic table against a real test table (Datasets or pandas DataFrames).

    1- and 2-way marginal TVD and the correlation difference over the schema's columns, TSTR on
    ``target`` when given; with ``real_train``, the same evaluation of the real training table
    (the ceiling). Columns outside the schema (e.g. provenance columns) are ignored.
    """
    bins = _check_bins(bins)
    if target is not None:
        _target_column(schema, target)
    synth = _encode(synthetic, schema, bins=bins, what="synthetic table")
    real = _encode(real_test, schema, bins=bins, what="real test table")
    ceiling = None if real_train is None else _encode(real_train, schema, bins=bins, what="real training table")
    return _evaluate_encoded(synth, real, schema, target=target, positive_label=positive_label, ceiling=ceiling)


def _evaluate_encoded(
    synth: _Encoded, real: _Encoded, schema: TabularSchema, *, target: str | None, positive_label: str | None,
    ceiling: _Encoded | None, what: str = "synthetic",
) -> TabularEvaluation:
    several = len(schema) >= 2
    return TabularEvaluation(
        n_synthetic=synth.n,
        n_real=real.n,
        marginals_1way=_marginal_tvd(synth, real, schema, 1),
        marginals_2way=_marginal_tvd(synth, real, schema, 2) if several else None,
        correlation=_correlation_difference(synth, real, schema) if several else None,
        tstr=None if target is None else _tstr(synth, real, schema, target, positive_label, what),
        ceiling=None if ceiling is None else _evaluate_encoded(
            ceiling, real, schema, target=target, positive_label=positive_label, ceiling=None, what="real training"),
    )
