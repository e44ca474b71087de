"""DP histograms (hf_dpsynth/data/statistics.py) against independent oracles (docs/ALGORITHMS.md §2).

* the noise: noisy counts minus true counts computed here from scratch (collections.Counter and the
  per-user rules re-implemented below) have the std σ × Δ, checked with chi-square bounds that a
  factor √2 (or missing noise) cannot pass;
* the accounting: the ledger's charge is ``GaussianDpEvent(σ)`` and its ε is dp-accounting's own;
* the sensitivity: one unit (example or whole user) moves the pre-noise vector by at most Δ in L2,
  with equality reached, on hypothesis-generated neighbouring datasets;
* contribution capping, calibration against a planned share, bad input, post-processing.
"""

from __future__ import annotations

import collections
import json
import math

import dp_accounting
import numpy as np
import pytest
from datasets import Dataset
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import stats

from hf_dpsynth.data.statistics import (
    DPHistogram,
    DPHistogramRelease,
    bin_indices,
    _pre_noise_vector,
    dp_category_histograms,
    dp_histograms,
    dp_label_histogram,
    histogram_sensitivity,
)
from hf_dpsynth.data.tabular import CategoricalColumn, IntegerColumn, TabularSchema
from hf_dpsynth.data.units import bound_contributions, cap_user_rows
from hf_dpsynth.errors import (
    DatasetError,
    InvalidPrivacyParameterError,
    PrivacyBudgetExceededError,
    PrivacyUnitMismatchError,
    SchemaError,
)
from hf_dpsynth.privacy.ledger import PrivacyLedger

DELTA = 1e-6
MISSING = "missing"  # the bin of a nullable column's missing values (docs/ALGORITHMS.md §2)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
USER_MODES = ("records", "once_per_bin", "vote")


def _ledger(*, unit: str = "example", epsilon: float = 200.0, accountant: str = "rdp", **kw) -> PrivacyLedger:
    return PrivacyLedger(epsilon=epsilon, delta=DELTA, privacy_unit=unit, accountant=accountant, **kw)


