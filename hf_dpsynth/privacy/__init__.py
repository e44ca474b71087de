"""Privacy accounting for hf_dpsynth: events, one ledger per release, noise calibration.

Built on dp-accounting (PLD by default, RDP when a zCDP mechanism is planned). Imports neither
torch nor anything heavy, so it is fast to import and to test.
"""

from __future__ import annotations

from hf_dpsynth.privacy.accountants import PLD_MIN_NOISE_MULTIPLIER
from hf_dpsynth.privacy.calibration import (
    SIGMA_REL_TOL,
    calibrate_noise_multiplier,
    compute_epsilon,
    default_delta,
)
from hf_dpsynth.privacy.events import (
    ACCOUNTANT_KINDS,
    STAGE_KINDS,
    AccountantName,
    MechanismKind,
    accountant_for_kinds,
    dpsgd_event,
    event_from_dict,
    event_kind,
    event_to_dict,
    gaussian_event,
    is_non_private,
    private_evolution_event,
    zcdp_event,
)
from hf_dpsynth.privacy.charges import ADJACENCY, Charge, StagePlan
from hf_dpsynth.privacy.ledger import PrivacyLedger
from hf_dpsynth.privacy.report import LedgerReport, StageReport

__all__ = [
    "ACCOUNTANT_KINDS",
    "ADJACENCY",
    "AccountantName",
    "Charge",
    "LedgerReport",
    "MechanismKind",
    "PLD_MIN_NOISE_MULTIPLIER",
    "PrivacyLedger",
    "SIGMA_REL_TOL",
    "STAGE_KINDS",
    "StagePlan",
    "StageReport",
    "accountant_for_kinds",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "default_delta",
    "dpsgd_event",
    "event_from_dict",
    "event_kind",
    "event_to_dict",
    "gaussian_event",
    "is_non_private",
    "private_evolution_event",
    "zcdp_event",
]
