"""DP-SGD fine-tuning of LoRA adapters: ``DPSynthConfig`` and ``DPSynthTrainer``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "DPSynthConfig": "hf_dpsynth.training.config",
    "DPSynthTrainer": "hf_dpsynth.training.trainer",
    "DPTrainingPlan": "hf_dpsynth.training.plan",
    "TrainingPrivacyReport": "hf_dpsynth.training.report",
}
__all__ = ["DPSynthConfig", "DPSynthTrainer", "DPTrainingPlan", "TrainingPrivacyReport"]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.training.config import DPSynthConfig
    from hf_dpsynth.training.plan import DPTrainingPlan
    from hf_dpsynth.training.report import TrainingPrivacyReport
    from hf_dpsynth.training.trainer import DPSynthTrainer

__getattr__, __dir__ = lazy_exports("hf_dpsynth.training", _LAZY)
