"""One call that evaluates a DP synthetic dataset beside its reference points (docs/ALGORITHMS.md §7).

:func:`evaluate` dispatches on the codec's modality (text, tabular, image) and evaluates

* the DP run (``setting``, e.g. ``"ε = 4"``),
* every reference run given in ``references`` (e.g. ``{"ε = ∞ (non-private)": ds,
  "public-only (ε = 0)": ds}``), against the same real test set and in the same feature space,
* the real-data ceiling, when ``real_train`` is given (a classifier trained on real data),

and returns every number as a :class:`~hf_dpsynth.evaluation.metric.Metric` with its sharing
status, plus whether the DP run beats the public-only baseline on the primary downstream metric
(TSTR accuracy). DP synthetic data that does not beat public-only generation is worthless.

Privacy: the metrics are not DP. What may be published is decided per metric:

* the real test set is public only if you say so (``test_is_public``); otherwise every metric
  that reads it is owner-only;
* a synthetic set is publishable when it is the DP run or the public-only run (its key contains
  ``"public-only"``, or ``"public model + DP"`` when its labels came from the DP histogram); every other reference (``ε = ∞``, or anything evaluate cannot verify was a
  DP release) and the real ceiling are owner-only whatever the test set;
* the invalid rate and the diversity of a publishable synthetic set (distinct-n) read no real
  data: shareable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hf_dpsynth.errors import SchemaError
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth.evaluation._common import (
    REAL_DATA_SETTING,
    UTILITY_SECTION,
    check_not_empty,
    column_names,
    invalid_rate,
    make_metric,
)

__all__ = ["PUBLIC_ONLY", "EvaluationResult", "add_privacy_utility_curve", "evaluate"]

#: A reference whose key contains this is the public-only baseline (ε = 0: no private data used).
PUBLIC_ONLY = "public-only"
#: A reference whose key contains this is the public baseline whose labels came from a DP histogram.
PUBLIC_MODEL = "public model + DP"
_BASELINE_MARKERS = (PUBLIC_ONLY, PUBLIC_MODEL)


def is_public_baseline(name: str) -> bool:
    """Whether a reference key names the public baseline (public-only, or public model + DP labels)."""
    return any(marker in name for marker in _BASELINE_MARKERS)
GENERATION_SECTION = "generation"
_MODALITIES = ("text", "tabular", "image")


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of a DP run, its references and the real ceiling, with the verdict against public-only.

    Attributes:
        modality: ``"text"``, ``"tabular"`` or ``"image"``.
        setting: the DP run's setting name.
        metrics: every metric, setting by setting (DP run, references, real data), each with its
            ``shareable`` flag and, when owner-only, a note saying so.
        evaluations: setting → the raw per-modality result (TextEvaluation, TabularEvaluation or
            ImageEvaluation); the DP run's ``ceiling`` holds the real-data evaluation.
        primary_metric: the name of the primary downstream metric (TSTR accuracy), None without labels.
        beats_public_only: whether the DP run's primary metric is strictly above the public-only
            reference's; None without a public-only reference or without a primary metric.
    """

    modality: str
    setting: str
    metrics: list[Metric]
    evaluations: Mapping[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None
    beats_public_only: bool | None = None

    def shareable_metrics(self) -> list[Metric]:
        """Only the metrics that may be published."""
        return [m for m in self.metrics if m.shareable]

    def value(self, name: str, setting: str | None = None) -> Any:
        """The value of metric ``name`` in ``setting`` (default: the DP run); KeyError if absent."""
        setting = self.setting if setting is None else setting
        for metric in self.metrics:
            if metric.name == name and metric.setting == setting:
                return metric.value
        raise KeyError(f"no metric {name!r} in setting {setting!r}.")


def _label_column(codec: Any, target: str | None) -> str | None:
    if target is not None:
        return target
    conditions = list(codec.conditions)
    return conditions[0] if conditions else None


def _tabular_target(codec: Any, target: str | None) -> str | None:
    from hf_dpsynth.data.tabular import CategoricalColumn

    if target is not None or codec.conditions:
        return _label_column(codec, target)
    last = codec.schema.columns[-1]  # e.g. UCI Adult's income: a table's label conventionally comes last
    return last.name if isinstance(last, CategoricalColumn) else None


def _check_columns(data: Any, needed: tuple[str, ...], what: str) -> None:
    have = column_names(data)
    missing = [n for n in needed if n not in have]
    if missing:
        raise SchemaError(
            f"the {what} lacks column(s) {missing} that the codec needs; it has {have}. Real, synthetic and "
            "reference data must all have the codec's fields."
        )


class _Evaluator:
    """Evaluates any synthetic set of one modality against one real test set, computing what
    they all share (test embeddings, the image feature classifier) once."""

    def __init__(self, codec: Any, real_test: Any, *, target: str | None, embeddings: bool) -> None:
        self.codec = codec
        self.real_test = real_test
        self.modality = codec.modality
        self.embeddings = embeddings
        self._shared: dict[str, Any] = {}
        if self.modality == "tabular":
            self.target = _tabular_target(codec, target)
        else:
            self.target = _label_column(codec, target)
        if self.target is not None and self.target not in codec.fields:
            raise SchemaError(f"target {self.target!r} is not one of the codec's fields {list(codec.fields)}.")

    def __call__(self, synthetic: Any, real_train: Any | None = None) -> Any:
        if self.modality == "text":
            from hf_dpsynth.evaluation.embeddings import embed_texts
            from hf_dpsynth.evaluation.text import evaluate_text, get_column

            if self.embeddings and "embeddings" not in self._shared:
                texts = get_column(self.real_test, self.codec.text_field, what="real test set")
                self._shared["embeddings"] = embed_texts(texts)
            return evaluate_text(
                synthetic, self.real_test, text_column=self.codec.text_field, label_column=self.target,
                real_train=real_train, embeddings=self.embeddings, real_test_embeddings=self._shared.get("embeddings"),
            )
        if self.modality == "tabular":
            from hf_dpsynth.evaluation.tabular import evaluate_tabular

            return evaluate_tabular(synthetic, self.real_test, self.codec.schema, target=self.target,
                                    real_train=real_train)
        from hf_dpsynth.evaluation.image import evaluate_images, fit_image_classifier
        from hf_dpsynth.evaluation.text import get_column

        if self.target is not None and "classifier" not in self._shared:
            self._shared["classifier"] = fit_image_classifier(
                get_column(self.real_test, self.codec.image_field, what="real test set"),
                get_column(self.real_test, self.target, what="real test set"),
                max_value=self.codec.input_max,
            )
        return evaluate_images(
            synthetic, self.real_test, image_column=self.codec.image_field, label_column=self.target,
            max_value=self.codec.input_max, real_train=real_train, feature_classifier=self._shared.get("classifier"),
        )


def _generation_metrics(dataset: Any, setting: str, shareable: bool) -> list[Metric]:
    """The invalid rate from a generated dataset's summary; nothing for other datasets."""
    from hf_dpsynth.generation import generation_info

    try:
        info = generation_info(dataset)
    except (ValueError, AttributeError):  # not made by an hf_dpsynth generator
        return []
    generated = int(info.get("num_generated", 0))
    if generated == 0:
        return []
    # Duplicates dropped on request are not invalid: the rate counts only unparseable outputs.
    invalid = int(info.get("num_invalid", generated - int(info.get("num_valid", generated))))
    return [
        make_metric("invalid rate", invalid_rate(generated, generated - invalid), section=GENERATION_SECTION,
                    setting=setting, shareable=shareable),
        make_metric("outputs generated", generated, section=GENERATION_SECTION, setting=setting, shareable=shareable),
    ]


def evaluate(
    synthetic: Any,
    real_test: Any,
    *,
    codec: Any,
    references: Mapping[str, Any] | None = None,
    real_train: Any | None = None,
    test_is_public: bool = False,
    setting: str = "DP",
    target: str | None = None,
    embeddings: bool = True,
) -> EvaluationResult:
    """Evaluate ``synthetic`` (and each reference) against ``real_test`` with ``codec``'s modality.

    Args:
        synthetic: the DP synthetic Dataset (its generation summary, when present, gives the
            invalid rate).
        real_test: held-out real data with the codec's fields.
        codec: a TextCodec, TabularCodec or ImageCodec (``codec.modality`` picks the metrics).
        references: setting name → a reference synthetic Dataset, e.g. ``{"ε = ∞ (non-private)":
            ds_inf, "public-only (ε = 0)": ds_public}``; the key containing ``"public-only"`` is
            the baseline the DP run must beat.
        real_train: the real training data, for the ceiling (always owner-only).
        test_is_public: whether ``real_test`` is public; only then are metrics that read it shareable.
        setting: the DP run's name in the report (``"ε = 4"``).
        target: the label for TSTR; default the codec's first condition, and for a table without
            conditions its last column when categorical (as UCI Adult's ``income``).
        embeddings: text only: compute the MiniLM metrics (False skips the embedding model).

    Raises DatasetError for an empty dataset, SchemaError when a dataset lacks the codec's fields,
    ValueError for clashing or ambiguous setting names.
    """
    modality = getattr(codec, "modality", None)
    if modality not in _MODALITIES:
        raise SchemaError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
    references = dict(references or {})
    public_keys = [k for k in references if is_public_baseline(k)]
    if len(public_keys) > 1:
        raise ValueError(f"more than one reference is named {PUBLIC_ONLY!r} ({public_keys}); keep one baseline.")
    clash = [k for k in references if k in (setting, REAL_DATA_SETTING)]
    if clash:
        raise ValueError(
            f"reference name(s) {clash} clash with the DP run's setting or {REAL_DATA_SETTING!r}; rename them."
        )
    minimum = "Evaluation needs at least 2 synthetic records, of at least 2 classes for TSTR (6 for text k-NN metrics)."
    check_not_empty(synthetic, "synthetic dataset", minimum=minimum)
    check_not_empty(real_test, "real test set", minimum="Evaluation needs held-out real records to compare with.")
    datasets = {"synthetic dataset": synthetic, "real test set": real_test}
    datasets.update({f"reference {name!r}": ds for name, ds in references.items()})
    if real_train is not None:
        datasets["real training set"] = real_train
    for what, data in datasets.items():
        if what.startswith("reference"):
            check_not_empty(data, what, minimum=minimum)
        _check_columns(data, codec.fields, what)

    run = _Evaluator(codec, real_test, target=target, embeddings=embeddings)
    metrics: list[Metric] = []
    evaluations: dict[str, Any] = {}
    # (setting, dataset, the synthetic set may be published, real_train for the ceiling)
    runs = [(setting, synthetic, True, real_train)]
    runs += [(name, ds, is_public_baseline(name), None) for name, ds in references.items()]
    for name, data, publishable, train in runs:
        result = run(data, train)
        evaluations[name] = result
        if result.ceiling is not None:
            evaluations[REAL_DATA_SETTING] = result.ceiling
        metrics += _generation_metrics(data, name, publishable)
        metrics += result.to_metrics(setting=name, shareable=test_is_public, synthetic_shareable=publishable)

    primary = evaluations[setting].primary
    primary_metric = beats = None
    if primary is not None:
        primary_metric = primary.accuracy_name
        if public_keys and evaluations[public_keys[0]].primary is not None:
            beats = primary.accuracy > evaluations[public_keys[0]].primary.accuracy
            metrics.append(make_metric(f"beats the public-only baseline ({primary_metric})", "yes" if beats else "no",
                                       section=UTILITY_SECTION, setting=setting, shareable=test_is_public))
    return EvaluationResult(modality=modality, setting=setting, metrics=metrics, evaluations=evaluations,
                            primary_metric=primary_metric, beats_public_only=beats)


def add_privacy_utility_curve(
    report: Any,
    results: Mapping[float, EvaluationResult],
    *,
    metric: str | None = None,
    name: str = "privacy-utility",
) -> None:
    """Add the privacy–utility curve (``metric`` of each DP run across ε) to ``report``, with the
    references and the real ceiling of the first result as horizontal lines.

    The plot is shareable only when every point and line drawn is (metrics on public data).
    """
    if not results:
        raise ValueError("results is empty: pass {epsilon: EvaluationResult} for at least one ε.")
    epsilons = sorted(results)
    first = results[epsilons[0]]
    metric = metric or first.primary_metric
    if metric is None:
        raise ValueError("these results have no primary metric (no labels): pass metric=.")
    points, shareable = [], True
    for eps in epsilons:
        row = next((m for m in results[eps].metrics if m.name == metric and m.setting == results[eps].setting), None)
        if row is None or not isinstance(row.value, (int, float)):
            raise ValueError(f"the result at ε = {eps:g} has no numeric metric {metric!r} in its DP setting.")
        points.append(float(row.value))
        shareable &= row.shareable
    references = {}
    for row in first.metrics:
        if row.name == metric and row.setting != first.setting and isinstance(row.value, (int, float)):
            references[row.setting] = float(row.value)
            shareable &= row.shareable
    report.add_plot(
        name, "privacy_utility",
        {"epsilons": [float(e) for e in epsilons], "values": points, "metric": metric, "references": references},
        shareable=shareable,
        caption=f"{metric} of the DP synthetic data across ε, with its reference points.",
    )
