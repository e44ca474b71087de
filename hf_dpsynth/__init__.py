"""hf_dpsynth: differentially private synthetic data for the Hugging Face ecosystem.

The privacy ledger (``hf_dpsynth.privacy``) imports without torch; the trainer and models are
imported lazily so that ``import hf_dpsynth`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports
from hf_dpsynth._version import __version__

_LAZY = {
    "PrivacyLedger": "hf_dpsynth.privacy",
    "calibrate_noise_multiplier": "hf_dpsynth.privacy",
    "load_model_and_tokenizer": "hf_dpsynth.models",
    "DPSynthConfig": "hf_dpsynth.training",
    "DPSynthTrainer": "hf_dpsynth.training",
}

__all__ = [
    "__version__",
    "PrivacyLedger",
    "calibrate_noise_multiplier",
    "load_model_and_tokenizer",
    "DPSynthConfig",
    "DPSynthTrainer",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.models import load_model_and_tokenizer
    from hf_dpsynth.privacy import PrivacyLedger, calibrate_noise_multiplier
    from hf_dpsynth.training import DPSynthConfig, DPSynthTrainer

__getattr__, __dir__ = lazy_exports("hf_dpsynth", _LAZY)