def _cats(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Independent oracles
# ------------------------------------------------------------------------------------------------


def _label(value) -> str:
    """How a raw value names its bin: None → "missing", integers → their decimal string."""
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _oracle_counts(data, categories, *, contribution=None, cap=None, user_column=None):
    """The true (pre-noise) histogram of every column, computed from scratch.

    Example level (``user_column`` None): a Counter per column. User level: each user's rows;
    when a user has more than ``cap`` rows (records / once_per_bin) the data used here gives every
    such user identical rows, so *which* rows the cap keeps cannot change the counts: the user
    contributes min(rows, cap) copies of that row. once_per_bin: 1 per distinct value per column;
    vote: the user's per-column count vector scaled to L2 norm 1 (no cap).
    """
    out = {name: collections.Counter() for name in categories}
    if user_column is None:
        for name in categories:
            out[name].update(_label(v) for v in data[name])
    else:
        rows_of = collections.defaultdict(list)
        for row, user in enumerate(data[user_column]):
            rows_of[user].append(row)
        for rows in rows_of.values():
            if contribution != "vote" and len(rows) > cap:
                distinct = {tuple(data[name][r] for name in categories) for r in rows}
                assert len(distinct) == 1, "oracle precondition: over-cap users repeat one row"
                rows = rows[:cap]
            for name in categories:
                counts = collections.Counter(_label(data[name][r]) for r in rows)
                if contribution == "once_per_bin":
                    counts = collections.Counter({k: 1 for k in counts})
                elif contribution == "vote":
                    norm = math.sqrt(sum(c * c for c in counts.values()))
                    counts = collections.Counter({k: c / norm for k, c in counts.items()})
                out[name].update(counts)
    return {name: np.array([out[name][c] for c in cats], dtype=float) for name, cats in categories.items()}


def _expected_sensitivity(num_bins, *, unit, contribution="records", cap=None) -> float:
    """docs/ALGORITHMS.md §2: per column 1 (example), cap, √min(cap, bins) or 1 (vote); L2 over columns."""
    if unit == "example":
        per_column = [1.0 for _ in num_bins]
    elif contribution == "records":
        per_column = [float(cap) for _ in num_bins]
    elif contribution == "once_per_bin":
        per_column = [math.sqrt(min(cap, b)) for b in num_bins]
    else:
        per_column = [1.0 for _ in num_bins]
    return math.sqrt(sum(x * x for x in per_column))


def _assert_gaussian_std(residuals, expected_std: float) -> None:
    """Residuals are i.i.d. N(0, expected_std²): Σr²/s² ~ χ²_n, two-sided at p = 1e-6 each side.

    The bounds are checked to exclude n/2 and 2n first, so noise off by a factor √2 either way
    (or no noise at all) fails. Seeds are fixed, so the outcome is deterministic.
    """
    r = np.asarray(residuals, dtype=float)
    n = r.size
    lo, hi = stats.chi2.ppf(1e-6, n), stats.chi2.isf(1e-6, n)
    assert lo > 0.7 * n and hi < 1.4 * n, (n, lo, hi)  # the test has power against √2
    statistic = float(np.sum(r * r)) / expected_std**2
    assert lo <= statistic <= hi, (
        f"empirical std {math.sqrt(np.mean(r * r)):.4g} vs expected {expected_std:.4g} (n = {n})"
    )
    assert abs(r.mean()) <= 5 * expected_std / math.sqrt(n)  # unbiased: true counts are right


def _user_data(rng, columns, *, num_users, max_rows, cap, capped=True, user_column="user"):
    """Random users (ids interleaved across rows); over-cap users repeat one row when ``capped``."""
    data = {name: [] for name in columns}
    users = []
    for u in range(num_users):
        n = int(rng.integers(1, max_rows + 1))
        repeat = capped and n > cap
        fixed = {name: cats[int(rng.integers(len(cats)))] for name, cats in columns.items()}
        for _ in range(n):
            for name, cats in columns.items():
                data[name].append(fixed[name] if repeat else cats[int(rng.integers(len(cats)))])
            users.append(f"user-{u}")
    order = rng.permutation(len(users))
    out = {name: [values[i] for i in order] for name, values in data.items()}
    out[user_column] = [users[i] for i in order]
    return out


# ------------------------------------------------------------------------------------------------
# 1. Noise std = σ × Δ, against counts computed here
# ------------------------------------------------------------------------------------------------

SIGMA = 0.8


def test_example_level_noise_std_matches_sigma_times_sensitivity():
    rng = np.random.default_rng(11)
    cats = _cats("c", 2000)
    labels = [cats[i] for i in rng.integers(0, len(cats), size=5000)]
    data = {"label": labels}
    hist = dp_label_histogram(
        Dataset.from_dict(data), label_column="label", labels=cats, ledger=_ledger(),
        noise_multiplier=SIGMA, seed=1,
    )
    truth = _oracle_counts(data, {"label": cats})["label"]
    assert hist.categories == tuple(cats)
    _assert_gaussian_std(np.asarray(hist.noisy_counts) - truth, SIGMA * 1.0)


@pytest.mark.parametrize("contribution", USER_MODES)
def test_user_level_noise_std_matches_sigma_times_sensitivity(contribution):
    rng = np.random.default_rng({"records": 1, "once_per_bin": 2, "vote": 3}[contribution])
    cap = 3
    cats = _cats("c", 2000)
    data = _user_data(rng, {"label": cats}, num_users=1500, max_rows=7, cap=cap, capped=contribution != "vote")
    ledger = _ledger(unit="user")
    release = dp_histograms(
        Dataset.from_dict(data), {"label": cats}, ledger=ledger, stage="label_histogram",
        noise_multiplier=SIGMA, user_id_column="user", max_examples_per_user=cap,
        contribution=contribution, seed=5,
    )
    delta_l2 = _expected_sensitivity([2000], unit="user", contribution=contribution, cap=cap)
    assert delta_l2 == pytest.approx({"records": 3.0, "once_per_bin": math.sqrt(3), "vote": 1.0}[contribution])
    assert release.sensitivity == pytest.approx(delta_l2)
    assert release.noise_std == pytest.approx(SIGMA * delta_l2)
    assert release.num_units == 1500 and ledger.num_units == 1500
    truth = _oracle_counts(data, {"label": cats}, contribution=contribution, cap=cap, user_column="user")["label"]
    _assert_gaussian_std(np.asarray(release["label"].noisy_counts) - truth, SIGMA * delta_l2)


MULTI_SCHEMA = TabularSchema(
    [
        CategoricalColumn("colour", tuple(_cats("k", 1200))),
        IntegerColumn("age", 0, 120),  # not categorical: never released
        CategoricalColumn("shape", tuple(_cats("s", 800)), nullable=True),
        CategoricalColumn("size", ("S", "M", "L", "XL", "XXL")),
    ]
)
MULTI_CATS = {
    "colour": _cats("k", 1200),
    "shape": _cats("s", 800) + [MISSING],
    "size": ["S", "M", "L", "XL", "XXL"],
}


def _multi_data(rng, *, unit, contribution, cap):
    pools = {**MULTI_CATS, "shape": _cats("s", 800) + [None]}  # None lands in the "missing" bin
    if unit == "example":
        data = {name: [pool[i] for i in rng.integers(0, len(pool), size=3000)] for name, pool in pools.items()}
    else:
        data = _user_data(rng, pools, num_users=1200, max_rows=6, cap=cap, capped=contribution != "vote")
    data["age"] = [int(a) for a in rng.integers(0, 121, size=len(data["colour"]))]
    return data


# The [example-...] case exposes a bug:
# Regression guard: example-level counts of several columns were once added to the whole concatenated
# vector instead of each column's own slice (one example then moved it by 2√2 > Δ = √2). Fixed.
@pytest.mark.parametrize("unit,contribution", [("example", "records")] + [("user", m) for m in USER_MODES])
def test_multi_column_noise_std_composes_sensitivity_in_l2(unit, contribution):
    cap = 4
    rng = np.random.default_rng(17)
    data = _multi_data(rng, unit=unit, contribution=contribution, cap=cap)
    user_kw = {} if unit == "example" else {"user_id_column": "user", "max_examples_per_user": cap, "contribution": contribution}
    ledger = _ledger(unit=unit)
    release = dp_category_histograms(
        Dataset.from_dict(data), MULTI_SCHEMA, ledger=ledger, noise_multiplier=SIGMA, seed=23, **user_kw
    )
    assert set(release.histograms) == {"colour", "shape", "size"}
    assert release["shape"].categories == tuple(MULTI_CATS["shape"])
    num_bins = [len(c) for c in MULTI_CATS.values()]  # 1200, 801, 5
    delta_l2 = _expected_sensitivity(num_bins, unit=unit, contribution=contribution, cap=cap)
    # hand-checked values: √3; 4√3; √(4 + 4 + 4) (every column has ≥ 4 bins); √3
    assert delta_l2 == pytest.approx(
        {"example": math.sqrt(3), "records": 4 * math.sqrt(3), "once_per_bin": math.sqrt(12), "vote": math.sqrt(3)}[
            contribution if unit == "user" else "example"
        ]
    )
    assert release.sensitivity == pytest.approx(delta_l2)
    truth = _oracle_counts(
        data, MULTI_CATS, contribution=contribution, cap=cap, user_column=None if unit == "example" else "user"
    )
    residuals = np.concatenate([np.asarray(release[c].noisy_counts) - truth[c] for c in MULTI_CATS])
    _assert_gaussian_std(residuals, SIGMA * delta_l2)
    # one Gaussian for all columns together
    assert len(ledger.charges) == 1
    assert ledger.charges[0].event == dp_accounting.GaussianDpEvent(SIGMA)


# The [example-...] case exposes a bug:
# Regression guard: example-level counts of several columns were once added to the whole concatenated
# vector instead of each column's own slice (one example then moved it by 2√2 > Δ = √2). Fixed.
@pytest.mark.parametrize("unit,contribution", [("example", "records")] + [("user", m) for m in USER_MODES])
def test_without_noise_the_counts_are_exactly_the_oracle(unit, contribution):
    """σ = 0 on a DP-disabled ledger (ε = inf) releases the pre-noise vector itself."""
    cap = 2
    rng = np.random.default_rng(29)
    small = {"colour": MULTI_CATS["colour"][:6], "shape": _cats("s", 4) + [None], "size": MULTI_CATS["size"]}
    if unit == "example":
        data = {name: [pool[i] for i in rng.integers(0, len(pool), size=60)] for name, pool in small.items()}
    else:
        data = _user_data(rng, small, num_users=25, max_rows=5, cap=cap, capped=contribution != "vote")
    schema = TabularSchema(
        [CategoricalColumn("colour", tuple(small["colour"])), CategoricalColumn("shape", tuple(_cats("s", 4)), nullable=True),
         CategoricalColumn("size", tuple(small["size"]))]
    )
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, privacy_unit=unit, accountant="rdp")
    user_kw = {} if unit == "example" else {"user_id_column": "user", "max_examples_per_user": cap, "contribution": contribution}
    release = dp_category_histograms(Dataset.from_dict(data), schema, ledger=ledger, noise_multiplier=0.0, **user_kw)
    cats = {"colour": small["colour"], "shape": _cats("s", 4) + [MISSING], "size": small["size"]}
    truth = _oracle_counts(data, cats, contribution=contribution, cap=cap, user_column=None if unit == "example" else "user")
    for name in cats:
        np.testing.assert_allclose(release[name].noisy_counts, truth[name], rtol=0, atol=1e-12)
    assert not ledger.report().private  # σ = 0 is labelled non-private


