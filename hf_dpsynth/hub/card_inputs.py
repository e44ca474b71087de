"""What a DP card is built from, checked: the ledger's report, the preparation and training reports,
the base model's Hub id, and the plain values every card field is made of.

Privacy: this is where a card's inputs lose every key that could hold a mechanism's secret (seeds,
RNG states) or a run id (:func:`without_secrets`), and where the preparation report is split into its
shareable fields and its owner-only counts. Inputs that describe another release than the ledger
(another N, unit, δ or noise) are refused: a card states only what the ledger computed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hf_dpsynth.errors import CardError
from hf_dpsynth.models import DEFAULT_MODEL_CACHE_PREFIX, DEFAULT_MODEL_ID, DEFAULT_MODEL_NAME
from hf_dpsynth.privacy.events import event_parameters

__all__ = [
    "LedgerInput",
    "PreparationFacts",
    "ResolvedBaseModel",
    "TrainingFacts",
    "check_consistency",
    "check_preparation",
    "checked_mapping",
    "checked_strings",
    "json_plain",
    "ledger_input",
    "nonempty_string",
    "one_line",
    "optional_strings",
    "positive_int",
    "preparation_facts",
    "resolve_base_model",
    "training_facts",
    "without_secrets",
]

# Keys dropped from every mapping a card is built from: a mechanism's secrets (seeds, RNG
# states) must never be published, and a run id is local bookkeeping, not a mechanism parameter.
_SECRET_KEY = re.compile(r"seed|rng|random_state", re.IGNORECASE)
_DROPPED_KEYS = frozenset({"run_id"})

_TRAINING_KEYS = (
    "delta", "num_units", "privacy_unit", "noise_multiplier", "sampling_probability", "num_steps",
    "steps_taken", "private", "reproducibility_seed_set",
)


class LedgerInput(NamedTuple):
    """A card's ledger input, read: the report as a plain dict, and each stage's charge events."""

    report: dict[str, Any]
    events: dict[str, list[dict[str, Any]]]
    """Stage name → the JSON form of each of its charges' dp-accounting events (empty unless the
    ledger itself was given)."""


class PreparationFacts(NamedTuple):
    """The preparation report as a card reads it."""

    shareable: dict[str, Any]
    owner_only: dict[str, Any]
    """Counts on the private data: they enter a card only with ``include_owner_only``."""


@dataclasses.dataclass(frozen=True)
class TrainingFacts:
    """What a card takes from the trainer's privacy report (all empty when there is none)."""

    steps_taken: Any = None
    reproducible: bool = False
    """The mechanisms' randomness was fixed for reproducibility (a test setting)."""
    check: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The report's fields that must agree with the ledger (δ, N, unit, σ, q, T)."""


class ResolvedBaseModel(NamedTuple):
    """The Hub id a card names as ``base_model``."""

    hub_id: str
    is_default: bool
    """It is the embedded default model (its Q4_1 quantisation, dequantised)."""


def ledger_input(ledger_report: Any) -> LedgerInput:
    """The report as a plain dict, and each stage's charge events when the ledger itself is given."""
    from hf_dpsynth.privacy import LedgerReport, PrivacyLedger, event_to_dict

    if isinstance(ledger_report, PrivacyLedger):
        events: dict[str, list[dict[str, Any]]] = {}
        for charge in ledger_report.charges:
            events.setdefault(charge.stage, []).append(event_to_dict(charge.event))
        return LedgerInput(ledger_report.report().to_dict(), events)
    if isinstance(ledger_report, LedgerReport):
        return LedgerInput(ledger_report.to_dict(), {})
    if isinstance(ledger_report, Mapping):
        return LedgerInput(json_plain(dict(ledger_report), what="the ledger report"), {})
    raise CardError(
        f"ledger_report must be PrivacyLedger.report().to_dict(), a LedgerReport or the PrivacyLedger; got "
        f"{type(ledger_report).__name__}. A card's privacy figures come from the ledger only."
    )


def without_secrets(value: Any) -> Any:
    """``value`` without any key that could hold a mechanism's secret (recursively) or a run id."""
    if isinstance(value, Mapping):
        return {
            key: without_secrets(item) for key, item in value.items()
            if not (_SECRET_KEY.search(str(key)) or key in _DROPPED_KEYS)
        }
    if isinstance(value, (list, tuple)):
        return [without_secrets(item) for item in value]
    return value


