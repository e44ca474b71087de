"""Sharing a release: DP cards, safety gates, and publishing to the Hub.

Nothing leaves the machine before every gate passed: no canary, no long and rare verbatim training
record, a ledger and a valid, shareable DP card that matches it and states the owner checks, no
refuted audit (unless explicitly overridden, and stated in the card), DP on (or explicitly allowed
off), and no checkpoint, RNG state or secret seed in the folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
__all__ = [
    "CANARY_OWNER_CHECK",
    "GateReport",
    "PushResult",
    "VERBATIM_OWNER_CHECK",
    "check_card",
    "check_folder",
    "check_release",
    "check_repo_id",
    "dp_block",
    "dp_block_schema",
    "find_verbatim",
    "push_adapter",
    "push_synthetic_dataset",
    "push_trainer_adapter",
    "read_dp_block",
    "refuted_audit_statement",
    "render_adapter_card",
    "render_dataset_card",
    "trainer_adapter_card",
    "validate_card",
    "write_trainer_adapter_card",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.hub.adapter import push_trainer_adapter, trainer_adapter_card, write_trainer_adapter_card
    from hf_dpsynth.hub.card_block import dp_block, dp_block_schema, refuted_audit_statement
    from hf_dpsynth.hub.card_reading import read_dp_block, validate_card
    from hf_dpsynth.hub.cards import render_adapter_card, render_dataset_card
    from hf_dpsynth.hub.gates import (
        CANARY_OWNER_CHECK,
        VERBATIM_OWNER_CHECK,
        GateReport,
        check_card,
        check_folder,
        check_release,
        find_verbatim,
    )
    from hf_dpsynth.hub.publish import PushResult, push_adapter, push_synthetic_dataset
    from hf_dpsynth.hub.repo import check_repo_id

__getattr__, __dir__ = lazy_exports("hf_dpsynth.hub", _LAZY)
