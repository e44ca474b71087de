"""The machine-readable ``differential_privacy`` block of a DP card, and its JSON Schema.

The block is the card's guarantee in data: ε, δ, the privacy unit and N, the accountant, each stage
of the ledger with its mechanism parameters, dp-accounting events and released outputs, the audit
when it may be shared, the owner checks and what the guarantee does not cover. It is validated
against ``templates/dp_block.schema.json`` and against the ledger's invariants.

Privacy: every figure comes from the ledger's report (or the ledger itself, which adds each charge's
dp-accounting event); nothing is recomputed here. An audit enters the block only when its results
may be shared; an output that no charge paid for, or any mention of a mechanism's secret (a seed),
is refused.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_dpsynth._markdown import ceil_significant, ledger_number
from hf_dpsynth.errors import CardError, MissingDependencyError
from hf_dpsynth.hub.card_inputs import checked_strings, json_plain, ledger_input, without_secrets
from hf_dpsynth.privacy.disclosure import DEFAULT_NOT_COVERED, OWNER_ONLY_HEADING

__all__ = [
    "DP_BLOCK_KEY",
    "SECRET_TEXT",
    "TEMPLATES_DIR",
    "dp_block",
    "dp_block_schema",
    "epsilon_text",
    "refuted_audit_statement",
    "validate_block",
]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
"""The Jinja templates and the DP block's JSON Schema (package data of ``hf_dpsynth.hub``)."""

DP_BLOCK_KEY = "differential_privacy"
SECRET_TEXT = re.compile(r"seed", re.IGNORECASE)
"""No DP block or card may mention a seed: a mechanism's random state never enters a card."""

_FORMAT = "hf_dpsynth.dp_block"
_FORMAT_VERSION = 2  # 2: each stage lists the outputs it released; an audit may carry an override

_REPORT_KEYS = (
    "epsilon_spent", "epsilon_budget", "delta", "accountant", "adjacency", "privacy_unit", "num_units",
    "private", "stages", "versions",
)
_STAGE_KEYS = ("name", "kind", "share", "epsilon_budget", "epsilon_spent", "charges")
_KIND_WORDS = {
    "gaussian": "Gaussian mechanism",
    "poisson_gaussian": "Poisson-subsampled Gaussian (DP-SGD)",
    "zcdp": "ρ-zCDP mechanism",
    "none": "no charge",
}


def dp_block(
    ledger_report: Any,
    *,
    audit: Any = None,
    max_examples_per_user: int | None = None,
    owner_checks: Sequence[str] = (),
    owner_only_included: bool = False,
    reproducible_randomness: bool = False,
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> dict[str, Any]:
    """The machine-readable ``differential_privacy`` block of a card, validated against the schema.

    Args:
        ledger_report: ``PrivacyLedger.report().to_dict()``, a ``LedgerReport``, or the
            ``PrivacyLedger`` itself (which adds each charge's dp-accounting event to the block).
        audit: an ``AuditReport``; its summary enters the block only when ``audit.shareable``
            (charged to the release ledger, or run on public data).
        max_examples_per_user: the user-level cap on records per user, when the charges do not
            record it (the preparation report does).
        owner_checks: non-DP checks on the private data applied before release (row 29 of
            docs/DP_CORRECTNESS.md), e.g. ``"verbatim training-record gate"``.
        owner_only_included: whether the card shows owner-only values.
        reproducible_randomness: the mechanisms' randomness was fixed for reproducibility (a test
            setting: the guarantee holds only while that value stays secret).
        outputs: stage name → names of the outputs that stage released, e.g.
            ``{"label_histogram": ["label_histogram.json"], "training": ["adapter"]}``. Each stage
            entry of the block lists its outputs; a stage that released an output must hold a charge,
            and every named stage must be in the ledger (CardError otherwise).
        refuted_audit_override: the audit refuted the claim (ε̂ > ε) and the owner publishes anyway:
            the audit block then carries an explicit ``override`` statement (see
            :func:`refuted_audit_statement`), shown in the card. CardError when there is no shareable
            audit, or it did not refute the claim.

    Raises CardError when the report lacks a field, N is unknown, or the block does not validate.

    Privacy: every figure is the ledger's; charge metadata keys that could hold a mechanism's
    secret are dropped, and a block that still mentions one is refused.
    """
    report, events = ledger_input(ledger_report)
    _check_report(report)
    unit = report["privacy_unit"]
    released = _outputs(outputs, [stage["name"] for stage in report["stages"]])
    stages = [_stage_block(stage, events.get(stage["name"]), released.get(stage["name"], []))
              for stage in report["stages"]]
    unpaid = [(s["name"], s["outputs"]) for s in stages if s["outputs"] and not s["charges"]]
    if unpaid:
        raise CardError(
            "; ".join(f"Stage {name!r} released {names} but holds no charge" for name, names in unpaid) + " in the "
            "ledger: an output that nothing paid for would be released without DP. Use the ledger of the run that "
            "produced these outputs (docs/DP_CORRECTNESS.md row 31)."
        )
    block: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "private": report["private"],
        "epsilon": report["epsilon_spent"],
        "epsilon_budget": report["epsilon_budget"],
        "delta": report["delta"],
        "privacy_unit": unit,
        "adjacency": report["adjacency"],
        "num_units": report["num_units"],
        "num_users": report["num_units"] if unit == "user" else None,
        "max_examples_per_user": _user_cap(unit, max_examples_per_user, report["stages"]),
        "accountant": report["accountant"],
        "randomness": "fixed_for_reproducibility" if reproducible_randomness else "os_entropy",
        "stages": stages,
    }
    summary = _audit_block(audit, stages, override=bool(refuted_audit_override))
    if summary is not None:
        block["audit"] = summary
    checks = checked_strings("owner_checks", owner_checks)
    block["owner_only_included"] = bool(owner_only_included)
    block["owner_checks"] = checks
    block["not_covered"] = _not_covered(
        private=report["private"] is True, unit=unit, owner_checks=checks,
        owner_only_included=bool(owner_only_included), reproducible_randomness=reproducible_randomness,
        refuted_override=summary is not None and "override" in summary,
    )
    block["versions"] = report["versions"]
    block = json_plain(block, what="the differential_privacy block")
    validate_block(block)
    return block


