"""DP-SGD fine-tuning of LoRA adapters: ``DPSynthConfig`` and ``DPSynthTrainer``."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DPSynthConfig": "hf_dpsynth.training.config",
    "DPSynthTrainer": "hf_dpsynth.training.trainer",
    "DPTrainingPlan": "hf_dpsynth.training.trainer",
    "TrainingPrivacyReport": "hf_dpsynth.training.trainer",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_dpsynth.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
