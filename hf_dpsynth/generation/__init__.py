"""Generating synthetic records: one ``Synthesizer`` interface, two generators.

* :class:`AdapterSampler` — samples the DP-fine-tuned model with prompts conditioned on DP
  statistics (post-processing: no budget).
* :class:`PrivatePredictionGenerator` — private prediction with a base model, no fine-tuning
  (zCDP, charged once before generation).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Synthesizer": "hf_dpsynth.generation.base",
    "GeneratedText": "hf_dpsynth.generation.base",
    "build_dataset": "hf_dpsynth.generation.base",
    "generation_info": "hf_dpsynth.generation.base",
    "AdapterSampler": "hf_dpsynth.generation.adapter_sampler",
    "PrivatePredictionGenerator": "hf_dpsynth.generation.private_prediction",
    "SparseVectorGate": "hf_dpsynth.generation.private_prediction",
    "private_prediction_rho": "hf_dpsynth.generation.private_prediction",
    "LockstepContexts": "hf_dpsynth.generation.contexts",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_dpsynth.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return __all__