# ------------------------------------------------------------------------------------------------
# 2. The charge: GaussianDpEvent(σ), ε = dp-accounting's, metadata in the report, no counts
# ------------------------------------------------------------------------------------------------


def _numeric_leaves(value):
    """Every number in a JSON-like value (timestamps and other strings are skipped)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numeric_leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numeric_leaves(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_charge_holds_gaussian_event_and_rdp_epsilon_equals_dp_accounting():
    labels = ["pos"] * 137 + ["neg"] * 4242 + ["neu"] * 59
    data = Dataset.from_dict({"label": labels})
    ledger = _ledger(epsilon=30.0)
    hist = dp_label_histogram(data, label_column="label", labels=["pos", "neg", "neu"], ledger=ledger, noise_multiplier=1.3)
    (charge,) = ledger.charges
    assert charge.stage == "label_histogram"
    assert isinstance(charge.event, dp_accounting.GaussianDpEvent)
    assert charge.event.noise_multiplier == 1.3
    direct = RdpAccountant()
    direct.compose(dp_accounting.GaussianDpEvent(1.3))
    expected = direct.get_epsilon(DELTA)
    assert ledger.epsilon_spent() == pytest.approx(expected, rel=1e-12)
    assert ledger.epsilon_spent("label_histogram") == pytest.approx(expected, rel=1e-12)

    # a second release composes: ε of both Gaussians, as dp-accounting composes them
    schema = TabularSchema([CategoricalColumn("label", ("pos", "neg", "neu"))])
    dp_category_histograms(data, schema, ledger=ledger, noise_multiplier=2.0)
    both = RdpAccountant()
    both.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(1.3), dp_accounting.GaussianDpEvent(2.0)]))
    assert ledger.epsilon_spent() == pytest.approx(both.get_epsilon(DELTA), rel=1e-12)
    only_second = RdpAccountant()
    only_second.compose(dp_accounting.GaussianDpEvent(2.0))
    assert ledger.epsilon_spent("category_histograms") == pytest.approx(only_second.get_epsilon(DELTA), rel=1e-12)

    report = ledger.report()
    stages = {s.name: s for s in report.stages}
    assert stages["label_histogram"].charges == (
        {
            "mechanism": "gaussian_histogram",
            "columns": ["label"],
            "num_bins": [3],
            "noise_multiplier": 1.3,
            "l2_sensitivity": 1.0,
            "contribution": "records",
            "max_examples_per_user": None,
        },
    )
    assert stages["category_histograms"].charges[0]["noise_multiplier"] == 2.0
    # the true counts (137, 4242, 59) and the released vector never reach the ledger or its report
    numbers = set(_numeric_leaves(report.to_dict())) | set(_numeric_leaves(ledger.to_dict()))
    assert not numbers & {137, 4242, 59, *hist.noisy_counts}
    assert numbers >= {1.3, 2.0, 3, 1.0}  # the public parameters are there (σ, bins, Δ)


def test_user_level_report_metadata_and_pld_epsilon_equals_dp_accounting():
    """The PLD accountant on purpose (two PLD calls, ~1 s each)."""
    data = Dataset.from_dict({"label": ["a", "b", "a", "c", "a", "b"], "uid": [7, 7, 7, 8, 9, 9]})
    ledger = _ledger(unit="user", epsilon=30.0, accountant="pld")
    release = dp_histograms(
        data, {"label": ["a", "b", "c"]}, ledger=ledger, stage="label_histogram", noise_multiplier=1.7,
        user_id_column="uid", max_examples_per_user=2, contribution="once_per_bin",
    )
    direct = PLDAccountant()
    direct.compose(dp_accounting.GaussianDpEvent(1.7))
    assert ledger.epsilon_spent() == pytest.approx(direct.get_epsilon(DELTA), rel=1e-9)
    assert ledger.charges[0].event == dp_accounting.GaussianDpEvent(1.7)
    (stage,) = ledger.report().stages
    assert stage.charges == (
        {
            "mechanism": "gaussian_histogram",
            "columns": ["label"],
            "num_bins": [3],
            "noise_multiplier": 1.7,
            "l2_sensitivity": pytest.approx(math.sqrt(2)),
            "contribution": "once_per_bin",
            "max_examples_per_user": 2,
        },
    )
    assert release.num_units == 3 and ledger.report().num_units == 3
    assert (release.privacy_unit, release.contribution, release.max_examples_per_user) == ("user", "once_per_bin", 2)


# ------------------------------------------------------------------------------------------------
# 3. One unit moves the pre-noise vector by at most Δ (L2), with equality reachable
# ------------------------------------------------------------------------------------------------


def _pre_noise(rows, categories, *, mode, cap, nullable):
    """The module's pre-noise vector of ``rows`` = [(user, (value per column, ...)), ...]."""
    bins = [
        bin_indices([values[j] for _, values in rows], cats, f"col{j}", nullable[j])
        for j, cats in enumerate(categories)
    ]
    sizes = [len(c) for c in categories]
    unit = "example" if mode == "example" else "user"
    return _pre_noise_vector(
        bins, sizes, user_ids=None if unit == "example" else [u for u, _ in rows], privacy_unit=unit,
        contribution="records" if unit == "example" else mode, max_examples_per_user=None if unit == "example" else cap,
    )


