"""DP dataset and adapter cards: the privacy block from the ledger, rendered through huggingface_hub.

A card has two parts. Its YAML metadata holds the conventional Hub fields (license, tags,
task categories, size category, ``base_model`` and ``library_name: peft`` for an adapter) and a
machine-readable ``differential_privacy:`` block (:func:`dp_block`), validated against
``templates/dp_block.schema.json``. Its Markdown body, rendered from the Jinja templates in
``templates/``, states the same guarantee in plain words: the privacy section, a table of the
ledger's stages with their mechanism parameters, the audit when it may be shared, a utility table
of shareable metrics, what the guarantee does not cover and, only on request, owner-only values.

Every privacy figure comes from the ledger's report (``PrivacyLedger.report().to_dict()``, or the
ledger itself, which adds each charge's dp-accounting event); nothing is recomputed here.

Privacy: a card releases only public facts about the release (ε, δ, unit, N, mechanism parameters)
and the values that are shareable by construction. Owner-only values (metrics on private data,
preparation counts, an uncharged audit on private data) enter a card only with
``include_owner_only=True``, under a heading that says the guarantee does not cover them. No
secret of a mechanism (random state of any kind) ever enters a card: such keys are dropped from
every mapping the card is built from, and a rendered card that still mentions one is refused.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_dpsynth.errors import CardError, MissingDependencyError
from hf_dpsynth._markdown import ceil_significant, escape_markdown, format_bound, format_value, ledger_number
from hf_dpsynth.models import DEFAULT_MODEL_CACHE_PREFIX, DEFAULT_MODEL_GGUF, DEFAULT_MODEL_ID, DEFAULT_MODEL_NAME
from hf_dpsynth.privacy.disclosure import DEFAULT_NOT_COVERED, OWNER_ONLY_HEADING
from hf_dpsynth.privacy.events import event_parameters

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import DatasetCard, ModelCard

__all__ = [
    "ADAPTER_TAGS",
    "DATASET_TAGS",
    "DP_BLOCK_KEY",
    "NOT_PRIVATE_TITLE",
    "TEMPLATES_DIR",
    "dp_block",
    "dp_block_schema",
    "read_dp_block",
    "refuted_audit_statement",
    "render_adapter_card",
    "render_dataset_card",
    "validate_card",
]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
"""The Jinja templates and the DP block's JSON Schema (package data of ``hf_dpsynth.hub``)."""

DP_BLOCK_KEY = "differential_privacy"
DATASET_TAGS = ("synthetic", "differential-privacy", "hf-dpsynth")
ADAPTER_TAGS = ("differential-privacy", "dp-sgd", "lora", "peft", "hf-dpsynth")
NOT_PRIVATE_TAG = "not-differentially-private"
NOT_PRIVATE_TITLE = "NOT differentially private"


_FORMAT = "hf_dpsynth.dp_block"
_FORMAT_VERSION = 2  # 2: each stage lists the outputs it released; an audit may carry an override
# Keys dropped from every mapping a card is built from: a mechanism's secrets (seeds, RNG
# states) must never be published, and a run id is local bookkeeping, not a mechanism parameter.
_SECRET_KEY = re.compile(r"seed|rng|random_state", re.IGNORECASE)
_DROPPED_KEYS = frozenset({"run_id"})
_SECRET_TEXT = re.compile(r"seed", re.IGNORECASE)

_REPORT_KEYS = (
    "epsilon_spent", "epsilon_budget", "delta", "accountant", "adjacency", "privacy_unit", "num_units",
    "private", "stages", "versions",
)
_STAGE_KEYS = ("name", "kind", "share", "epsilon_budget", "epsilon_spent", "charges")
_TRAINING_KEYS = (
    "delta", "num_units", "privacy_unit", "noise_multiplier", "sampling_probability", "num_steps",
    "steps_taken", "private", "reproducibility_seed_set",
)
_KIND_WORDS = {
    "gaussian": "Gaussian mechanism",
    "poisson_gaussian": "Poisson-subsampled Gaussian (DP-SGD)",
    "zcdp": "ρ-zCDP mechanism",
    "none": "no charge",
}
_PARAMETER_LABELS = {
    "noise_multiplier": "σ",
    "sampling_probability": "q",
    "num_steps": "T",
    "per_example_max_grad_norm": "C",
    "logical_batch_size": "expected batch",
    "l2_sensitivity": "Δ₂",
    "expected_batch_size": "s",
    "clip": "c",
    "temperature": "τ",
    "max_private_tokens": "r_max",
    "rho": "ρ",
    "num_batches": "batches",
    "num_bins": "bins",
    "max_examples_per_user": "cap per user",
    "svt": "sparse vector",
}

# --------------------------------------------------------------------------------------------
# The differential_privacy block
# --------------------------------------------------------------------------------------------


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
            DP_CORRECTNESS.md), e.g. ``"verbatim training-record gate"``.
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
    report, events = _ledger_input(ledger_report)
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
            "produced these outputs (DP_CORRECTNESS row 31)."
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
    checks = _strings("owner_checks", owner_checks)
    block["owner_only_included"] = bool(owner_only_included)
    block["owner_checks"] = checks
    block["not_covered"] = _not_covered(
        private=report["private"] is True, unit=unit, owner_checks=checks,
        owner_only_included=bool(owner_only_included), reproducible_randomness=reproducible_randomness,
        refuted_override=summary is not None and "override" in summary,
    )
    block["versions"] = report["versions"]
    block = _plain(block, what="the differential_privacy block")
    _validate_block(block)
    return block


