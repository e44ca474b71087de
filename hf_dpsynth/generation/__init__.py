"""Generating synthetic records: one ``Synthesizer`` interface, two generators.

* :class:`AdapterSynthesizer` — samples the DP-fine-tuned model with prompts conditioned on DP
  statistics (post-processing: no budget).
* :class:`PrivatePredictionSynthesizer` — private prediction with a base model, no fine-tuning
  (zCDP, charged once before generation).
"""

from __future__ import annotations

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "Synthesizer": "hf_dpsynth.generation.base",
    "GeneratedText": "hf_dpsynth.generation.base",
    "build_dataset": "hf_dpsynth.generation.base",
    "generation_info": "hf_dpsynth.generation.base",
    "AdapterSynthesizer": "hf_dpsynth.generation.adapter_sampler.synthesizer",
    "PrivatePredictionSynthesizer": "hf_dpsynth.generation.private_prediction.synthesizer",
    "SparseVectorGate": "hf_dpsynth.generation.private_prediction.mechanism",
    "private_prediction_rho": "hf_dpsynth.generation.private_prediction.mechanism",
    "LockstepContexts": "hf_dpsynth.generation.contexts",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation", _LAZY)