def preparation_facts(preparation: Any) -> PreparationFacts:
    """The preparation report's shareable fields and its owner-only counts."""
    if preparation is None:
        return PreparationFacts({}, {})
    if hasattr(preparation, "to_dict") and not isinstance(preparation, Mapping):
        preparation = preparation.to_dict(include_owner_only=True)
    data = without_secrets(checked_mapping("preparation", preparation))
    owner = data.pop("owner_only", {}) or {}
    if not isinstance(owner, Mapping):
        raise CardError(f"preparation['owner_only'] must be a mapping of counts; got {owner!r}.")
    return PreparationFacts(data, dict(owner))


def training_facts(training_report: Any) -> TrainingFacts:
    """What the card takes from the trainer's privacy report: the steps taken and how it was randomised."""
    if training_report is None:
        return TrainingFacts()
    if hasattr(training_report, "to_dict") and not isinstance(training_report, Mapping):
        training_report = training_report.to_dict()
    report = checked_mapping("training_report", training_report)
    missing = [key for key in _TRAINING_KEYS if key not in report]
    if missing:
        raise CardError(f"training_report lacks {missing}: pass trainer.privacy_report() (or its to_dict()).")
    return TrainingFacts(
        steps_taken=report["steps_taken"],
        reproducible=bool(report["reproducibility_seed_set"]),
        check={key: report[key] for key in ("delta", "num_units", "privacy_unit", "private", "noise_multiplier",
                                           "sampling_probability", "num_steps")},
    )


def check_preparation(ledger_report: Any, prep: Mapping[str, Any]) -> None:
    """CardError when the preparation report describes other data than the ledger (checked first:
    the block takes the user cap from the preparation)."""
    if not prep:
        return
    report, _ = ledger_input(ledger_report)
    unit, n = report.get("privacy_unit"), report.get("num_units")
    expected = {"privacy_unit": unit, "num_units": n, "num_users": n if unit == "user" else None}
    problems = [f"the preparation has {key} = {prep[key]!r}, the ledger {value!r}"
                for key, value in expected.items() if key in prep and prep[key] != value]
    if problems:
        raise CardError("The inputs describe another release than the ledger: " + "; ".join(problems) + ".")


def check_consistency(block: Mapping[str, Any], training: TrainingFacts, *, stage: Mapping[str, Any] | None) -> None:
    """CardError when the training report describes another run than the ledger's."""
    problems = []
    check = training.check
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


def resolve_base_model(base_model: str | None) -> ResolvedBaseModel:
    """The Hub id to name as ``base_model``, and whether it is the embedded default (Q4_1, dequantised)."""
    if base_model is None or base_model == DEFAULT_MODEL_NAME:
        return ResolvedBaseModel(DEFAULT_MODEL_ID, True)
    if not isinstance(base_model, str) or not base_model.strip():
        raise CardError(f"base_model must be a Hub id such as {DEFAULT_MODEL_ID!r}; got {base_model!r}.")
    if Path(base_model).name.startswith(DEFAULT_MODEL_CACHE_PREFIX):
        return ResolvedBaseModel(DEFAULT_MODEL_ID, True)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", base_model) or Path(base_model).exists():
        raise CardError(
            f"base_model must be the Hub id of the weights the adapter was trained on; got {base_model!r}, which "
            "looks like a local path (a card must not name private folders)."
        )
    return ResolvedBaseModel(base_model, False)


def checked_mapping(name: str, value: Any) -> dict[str, Any]:
    """``value`` (a mapping) as a JSON-plain dict; CardError naming ``name`` otherwise."""
    if not isinstance(value, Mapping):
        raise CardError(f"{name} must be a mapping; got {type(value).__name__}.")
    return json_plain(dict(value), what=name)


def json_plain(value: Any, *, what: str) -> Any:
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


def checked_strings(name: str, values: Any) -> list[str]:
    """``values`` (a sequence of non-empty strings, not a string) as a list; CardError otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise CardError(f"{name} must be a sequence of strings; got {values!r}.")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise CardError(f"{name} must hold non-empty strings; got {list(values)!r}.")
    return [str(v) for v in values]


def optional_strings(name: str, values: str | Sequence[str] | None) -> list[str] | None:
    """None, or one string or a sequence of them as a list (a Hub field such as ``language``)."""
    if values is None:
        return None
    return [nonempty_string(name, values)] if isinstance(values, str) else checked_strings(name, values)


def nonempty_string(name: str, value: Any) -> str:
    """``value`` when it is a string that is not blank; CardError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise CardError(f"{name} must be a non-empty string; got {value!r}.")
    return value


def one_line(name: str, value: Any) -> str:
    """``value`` (a non-empty string) on one line, its runs of whitespace made single spaces."""
    return " ".join(nonempty_string(name, value).split())


def positive_int(name: str, value: Any) -> int:
    """``value`` when it is an integer ≥ 1 (not a bool); CardError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CardError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)
