"""Tabular metrics (hf_dpsynth/evaluation/tabular.py) against hand-computed values and invariants:

* marginal TVD of small histograms counted by hand, binned on the schema's declared bounds (never
  on the data), missing values in their own bin;
* a 2-way TVD that sees what the 1-way one cannot (the same marginals, opposite joint);
* the correlation difference: Pearson's r of ±1 by construction, Cramér's V against scipy's;
* TSTR: separable rows score 1.0, shuffled labels score chance, categories unseen in training
  still encode; UCI Adult (when the shared data is there) beats the majority class;
* permuting each column independently keeps every 1-way marginal and destroys the 2-way ones;
* bad input: missing columns, undeclared values, a non-categorical target, one class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from scipy.stats.contingency import association

from hf_dpsynth.data import load_uci_adult
from hf_dpsynth.data.sources import adult_schema
from hf_dpsynth.data.tabular import (
    CategoricalColumn,
    FloatColumn,
    IntegerColumn,
    TabularSchema,
)
from hf_dpsynth.errors import DatasetError, SchemaError
from hf_dpsynth.evaluation.tabular import (
    correlation_difference,
    evaluate_tabular,
    marginal_tvd,
    tstr_tabular,
)
from hf_dpsynth.evaluation.text import OWNER_ONLY_NOTE, REAL_DATA_SETTING

ABC = TabularSchema([CategoricalColumn("c", ("a", "b", "c"), nullable=True)])


def _ds(**columns) -> Dataset:
    return Dataset.from_dict(columns)


# -- marginal TVD ----------------------------------------------------------------------------------


def test_one_way_tvd_of_two_three_bin_histograms():
    synth = _ds(c=["a", "a", "b", "c"])  # (1/2, 1/4, 1/4)
    real = _ds(c=["a", "b", "c", "c"])  # (1/4, 1/4, 1/2)
    # ½ (|1/2 − 1/4| + |1/4 − 1/4| + |1/4 − 1/2|) = ½ (1/4 + 0 + 1/4) = 1/4
    result = marginal_tvd(synth, real, ABC)
    assert result.mean == pytest.approx(0.25)
    assert result.per_item == pytest.approx({"c": 0.25})
    assert marginal_tvd(real, real, ABC).mean == 0.0
    assert marginal_tvd(_ds(c=["a"] * 4), _ds(c=["b"] * 4), ABC).mean == 1.0
    # a missing value has a bin of its own: (a, None) vs (a, a) → ½ (1/2 + 1/2) = 1/2
    assert marginal_tvd(_ds(c=["a", None]), _ds(c=["a", "a"]), ABC).mean == pytest.approx(0.5)


def test_numeric_bins_come_from_the_declared_bounds():
    schema = TabularSchema([IntegerColumn("x", 0, 99, nullable=True)])
    # 10 bins of width 9.9 over [0, 99]: 5 → bin 0, 15 → bin 1, 95 → bin 9, None → its own bin
    synth = _ds(x=[5, 15, 95, None])
    real = _ds(x=[5, 5, 5, 5])
    assert marginal_tvd(synth, real, schema).mean == pytest.approx(0.5 * (0.75 + 3 * 0.25))
    # 10 and 11 share bin 0 of the declared range, whatever the data's own range is
    assert marginal_tvd(_ds(x=[10, 10]), _ds(x=[11, 11]), schema).mean == 0.0
    assert marginal_tvd(_ds(x=[10, 10]), _ds(x=[11, 11]), schema, bins=99).mean == 1.0  # width 1
    # out-of-bounds values fall into the edge bins
    assert marginal_tvd(_ds(x=[-50, 500]), _ds(x=[0, 99]), schema).mean == 0.0


def test_small_integer_ranges_get_one_bin_per_value_and_floats_equal_width():
    schema = TabularSchema([IntegerColumn("n", 1, 3), FloatColumn("f", 0.0, 1.0)])
    synth = _ds(n=[1, 2, 3], f=[0.05, 0.55, 0.95])
    real = _ds(n=[1, 1, 1], f=[0.01, 0.51, 0.99])  # same three float bins (0, 5, 9)
    result = marginal_tvd(synth, real, schema)
    assert result.per_item["n"] == pytest.approx(2 / 3)
    assert result.per_item["f"] == 0.0
    assert result.mean == pytest.approx(1 / 3)


def test_two_way_tvd_sees_the_joint_that_one_way_misses():
    schema = TabularSchema([CategoricalColumn("x", ("p", "q")), CategoricalColumn("y", ("p", "q"))])
    synth = _ds(x=["p", "q"], y=["p", "q"])  # x == y
    real = _ds(x=["p", "q"], y=["q", "p"])  # x != y
    assert marginal_tvd(synth, real, schema, order=1).mean == 0.0
    two = marginal_tvd(synth, real, schema, order=2)
    assert two.mean == 1.0 and two.per_item == {"x × y": 1.0}
    with pytest.raises(SchemaError, match="at least 2 columns"):
        marginal_tvd(synth, real, ABC, order=2)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        marginal_tvd(synth, real, schema, order=3)


# -- correlation difference ------------------------------------------------------------------------


def test_correlation_difference_pearson_by_construction():
    schema = TabularSchema([FloatColumn("u", -10.0, 10.0), FloatColumn("v", -10.0, 10.0)])
    x = [-2.0, -1.0, 0.0, 1.0, 2.0]
    synth = _ds(u=x, v=[2 * t for t in x])  # r = +1
    real = _ds(u=x, v=[-t for t in x])  # r = −1
    result = correlation_difference(synth, real, schema)
    assert result.mean == pytest.approx(2.0)
    assert correlation_difference(real, real, schema).mean == 0.0
    constant = _ds(u=[1.0] * 5, v=x)  # undefined r counts as 0: |0 − (−1)| = 1
    assert correlation_difference(constant, real, schema).mean == pytest.approx(1.0)


def test_correlation_difference_uses_cramers_v_for_categories():
    schema = TabularSchema([CategoricalColumn("x", ("p", "q", "r")), CategoricalColumn("y", ("s", "t"))])
    rng = np.random.default_rng(0)
    xs = rng.choice(["p", "q", "r"], size=300)
    ys = np.where(rng.random(300) < 0.7, np.where(xs == "p", "s", "t"), rng.choice(["s", "t"], size=300))
    synth = _ds(x=list(xs), y=list(ys))
    independent = _ds(x=["p", "p", "q", "q", "r", "r"], y=["s", "t", "s", "t", "s", "t"])  # V = 0 exactly
    table = pd.crosstab(xs, ys).to_numpy()
    expected_v = association(table, method="cramer", correction=False)
    assert 0.3 < expected_v < 0.9
    assert correlation_difference(synth, independent, schema).mean == pytest.approx(expected_v)


# -- TSTR ------------------------------------------------------------------------------------------

TSTR_SCHEMA = TabularSchema([
    IntegerColumn("x", 0, 99),
    CategoricalColumn("colour", ("red", "green", "blue"), nullable=True),
    CategoricalColumn("label", ("no", "yes")),
])


def _separable(n: int, seed: int, colours=("red", "green")) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 100, size=n)
    return _ds(x=x.tolist(), colour=list(rng.choice(colours, size=n)), label=["yes" if v >= 50 else "no" for v in x])


def test_tstr_tabular_on_separable_rows_is_perfect_even_with_unseen_categories():
    # "blue" is declared but absent from the training rows: its declared code still encodes.
    result = tstr_tabular(_separable(200, 0), _separable(200, 1, colours=("blue", "red")), TSTR_SCHEMA, "label")
    assert result.accuracy == 1.0 and result.macro_f1 == 1.0
    assert result.positive_label in ("no", "yes") and result.positive_f1 == 1.0
    assert (result.n_train, result.n_test) == (200, 200)


def test_tstr_tabular_with_shuffled_labels_is_at_chance():
    train = _separable(400, 2)
    train = train.add_column("shuffled", list(np.random.default_rng(3).permutation(train["label"])))
    train = train.remove_columns("label").rename_column("shuffled", "label")
    result = tstr_tabular(train, _separable(1000, 4), TSTR_SCHEMA, "label")
    assert abs(result.accuracy - 0.5) < 0.08


def test_tstr_tabular_accepts_pandas_and_drops_rows_without_a_target():
    schema = TabularSchema([IntegerColumn("x", 0, 99), CategoricalColumn("label", ("no", "yes"), nullable=True)])
    frame = _separable(100, 5).remove_columns("colour").to_pandas()
    test = frame.copy()
    test.loc[:9, "label"] = None
    result = tstr_tabular(frame, test, schema, "label")
    assert result.n_test == 90 and result.accuracy == 1.0


def test_tstr_tabular_bad_input():
    data = _separable(50, 0)
    with pytest.raises(DatasetError, match=r"only the class 'no'.*at least 2 classes"):
        tstr_tabular(data.filter(lambda r: r["label"] == "no"), data, TSTR_SCHEMA, "label")
    with pytest.raises(SchemaError, match="categorical target"):
        tstr_tabular(data, data, TSTR_SCHEMA, "x")
    with pytest.raises(SchemaError, match="not a schema column"):
        tstr_tabular(data, data, TSTR_SCHEMA, "income")
    with pytest.raises(SchemaError, match=r"synthetic table has no column 'colour'"):
        tstr_tabular(data.remove_columns("colour"), data, TSTR_SCHEMA, "label")
    with pytest.raises(DatasetError, match="synthetic table is empty"):
        tstr_tabular(data.select([]), data, TSTR_SCHEMA, "label")


def test_undeclared_values_and_wrong_types_are_schema_errors():
    with pytest.raises(SchemaError, match=r"the synthetic table: Column 'c', row 1: a value is not in the declared"):
        marginal_tvd(_ds(c=["a", "purple"]), _ds(c=["a", "b"]), ABC)
    schema = TabularSchema([IntegerColumn("x", 0, 9)])
    with pytest.raises(SchemaError, match="non-numeric"):
        marginal_tvd(_ds(x=["five"]), _ds(x=[5]), schema)


# -- evaluate_tabular ------------------------------------------------------------------------------


def test_evaluate_tabular_combines_everything_and_marks_sharing():
    synth, real = _separable(120, 0), _separable(120, 1)
    result = evaluate_tabular(synth, real, TSTR_SCHEMA, target="label", real_train=_separable(120, 2))
    assert result.tstr.accuracy == 1.0
    assert result.marginals_1way.mean == pytest.approx(marginal_tvd(synth, real, TSTR_SCHEMA).mean)
    assert result.marginals_2way.mean == pytest.approx(marginal_tvd(synth, real, TSTR_SCHEMA, order=2).mean)
    assert result.correlation.mean == pytest.approx(correlation_difference(synth, real, TSTR_SCHEMA).mean)
    assert result.ceiling.tstr.accuracy == 1.0 and result.ceiling.ceiling is None

    private = result.to_metrics(setting="ε = 2", shareable=False, synthetic_shareable=True)
    names = {m.name for m in private if m.setting == "ε = 2"}
    assert {"1-way marginal TVD (mean over 3 columns)", "2-way marginal TVD (mean over 3 column pairs)",
            "TSTR accuracy (gradient-boosted trees, target 'label')"} <= names
    assert all(not m.shareable and m.note == OWNER_ONLY_NOTE for m in private)  # all read the real table
    public = result.to_metrics(setting="ε = 2", shareable=True, synthetic_shareable=True)
    assert all(m.shareable for m in public if m.setting == "ε = 2")
    assert not any(m.shareable for m in public if m.setting == REAL_DATA_SETTING)
    assert evaluate_tabular(synth, real, TSTR_SCHEMA).tstr is None  # no target, no TSTR


# -- UCI Adult -------------------------------------------------------------------------------------


def test_uci_adult_tstr_and_fidelity(shared_data):
    columns = ("age", "workclass", "education", "marital-status", "occupation", "relationship", "sex",
               "capital-gain", "hours-per-week", "income")
    schema = adult_schema(columns)
    train = load_uci_adult(shared_data / "uci-adult", "train").select_columns(list(columns)).select(range(4000))
    test = load_uci_adult(shared_data / "uci-adult", "test").select_columns(list(columns)).select(range(3000))
    result = evaluate_tabular(train, test, schema, target="income")
    majority = test["income"].count("<=50K") / test.num_rows  # ≈ 0.76
    assert result.tstr.positive_label == ">50K"
    assert result.tstr.accuracy > majority + 0.05 and result.tstr.positive_f1 > 0.5
    assert result.marginals_1way.mean < 0.05  # two samples of one population

    # Permuting each column on its own keeps every 1-way marginal (so the 1-way TVD is the same)
    # and breaks the dependence between columns (so the 2-way TVD and correlation difference grow).
    rng = np.random.default_rng(0)
    frame = train.to_pandas()
    shuffled = pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))] for c in columns})
    broken = evaluate_tabular(shuffled, test, schema, target="income")
    assert broken.marginals_1way.mean == pytest.approx(result.marginals_1way.mean)
    assert broken.marginals_2way.mean > result.marginals_2way.mean + 0.05
    assert broken.correlation.mean > result.correlation.mean + 0.05
    assert broken.tstr.accuracy < result.tstr.accuracy