def _sensitivity(categories, *, mode, cap):
    unit = "example" if mode == "example" else "user"
    return histogram_sensitivity(
        [len(c) for c in categories], privacy_unit=unit,
        contribution="records" if unit == "example" else mode, max_examples_per_user=None if unit == "example" else cap,
    )


@st.composite
def _neighbours(draw):
    mode = draw(st.sampled_from(["example", *USER_MODES]))
    num_columns = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 5)) for _ in range(num_columns)]
    nullable = [draw(st.booleans()) for _ in range(num_columns)]
    categories = [tuple(_cats(f"v{j}_", n)) + ((MISSING,) if nullable[j] else ()) for j, n in enumerate(sizes)]
    cap = draw(st.integers(1, 4))

    def row(user):
        values = tuple(
            draw(st.sampled_from([*_cats(f"v{j}_", sizes[j]), *([None] if nullable[j] else [])]))
            for j in range(num_columns)
        )
        return (user, values)

    base = [row(draw(st.integers(0, 4))) for _ in range(draw(st.integers(0, 12)))]
    # the added unit: one example, or one whole user with any number of rows (beyond the cap,
    # duplicates allowed: rows are drawn from few values)
    count = 1 if mode == "example" else draw(st.integers(1, cap + 5))
    added = [row("new-user") for _ in range(count)]
    if draw(st.booleans()) and count > 1:
        added = [added[0]] * count  # all duplicates
    positions = sorted(draw(st.lists(st.integers(0, len(base)), min_size=count, max_size=count)))
    neighbour = list(base)
    for shift, (pos, r) in enumerate(zip(positions, added)):
        neighbour.insert(pos + shift, r)
    return mode, categories, nullable, cap, base, neighbour, added


# The [example-...] case exposes a bug:
# Regression guard: example-level counts of several columns were once added to the whole concatenated
# vector instead of each column's own slice (one example then moved it by 2√2 > Δ = √2). Fixed.
@PROPERTY
@given(_neighbours())
@example(  # one example, two one-bin columns: Δ = √2 (the bug above gives 2√2)
    ("example", [("v0_0",), ("v1_0",)], [False, False], 1, [], [("n", ("v0_0", "v1_0"))], [("n", ("v0_0", "v1_0"))])
)
@example(  # a user with twice the cap in duplicate rows, among other users
    ("records", [("v0_0", "v0_1")], [False], 2, [(0, ("v0_0",)), (1, ("v0_1",))],
     [(0, ("v0_0",)), *[("n", ("v0_1",))] * 4, (1, ("v0_1",))], [("n", ("v0_1",))] * 4)
)
def test_one_unit_moves_pre_noise_vector_by_at_most_sensitivity(case):
    mode, categories, nullable, cap, base, neighbour, added = case
    before = _pre_noise(base, categories, mode=mode, cap=cap, nullable=nullable)
    after = _pre_noise(neighbour, categories, mode=mode, cap=cap, nullable=nullable)
    bound = _sensitivity(categories, mode=mode, cap=cap)
    assert bound == pytest.approx(
        _expected_sensitivity([len(c) for c in categories], unit="example" if mode == "example" else "user",
                              contribution=mode, cap=cap)
    )
    assert np.linalg.norm(after - before) <= bound + 1e-9
    # nothing but the added unit's own contribution changes: other users keep the same rows
    alone = _pre_noise(added, categories, mode=mode, cap=cap, nullable=nullable)
    np.testing.assert_allclose(after - before, alone, rtol=0, atol=1e-9)


