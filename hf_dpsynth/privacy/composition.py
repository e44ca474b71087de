"""Composing a charge into a ledger: the state a charge would produce, computed (and refused) before
anything is committed, and the commit itself. ``PrivacyLedger`` binds these as its private methods.

Privacy: a refused charge leaves the ledger unchanged (the proposal works on copies of the
accountants); the budget checks allow float noise of 1e-9 relative, nothing more.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import dp_accounting

from hf_dpsynth.errors import PrivacyUnitMismatchError, UnplannedStageError, UnsupportedEventError
from hf_dpsynth.privacy import _validation
from hf_dpsynth.privacy.accountants import AccountantSpec, compose, epsilon_of
from hf_dpsynth.privacy.charges import Charge, check_privacy_unit, check_stage_name, checked_num_units
from hf_dpsynth.privacy.events import ACCOUNTANT_KINDS, AccountantName, accountant_for_kinds, event_kind, event_to_dict, is_non_private

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["SLACK", "Proposal", "commit", "extended", "propose", "refusal"]


SLACK = 1e-9  # relative tolerance for float noise in the budget checks; nothing more

@dataclasses.dataclass
class Proposal:
    """The ledger state a charge would produce, computed before anything is committed."""

    stage: str
    event: dp_accounting.DpEvent
    accountant: AccountantName
    total_accountant: dp_accounting.PrivacyAccountant | None
    stage_accountant: dp_accounting.PrivacyAccountant | None
    total_epsilon: float
    stage_epsilon: float
    non_private: bool
    num_units: int | None
    refusal: str | None

SOURCE_WORDS = {
    "given": "the ledger's accountant argument",
    "plan": "the plan",
    "first_charge": "the first charge",
}

def extended(
    base: dp_accounting.PrivacyAccountant | None,
    spec: AccountantSpec,
    event: dp_accounting.DpEvent,
) -> dp_accounting.PrivacyAccountant:
    """A new accountant: ``base`` (copied, never mutated) with ``event`` composed in."""
    acc = spec.new() if base is None else copy.deepcopy(base)
    compose(acc, event)
    return acc


def propose(
    ledger: PrivacyLedger,
    stage: str,
    event: dp_accounting.DpEvent,
    *,
    privacy_unit: str | None,
    num_units: int | None,
    check_budget: bool = True,
) -> Proposal:
    check_stage_name(stage, error=UnplannedStageError)
    if not isinstance(event, dp_accounting.DpEvent):
        raise UnsupportedEventError(
            f"charge() needs a dp_accounting event; got {event!r}. Build one with "
            "gaussian_event, dpsgd_event, zcdp_event or private_evolution_event."
        )
    event_to_dict(event)  # every charge must be saveable: refuse unknown event types now
    kinds = event_kind(event)
    ledger._check_planned(stage)
    if privacy_unit is not None:
        unit = check_privacy_unit("privacy_unit", privacy_unit)
        if unit != ledger._privacy_unit:
            raise PrivacyUnitMismatchError(
                f"Stage {stage!r} charges at privacy unit {unit!r}, but this ledger protects "
                f"one {ledger._privacy_unit!r}. Composing both would guarantee only the weaker "
                f"unit; run the stage at {ledger._privacy_unit!r} level (bound each unit's "
                "contribution first), or use a separate ledger."
            )
    units = ledger._num_units
    if num_units is not None:
        given = _validation.count("num_units", num_units, minimum=1)
        if units is None:
            units = checked_num_units(given, ledger._delta)
        elif given != units:
            raise PrivacyUnitMismatchError(
                f"Stage {stage!r} was computed for N = {given} privacy units, but the ledger "
                f"is for N = {units}. q, δ and the accounting depend on N: compute every stage "
                "on the same dataset."
            )
    accountant = ledger._accountant or accountant_for_kinds(kinds)
    missing = kinds - ACCOUNTANT_KINDS[accountant]
    if missing:
        raise UnsupportedEventError(
            f"This ledger's accountant is {accountant.upper()} (fixed by "
            f"{SOURCE_WORDS[ledger._accountant_source or 'first_charge']}), which cannot "
            f"compose the {sorted(map(str, missing))} mechanism of stage {stage!r}. Create "
            f"the ledger with accountant='rdp', or plan the stage up front "
            f"(ledger.plan({{{stage!r}: share}}, kinds=...) before the first charge) so "
            "that the ledger chooses RDP itself."
        )

    non_private = bool(ledger._non_private_stages) or is_non_private(event)
    stage_non_private = stage in ledger._non_private_stages or is_non_private(event)
    total_acc = stage_acc = None
    total_eps = stage_eps = math.inf
    spec = AccountantSpec(accountant)
    if not non_private:
        total_acc = extended(ledger._total_accountant, spec, event)
        total_eps = epsilon_of(total_acc, ledger._delta)
    if not stage_non_private:
        if total_acc is not None and all(c.stage == stage for c in ledger._charges):
            # The stage holds every charge so far: its composition is the total's.
            stage_acc, stage_eps = copy.deepcopy(total_acc), total_eps
        else:
            stage_acc = extended(ledger._stage_accountants.get(stage), spec, event)
            stage_eps = epsilon_of(stage_acc, ledger._delta)

    refusal = None
    if check_budget and math.isfinite(ledger._epsilon):
        refusal = ledger._refusal(stage, event, total_eps, stage_eps)
    return Proposal(
        stage=stage,
        event=event,
        accountant=accountant,
        total_accountant=total_acc,
        stage_accountant=stage_acc,
        total_epsilon=total_eps,
        stage_epsilon=stage_eps,
        non_private=is_non_private(event),
        num_units=units,
        refusal=refusal,
    )


def refusal(ledger: PrivacyLedger, stage: str, event: Any, total_eps: float, stage_eps: float) -> str | None:
    """Why a charge with these composed ε must be refused, or None."""
    advice = (
        "Nothing was spent. Add noise (ledger.calibrate(...) gives the smallest noise "
        "multiplier that fits), take fewer steps, or drop the stage; raise a budget only in "
        "a plan made before any private data was used."
    )
    if math.isinf(total_eps):
        return (
            f"Stage {stage!r} charges a non-private event ({event!r}, σ = 0), whose ε is "
            f"infinite, to a ledger with a finite budget ε = {ledger._epsilon:g}. Add noise, "
            "or create the ledger with epsilon=math.inf to disable DP (the release is then "
            "labelled non-private)."
        )
    if total_eps > ledger._epsilon * (1 + SLACK):
        return (
            f"Charging stage {stage!r} would raise the composed ε from "
            f"{ledger._total_epsilon:.6g} to {total_eps:.6g}, above the budget "
            f"ε = {ledger._epsilon:g} (δ = {ledger._delta:g}, {ledger._accountant_name()}). "
            + advice
        )
    if ledger._plan is not None:
        share = ledger._plan[stage].share
        budget = share * ledger._epsilon
        if stage_eps > budget * (1 + SLACK):
            return (
                f"Charging stage {stage!r} would raise its own ε from "
                f"{ledger._stage_epsilons.get(stage, 0.0):.6g} to {stage_eps:.6g}, above its "
                f"share {share:g} × ε = {budget:.6g} (δ = {ledger._delta:g}). " + advice
            )
    return None


def commit(ledger: PrivacyLedger, proposal: Proposal, charge: Charge) -> Charge:
    stage = proposal.stage
    if ledger._accountant is None:
        ledger._accountant, ledger._accountant_source = proposal.accountant, "first_charge"
    ledger._num_units = proposal.num_units
    if proposal.non_private:
        ledger._non_private_stages.add(stage)
    if proposal.total_accountant is not None:
        ledger._total_accountant = proposal.total_accountant
    if proposal.stage_accountant is not None:
        ledger._stage_accountants[stage] = proposal.stage_accountant
    ledger._total_epsilon = proposal.total_epsilon
    ledger._stage_epsilons[stage] = proposal.stage_epsilon
    ledger._charges.append(charge)
    return charge
