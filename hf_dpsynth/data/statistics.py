"""DP statistics for prompts and generation plans: Gaussian histograms over public categories.

A label distribution or a category frequency read from private data is a release of private
information; here it is released only by the Gaussian mechanism and charged to the ledger first
(stages ``label_histogram`` and ``category_histograms``). docs/ALGORITHMS.md §2:

* noisy count = true count + N(0, (σ × Δ)²) per bin, over a *declared* category list;
* L2 sensitivity Δ for one privacy unit (add/remove): 1 per column at example level; at user
  level with at most ``cap`` records per user, ``cap`` (``contribution="records"``),
  √min(cap, #bins) (``"once_per_bin"``: a user counts at most once per bin), or 1 (``"vote"``:
  each user's counts normalised to L2 norm 1). Several columns released together compose in L2:
  Δ² = Σ over columns, one ``GaussianDpEvent(σ)`` for all of them;
* post-processing: negatives clipped to 0, then renormalised (uniform if everything is 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hf_dpsynth._io import JsonRelease
from hf_dpsynth.data.codecs import check_categories
from hf_dpsynth.data.loading import column_values, is_missing, load_records
from hf_dpsynth.data.tabular import NULL_TOKEN, CategoricalColumn, TabularSchema
from hf_dpsynth.data.units import cap_user_rows, check_user_level, group_rows_by_user
from hf_dpsynth.errors import DatasetError, InvalidPrivacyParameterError, SchemaError
from hf_dpsynth.privacy.events import gaussian_event

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = [
    "DPHistogram",
    "DPHistogramRelease",
    "dp_category_histograms",
    "dp_histograms",
    "dp_label_histogram",
    "histogram_sensitivity",
]

Contribution = Literal["records", "once_per_bin", "vote"]
_CONTRIBUTIONS = ("records", "once_per_bin", "vote")


@dataclass(frozen=True)
class DPHistogram:
    """One column's DP-released histogram (every number in it came out of the mechanism).

    ``noisy_counts`` are the raw mechanism outputs (may be negative); ``counts`` clips them at 0;
    ``probabilities`` renormalises ``counts`` (uniform when every count is 0).
    """

    column: str
    categories: tuple[str, ...]
    noisy_counts: tuple[float, ...]
    counts: tuple[float, ...]
    probabilities: tuple[float, ...]

    def probability(self, category: str) -> float:
        return self.probabilities[self.categories.index(category)]

    def allocate(self, total: int) -> dict[str, int]:
        """Split ``total`` items across categories in proportion to the DP probabilities.

        Largest-remainder rounding (ties to the earlier category): a deterministic function of
        the DP release, so a generation plan built from it is post-processing.
        """
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total must be a non-negative integer; got {total!r}.")
        raw = [p * total for p in self.probabilities]
        base = [math.floor(x) for x in raw]
        left = total - sum(base)
        order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
        for i in order[:left]:
            base[i] += 1
        return dict(zip(self.categories, base))

    def sample(self, size: int, *, rng: np.random.Generator | None = None) -> list[str]:
        """``size`` categories drawn from the DP probabilities (post-processing)."""
        generator = rng if rng is not None else np.random.default_rng()
        picks = generator.choice(len(self.categories), size=size, p=np.asarray(self.probabilities))
        return [self.categories[i] for i in picks]


@dataclass(frozen=True)
class DPHistogramRelease(JsonRelease):
    """The histograms released by one Gaussian mechanism run, and how they were protected.

    Everything here is shareable: the counts are mechanism outputs, the rest is public.
    """

    stage: str
    histograms: Mapping[str, DPHistogram]
    noise_multiplier: float
    sensitivity: float
    noise_std: float
    privacy_unit: str
    contribution: str
    max_examples_per_user: int | None
    num_units: int

    def __getitem__(self, column: str) -> DPHistogram:
        return self.histograms[column]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["histograms"] = {k: asdict(v) for k, v in self.histograms.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPHistogramRelease:
        hists = {
            k: DPHistogram(
                column=v["column"], categories=tuple(v["categories"]), noisy_counts=tuple(v["noisy_counts"]),
                counts=tuple(v["counts"]), probabilities=tuple(v["probabilities"]),
            )
            for k, v in data["histograms"].items()
        }
        return cls(**{**dict(data), "histograms": hists})


def histogram_sensitivity(
    num_bins: Sequence[int],
    *,
    privacy_unit: str,
    contribution: Contribution = "records",
    max_examples_per_user: int | None = None,
) -> float:
    """The L2 sensitivity of the concatenated histograms of columns with ``num_bins`` bins each.

    Example level: √k for k columns (one record adds 1 to one bin per column). User level: per
    column ``cap`` (records), √min(cap, bins) (once per bin) or 1 (vote), composed as √Σ(·)².
    """
    if contribution not in _CONTRIBUTIONS:
        raise InvalidPrivacyParameterError(f"contribution must be one of {_CONTRIBUTIONS}; got {contribution!r}.")
    bins = [int(b) for b in num_bins]
    if not bins or min(bins) < 1:
        raise InvalidPrivacyParameterError(f"every column needs at least one bin; got {bins}.")
    if privacy_unit == "example" or contribution == "vote":
        return math.sqrt(len(bins))
    check_user_level(privacy_unit, "user", max_examples_per_user)
    cap = int(max_examples_per_user)  # type: ignore[arg-type]
    if contribution == "records":
        return cap * math.sqrt(len(bins))
    return math.sqrt(sum(min(cap, b) for b in bins))


def one_gaussian_noise_multiplier(ledger: PrivacyLedger, stage: str, noise_multiplier: float | None, *, what: str) -> float:
    """σ of a stage that is one Gaussian mechanism: the given one, or the smallest the stage's planned
    share allows (a plan is then required, else calibration could spend the whole remaining budget)."""
    if noise_multiplier is not None:
        return float(noise_multiplier)
    if ledger.stage_plan is None:
        raise InvalidPrivacyParameterError(
            f"Pass noise_multiplier=, or plan the ledger with a share for {stage!r}: without either, "
            f"calibration would let {what} spend the whole remaining budget."
        )
    return ledger.calibrate(stage, sampling_probability=1.0, num_steps=1)


def bin_indices(values: Sequence[Any], categories: tuple[str, ...], column: str, nullable: bool) -> np.ndarray:
    """Each value's position in the declared ``categories`` (missing values → ``"missing"`` when
    ``nullable``); an undeclared value is a SchemaError. Shared with the evaluation's binning."""
    index = {c: i for i, c in enumerate(categories)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        if is_missing(value):
            if not nullable:
                raise DatasetError(
                    f"Column {column!r} has a missing value at row {row}, but the column is not declared "
                    "nullable: declare it nullable (missing values get their own bin) or fill them first."
                )
            value = NULL_TOKEN
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            value = str(value)  # integer labels match declared "0", "1", ...
        i = index.get(value) if isinstance(value, str) else None
        if i is None:
            raise SchemaError(
                f"Column {column!r}, row {row}: a value is not in the declared categories "
                f"({len(categories)} declared). Every category must be declared up front (public): "
                "add it to the list, or map such values to a declared one before releasing."
            )
        out[row] = i
    return out


def _pre_noise_vector(
    bins: Sequence[np.ndarray],
    sizes: Sequence[int],
    *,
    user_ids: Sequence[Any] | None,
    privacy_unit: str,
    contribution: Contribution,
    max_examples_per_user: int | None,
) -> np.ndarray:
    """The concatenated histogram before noise (private; never returned to callers)."""
    offsets = np.cumsum([0, *sizes])
    total = np.zeros(offsets[-1], dtype=np.float64)
    if privacy_unit == "example":
        for j, b in enumerate(bins):
            total[offsets[j] : offsets[j + 1]] += np.bincount(b, minlength=sizes[j])
        return total
    groups = group_rows_by_user(user_ids)  # type: ignore[arg-type]
    for user, rows in groups.items():
        if contribution != "vote":
            rows = cap_user_rows(user, rows, max_examples_per_user)  # type: ignore[arg-type]
        idx = np.asarray(rows, dtype=np.int64)
        for j, b in enumerate(bins):
            counts = np.bincount(b[idx], minlength=sizes[j]).astype(np.float64)
            if contribution == "once_per_bin":
                counts = np.minimum(counts, 1.0)
            elif contribution == "vote":
                counts = counts / np.linalg.norm(counts)
            total[offsets[j] : offsets[j + 1]] += counts
    return total


def dp_histograms(
    source: Dataset | Any,
    columns: Mapping[str, Sequence[str]],
    *,
    ledger: PrivacyLedger,
    stage: str,
    noise_multiplier: float | None = None,
    user_id_column: str | None = None,
    max_examples_per_user: int | None = None,
    contribution: Contribution = "records",
    nullable: Sequence[str] = (),
    seed: int | None = None,
) -> DPHistogramRelease:
    """Release the histograms of ``columns`` (each over its declared categories) with one Gaussian.

    Args:
        source: the private records (a Dataset, DatasetDict split or path; see ``load_records``).
        columns: column → its public list of categories.
        ledger: charged before any noise is drawn (a bound ledger is on disk by then); its privacy
            unit decides the sensitivity.
        stage: the ledger stage (``"label_histogram"`` or ``"category_histograms"``).
        noise_multiplier: σ (noise std = σ × sensitivity); None calibrates the largest ε the
            stage's planned share still allows (a plan is then required).
        user_id_column, max_examples_per_user, contribution: user-level bounding (see module doc).
        nullable: columns whose missing values count in an extra ``"missing"`` bin.
        seed: fixes the noise — for tests only; by default it comes from OS entropy.

    Privacy: (ε, δ) of ``GaussianDpEvent(σ)`` for one privacy unit under add/remove, composed in
    the ledger. Only the noisy vector leaves this function; N is public.
    """
    unit = ledger.privacy_unit
    if not columns:
        raise SchemaError("columns is empty: name at least one column and its declared categories.")
    cats: dict[str, tuple[str, ...]] = {}
    for name, values in columns.items():
        declared = check_categories(f"categories of {name!r}", values)
        cats[name] = declared + ((NULL_TOKEN,) if name in nullable and NULL_TOKEN not in declared else ())
    if contribution not in _CONTRIBUTIONS:
        raise InvalidPrivacyParameterError(f"contribution must be one of {_CONTRIBUTIONS}; got {contribution!r}.")
    # The vote contribution bounds each user by normalising, so it needs no record cap.
    check_user_level(unit, user_id_column, 1 if contribution == "vote" and max_examples_per_user is None else max_examples_per_user)
    needed = list(cats) + ([user_id_column] if unit == "user" else [])
    dataset = load_records(source, columns=needed)
    bins = [bin_indices(column_values(dataset, name), cats[name], name, name in nullable) for name in cats]
    user_ids = column_values(dataset, user_id_column) if unit == "user" else None
    num_units = len(group_rows_by_user(user_ids, column=user_id_column)) if user_ids is not None else len(dataset)
    sizes = [len(c) for c in cats.values()]
    sensitivity = histogram_sensitivity(
        sizes, privacy_unit=unit, contribution=contribution, max_examples_per_user=max_examples_per_user
    )

    noise_multiplier = one_gaussian_noise_multiplier(ledger, stage, noise_multiplier, what="this histogram")
    event = gaussian_event(noise_multiplier=noise_multiplier)
    metadata = {
        "mechanism": "gaussian_histogram",
        "columns": list(cats),
        "num_bins": sizes,
        "noise_multiplier": float(noise_multiplier),
        "l2_sensitivity": sensitivity,
        "contribution": contribution if unit == "user" else "records",
        "max_examples_per_user": max_examples_per_user if unit == "user" else None,
    }
    # Charge first: if the ledger refuses, no noise is drawn and nothing is released.
    ledger.charge(stage, event, privacy_unit=unit, num_units=num_units, metadata=metadata)

    pre_noise = _pre_noise_vector(
        bins, sizes, user_ids=user_ids, privacy_unit=unit, contribution=contribution,
        max_examples_per_user=max_examples_per_user,
    )
    noise_std = float(noise_multiplier) * sensitivity
    rng = np.random.default_rng(seed)
    noisy = pre_noise + rng.normal(0.0, noise_std, size=pre_noise.shape) if noise_std > 0 else pre_noise.copy()
    del pre_noise
    histograms: dict[str, DPHistogram] = {}
    start = 0
    for name, size in zip(cats, sizes):
        part = noisy[start : start + size]
        start += size
        clipped = np.maximum(part, 0.0)
        total = clipped.sum()
        probs = clipped / total if total > 0 else np.full(size, 1.0 / size)
        histograms[name] = DPHistogram(
            column=name, categories=cats[name], noisy_counts=tuple(map(float, part)),
            counts=tuple(map(float, clipped)), probabilities=tuple(map(float, probs)),
        )
    return DPHistogramRelease(
        stage=stage, histograms=histograms, noise_multiplier=float(noise_multiplier), sensitivity=sensitivity,
        noise_std=noise_std, privacy_unit=unit, contribution=metadata["contribution"],
        max_examples_per_user=metadata["max_examples_per_user"], num_units=num_units,
    )


def dp_label_histogram(
    source: Dataset | Any,
    *,
    label_column: str,
    labels: Sequence[str],
    ledger: PrivacyLedger,
    stage: str = "label_histogram",
    **kwargs: Any,
) -> DPHistogram:
    """The DP label distribution over the declared ``labels`` (stage ``label_histogram``).

    Keyword arguments are those of :func:`dp_histograms`.
    """
    return dp_histograms(source, {label_column: labels}, ledger=ledger, stage=stage, **kwargs)[label_column]


def dp_category_histograms(
    source: Dataset | Any,
    schema: TabularSchema,
    *,
    ledger: PrivacyLedger,
    columns: Sequence[str] | None = None,
    stage: str = "category_histograms",
    **kwargs: Any,
) -> DPHistogramRelease:
    """DP frequencies of the schema's categorical columns (or ``columns``), in one release.

    Nullable columns get a ``"missing"`` bin. Keyword arguments are those of :func:`dp_histograms`.
    """
    names = list(schema.categorical) if columns is None else list(columns)
    for name in names:
        if name not in schema or not isinstance(schema[name], CategoricalColumn):
            raise SchemaError(f"{name!r} is not a categorical column of the schema ({list(schema.categorical)}).")
    nullable = [n for n in names if schema[n].nullable]
    return dp_histograms(
        source, {n: schema[n].categories for n in names}, ledger=ledger, stage=stage, nullable=nullable, **kwargs
    )
