"""The adapter sampler: sample the DP-fine-tuned model (a LoRA adapter released by DP-SGD) or the
public base model, its conditioning prefixes drawn from DP statistics, its prompts optionally
carrying DP keywords.

* :mod:`.conditioning` — the conditioning distribution, from DP histograms or public weights.
* :mod:`.keyword_bias` — the logit bias that makes a prompt's keywords likely until they are used.
* :mod:`.synthesizer` — :class:`AdapterSynthesizer`, the :class:`~hf_dpsynth.generation.Synthesizer`.

Privacy: post-processing of DP outputs (the adapter, the histograms, the keywords): no budget is
spent here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "AdapterSynthesizer": "hf_dpsynth.generation.adapter_sampler.synthesizer",
    "Conditioning": "hf_dpsynth.generation.adapter_sampler.conditioning",
    "conditioning_table": "hf_dpsynth.generation.adapter_sampler.conditioning",
}
__all__ = ["AdapterSynthesizer", "Conditioning", "conditioning_table"]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.generation.adapter_sampler.conditioning import Conditioning, conditioning_table
    from hf_dpsynth.generation.adapter_sampler.synthesizer import AdapterSynthesizer

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation.adapter_sampler", _LAZY)
