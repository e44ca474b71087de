"""What a ledger records: one charge (a stage's dp-accounting event, with a random id), a planned
stage, and the checks on stage names, privacy units and N that every charge passes.

Privacy: a charge id identifies a charge (an output's sidecar names it); it is not a secret of
any mechanism. δ must stay below 1/N, or releasing one unit's records verbatim would satisfy it.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Mapping
from typing import Any, Literal

import dp_accounting

from hf_dpsynth.errors import BudgetPlanError, InvalidPrivacyParameterError
from hf_dpsynth.privacy import _validation
from hf_dpsynth.privacy.events import STAGE_KINDS, MechanismKind, event_to_dict
from hf_dpsynth.privacy.report import json_copy

__all__ = ["ADJACENCY", "PRIVACY_UNITS", "Charge", "holds_run_charge", "PrivacyUnit", "StagePlan", "check_privacy_unit", "check_stage_name",
           "checked_num_units", "new_charge_id", "planned_kind"]


PrivacyUnit = Literal["example", "user"]
PRIVACY_UNITS = ("example", "user")
ADJACENCY = "add_or_remove_one"
"""Neighbouring datasets differ by adding or removing all records of one privacy unit."""


def new_charge_id() -> str:
    """A fresh random charge id (128 bits from the OS)."""
    return secrets.token_hex(16)

@dataclasses.dataclass(frozen=True)


class StagePlan:
    """One planned stage: the share of ε it may spend on its own, and its mechanism kind."""

    share: float
    kind: MechanismKind

@dataclasses.dataclass(frozen=True)


class Charge:
    """One recorded charge: the stage, its dp-accounting event, metadata and when it was made.

    ``id`` is random (not a secret: it identifies the charge, nothing of the mechanism's
    randomness). An output saved by a pipeline records the ids of the charges that paid for it,
    so that reusing it later can be matched to those charges in the loaded ledger
    (docs/DP_CORRECTNESS.md row 31).
    """

    stage: str
    event: dp_accounting.DpEvent
    metadata: Mapping[str, Any]
    timestamp: str
    id: str = dataclasses.field(default_factory=lambda: new_charge_id())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "event": event_to_dict(self.event),
            "metadata": json_copy(self.metadata),
            "timestamp": self.timestamp,
        }

def holds_run_charge(ledger: Any, stage: str, run_id: str | None) -> bool:
    """Whether ``ledger`` (a PrivacyLedger) holds a ``stage`` charge made by the run ``run_id`` (its
    metadata's ``run_id``): how a resumed run tells a charge it made from one it must still make."""
    return any(c.stage == stage and (c.metadata or {}).get("run_id") == run_id for c in ledger.charges)


def check_stage_name(stage: Any, *, error: type[Exception]) -> None:
    if not isinstance(stage, str) or not stage.strip():
        raise error(f"A stage name must be a non-empty string; got {stage!r}.")

def planned_kind(stage: str, kind: str | None) -> MechanismKind:
    """The mechanism kind of a planned stage: the vocabulary's, or the declared one."""
    vocabulary = STAGE_KINDS.get(stage)
    if kind is None:
        if vocabulary is None:
            raise BudgetPlanError(
                f"Stage {stage!r} is not one hf_dpsynth knows ({sorted(STAGE_KINDS)}), so its "
                f"mechanism kind must be declared: kinds={{{stage!r}: 'gaussian' | "
                "'poisson_gaussian' | 'zcdp'}."
            )
        return vocabulary
    try:
        declared = MechanismKind(kind)
    except ValueError:
        raise BudgetPlanError(
            f"Unknown mechanism kind {kind!r} for stage {stage!r}; use one of "
            f"{[k.value for k in MechanismKind]}."
        ) from None
    if vocabulary is not None and declared != vocabulary:
        raise BudgetPlanError(
            f"Stage {stage!r} has the fixed kind {vocabulary.value!r}; got {kind!r}. Give a "
            "custom mechanism its own stage name."
        )
    return declared

def check_privacy_unit(name: str, value: Any) -> str:
    if value not in PRIVACY_UNITS:
        raise InvalidPrivacyParameterError(
            f"{name} must be 'example' or 'user'; got {value!r}. Use 'user' when one person can "
            "own several records (and bound each user's contribution)."
        )
    return str(value)

def checked_num_units(num_units: Any, delta: float) -> int:
    n = _validation.count("num_units", num_units, minimum=1)
    if not delta < 1 / n:
        suggestion = 1 / (n * math.log(n)) if n > 2 else 1 / (2 * n)
        raise InvalidPrivacyParameterError(
            f"delta must be below 1/N = {1 / n:.3g} for N = {n} privacy units; got {delta:g}. "
            f"With δ ≥ 1/N, releasing one unit's records verbatim would satisfy the guarantee. "
            f"Use e.g. δ = 1/(N·ln N) = {suggestion:.3g}."
        )
    return n
