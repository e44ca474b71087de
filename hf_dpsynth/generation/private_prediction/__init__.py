"""Private prediction: synthetic records from a base model prompted with private records, without
fine-tuning (Amin et al., Findings of EMNLP 2024).

* :mod:`.mechanism` — the maths: clipped, averaged logits, the sparse-vector statistic, ρ per token.
* :mod:`.batching` — batches per label, each record's batch (a stable keyed hash), the batch order.
* :mod:`.synthesizer` — :class:`PrivatePredictionSynthesizer`, the
  :class:`~hf_dpsynth.generation.Synthesizer`, which takes a :class:`~hf_dpsynth.data.PreparedDataset`.

Privacy: zCDP, ρ = r_max·[½(c/(sτ))² + 2/(sσ_svt)²] charged once to the ledger before anything runs;
see :mod:`.synthesizer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "PrivatePredictionSynthesizer": "hf_dpsynth.generation.private_prediction.synthesizer",
    "SparseVectorGate": "hf_dpsynth.generation.private_prediction.mechanism",
    "aggregate_logits": "hf_dpsynth.generation.private_prediction.mechanism",
    "clip_logits": "hf_dpsynth.generation.private_prediction.mechanism",
    "private_prediction_rho": "hf_dpsynth.generation.private_prediction.mechanism",
    "svt_statistic": "hf_dpsynth.generation.private_prediction.mechanism",
    "batch_of": "hf_dpsynth.generation.private_prediction.batching",
}
__all__ = [
    "PrivatePredictionSynthesizer",
    "SparseVectorGate",
    "aggregate_logits",
    "batch_of",
    "clip_logits",
    "private_prediction_rho",
    "svt_statistic",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.generation.private_prediction.batching import batch_of
    from hf_dpsynth.generation.private_prediction.mechanism import (
        SparseVectorGate,
        aggregate_logits,
        clip_logits,
        private_prediction_rho,
        svt_statistic,
    )
    from hf_dpsynth.generation.private_prediction.synthesizer import PrivatePredictionSynthesizer

__getattr__, __dir__ = lazy_exports("hf_dpsynth.generation.private_prediction", _LAZY)
