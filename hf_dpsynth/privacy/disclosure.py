"""What a release may disclose: the one owner-only heading and what the guarantee does not cover.

Reports (``hf_dpsynth.evaluation``) and cards (``hf_dpsynth.hub``) both write these texts; a card
gate finds an owner-only section by this heading, so there is one heading for both.
"""

from __future__ import annotations

__all__ = ["DEFAULT_NOT_COVERED", "OWNER_ONLY_HEADING"]


OWNER_ONLY_HEADING = "Owner-only (not covered by the DP guarantee; do not publish)"


DEFAULT_NOT_COVERED: tuple[str, ...] = (
    "Training losses and metrics logged during training: they are computed on private data without noise.",
    "Hyper-parameter tuning on private data: only the final run is accounted, not the runs it was chosen from.",
    "The base model's own pre-training data: the guarantee protects the fine-tuning data only.",
    "Owner-only checks that select outputs using private data (e.g. a verbatim-copy gate).",
    "Floating-point side channels: the noise is sampled and added in floating point.",
)
"""What the (ε, δ) guarantee of a release does not cover, unless the owner states otherwise."""