EQUALITY_CATEGORIES = {1: [tuple(_cats("a", 4))], 3: [tuple(_cats("a", 4)), tuple(_cats("b", 2)), tuple(_cats("c", 6))]}


# The [example-...] case exposes a bug:
# Regression guard: example-level counts of several columns were once added to the whole concatenated
# vector instead of each column's own slice (one example then moved it by 2√2 > Δ = √2). Fixed.
@pytest.mark.parametrize("num_columns", [1, 3])
@pytest.mark.parametrize("mode", ["example", *USER_MODES])
def test_sensitivity_is_reached(mode, num_columns):
    categories = EQUALITY_CATEGORIES[num_columns]
    cap = 3
    k = len(categories)
    base = [("u1", tuple(c[0] for c in categories)), ("u2", tuple(c[-1] for c in categories))]
    if mode == "example":
        added = [("x", tuple(c[1 % len(c)] for c in categories))]
        expected = math.sqrt(k)
    elif mode == "records":  # all rows in one bin per column, more rows than the cap
        added = [("new", tuple(c[1 % len(c)] for c in categories))] * (cap + 2)
        expected = cap * math.sqrt(k)
    elif mode == "once_per_bin":  # cap rows, in min(cap, bins) distinct bins of every column
        added = [("new", tuple(c[i % len(c)] for c in categories)) for i in range(cap)]
        expected = math.sqrt(sum(min(cap, len(c)) for c in categories))  # √3 or √(3 + 2 + 3)
    else:  # vote: any user's vector has norm 1 per column
        added = [("new", tuple(c[i % len(c)] for c in categories)) for i in range(5)]
        expected = math.sqrt(k)
    nullable = [False] * k
    before = _pre_noise(base, categories, mode=mode, cap=cap, nullable=nullable)
    after = _pre_noise(base + added, categories, mode=mode, cap=cap, nullable=nullable)
    distance = float(np.linalg.norm(after - before))
    assert distance == pytest.approx(expected, rel=1e-12)
    assert distance == pytest.approx(_sensitivity(categories, mode=mode, cap=cap), rel=1e-12)


# The regression test for the bug above, at its smallest.
# Regression guard: example-level counts of several columns were once added to the whole concatenated
# vector instead of each column's own slice (one example then moved it by 2√2 > Δ = √2). Fixed.
def test_example_level_multi_column_counts_each_column_in_its_own_bins():
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    one_bin = dp_histograms(
        Dataset.from_dict({"a": ["x"] * 3, "b": ["y"] * 3}), {"a": ["x"], "b": ["y"]}, ledger=ledger,
        stage="category_histograms", noise_multiplier=0.0,
    )
    assert (one_bin["a"].noisy_counts, one_bin["b"].noisy_counts) == ((3.0,), (3.0,))  # got (6.0,), (6.0,)
    data = {"a": ["x", "x", "z"], "b": ["p", "q", "r"]}
    release = dp_histograms(
        Dataset.from_dict(data), {"a": ["x", "z"], "b": ["p", "q", "r"]}, ledger=ledger,
        stage="category_histograms", noise_multiplier=0.0,
    )  # raises ValueError (shapes (5,) (2,))
    assert release["a"].noisy_counts == (2.0, 1.0) and release["b"].noisy_counts == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "num_bins,unit,contribution,cap,expected",
    [
        ([7], "example", "records", None, 1.0),
        ([7, 2, 3], "example", "records", None, math.sqrt(3)),
        ([7], "user", "records", 5, 5.0),
        ([7, 2], "user", "records", 5, 5 * math.sqrt(2)),
        ([7, 2], "user", "once_per_bin", 5, math.sqrt(5 + 2)),
        ([1], "user", "once_per_bin", 5, 1.0),
        ([7, 2, 3], "user", "vote", None, math.sqrt(3)),
        ([7, 2, 3], "user", "vote", 4, math.sqrt(3)),
    ],
)
def test_histogram_sensitivity_values(num_bins, unit, contribution, cap, expected):
    got = histogram_sensitivity(num_bins, privacy_unit=unit, contribution=contribution, max_examples_per_user=cap)
    assert got == pytest.approx(expected, rel=1e-12)


def test_histogram_sensitivity_refuses_bad_parameters():
    with pytest.raises(InvalidPrivacyParameterError):
        histogram_sensitivity([3], privacy_unit="user", contribution="per_row", max_examples_per_user=2)
    with pytest.raises(InvalidPrivacyParameterError):
        histogram_sensitivity([], privacy_unit="example")
    with pytest.raises(InvalidPrivacyParameterError):
        histogram_sensitivity([3, 0], privacy_unit="example")
    with pytest.raises(DatasetError):  # user level needs the cap it is computed from
        histogram_sensitivity([3], privacy_unit="user", contribution="records", max_examples_per_user=None)