@functools.cache
def dp_block_schema() -> dict[str, Any]:
    """The JSON Schema of the ``differential_privacy`` block (draft 2020-12)."""
    return json.loads((TEMPLATES_DIR / "dp_block.schema.json").read_text(encoding="utf-8"))


def _check_report(report: Mapping[str, Any]) -> None:
    missing = [key for key in _REPORT_KEYS if key not in report]
    if missing:
        raise CardError(
            f"The ledger report lacks {missing}: pass PrivacyLedger.report().to_dict() (or the ledger itself) "
            "unchanged. A card states only what the ledger computed."
        )
    stages = report["stages"]
    if not isinstance(stages, list) or not stages:
        raise CardError(f"The ledger report has no stages ({stages!r}): a card describes at least one charged stage.")
    for index, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise CardError(f"Stage {index} of the ledger report is not a dict: {stage!r}.")
        lacking = [key for key in _STAGE_KEYS if key not in stage]
        if lacking:
            raise CardError(f"Stage {stage.get('name', index)!r} of the ledger report lacks {lacking}.")
        if not isinstance(stage["charges"], list) or not all(isinstance(c, Mapping) for c in stage["charges"]):
            raise CardError(f"The charges of stage {stage['name']!r} must be a list of metadata dicts.")
    if report["num_units"] is None:
        raise CardError(
            "The ledger does not know N (num_units is None). N is public and every card discloses it "
            "(docs/DP_CORRECTNESS.md row 21b): create the ledger with num_units=N, or charge with num_units=N."
        )


def _outputs(outputs: Mapping[str, Sequence[str]] | None, stage_names: Sequence[str]) -> dict[str, list[str]]:
    """``outputs`` checked: a mapping from a stage of the ledger to the names of what it released."""
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping):
        raise CardError(f"outputs must map a stage name to the names of its outputs; got {type(outputs).__name__}.")
    unknown = [name for name in outputs if name not in stage_names]
    if unknown:
        raise CardError(
            f"outputs name the stage(s) {unknown}, which the ledger does not hold (its stages: {list(stage_names)}): "
            "every released output must be paid for by a charge in this ledger. Use the ledger of the run that "
            "produced the outputs."
        )
    released = {}
    for name, names in outputs.items():
        values = checked_strings(f"outputs[{name!r}]", names)
        if len(set(values)) != len(values):
            raise CardError(f"outputs[{name!r}] names an output twice: {values}.")
        released[str(name)] = values
    return released


