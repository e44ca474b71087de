"""Generating synthetic records: one ``Synthesizer`` interface, one folder per method.

* :mod:`.adapter_sampler` — :class:`AdapterSynthesizer` samples the DP-fine-tuned model with prompts
  conditioned on DP statistics (post-processing: no budget).
* :mod:`.private_prediction` — :class:`PrivatePredictionSynthesizer`, private prediction with a base
  model and no fine-tuning (zCDP, charged once before generation); its mechanism maths, batching
  and generator in their own modules.
* :mod:`.private_evolution` — :class:`PrivateEvolutionSynthesizer`, Private Evolution: public
  candidates from a base model, DP votes of the private records, variations of the winners (T
  Gaussian votes, charged once before the first).

Shared by all: :mod:`.base` (the interface, outputs to a Dataset), :mod:`.guided` (schema-guided
decoding), :mod:`.contexts` (many prompts decoded in lockstep), :mod:`.io` (saving and loading
synthetic data). A new method is a new folder beside the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    "PrivateEvolutionSynthesizer": "hf_dpsynth.generation.private_evolution.synthesizer",
    "VariationPrompts": "hf_dpsynth.generation.private_evolution.variation",
}
__all__ = [
    "AdapterSynthesizer",
    "GeneratedText",
    "LockstepContexts",
    "PrivateEvolutionSynthesizer",
    "PrivatePredictionSynthesizer",
    "SparseVectorGate",
    "Synthesizer",
    "VariationPrompts",
    "build_dataset",
    "generation_info",
    "private_prediction_rho",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.generation.adapter_sampler.synthesizer import AdapterSynthesizer
    from hf_dpsynth.generation.base import GeneratedText, Synthesizer, build_dataset, generation_info
    from hf_dpsynth.generation.contexts import LockstepContexts
    from hf_dpsynth.generation.private_evolution.synthesizer import PrivateEvolutionSynthesizer
    from hf_dpsynth.generation.private_evolution.variation import VariationPrompts
    from hf_dpsynth.generation.private_prediction.mechanism import SparseVectorGate, private_prediction_rho
    from hf_dpsynth.generation.private_prediction.synthesizer import PrivatePredictionSynthesizer

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation", _LAZY)