# ------------------------------------------------------------------------------------------------
# 4. The cap: at most k records per user, chosen from the user's own rows only
# ------------------------------------------------------------------------------------------------


@PROPERTY
@given(
    values=st.lists(st.sampled_from(["p", "q", "r", "s"]), min_size=1, max_size=15),
    cap=st.integers(1, 6),
    mode=st.sampled_from(["records", "once_per_bin"]),
)
def test_capped_user_contributes_at_most_cap(values, cap, mode):
    categories = [("p", "q", "r", "s"), ("p", "q", "r", "s")]
    rows = [("u", (v, values[(i + 1) % len(values)])) for i, v in enumerate(values)]
    vector = _pre_noise(rows, categories, mode=mode, cap=cap, nullable=[False, False])
    per_column = [vector[:4].sum(), vector[4:].sum()]
    kept = cap_user_rows("u", list(range(len(rows))), cap)
    for j, mass in enumerate(per_column):
        assert mass <= cap
        if mode == "records":
            assert mass == min(len(values), cap)
        else:  # distinct values among the kept rows, each once
            assert mass == len({rows[r][1][j] for r in kept})


@PROPERTY
@given(
    num_rows=st.integers(1, 20),
    cap=st.integers(1, 6),
    others=st.lists(st.tuples(st.sampled_from(["a", "b", 3, 4]), st.integers(0, 40)), max_size=30),
)
def test_cap_is_deterministic_and_independent_of_other_users(num_rows, cap, others):
    user = "target"
    own = cap_user_rows(user, list(range(num_rows)), cap)
    assert own == cap_user_rows(user, list(range(num_rows)), cap)  # deterministic
    assert len(own) == min(num_rows, cap) and own == sorted(set(own)) and set(own) <= set(range(num_rows))
    # the same choice for any row numbering: it depends on the user's own rows only
    shifted = cap_user_rows(user, [100 + 3 * r for r in range(num_rows)], cap)
    assert shifted == [100 + 3 * r for r in own]

    # inside a dataset, with other users' rows interleaved anywhere
    ids = [user] * num_rows
    for other, position in others:
        ids.insert(min(position, len(ids)), other)
    bounded = bound_contributions(len(ids), privacy_unit="user", user_ids=ids, max_examples_per_user=cap)
    target_rows = [r for r, u in enumerate(ids) if u == user]
    kept_nth = [target_rows.index(r) for r in bounded.rows if ids[r] == user]
    assert kept_nth == own
    alone = bound_contributions(num_rows, privacy_unit="user", user_ids=[user] * num_rows, max_examples_per_user=cap)
    assert alone.rows == own
    assert bounded.capped_removed == sum(max(0, n - cap) for n in collections.Counter(ids).values())


def test_dp_histograms_caps_a_heavy_user_at_k_records():
    """Through the public API: 50 rows of one user count as 3 (records) or 1 (once_per_bin)."""
    data = Dataset.from_dict({"label": ["x"] * 50 + ["y", "x"], "user": ["heavy"] * 50 + ["a", "b"]})
    for contribution, expected in (("records", [4.0, 1.0]), ("once_per_bin", [2.0, 1.0]), ("vote", [2.0, 1.0])):
        ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, privacy_unit="user", accountant="rdp")
        hist = dp_label_histogram(
            data, label_column="label", labels=["x", "y"], ledger=ledger, noise_multiplier=0.0,
            user_id_column="user", max_examples_per_user=3, contribution=contribution,
        )
        assert list(hist.noisy_counts) == expected, contribution


# ------------------------------------------------------------------------------------------------
# 5. Calibration to the planned share; refusals leave the ledger unchanged
# ------------------------------------------------------------------------------------------------


def test_calibration_fits_the_planned_share_and_nearly_uses_it():
    epsilon = 4.0
    ledger = _ledger(epsilon=epsilon)
    ledger.plan({"label_histogram": 0.2, "training": 0.8})
    data = Dataset.from_dict({"label": ["a", "b", "b", "c"] * 10})
    release = dp_histograms(data, {"label": ["a", "b", "c"]}, ledger=ledger, stage="label_histogram", seed=0)
    spent = ledger.epsilon_spent("label_histogram")
    assert spent <= 0.2 * epsilon * (1 + 1e-9)
    assert spent >= 0.97 * 0.2 * epsilon
    (charge,) = ledger.charges
    assert charge.event == dp_accounting.GaussianDpEvent(release.noise_multiplier)
    direct = RdpAccountant()
    direct.compose(dp_accounting.GaussianDpEvent(release.noise_multiplier))
    assert spent == pytest.approx(direct.get_epsilon(DELTA), rel=1e-12)
    assert ledger.epsilon_spent("training") == 0.0


def test_no_plan_and_no_noise_multiplier_is_refused():
    ledger = _ledger()
    data = Dataset.from_dict({"label": ["a", "b"]})
    with pytest.raises(InvalidPrivacyParameterError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger)
    assert ledger.charges == () and ledger.epsilon_spent() == 0.0


