"""DP-SGD fine-tuning of LoRA adapters: ``DPSynthConfig`` and ``DPSynthTrainer``."""

from __future__ import annotations

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "DPSynthConfig": "hf_dpsynth.training.config",
    "DPSynthTrainer": "hf_dpsynth.training.trainer",
    "DPTrainingPlan": "hf_dpsynth.training.plan",
    "TrainingPrivacyReport": "hf_dpsynth.training.report",
}
__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports("hf_dpsynth.training", _LAZY)