def _stage_block(stage: Mapping[str, Any], events: list[dict[str, Any]] | None, outputs: Sequence[str] = ()) -> dict[str, Any]:
    charges = stage["charges"]
    if events is not None and len(events) != len(charges):
        raise CardError(
            f"Stage {stage['name']!r}: the ledger holds {len(events)} events but its report {len(charges)} charges."
        )
    entries = []
    for index, metadata in enumerate(charges):
        entry: dict[str, Any] = {"parameters": without_secrets(metadata)}
        if events is not None:
            entry["event"] = events[index]
        entries.append(entry)
    kinds = str(stage["kind"]).split("+")
    declared = list(dict.fromkeys(
        str(m["mechanism"]) for m in charges if isinstance(m.get("mechanism"), str) and m["mechanism"]
    ))
    mechanism = "; ".join(declared) or " + ".join(_KIND_WORDS.get(kind, kind) for kind in kinds)
    return {
        "name": stage["name"],
        "kind": stage["kind"],
        "mechanism": mechanism,
        "sampling": "poisson" if "poisson_gaussian" in kinds else "none",
        "share": stage["share"],
        "epsilon_budget": stage["epsilon_budget"],
        "epsilon_spent": stage["epsilon_spent"],
        "charges": entries,
        "outputs": list(outputs),
    }


def _user_cap(unit: str, given: int | None, stages: Sequence[Mapping[str, Any]]) -> int | None:
    """The records-per-user cap at user level: given, or recorded by the charges; the same everywhere."""
    if unit != "user":
        if given is not None:
            raise CardError(
                f"max_examples_per_user={given!r} was given for an example-level release; the cap applies to "
                "user-level DP only."
            )
        return None
    found = {c["max_examples_per_user"] for s in stages for c in s["charges"] if c.get("max_examples_per_user") is not None}
    if given is not None:
        found.add(given)
    if len(found) > 1:
        raise CardError(
            f"The records-per-user cap differs between the charges and the preparation: {sorted(found)}. A "
            "user-level guarantee holds for one cap; the stages were not run on the same bounded data."
        )
    return next(iter(found), None)


def refuted_audit_statement(epsilon_lower_bound: float, claimed_epsilon: Any) -> str:
    """The ``override`` statement a card's audit block carries when a refuted audit is published anyway."""
    return (f"The audit refuted the claimed guarantee: its lower bound ε̂ = {float(epsilon_lower_bound):.6g} exceeds "
            f"the claimed ε = {epsilon_text(claimed_epsilon)} (ε̂ > ε), and the release was published anyway, by "
            "the data owner's explicit override. The stated guarantee may not hold.")


def _audit_block(audit: Any, stages: Sequence[Mapping[str, Any]], *, override: bool = False) -> dict[str, Any] | None:
    """The audit summary, only when the audit's results may be shared (charged, or on public data)."""
    if audit is None:
        if override:
            raise CardError("refuted_audit_override=True but no audit was given: there is no refuted audit to state.")
        return None
    try:
        if not audit.shareable:
            if override:
                raise CardError(
                    "refuted_audit_override=True but the audit is owner-only (neither charged to this ledger nor run "
                    "on public data), so the card cannot show it or its override."
                )
            return None
        main, config = audit.main, audit.config
        summary = {
            "method": "one-run audit (Steinke, Nasr & Jagielski 2023)",
            "basis": "charged" if audit.charged else "public_data",
            "claimed_epsilon": _json_epsilon(audit.claimed_epsilon),
            "epsilon_lower_bound": float(main.epsilon_lower_bound),
            "num_canaries": int(main.num_canaries),
            "num_guesses": int(main.num_guesses),
            "num_correct": int(main.num_correct),
            "ceiling_epsilon": float(audit.ceiling.epsilon),
            "score": config.score,
            "guesses": config.guesses,
            "significance": float(config.significance),
            "auc": _finite_or_none(main.auc),
            "tpr_at_1pct_fpr": _finite_or_none(main.tpr_at_1pct_fpr),
            "refuted": bool(audit.refuted),
            # The main run's verdict only: the controls ran on the private data too (one without DP)
            # and were not charged, unless the whole audit ran on public data.
            "verdict": str(audit.verdict if audit.public_data else audit.main_verdict),
            "inclusion_hash": str(audit.inclusion_hash),
        }
    except AttributeError as exc:
        raise CardError(f"audit must be an hf_dpsynth.audit.AuditReport; got {type(audit).__name__} ({exc}).") from exc
    if summary["basis"] == "charged" and not any(s["name"] == "audit" and s["charges"] for s in stages):
        raise CardError(
            "The audit says it was charged to the release ledger, but this ledger has no charge in its 'audit' "
            "stage: its results are owner-only unless they were charged here (or the audit ran on public data)."
        )
    if override:
        if not summary["refuted"]:
            raise CardError(
                f"refuted_audit_override=True but the audit did not refute the claim (ε̂ = "
                f"{summary['epsilon_lower_bound']:.6g} ≤ ε = {epsilon_text(summary['claimed_epsilon'])}): a card "
                "states an override only for a refuted audit."
            )
        summary["override"] = refuted_audit_statement(summary["epsilon_lower_bound"], summary["claimed_epsilon"])
    return summary