def test_over_budget_charge_is_refused_and_ledger_unchanged():
    data = Dataset.from_dict({"label": ["a", "b", "a"]})
    ledger = _ledger(epsilon=1.0)
    with pytest.raises(PrivacyBudgetExceededError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=0.3)
    assert ledger.charges == () and ledger.epsilon_spent() == 0.0 and ledger.num_units is None

    # after a charge that fits, a second one that does not leaves the first intact
    dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=8.0)
    spent = ledger.epsilon_spent()
    assert 0 < spent < 1.0
    with pytest.raises(PrivacyBudgetExceededError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=0.5)
    assert len(ledger.charges) == 1 and ledger.epsilon_spent() == spent

    # a stage's share binds too
    planned = _ledger(epsilon=4.0)
    planned.plan({"label_histogram": 0.2, "training": 0.8})
    with pytest.raises(PrivacyBudgetExceededError):  # ε(σ = 1.5) ≈ 3.3 > 0.8, < 4
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=planned, noise_multiplier=1.5)
    assert planned.charges == () and planned.epsilon_spent("label_histogram") == 0.0


# ------------------------------------------------------------------------------------------------
# 6. Bad input
# ------------------------------------------------------------------------------------------------


def test_undeclared_category_is_a_schema_error_and_nothing_is_spent():
    ledger = _ledger()
    data = Dataset.from_dict({"label": ["a", "b", "zzz"]})
    with pytest.raises(SchemaError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=1.0)
    assert ledger.charges == ()
    schema = TabularSchema([CategoricalColumn("label", ("a", "b"), nullable=True)])
    with pytest.raises(SchemaError):
        dp_category_histograms(data, schema, ledger=ledger, noise_multiplier=1.0)
    assert ledger.charges == ()


def test_missing_value_in_non_nullable_column_is_a_dataset_error():
    ledger = _ledger()
    data = Dataset.from_dict({"label": ["a", None, "b"]})
    with pytest.raises(DatasetError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=1.0)
    with pytest.raises(DatasetError):
        dp_category_histograms(data, TabularSchema([CategoricalColumn("label", ("a", "b"))]), ledger=ledger, noise_multiplier=1.0)
    assert ledger.charges == ()


def test_nullable_missing_values_land_in_missing_bin():
    data = Dataset.from_dict({"label": ["a", None, "b", None, None, "a"]})
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    hist = dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=0.0, nullable=["label"])
    assert hist.categories == ("a", "b", MISSING)
    assert list(hist.noisy_counts) == [2.0, 1.0, 3.0]
    schema = TabularSchema([CategoricalColumn("label", ("a", "b"), nullable=True)])
    release = dp_category_histograms(data, schema, ledger=ledger, noise_multiplier=0.0)
    assert release["label"].categories == ("a", "b", MISSING)
    assert list(release["label"].noisy_counts) == [2.0, 1.0, 3.0]
    assert ledger.report().stages[-1].charges[0]["num_bins"] == [3]


def test_user_level_ledger_needs_user_id_column_and_cap():
    data = Dataset.from_dict({"label": ["a", "b"], "uid": ["u", "v"]})
    ledger = _ledger(unit="user")
    with pytest.raises(DatasetError):
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=1.0, max_examples_per_user=2)
    with pytest.raises(DatasetError):  # records need a cap
        dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=1.0, user_id_column="uid")
    with pytest.raises(DatasetError):  # the named column must exist
        dp_label_histogram(
            data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=1.0,
            user_id_column="nope", max_examples_per_user=2,
        )
    assert ledger.charges == ()
    # vote bounds each user by normalising: no cap needed
    release = dp_histograms(
        data, {"label": ["a", "b"]}, ledger=ledger, stage="label_histogram", noise_multiplier=1.0,
        user_id_column="uid", contribution="vote",
    )
    assert release.sensitivity == 1.0 and len(ledger.charges) == 1


def test_ledger_with_another_number_of_units_is_a_privacy_unit_mismatch():
    data = Dataset.from_dict({"label": ["a", "b", "a", "a"], "uid": [1, 1, 2, 3]})
    kw = {"label_column": "label", "labels": ["a", "b"], "noise_multiplier": 1.0}
    with pytest.raises(PrivacyUnitMismatchError):
        dp_label_histogram(data, ledger=_ledger(num_units=5), **kw)
    # user level: N counts users (3), not rows (4)
    wrong = _ledger(unit="user", num_units=4)
    with pytest.raises(PrivacyUnitMismatchError):
        dp_label_histogram(data, ledger=wrong, user_id_column="uid", max_examples_per_user=2, **kw)
    assert wrong.charges == ()
    right = _ledger(unit="user", num_units=3)
    dp_label_histogram(data, ledger=right, user_id_column="uid", max_examples_per_user=2, **kw)
    assert len(right.charges) == 1
    ok = _ledger(num_units=4)
    dp_label_histogram(data, ledger=ok, **kw)
    assert len(ok.charges) == 1


def test_integer_labels_match_declared_strings():
    data = Dataset.from_dict({"label": [0, 1, 1, 0, 1, 1]})
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    hist = dp_label_histogram(data, label_column="label", labels=["0", "1"], ledger=ledger, noise_multiplier=0.0)
    assert list(hist.noisy_counts) == [2.0, 4.0]
    with pytest.raises(SchemaError):  # an integer that is not declared
        dp_label_histogram(
            Dataset.from_dict({"label": [0, 2]}), label_column="label", labels=["0", "1"], ledger=ledger, noise_multiplier=0.0
        )


# ------------------------------------------------------------------------------------------------
# 7. Post-processing, allocation, save / load
# ------------------------------------------------------------------------------------------------


