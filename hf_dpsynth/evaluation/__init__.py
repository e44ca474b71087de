"""Utility and fidelity of synthetic data, and the report that carries them.

Every result is a list of :class:`Metric` rows tagged shareable or owner-only (computed on private
data without DP); :class:`Report` renders them to Markdown, JSON and plots, and its shareable
export never contains an owner-only value.
"""

from __future__ import annotations

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
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("hf_dpsynth.evaluation", _LAZY)
