"""Private Evolution: DP synthetic data from model access alone (Lin et al., ICLR 2024; Aug-PE, Xie
et al., ICML 2024).

* :mod:`.votes` — k nearest candidates per record within its label, the vote histogram (L2
  sensitivity 1 per unit, user votes averaged), its Gaussian noise, σ calibrated for T rounds.
* :mod:`.variation` — selection by noisy votes and the public variation prompts (post-processing).
* :mod:`.state` — the resumable state (populations and noisy histograms, saved after each step).
* :mod:`.synthesizer` — :class:`PrivateEvolutionSynthesizer`, the loop on the ledger.

Privacy: T rounds of a sensitivity-1 Gaussian vote, ``private_evolution_event(σ, T)``, charged once
before the first histogram.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "PrivateEvolutionSynthesizer": "hf_dpsynth.generation.private_evolution.synthesizer",
    "VariationPrompts": "hf_dpsynth.generation.private_evolution.variation",
    "select_and_allocate": "hf_dpsynth.generation.private_evolution.variation",
    "check_embeddings": "hf_dpsynth.generation.private_evolution.votes",
    "dp_vote_histogram": "hf_dpsynth.generation.private_evolution.votes",
    "nearest_candidates": "hf_dpsynth.generation.private_evolution.votes",
    "pe_noise_multiplier": "hf_dpsynth.generation.private_evolution.votes",
    "vote_histogram": "hf_dpsynth.generation.private_evolution.votes",
}
__all__ = [
    "PrivateEvolutionSynthesizer",
    "VariationPrompts",
    "select_and_allocate",
    "check_embeddings",
    "dp_vote_histogram",
    "nearest_candidates",
    "pe_noise_multiplier",
    "vote_histogram",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.generation.private_evolution.synthesizer import PrivateEvolutionSynthesizer
    from hf_dpsynth.generation.private_evolution.variation import VariationPrompts, select_and_allocate
    from hf_dpsynth.generation.private_evolution.votes import (
        check_embeddings,
        dp_vote_histogram,
        nearest_candidates,
        pe_noise_multiplier,
        vote_histogram,
    )

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation.private_evolution", _LAZY)