def test_counts_are_clipped_noisy_counts_and_probabilities_renormalise():
    data = Dataset.from_dict({"label": ["a", "b", "b", "c", "d", "d", "d", "e"]})
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    saw_negative = False
    for seed in range(60):
        hist = dp_label_histogram(
            data, label_column="label", labels=["a", "b", "c", "d", "e"], ledger=ledger, noise_multiplier=4.0, seed=seed
        )
        noisy = np.asarray(hist.noisy_counts)
        assert list(hist.counts) == [max(x, 0.0) for x in hist.noisy_counts]
        assert math.fsum(hist.probabilities) == pytest.approx(1.0, abs=1e-12)
        assert all(p >= 0 for p in hist.probabilities)
        if noisy.max() > 0:
            np.testing.assert_allclose(hist.probabilities, np.maximum(noisy, 0) / np.maximum(noisy, 0).sum(), rtol=1e-12)
        else:  # all clipped: uniform (also tested on its own below)
            assert hist.probabilities == (0.2,) * 5
        saw_negative |= bool((noisy < 0).any())
        assert hist.probability("d") == hist.probabilities[3]
    assert saw_negative  # clipping was exercised


def test_all_negative_counts_give_uniform_probabilities():
    """One example, two bins, σ = 10: some seed makes both noisy counts negative."""
    data = Dataset.from_dict({"label": ["a"]})
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    for seed in range(200):
        hist = dp_label_histogram(data, label_column="label", labels=["a", "b"], ledger=ledger, noise_multiplier=10.0, seed=seed)
        if max(hist.noisy_counts) < 0:
            assert hist.counts == (0.0, 0.0)
            assert hist.probabilities == (0.5, 0.5)
            break
    else:
        pytest.fail("no seed gave two negative noisy counts")


def _largest_remainder(probabilities, total):
    """Independent allocation: floors, then +1 to the largest remainders (ties: earlier first)."""
    raw = [p * total for p in probabilities]
    out = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


@PROPERTY
@given(
    weights=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=8),
    total=st.integers(0, 100_000),
)
def test_allocate_sums_to_total_and_is_deterministic(weights, total):
    s = sum(weights)
    probs = tuple(w / s for w in weights) if s > 0 else (1 / len(weights),) * len(weights)
    cats = tuple(_cats("c", len(weights)))
    hist = DPHistogram(column="x", categories=cats, noisy_counts=tuple(weights), counts=tuple(weights), probabilities=probs)
    first = hist.allocate(total)
    assert list(first) == list(cats)
    assert sum(first.values()) == total
    assert first == hist.allocate(total)
    for c, p in zip(cats, probs):
        assert math.floor(p * total) <= first[c] <= math.floor(p * total) + 1
    assert list(first.values()) == _largest_remainder(probs, total)


def test_allocate_refuses_bad_totals_and_splits_exact_ties_to_earlier_categories():
    hist = DPHistogram(column="x", categories=("a", "b", "c"), noisy_counts=(1.0,) * 3, counts=(1.0,) * 3, probabilities=(1 / 3,) * 3)
    assert hist.allocate(4) == {"a": 2, "b": 1, "c": 1}
    assert hist.allocate(0) == {"a": 0, "b": 0, "c": 0}
    for bad in (-1, 2.0, True, "3"):
        with pytest.raises(ValueError):
            hist.allocate(bad)


def test_release_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    data = _user_data(rng, {"colour": ["red", "green", "blue"], "shape": ["round", "square", None]}, num_users=20, max_rows=4, cap=2)
    schema = TabularSchema(
        [CategoricalColumn("colour", ("red", "green", "blue")), CategoricalColumn("shape", ("round", "square"), nullable=True)]
    )
    release = dp_category_histograms(
        Dataset.from_dict(data), schema, ledger=_ledger(unit="user"), noise_multiplier=1.1, user_id_column="user",
        max_examples_per_user=2, contribution="records", seed=9,
    )
    path = tmp_path / "histograms.json"
    release.save(str(path))
    loaded = DPHistogramRelease.load(str(path))
    assert loaded == release
    assert loaded.to_dict() == release.to_dict()
    assert loaded["shape"].categories == ("round", "square", MISSING)
    assert loaded["colour"].allocate(1000) == release["colour"].allocate(1000)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["sensitivity"] == pytest.approx(2 * math.sqrt(2)) and saved["num_units"] == 20
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers


def test_histogram_noise_comes_from_os_entropy_and_no_seed_is_released():
    # docs/DP_CORRECTNESS.md row 27: without an explicit test seed, two releases draw different noise, and
    # nothing about the randomness is written into the release or the ledger's charge.
    import json as _json

    from datasets import Dataset as _Dataset

    from hf_dpsynth import PrivacyLedger as _Ledger
    from hf_dpsynth.data.statistics import dp_histograms as _release

    data = _Dataset.from_dict({"label": ["a", "b"] * 50})
    ledger = _Ledger(epsilon=20.0, delta=1e-5, accountant="rdp")
    first = _release(data, {"label": ["a", "b"]}, ledger=ledger, stage="label_histogram", noise_multiplier=2.0)
    second = _release(data, {"label": ["a", "b"]}, ledger=ledger, stage="label_histogram", noise_multiplier=2.0)
    assert first["label"].noisy_counts != second["label"].noisy_counts
    exported = _json.dumps(first.to_dict()) + _json.dumps(ledger.report().to_dict())
    assert "seed" not in exported
