"""Utility and fidelity of synthetic data, and the report that carries them.

Every result is a list of :class:`Metric` rows tagged shareable or owner-only (computed on private
data without DP); :class:`Report` renders them to Markdown, JSON and plots, and its shareable
export never contains an owner-only value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "Metric": "hf_dpsynth.evaluation.metric",
    "Report": "hf_dpsynth.evaluation.report",
    "EvaluationResult": "hf_dpsynth.evaluation.evaluator",
    "evaluate": "hf_dpsynth.evaluation.evaluator",
    "add_privacy_utility_curve": "hf_dpsynth.evaluation.evaluator",
    "ClassificationResult": "hf_dpsynth.evaluation.text",
    "TextEvaluation": "hf_dpsynth.evaluation.text",
    "distinct_n": "hf_dpsynth.evaluation.text",
    "evaluate_text": "hf_dpsynth.evaluation.text",
    "invalid_rate": "hf_dpsynth.evaluation.text",
    "tstr_text": "hf_dpsynth.evaluation.text",
    "embed_texts": "hf_dpsynth.evaluation.embeddings",
    "frechet_distance": "hf_dpsynth.evaluation.embeddings",
    "knn_precision_recall": "hf_dpsynth.evaluation.embeddings",
    "MarginalTVD": "hf_dpsynth.evaluation.tabular",
    "CorrelationDifference": "hf_dpsynth.evaluation.tabular",
    "TabularEvaluation": "hf_dpsynth.evaluation.tabular",
    "correlation_difference": "hf_dpsynth.evaluation.tabular",
    "evaluate_tabular": "hf_dpsynth.evaluation.tabular",
    "marginal_tvd": "hf_dpsynth.evaluation.tabular",
    "tstr_tabular": "hf_dpsynth.evaluation.tabular",
    "ImageEvaluation": "hf_dpsynth.evaluation.image",
    "evaluate_images": "hf_dpsynth.evaluation.image",
    "fit_image_classifier": "hf_dpsynth.evaluation.image",
    "image_feature_frechet": "hf_dpsynth.evaluation.image",
    "tstr_image": "hf_dpsynth.evaluation.image",
}
__all__ = [
    "ClassificationResult",
    "CorrelationDifference",
    "EvaluationResult",
    "ImageEvaluation",
    "MarginalTVD",
    "Metric",
    "Report",
    "TabularEvaluation",
    "TextEvaluation",
    "add_privacy_utility_curve",
    "correlation_difference",
    "distinct_n",
    "embed_texts",
    "evaluate",
    "evaluate_images",
    "evaluate_tabular",
    "evaluate_text",
    "fit_image_classifier",
    "frechet_distance",
    "image_feature_frechet",
    "invalid_rate",
    "knn_precision_recall",
    "marginal_tvd",
    "tstr_image",
    "tstr_tabular",
    "tstr_text",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.evaluation.embeddings import embed_texts, frechet_distance, knn_precision_recall
    from hf_dpsynth.evaluation.evaluator import EvaluationResult, add_privacy_utility_curve, evaluate
    from hf_dpsynth.evaluation.image import (
        ImageEvaluation,
        evaluate_images,
        fit_image_classifier,
        image_feature_frechet,
        tstr_image,
    )
    from hf_dpsynth.evaluation.metric import Metric
    from hf_dpsynth.evaluation.report import Report
    from hf_dpsynth.evaluation.tabular import (
        CorrelationDifference,
        MarginalTVD,
        TabularEvaluation,
        correlation_difference,
        evaluate_tabular,
        marginal_tvd,
        tstr_tabular,
    )
    from hf_dpsynth.evaluation.text import (
        ClassificationResult,
        TextEvaluation,
        distinct_n,
        evaluate_text,
        invalid_rate,
        tstr_text,
    )

__getattr__, __dir__ = lazy_exports("hf_dpsynth.evaluation", _LAZY)