@functools.cache
def dp_block_schema() -> dict[str, Any]:
    """The JSON Schema of the ``differential_privacy`` block (draft 2020-12)."""
    return json.loads((TEMPLATES_DIR / "dp_block.schema.json").read_text(encoding="utf-8"))


def _ledger_input(ledger_report: Any) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The report as a plain dict, and each stage's charge events when the ledger itself is given."""
    from hf_dpsynth.privacy import LedgerReport, PrivacyLedger, event_to_dict

    if isinstance(ledger_report, PrivacyLedger):
        events: dict[str, list[dict[str, Any]]] = {}
        for charge in ledger_report.charges:
            events.setdefault(charge.stage, []).append(event_to_dict(charge.event))
        return ledger_report.report().to_dict(), events
    if isinstance(ledger_report, LedgerReport):
        return ledger_report.to_dict(), {}
    if isinstance(ledger_report, Mapping):
        return _plain(dict(ledger_report), what="the ledger report"), {}
    raise CardError(
        f"ledger_report must be PrivacyLedger.report().to_dict(), a LedgerReport or the PrivacyLedger; got "
        f"{type(ledger_report).__name__}. A card's privacy figures come from the ledger only."
    )


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
            "(DP_CORRECTNESS 21b): create the ledger with num_units=N, or charge with num_units=N."
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
        values = _strings(f"outputs[{name!r}]", names)
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
        entry: dict[str, Any] = {"parameters": _public(metadata)}
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


def _public(value: Any) -> Any:
    """``value`` without any key that could hold a mechanism's secret (recursively) or a run id."""
    if isinstance(value, Mapping):
        return {
            key: _public(item) for key, item in value.items()
            if not (_SECRET_KEY.search(str(key)) or key in _DROPPED_KEYS)
        }
    if isinstance(value, (list, tuple)):
        return [_public(item) for item in value]
    return value


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
            f"the claimed ε = {_epsilon_text(claimed_epsilon)} (ε̂ > ε), and the release was published anyway, by "
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
                f"{summary['epsilon_lower_bound']:.6g} ≤ ε = {_epsilon_text(summary['claimed_epsilon'])}): a card "
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