def _not_covered(
    *, private: bool, unit: str, owner_checks: Sequence[str], owner_only_included: bool, reproducible_randomness: bool,
    refuted_override: bool = False,
) -> list[str]:
    items = []
    if refuted_override:
        items.append("Possibly everything: the audit refuted the claimed ε (ε̂ > ε) and the release was published "
                     "anyway, so the stated guarantee may not hold.")
    if not private:
        items.append("Everything: DP was off in at least one stage (ε = ∞), so this release carries no "
                     "differential-privacy guarantee at all.")
    items += DEFAULT_NOT_COVERED
    if unit == "example":
        items.append("A person with several records is protected only as a group: example-level DP bounds each "
                     "record's influence, and k records of one person get about k·ε.")
    if reproducible_randomness:
        items.append("The mechanisms' randomness was fixed by a reproducibility setting meant for tests: anyone who "
                     "learns that value can remove the noise, so the guarantee holds only while it stays secret.")
    if owner_only_included:
        items.append(f"The values under '{OWNER_ONLY_HEADING}' were computed on the private data without DP.")
    if owner_checks:
        items.append("Non-DP checks on the private data were applied before this release: "
                     + "; ".join(check.rstrip(". ") for check in owner_checks)
                     + ". Re-generating until such a check passes would be selection on private data.")
    return items


def validate_block(block: Any) -> None:
    """CardError listing every way ``block`` breaks the schema or the ledger's invariants."""
    if not isinstance(block, Mapping):
        raise CardError(f"The {DP_BLOCK_KEY} block must be a mapping; got {type(block).__name__}.")
    validator = _validator()
    errors = sorted(validator.iter_errors(block), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{DP_BLOCK_KEY}.{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
        raise CardError("The differential_privacy block does not validate against dp_block.schema.json:\n- "
                        + "\n- ".join(lines[:20]))
    problems = []
    if block["private"]:
        if block["epsilon"] > block["epsilon_budget"] * (1 + 1e-9):
            problems.append(f"ε = {block['epsilon']} exceeds the budget {block['epsilon_budget']}")
        for stage in block["stages"]:
            budget = stage["epsilon_budget"]
            if isinstance(budget, (int, float)) and stage["epsilon_spent"] > budget * (1 + 1e-9):
                problems.append(f"stage {stage['name']!r} spent {stage['epsilon_spent']} of {budget}")
    for stage in block["stages"]:
        if stage["outputs"] and not stage["charges"]:
            problems.append(f"stage {stage['name']!r} released {stage['outputs']} but holds no charge (an output "
                            "nothing paid for is released without DP)")
    audit = block.get("audit")
    if isinstance(audit, Mapping) and "override" in audit and audit["override"] != refuted_audit_statement(
            audit["epsilon_lower_bound"], audit["claimed_epsilon"]):
        problems.append("the audit's override statement is not the one its ε̂ and claimed ε give")
    if block["privacy_unit"] == "user" and block["num_users"] != block["num_units"]:
        problems.append(f"num_users = {block['num_users']} differs from N = {block['num_units']} at user level")
    if SECRET_TEXT.search(json.dumps(block, ensure_ascii=False)):
        problems.append("it mentions a seed; a mechanism's random state never enters a card")
    if problems:
        raise CardError("The differential_privacy block is inconsistent: " + "; ".join(problems) + ".")


@functools.cache
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency
        raise MissingDependencyError(
            "Validating a DP card needs jsonschema. Install it with: pip install 'jsonschema>=4.18'"
        ) from None
    return jsonschema.Draft202012Validator(dp_block_schema())


def _json_epsilon(value: Any) -> float | str:
    value = float(value) if not isinstance(value, str) else value
    return "inf" if value == "inf" or (isinstance(value, float) and math.isinf(value)) else value


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epsilon_text(value: Any) -> str:
    """ε as a card states it: rounded up to 4 significant digits (never understated), ∞ when infinite."""
    rounded = ceil_significant(ledger_number(value), 4)
    return "∞" if math.isinf(rounded) else f"{rounded:.4g}"
