"""Private Evolution: DP synthetic data from model access alone (Lin et al., ICLR 2024; Aug-PE, Xie
et al., ICML 2024). Work in progress (issue 15): the vote mechanism is here; the variation prompts
and the :class:`~hf_dpsynth.generation.Synthesizer` come next.

* :mod:`.votes` — k nearest candidates per record within its label, the vote histogram (L2
  sensitivity 1 per unit, user votes averaged), its Gaussian noise, σ calibrated for T rounds.

Privacy: T rounds of a sensitivity-1 Gaussian vote, ``private_evolution_event(σ, T)``, charged once
before the first histogram.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "check_embeddings": "hf_dpsynth.generation.private_evolution.votes",
    "dp_vote_histogram": "hf_dpsynth.generation.private_evolution.votes",
    "nearest_candidates": "hf_dpsynth.generation.private_evolution.votes",
    "pe_noise_multiplier": "hf_dpsynth.generation.private_evolution.votes",
    "vote_histogram": "hf_dpsynth.generation.private_evolution.votes",
}
__all__ = [
    "check_embeddings",
    "dp_vote_histogram",
    "nearest_candidates",
    "pe_noise_multiplier",
    "vote_histogram",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.generation.private_evolution.votes import (
        check_embeddings,
        dp_vote_histogram,
        nearest_candidates,
        pe_noise_multiplier,
        vote_histogram,
    )

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation.private_evolution", _LAZY)