def _validate_block(block: Any) -> None:
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
    if _SECRET_TEXT.search(json.dumps(block, ensure_ascii=False)):
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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def render_dataset_card(
    *,
    ledger_report: Any,
    num_records: int,
    codec_info: Mapping[str, Any],
    generator_info: Mapping[str, Any],
    metrics: Sequence[Any] = (),
    audit: Any = None,
    license: str = "other",
    task_categories: Sequence[str] | None = None,
    pretty_name: str = "Synthetic data (hf_dpsynth)",
    language: str | Sequence[str] | None = None,
    include_owner_only: bool = False,
    preparation: Any = None,
    training_report: Any = None,
    owner_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> DatasetCard:
    """The card of a synthetic dataset, rendered from ``templates/dataset_card.md.j2`` and validated.

    Args:
        ledger_report: the release ledger's report (see :func:`dp_block`).
        num_records: the number of records published.
        codec_info: the codec's public configuration (``codec.to_dict()``).
        generator_info: ``generation_info(dataset)``.
        metrics: :class:`~hf_dpsynth.evaluation.Metric` rows (or their ``to_dict()``); shareable ones
            form the Utility table, owner-only ones appear only with ``include_owner_only``.
        audit: an ``AuditReport``; shown when shareable (owner-only values with ``include_owner_only``).
        license, task_categories, pretty_name, language: Hub metadata; task categories default from
            the codec's modality.
        include_owner_only: show owner-only values, under a heading saying the guarantee does not cover them.
        preparation: the ``PreparationReport`` (or its ``to_dict(include_owner_only=True)``): PII
            scrubbing and the user cap are shown; its counts are owner-only.
        training_report: ``trainer.privacy_report()`` when the data comes from a DP-fine-tuned
            adapter (checked against the ledger).
        owner_checks: non-DP checks on the private data applied before release: the push refuses a card
            that does not list each check it applies (``hf_dpsynth.hub.gates.VERBATIM_OWNER_CHECK``, and
            ``CANARY_OWNER_CHECK`` when canaries are checked).
        notes: extra sentences for a Notes section.
        outputs: stage name → names of the outputs it released (see :func:`dp_block`).
        refuted_audit_override: state in the card that a refuted audit is published anyway (see :func:`dp_block`).

    Raises CardError when an input is malformed or inconsistent with the ledger.

    Privacy: see the module docstring; the dataset itself is post-processing of the DP stages.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    count = _positive_int("num_records", num_records)
    codec = _public(_mapping("codec_info", codec_info))
    generation = _public(_mapping("generator_info", generator_info))
    block, training, common = _release(
        ledger_report, "dataset", preparation=preparation, training_report=training_report, metrics=metrics,
        audit=audit, include_owner_only=include_owner_only, owner_checks=owner_checks, notes=notes,
        outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    _check_consistency(block, training, stage=None)
    modality = str(codec.get("modality", "text"))
    tags = list(DATASET_TAGS) + ([] if block["private"] else [NOT_PRIVATE_TAG])
    card_data = DatasetCardData(
        language=_optional_strings("language", language),
        license=_nonempty("license", license),
        size_categories=[_size_category(count)],
        task_categories=list(_strings("task_categories", task_categories)) if task_categories is not None
        else _default_task_categories(modality, codec),
        pretty_name=_one_line("pretty_name", pretty_name),
        tags=tags,
        **{DP_BLOCK_KEY: block},
    )
    name = _one_line("pretty_name", pretty_name)
    context = {
        **common,
        "title": _title(name, block),
        "num_records": f"{count:,}",
        "codec_rows": _mapping_rows(codec, skip=()),
        "generation_rows": _generation_rows(generation),
    }
    return _render("dataset_card.md.j2", DatasetCard, card_data, context)


def render_adapter_card(
    *,
    ledger_report: Any,
    base_model: str | None = None,
    training_report: Any = None,
    metrics: Sequence[Any] = (),
    audit: Any = None,
    license: str = "other",
    model_name: str | None = None,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    training_stage: str = "training",
    include_owner_only: bool = False,
    preparation: Any = None,
    owner_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> ModelCard:
    """The card of a DP LoRA adapter (``library_name: peft``), rendered from ``templates/adapter_card.md.j2``.

    Args:
        ledger_report: the release ledger's report (see :func:`dp_block`); it must hold a charge in
            ``training_stage``.
        base_model: the Hub id of the base model. None (or ``DEFAULT_MODEL_NAME``, or the folder the
            default model was dequantised into) means the embedded default: ``base_model`` is then
            ``HuggingFaceTB/SmolLM2-135M-Instruct`` and the card says the weights are its Q4_1
            quantisation, dequantised. A local path is refused (it would name a private folder).
        training_report: ``trainer.privacy_report()`` (or its ``to_dict()``), checked against the ledger.
        metrics, audit, include_owner_only, preparation, owner_checks, notes, outputs,
            refuted_audit_override: as in :func:`render_dataset_card`.
        license, model_name, language: Hub metadata and the card's title.
        repo_id: the adapter's Hub repository, for the usage snippet.
        training_stage: the ledger stage the trainer charged (``DPSynthTrainer(ledger_stage=...)``).

    Raises CardError when an input is malformed or inconsistent with the ledger.

    Privacy: see the module docstring. The adapter is the DP-SGD output; the base model's own
    training data is outside the guarantee, and the card says so.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base_id, default_base = _base_model(base_model)
    block, training, common = _release(
        ledger_report, "adapter", preparation=preparation, training_report=training_report, metrics=metrics,
        audit=audit, include_owner_only=include_owner_only, owner_checks=owner_checks, notes=notes,
        outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    stage = next((s for s in block["stages"] if s["name"] == training_stage), None)
    if stage is None or not stage["charges"]:
        raise CardError(
            f"The ledger has no charge in stage {training_stage!r}: an adapter card describes a DP-SGD run "
            f"charged to its ledger (stages: {[s['name'] for s in block['stages']]}). Pass training_stage= "
            "if the trainer used another ledger_stage."
        )
    _check_consistency(block, training, stage=stage)
    tags = list(ADAPTER_TAGS) + ([] if block["private"] else [NOT_PRIVATE_TAG])
    card_data = ModelCardData(
        base_model=base_id,
        library_name="peft",
        license=_nonempty("license", license),
        language=_optional_strings("language", language),
        pipeline_tag="text-generation",
        tags=tags,
        **{DP_BLOCK_KEY: block},
    )
    base_short = base_id.rsplit("/", 1)[-1]
    name = _one_line("model_name", model_name) if model_name is not None else f"LoRA adapter for {base_short}"
    context = {
        **common,
        "title": _title(name, block),
        "base_model": base_id,
        "default_base": default_base,
        "default_model_name": DEFAULT_MODEL_NAME,
        "default_model_gguf": DEFAULT_MODEL_GGUF,
        "training_stage": training_stage,
        "training_rows": _training_rows(stage, training),
        "repo_id": _one_line("repo_id", repo_id) if repo_id is not None else "<this repository>",
    }
    return _render("adapter_card.md.j2", ModelCard, card_data, context)


def _release(
    ledger_report: Any,
    what: str,
    *,
    preparation: Any,
    training_report: Any,
    metrics: Sequence[Any],
    audit: Any,
    include_owner_only: bool,
    owner_checks: Sequence[str],
    notes: Sequence[str],
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What both cards share: the block, the training report's facts, and the template context."""
    shared_prep, owner_prep = _preparation(preparation)
    _check_preparation(ledger_report, shared_prep)
    training = _training_facts(training_report)
    shared_metrics, owner_metrics = _metric_rows(metrics, audit)
    owner_included = bool(include_owner_only and (owner_metrics or owner_prep))
    block = dp_block(
        ledger_report, audit=audit, max_examples_per_user=shared_prep.get("max_examples_per_user"),
        owner_checks=owner_checks, reproducible_randomness=training.get("reproducible", False),
        owner_only_included=owner_included, outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    context = _common_context(
        block, what, shared_metrics, owner_metrics if owner_included else [],
        owner_prep if owner_included else {}, shared_prep, notes,
    )
    return block, training, context


@functools.cache
def _environment() -> Any:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - a dependency of torch and of card rendering
        raise MissingDependencyError("Rendering cards needs Jinja2. Install it with: pip install 'jinja2>=3.1'") from None
    # Our own environment rather than RepoCard.from_template's bare jinja2.Template: a missing
    # variable must fail (StrictUndefined), and block tags must not leave blank lines behind.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(template: str, card_cls: type, card_data: Any, context: Mapping[str, Any]) -> Any:
    """``card_cls`` from the template, rendered as ``RepoCard.from_template`` does, then validated."""
    content = _environment().get_template(template).render(card_data=card_data.to_yaml(), **context)
    card = card_cls(content)
    validate_card(card)
    return card


# --------------------------------------------------------------------------------------------
# Reading and validating a card
# --------------------------------------------------------------------------------------------


def validate_card(card_or_text: Any) -> dict[str, Any]:
    """The metadata of a DP card, once every check passes; CardError saying what is wrong otherwise.

    Checks: YAML front matter; the ``differential-privacy`` tag (and ``synthetic`` for a dataset card,
    ``base_model`` for an adapter card, i.e. ``library_name: peft``); the ``differential_privacy``
    block against the schema and the ledger's invariants; a title that says "NOT differentially
    private" exactly when the block does; the owner-only section present exactly when the block
    says owner-only values are included; no mention of a seed anywhere.
    """
    text = _card_text(card_or_text)
    metadata, body = _front_matter(text)
    tags = metadata.get("tags")
    if not isinstance(tags, list) or "differential-privacy" not in tags:
        raise CardError(f"A DP card carries the tag 'differential-privacy'; its tags are {tags!r}.")
    if metadata.get("library_name") == "peft":
        if not isinstance(metadata.get("base_model"), str) or not metadata["base_model"]:
            raise CardError("An adapter card (library_name: peft) names its base_model (a Hub id).")
    elif "synthetic" not in tags:
        raise CardError(f"A synthetic dataset card carries the tag 'synthetic'; its tags are {tags!r}.")
    if DP_BLOCK_KEY not in metadata:
        raise CardError(f"The card has no {DP_BLOCK_KEY!r} block in its metadata: render it with hf_dpsynth.hub.cards.")
    block = metadata[DP_BLOCK_KEY]
    _validate_block(block)
    title = _title_of(body)
    if title is None:
        raise CardError("The card has no title (a '# ' heading).")
    if (NOT_PRIVATE_TITLE in title) == bool(block["private"]):
        expected = "must not say" if block["private"] else "must say"
        raise CardError(f"The title {title!r} {expected} {NOT_PRIVATE_TITLE!r}: the block says private = {block['private']}.")
    has_owner_section = f"## {OWNER_ONLY_HEADING}" in body
    if has_owner_section != block["owner_only_included"]:
        raise CardError(
            f"The card {'has' if has_owner_section else 'lacks'} the section {OWNER_ONLY_HEADING!r} but its block says "
            f"owner_only_included = {block['owner_only_included']}."
        )
    found = _SECRET_TEXT.search(text)
    if found:
        start = max(0, found.start() - 40)
        raise CardError(
            f"The card mentions a seed ({text[start:found.end() + 40]!r}): a mechanism's random state never "
            "enters a card. Remove it from the inputs."
        )
    return metadata


def read_dp_block(card_text: Any) -> dict[str, Any]:
    """The ``differential_privacy`` block of a card (text or RepoCard), validated against the schema."""
    metadata, _ = _front_matter(_card_text(card_text))
    if DP_BLOCK_KEY not in metadata:
        raise CardError(f"The card has no {DP_BLOCK_KEY!r} block in its metadata.")
    block = metadata[DP_BLOCK_KEY]
    _validate_block(block)
    return block


def _title_of(body: str) -> str | None:
    """The first level-1 heading outside code blocks."""
    in_code = False
    for line in body.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("# "):
            return line[2:].strip()
    return None


def _card_text(card_or_text: Any) -> str:
    if isinstance(card_or_text, str):
        return card_or_text
    from huggingface_hub import RepoCard

    if isinstance(card_or_text, RepoCard):
        return str(card_or_text)
    raise CardError(f"Expected a card's text or a huggingface_hub RepoCard; got {type(card_or_text).__name__}.")


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    import yaml
    from huggingface_hub.repocard import (
        REGEX_YAML_BLOCK,  # the Hub's own front-matter rule
    )

    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        raise CardError("The card has no YAML metadata block (--- ... ---) at its top.")
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        raise CardError(f"The card's YAML metadata does not parse: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CardError(f"The card's YAML metadata must be a mapping; got {type(metadata).__name__}.")
    return metadata, text[match.end():]


# --------------------------------------------------------------------------------------------
# Context for the templates
# --------------------------------------------------------------------------------------------


def _common_context(
    block: Mapping[str, Any],
    what: str,
    shared_metrics: list[tuple[str, ...]],
    owner_metrics: list[tuple[str, ...]],
    owner_prep: Mapping[str, Any],
    shared_prep: Mapping[str, Any],
    notes: Sequence[str],
) -> dict[str, Any]:
    noun = "dataset" if what == "dataset" else "adapter"
    versions = block["versions"]
    return {
        "noun": noun,
        "private": block["private"],
        "privacy_paragraphs": _privacy_paragraphs(block, noun),
        "facts": _facts(block),
        "stages": [_stage_row(stage) for stage in block["stages"]],
        "audit": _audit_context(block.get("audit")),
        "utility": shared_metrics,
        "not_covered": [escape_markdown(item) for item in block["not_covered"]],
        "owner_only_heading": OWNER_ONLY_HEADING,
        "owner_metrics": owner_metrics,
        "owner_preparation": [(escape_markdown(key), escape_markdown(_plain_value(value))) for key, value in owner_prep.items()],
        "preparation_rows": _preparation_rows(shared_prep),
        "notes": [escape_markdown(note) for note in _strings("notes", notes)],
        "versions": ", ".join(f"`{escape_markdown(name)} {escape_markdown(version)}`" for name, version in
                              (("hf_dpsynth", versions["hf_dpsynth"]), ("dp-accounting", versions["dp-accounting"]),
                               ("Python", versions["python"]))),
    }


def _title(name: str, block: Mapping[str, Any]) -> str:
    if not block["private"]:
        return f"{escape_markdown(name)} — {NOT_PRIVATE_TITLE}"
    return (f"{escape_markdown(name)} — differentially private: ε = {_epsilon_text(block['epsilon'])}, "
            f"δ = {format_bound(block['delta'])}, {block['privacy_unit']}-level")


def _unit_words(block: Mapping[str, Any]) -> tuple[str, str]:
    """The privacy unit as a noun, and what one unit's data is (empty at example level)."""
    if block["privacy_unit"] == "user":
        cap = block["max_examples_per_user"]
        kept = f"; at most {cap} were kept per user" if cap is not None else ""
        return "user", f"all records of one user together{kept}"
    return "record", ""


def _privacy_paragraphs(block: Mapping[str, Any], noun: str) -> list[str]:
    if not block["private"]:
        return [(
            f"**This {noun} is {NOT_PRIVATE_TITLE}.** At least one stage ran without noise, or the privacy budget "
            "was infinite (ε = ∞): no (ε, δ) guarantee holds for anyone whose data was used. The stages and their "
            "parameters below are listed for transparency only."
        )]
    unit, desc = _unit_words(block)
    eps = _epsilon_text(block["epsilon"])
    factor = format_bound(math.exp(ceil_significant(ledger_number(block["epsilon"]), 4)))  # bounds: rounded up, never to nearest
    delta = format_bound(block["delta"])
    accountant = str(block["accountant"]).upper()
    who = f"{unit} ({desc})" if desc else unit
    paragraphs = [
        (f"This {noun} was produced with **{block['privacy_unit']}-level differential privacy** under add/remove "
         f"adjacency: **ε = {eps}, δ = {delta}** for the whole release, composed over every stage below by the "
         f"{accountant} accountant of dp-accounting (ε is an upper bound)."),
        (f"In plain words: take any one {who}. Whether or not that {unit}'s data was used, every outcome "
         f"of this release is almost equally likely: its probability changes by at most a factor e^ε ≈ {factor}, "
         f"except with probability at most δ = {delta}. This holds whatever else an observer knows, and for "
         f"anything later computed from this {noun}."),
    ]
    if block["randomness"] != "os_entropy":
        paragraphs.append(
            "**Caveat:** the mechanisms' randomness was fixed by a reproducibility setting meant for tests; the "
            "guarantee holds only while that value stays secret."
        )
    return paragraphs


def _facts(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    unit, desc = _unit_words(block)
    poisson = [s["name"] for s in block["stages"] if s["sampling"] == "poisson"]
    sampling = (
        f"Poisson: each {unit} is drawn independently with probability q at every step, and every step is taken "
        f"(stages: {', '.join(poisson)})" if poisson else "no subsampling: every stage uses every unit's data"
    )
    n = block["num_units"]
    rows = [
        ("ε (spent / budget)", f"{_epsilon_text(block['epsilon'])} / {_epsilon_text(block['epsilon_budget'])}"),
        ("δ", format_bound(block["delta"])),
        ("privacy unit", f"one {unit}: {desc}" if desc else f"one {unit} ({block['privacy_unit']}-level)"),
        ("adjacency", f"add or remove one {unit}"),
        ("N (public, disclosed)", f"{n:,} {'users' if block['privacy_unit'] == 'user' else 'records'}"),
        ("accountant", f"{str(block['accountant']).upper()} (dp-accounting)" if block["accountant"] else "none"),
        ("sampling", sampling),
        ("randomness", "OS entropy" if block["randomness"] == "os_entropy"
         else "fixed for reproducibility (a test setting; see the caveat)"),
    ]
    return [(label, escape_markdown(value)) for label, value in rows]


def _stage_row(stage: Mapping[str, Any]) -> tuple[str, ...]:
    charges = stage["charges"]
    texts = [_parameters_text(c["parameters"], c.get("event")) for c in charges]
    if not texts:
        parameters = "no charge"
    elif len(texts) == 1:
        parameters = texts[0]
    else:
        parameters = "; ".join(f"charge {i}: {t}" for i, t in enumerate(texts, 1))
    share = stage["share"]
    budget = stage["epsilon_budget"]
    return tuple(escape_markdown(cell) for cell in (
        stage["name"],
        stage["mechanism"],
        stage["sampling"],
        "-" if share is None else format_value(share),
        "-" if budget is None else _epsilon_text(budget),
        _epsilon_text(stage["epsilon_spent"]),
        parameters,
        ", ".join(stage["outputs"]) or "-",
    ))


def _parameters_text(parameters: Mapping[str, Any], event: Mapping[str, Any] | None) -> str:
    merged = {**parameters, **{k: v for k, v in event_parameters(event).items() if k not in parameters}}
    parts = [
        f"{_PARAMETER_LABELS.get(key, key)} = {_plain_value(value)}"
        for key, value in merged.items()
        if key != "mechanism" and value is not None
    ]
    return ", ".join(parts) or "no parameters recorded"


def _audit_context(audit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if audit is None:
        return None
    basis = (
        "It was charged to this release's ledger (stage `audit`), so its results are covered by the guarantee above."
        if audit["basis"] == "charged" else
        "It ran on public data, so its results reveal nothing about the private data."
    )
    rows = [
        ("claimed ε", _epsilon_text(audit["claimed_epsilon"])),
        ("ε̂ (one-run lower bound)", format_value(audit["epsilon_lower_bound"])),
        ("canaries m / guesses r / correct v", f"{audit['num_canaries']} / {audit['num_guesses']} / {audit['num_correct']}"),
        ("ceiling of the design", format_value(audit["ceiling_epsilon"])),
        ("score / guesses / level", f"{audit['score']} / {audit['guesses'].replace('_', '-')} / {format_value(audit['significance'])}"),
        ("AUC", format_value(audit["auc"])),
        ("TPR at 1% FPR", format_value(audit["tpr_at_1pct_fpr"])),
        ("verdict", audit["verdict"]),
        ("inclusion commitment (SHA-256)", f"`{audit['inclusion_hash']}`"),
    ]
    return {"method": audit["method"], "basis": basis, "rows": [(escape_markdown(k), escape_markdown(v)) for k, v in rows],
            "refuted": bool(audit["refuted"]), "override": escape_markdown(audit["override"]) if "override" in audit else None}


def _training_rows(stage: Mapping[str, Any], training: Mapping[str, Any]) -> list[tuple[str, str]]:
    charge = stage["charges"][-1]  # the run that produced this adapter (a stage may hold earlier runs)
    params = {**event_parameters(charge.get("event")), **charge["parameters"]}
    rows = [
        ("noise multiplier σ", params.get("noise_multiplier")),
        ("sampling probability q (Poisson)", params.get("sampling_probability")),
        ("steps T (charged)", params.get("num_steps")),
        ("steps taken", training.get("steps_taken")),
        ("clip C (per privacy unit, L2)", params.get("per_example_max_grad_norm")),
        ("expected batch q·N", params.get("logical_batch_size")),
        ("ε of this stage alone", _epsilon_text(stage["epsilon_spent"])),
    ]
    return [(label, escape_markdown(_plain_value(value))) for label, value in rows if value is not None]


def _generation_rows(generation: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "generator" in generation:
        rows.append(("generator", _plain_value(generation["generator"])))
    if "num_generated" in generation:
        invalid = generation.get("invalid_kinds") or {}
        kinds = f" ({_plain_value(invalid)})" if invalid else ""
        outputs = (f"{_plain_value(generation['num_generated'])} generated, "
                   f"{_plain_value(generation.get('num_valid'))} valid, "
                   f"{_plain_value(generation.get('num_invalid'))} invalid{kinds}, "
                   f"{_plain_value(generation.get('num_duplicates_dropped', 0))} duplicates dropped")
        rows.append(("outputs", outputs))
    skip = {"generator", "num_generated", "num_valid", "num_invalid", "invalid_kinds", "num_duplicates_dropped", "codec"}
    rows += _mapping_rows(generation, skip=skip)
    return [(escape_markdown(k), escape_markdown(v)) for k, v in rows]


def _mapping_rows(mapping: Mapping[str, Any], *, skip: Sequence[str] | set[str]) -> list[tuple[str, str]]:
    rows = []
    for key, value in mapping.items():
        if key in skip:
            continue
        if key == "conditions" and isinstance(value, Mapping):
            text = "; ".join(f"{name} ∈ {{{', '.join(map(str, values))}}}" for name, values in value.items()) or "none"
        elif isinstance(value, (Mapping, list)) or (isinstance(value, str) and "\n" in value):
            # JSON in a code span (one line; e.g. a prompt template in chat format): shown verbatim.
            rows.append((escape_markdown(key), _code_span(json.dumps(value, ensure_ascii=False))))
            continue
        else:
            text = _plain_value(value)
        rows.append((escape_markdown(key), escape_markdown(text)))
    return rows


def _code_span(text: str) -> str:
    """``text`` (one line) as a Markdown code span, fenced by more backticks than it contains in a row."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _preparation_rows(prep: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    pii = prep.get("pii_scrubbing")
    if isinstance(pii, Mapping):
        if pii.get("enabled"):
            types = ", ".join(map(str, pii.get("types") or [])) or "default types"
            rows.append(("PII scrubbing", f"on ({types}); defence in depth only, the DP guarantee does not depend on it"))
        else:
            rows.append(("PII scrubbing", "off"))
    if prep.get("max_examples_per_user") is not None:
        rows.append(("records kept per user", f"at most {prep['max_examples_per_user']} (chosen by a fixed public hash)"))
    if prep.get("rounding"):
        rows.append(("rounding", str(prep["rounding"])))
    if prep.get("first_rows") is not None:
        rows.append(("rows of the source used", f"the first {prep['first_rows']:,} (data.max_records, a cap by position): "
                     "the guarantee protects one record among them; for the whole source, removing one of those "
                     "rows brings in the next row, so two records change (about 2ε)"))
    if prep.get("drop_invalid"):
        rows.append(("rows that do not fit the schema", "dropped before any private stage, each decided from the row "
                     "alone (1-stable: the guarantee holds for the data as given); how many is not released"))
    return [(escape_markdown(k), escape_markdown(v)) for k, v in rows]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _metric_rows(metrics: Sequence[Any], audit: Any) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Table rows (section, metric, setting, value, note) of the shareable and the owner-only metrics.

    An audit adds its owner-only values (controls; everything when it was neither charged nor run on
    public data); its shareable summary has its own section.
    """
    if isinstance(metrics, (str, bytes, Mapping)) or not isinstance(metrics, Sequence):
        raise CardError(f"metrics must be a sequence of Metric; got {type(metrics).__name__}.")
    extra = []
    if audit is not None:
        try:
            extra = [m for m in audit.to_metrics() if not m.shareable]
        except AttributeError as exc:
            raise CardError(f"audit must be an hf_dpsynth.audit.AuditReport; got {type(audit).__name__}.") from exc
    shared, owner = [], []
    for metric in [*metrics, *extra]:
        fields = _metric_fields(metric)
        row = tuple(escape_markdown(cell) for cell in (
            fields["section"], fields["name"], fields["setting"], format_value(fields["value"]), fields["note"],
        ))
        (shared if fields["shareable"] else owner).append(row)
    return shared, owner


def _metric_fields(metric: Any) -> dict[str, Any]:
    keys = ("name", "value", "shareable", "section", "setting", "note")
    if isinstance(metric, Mapping):
        fields = {key: metric.get(key, "") for key in keys}
        fields["shareable"] = metric.get("shareable")
    else:
        fields = {key: getattr(metric, key, "") for key in keys}
        fields["shareable"] = getattr(metric, "shareable", None)
    if not isinstance(fields["shareable"], bool):
        raise CardError(
            f"Metric {fields['name']!r} has shareable = {fields['shareable']!r}; every metric must say True or "
            "False (owner-only values never enter a card by default)."
        )
    if not isinstance(fields["name"], str) or not fields["name"]:
        raise CardError(f"A metric needs a non-empty name; got {metric!r}.")
    value = fields["value"]
    if value is not None and not isinstance(value, (numbers.Real, str)):
        raise CardError(f"Metric {fields['name']!r} has value {value!r}; a card takes numbers, strings or None.")
    if fields["value"] == "inf":
        fields["value"] = math.inf
    return fields


def _preparation(preparation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preparation report's shareable fields and its owner-only counts."""
    if preparation is None:
        return {}, {}
    if hasattr(preparation, "to_dict") and not isinstance(preparation, Mapping):
        preparation = preparation.to_dict(include_owner_only=True)
    data = _public(_mapping("preparation", preparation))
    owner = data.pop("owner_only", {}) or {}
    if not isinstance(owner, Mapping):
        raise CardError(f"preparation['owner_only'] must be a mapping of counts; got {owner!r}.")
    return data, dict(owner)


def _training_facts(training_report: Any) -> dict[str, Any]:
    """What the card takes from the trainer's privacy report: the steps taken and how it was randomised."""
    if training_report is None:
        return {}
    if hasattr(training_report, "to_dict") and not isinstance(training_report, Mapping):
        training_report = training_report.to_dict()
    report = _mapping("training_report", training_report)
    missing = [key for key in _TRAINING_KEYS if key not in report]
    if missing:
        raise CardError(f"training_report lacks {missing}: pass trainer.privacy_report() (or its to_dict()).")
    return {
        "steps_taken": report["steps_taken"],
        "reproducible": bool(report["reproducibility_seed_set"]),
        "check": {key: report[key] for key in ("delta", "num_units", "privacy_unit", "private", "noise_multiplier",
                                              "sampling_probability", "num_steps")},
    }


def _check_preparation(ledger_report: Any, prep: Mapping[str, Any]) -> None:
    """CardError when the preparation report describes other data than the ledger (checked first:
    the block takes the user cap from the preparation)."""
    if not prep:
        return
    report, _ = _ledger_input(ledger_report)
    unit, n = report.get("privacy_unit"), report.get("num_units")
    expected = {"privacy_unit": unit, "num_units": n, "num_users": n if unit == "user" else None}
    problems = [f"the preparation has {key} = {prep[key]!r}, the ledger {value!r}"
                for key, value in expected.items() if key in prep and prep[key] != value]
    if problems:
        raise CardError("The inputs describe another release than the ledger: " + "; ".join(problems) + ".")


def _check_consistency(block: Mapping[str, Any], training: Mapping[str, Any], *, stage: Mapping[str, Any] | None) -> None:
    """CardError when the training report describes another run than the ledger's."""
    problems = []
    check = training.get("check", {})
    for key in ("delta", "num_units", "privacy_unit", "private"):
        if key in check and check[key] != block[key]:
            problems.append(f"the training report has {key} = {check[key]!r}, the ledger {block[key]!r}")
    if stage is not None and check:
        params = {**event_parameters(stage["charges"][-1].get("event")), **stage["charges"][-1]["parameters"]}
        for key in ("noise_multiplier", "sampling_probability", "num_steps"):
            if key in params and not math.isclose(float(check[key]), float(params[key]), rel_tol=1e-9):
                problems.append(f"the training report has {key} = {check[key]!r}, the ledger's charge {params[key]!r}")
    if problems:
        raise CardError("The inputs describe another release than the ledger: " + "; ".join(problems) + ".")


def _base_model(base_model: str | None) -> tuple[str, bool]:
    """The Hub id to name as ``base_model``, and whether it is the embedded default (Q4_1, dequantised)."""
    if base_model is None or base_model == DEFAULT_MODEL_NAME:
        return DEFAULT_MODEL_ID, True
    if not isinstance(base_model, str) or not base_model.strip():
        raise CardError(f"base_model must be a Hub id such as {DEFAULT_MODEL_ID!r}; got {base_model!r}.")
    if Path(base_model).name.startswith(DEFAULT_MODEL_CACHE_PREFIX):
        return DEFAULT_MODEL_ID, True
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", base_model) or Path(base_model).exists():
        raise CardError(
            f"base_model must be the Hub id of the weights the adapter was trained on; got {base_model!r}, which "
            "looks like a local path (a card must not name private folders)."
        )
    return base_model, False


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise CardError(f"{name} must be a mapping; got {type(value).__name__}.")
    return _plain(dict(value), what=name)


def _plain(value: Any, *, what: str) -> Any:
    """A JSON-plain deep copy (numpy scalars become numbers); CardError for NaN, infinities or objects."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):
            return obj.item()
        if isinstance(obj, (tuple, set, frozenset)):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=default))
    except (TypeError, ValueError) as exc:
        raise CardError(f"{what} must be JSON-plain (numbers, strings, lists, dicts; no NaN or infinity): {exc}.") from exc


def _strings(name: str, values: Any) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise CardError(f"{name} must be a sequence of strings; got {values!r}.")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise CardError(f"{name} must hold non-empty strings; got {list(values)!r}.")
    return [str(v) for v in values]


def _optional_strings(name: str, values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [_nonempty(name, values)] if isinstance(values, str) else _strings(name, values)


def _nonempty(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CardError(f"{name} must be a non-empty string; got {value!r}.")
    return value


def _one_line(name: str, value: Any) -> str:
    return " ".join(_nonempty(name, value).split())


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CardError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _size_category(n: int) -> str:
    """The Hub's size category of a dataset with ``n`` records."""
    labels = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")
    if n < 1000:
        return "n<1K"
    for exponent, (low, high) in enumerate(itertools.pairwise(labels), start=3):
        if n < 10 ** (exponent + 1):
            return f"{low}<n<{high}"
    return "n>1T"


def _default_task_categories(modality: str, codec: Mapping[str, Any]) -> list[str]:
    conditioned = bool(codec.get("conditions"))
    if modality == "tabular":
        return ["tabular-classification"]
    if modality == "image":
        return ["image-classification"] if conditioned else ["unconditional-image-generation"]
    return ["text-generation", "text-classification"] if conditioned else ["text-generation"]


def _json_epsilon(value: Any) -> float | str:
    value = float(value) if not isinstance(value, str) else value
    return "inf" if value == "inf" or (isinstance(value, float) and math.isinf(value)) else value


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _epsilon_text(value: Any) -> str:
    rounded = ceil_significant(ledger_number(value), 4)
    return "∞" if math.isinf(rounded) else f"{rounded:.4g}"


def _plain_value(value: Any) -> str:
    """A parameter or count as card text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format_value(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain_value(v) for v in value) or "none"
    return "n/a" if value is None else str(value)
