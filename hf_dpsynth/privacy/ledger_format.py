"""What a ledger writes for others: its file (everything needed to resume a release: budget, unit, N,
accountant, plan, every charge, as JSON; read back by replaying every charge in order) and its report.

Privacy: the file holds only public accounting (events, their parameters, ids, times); never a
seed or a private value. A file the replay cannot reproduce is refused, never half-read.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any

from hf_dpsynth.errors import LedgerFormatError
from hf_dpsynth.privacy.charges import ADJACENCY, Charge
from hf_dpsynth.privacy.events import STAGE_KINDS, event_from_dict, event_kind
from hf_dpsynth.privacy.report import LedgerReport, StageReport, json_copy, json_number

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["FORMAT", "FORMAT_VERSION", "ledger_from_dict", "ledger_report", "ledger_to_dict", "stage_kind", "versions"]


FORMAT = "hf_dpsynth.privacy_ledger"

FORMAT_VERSION = 1

def versions() -> dict[str, str]:
    from hf_dpsynth._version import __version__

    def version(dist: str, fallback: str) -> str:
        try:
            return importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            return fallback

    return {
        "hf_dpsynth": version("hf-dpsynth", __version__),
        "dp-accounting": version("dp-accounting", "unknown"),
        "python": platform.python_version(),
    }


def ledger_to_dict(ledger: PrivacyLedger) -> dict[str, Any]:
    """Everything needed to resume: budget, unit, N, accountant, plan and every charge."""
    plan = None
    if ledger._plan is not None:
        plan = {
            "shares": {name: p.share for name, p in ledger._plan.items()},
            "kinds": {name: p.kind.value for name, p in ledger._plan.items()},
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epsilon": json_number(ledger._epsilon),
        "delta": ledger._delta,
        "privacy_unit": ledger._privacy_unit,
        "num_units": ledger._num_units,
        "adjacency": ADJACENCY,
        "accountant": ledger._accountant,
        "accountant_source": ledger._accountant_source,
        "plan": plan,
        "charges": [c.to_dict() for c in ledger._charges],
        "epsilon_spent": json_number(ledger._total_epsilon),
        "versions": versions(),
    }


def ledger_from_dict(cls: type[PrivacyLedger], data: Mapping[str, Any]) -> PrivacyLedger:
    """The ledger :meth:`to_dict` describes, with every charge replayed in order.

    The replay recomputes ε with the same accountant, so a resumed run continues exactly
    where the saved one stopped.
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise LedgerFormatError(
            f"Not an hf_dpsynth privacy ledger: expected format {FORMAT!r}, got {found!r}."
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise LedgerFormatError(
            f"Unsupported ledger format_version {data.get('format_version')!r}; this "
            f"hf_dpsynth reads version {FORMAT_VERSION}. Upgrade hf_dpsynth to resume it."
        )
    try:
        epsilon = data["epsilon"]
        ledger = cls(
            epsilon=math.inf if epsilon == "inf" else epsilon,
            delta=data["delta"],
            privacy_unit=data["privacy_unit"],
            num_units=data["num_units"],
            accountant=data["accountant"] if data["accountant_source"] == "given" else None,
        )
        if data["adjacency"] != ADJACENCY:
            raise LedgerFormatError(f"Unknown adjacency {data['adjacency']!r}.")
        if data["plan"] is not None:
            ledger.plan(data["plan"]["shares"], kinds=data["plan"]["kinds"])
        source = data["accountant_source"]
        if source == "first_charge":
            ledger._accountant, ledger._accountant_source = data["accountant"], source
        if ledger._accountant != data["accountant"]:
            raise LedgerFormatError(
                f"The saved accountant {data['accountant']!r} does not follow from the saved "
                f"plan and source {source!r}."
            )
        for record in data["charges"]:
            event = event_from_dict(record["event"])
            meta = json_copy(record["metadata"], what="metadata")
            proposal = ledger._propose(
                record["stage"], event, privacy_unit=None, num_units=None, check_budget=False
            )
            charge_id = record.get("id")
            if not isinstance(charge_id, str) or not charge_id:
                raise LedgerFormatError(
                    f"Charge {len(ledger._charges)} of stage {record['stage']!r} has no id; this ledger was "
                    "written by an older hf_dpsynth, whose outputs cannot be matched to their charges. "
                    "Start the release again in a new folder."
                )
            if any(c.id == charge_id for c in ledger._charges):
                raise LedgerFormatError(f"Charge id {charge_id!r} appears twice in the ledger.")
            ledger._commit(proposal, Charge(record["stage"], event, meta, record["timestamp"], charge_id))
    except (KeyError, TypeError) as exc:
        raise LedgerFormatError(
            f"Malformed privacy ledger: missing or bad field {exc}."
        ) from exc
    return ledger


def ledger_report(ledger: PrivacyLedger) -> LedgerReport:
    """The guarantee so far: composed ε, budget, unit, accountant, and each stage's spend."""
    names = list(ledger._plan or {})
    names += [c.stage for c in ledger._charges if c.stage not in names]
    names = list(dict.fromkeys(names))
    stages = []
    for name in names:
        planned = (ledger._plan or {}).get(name)
        share = planned.share if planned else None
        stages.append(
            StageReport(
                name=name,
                kind=stage_kind(ledger, name),
                share=share,
                epsilon_budget=None if share is None else share * ledger._epsilon,
                epsilon_spent=ledger._stage_epsilons.get(name, 0.0),
                charges=tuple(
                    json_copy(c.metadata) for c in ledger._charges if c.stage == name
                ),
            )
        )
    return LedgerReport(
        stages=tuple(stages),
        epsilon_spent=ledger._total_epsilon,
        epsilon_budget=ledger._epsilon,
        delta=ledger._delta,
        accountant=ledger._accountant,
        adjacency=ADJACENCY,
        privacy_unit=ledger._privacy_unit,
        num_units=ledger._num_units,
        private=ledger.private,
        versions=versions(),
    )


def stage_kind(ledger: PrivacyLedger, stage: str) -> str:
    """A stage's mechanism kind: planned, from the vocabulary, or read off its charges."""
    if ledger._plan is not None and stage in ledger._plan:
        return ledger._plan[stage].kind.value
    if stage in STAGE_KINDS:
        return STAGE_KINDS[stage].value
    kinds: set[str] = set()
    for c in ledger._charges:
        if c.stage == stage:
            kinds |= {k.value for k in event_kind(c.event)}
    return "+".join(sorted(kinds)) or "none"
