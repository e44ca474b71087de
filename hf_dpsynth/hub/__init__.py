"""Sharing a release: DP cards, safety gates, and publishing to the Hub.

Nothing leaves the machine before every gate passed: no canary, no long and rare verbatim training
record, a ledger and a valid, shareable DP card that matches it and states the owner checks, no
refuted audit (unless explicitly overridden, and stated in the card), DP on (or explicitly allowed
off), and no checkpoint, RNG state or secret seed in the folder.
"""

from __future__ import annotations

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "dp_block": "hf_dpsynth.hub.card_block",
    "dp_block_schema": "hf_dpsynth.hub.card_block",
    "refuted_audit_statement": "hf_dpsynth.hub.card_block",
    "read_dp_block": "hf_dpsynth.hub.card_reading",
    "validate_card": "hf_dpsynth.hub.card_reading",
    "render_adapter_card": "hf_dpsynth.hub.cards",
    "render_dataset_card": "hf_dpsynth.hub.cards",
    "CANARY_OWNER_CHECK": "hf_dpsynth.hub.gates",
    "VERBATIM_OWNER_CHECK": "hf_dpsynth.hub.gates",
    "GateReport": "hf_dpsynth.hub.gates",
    "check_card": "hf_dpsynth.hub.gates",
    "check_folder": "hf_dpsynth.hub.gates",
    "check_release": "hf_dpsynth.hub.gates",
    "find_verbatim": "hf_dpsynth.hub.gates",
    "PushResult": "hf_dpsynth.hub.publish",
    "push_trainer_adapter": "hf_dpsynth.hub.adapter",
    "trainer_adapter_card": "hf_dpsynth.hub.adapter",
    "write_trainer_adapter_card": "hf_dpsynth.hub.adapter",
    "push_adapter": "hf_dpsynth.hub.publish",
    "push_synthetic_dataset": "hf_dpsynth.hub.publish",
    "check_repo_id": "hf_dpsynth.hub.repo",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("hf_dpsynth.hub", _LAZY)
