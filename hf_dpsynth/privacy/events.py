"""dp-accounting events for every mechanism hf_dpsynth runs, and their JSON form.

Every mechanism that touches private data emits one frozen ``dp_accounting`` event (see
docs/ALGORITHMS.md §0) and charges it to the ledger. This module builds those events from the
package's privacy vocabulary, says which accountant can compose them, and (de)serialises them so
that a saved ledger holds exactly what was spent; a card reads their parameters (σ, q, T, ρ) back
from that JSON form.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import dp_accounting

from hf_dpsynth.errors import (
    InvalidPrivacyParameterError,
    LedgerFormatError,
    UnsupportedEventError,
)
from hf_dpsynth.privacy import _validation

__all__ = [
    "ACCOUNTANT_KINDS",
    "AccountantName",
    "MechanismKind",
    "STAGE_KINDS",
    "accountant_for_kinds",
    "dpsgd_event",
    "event_from_dict",
    "event_kind",
    "event_parameters",
    "event_to_dict",
    "gaussian_event",
    "is_non_private",
    "private_evolution_event",
    "zcdp_event",
]

AccountantName = Literal["pld", "rdp"]


class MechanismKind(str, enum.Enum):
    """What kind of mechanism a stage runs; decides which accountant can compose it."""

    GAUSSIAN = "gaussian"
    """Gaussian noise of std σ × sensitivity: ``GaussianDpEvent(σ)``."""
    POISSON_GAUSSIAN = "poisson_gaussian"
    """Poisson-subsampled Gaussian (DP-SGD): ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``."""
    ZCDP = "zcdp"
    """A ρ-zCDP mechanism (private prediction, bounded-range exponential mechanism)."""

    def __str__(self) -> str:
        return self.value


ACCOUNTANT_KINDS: Mapping[str, frozenset[MechanismKind]] = MappingProxyType(
    {
        "pld": frozenset({MechanismKind.GAUSSIAN, MechanismKind.POISSON_GAUSSIAN}),
        "rdp": frozenset(MechanismKind),
    }
)
"""The mechanism kinds each accountant composes (PLD has no zCDP event)."""

STAGE_KINDS: Mapping[str, MechanismKind] = MappingProxyType(
    {
        "label_histogram": MechanismKind.GAUSSIAN,
        "category_histograms": MechanismKind.GAUSSIAN,
        "keywords": MechanismKind.GAUSSIAN,
        "training": MechanismKind.POISSON_GAUSSIAN,
        "private_prediction": MechanismKind.ZCDP,
        "private_evolution": MechanismKind.GAUSSIAN,
        "audit": MechanismKind.POISSON_GAUSSIAN,
        "federated": MechanismKind.GAUSSIAN,
    }
)
"""The pipeline stages hf_dpsynth knows, with their mechanism kind. Other stages declare theirs."""


# --------------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------------


def gaussian_event(*, noise_multiplier: float) -> dp_accounting.DpEvent:
    """The event of one Gaussian mechanism with noise std = ``noise_multiplier`` × L2 sensitivity.

    Privacy: protects one privacy unit only if the released statistic's L2 sensitivity (the
    largest change one unit can cause) really is the one the noise was scaled by. σ = 0 is no
    privacy at all: it returns ``NonPrivateDpEvent``, whose ε is infinite.
    """
    sigma = _validation.noise_multiplier("noise_multiplier", noise_multiplier)
    if sigma == 0:
        return dp_accounting.NonPrivateDpEvent()
    return dp_accounting.GaussianDpEvent(sigma)


def dpsgd_event(
    *, noise_multiplier: float, sampling_probability: float, num_steps: int
) -> dp_accounting.DpEvent:
    """The event of ``num_steps`` DP-SGD steps: Poisson sampling at rate q, then Gaussian noise.

    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)``. ``num_steps = 0`` is
    ``NoOpDpEvent``; σ = 0 is ``NonPrivateDpEvent``. q = 1 (full batch) is kept as a Poisson
    event of rate 1, which both dp-accounting accountants compose exactly like the plain Gaussian.

    Privacy: valid only for real Poisson sampling (each unit drawn independently with probability
    q at every step, every step taken even when the draw is empty) and per-unit clipping to the
    norm the noise is scaled by.
    """
    sigma = _validation.noise_multiplier("noise_multiplier", noise_multiplier)
    q = _validation.sampling_probability("sampling_probability", sampling_probability)
    steps = _validation.count("num_steps", num_steps, minimum=0)
    if steps == 0:
        return dp_accounting.NoOpDpEvent()
    if sigma == 0:
        return dp_accounting.NonPrivateDpEvent()
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def zcdp_event(*, rho: float) -> dp_accounting.DpEvent:
    """The event of a ρ-zCDP mechanism (private prediction; the RDP accountant is needed).

    Privacy: ρ must be the mechanism's planned maximum, fixed before it runs — never the cost of
    what a data-dependent run happened to use.
    """
    value = _validation.real("rho", rho, fix="Pass ρ ≥ 0 (finite).")
    if value < 0:
        raise InvalidPrivacyParameterError(
            f"rho must be ≥ 0; got {rho!r}. Pass the mechanism's zCDP parameter ρ ≥ 0."
        )
    return dp_accounting.ZCDpEvent(value)


def private_evolution_event(*, noise_multiplier: float, num_rounds: int) -> dp_accounting.DpEvent:
    """The event of ``num_rounds`` Private Evolution rounds, each a sensitivity-1 Gaussian vote.

    T Gaussian mechanisms of noise σ compose to one Gaussian with μ = √T/σ (μ-GDP), i.e.
    ``GaussianDpEvent(σ/√T)``: exact, and it keeps the PLD accountant usable.

    Privacy: each private record's vote vector must have L2 norm ≤ 1 in every round.
    """
    sigma = _validation.noise_multiplier("noise_multiplier", noise_multiplier)
    rounds = _validation.count("num_rounds", num_rounds, minimum=0)
    if rounds == 0:
        return dp_accounting.NoOpDpEvent()
    if sigma == 0:
        return dp_accounting.NonPrivateDpEvent()
    return dp_accounting.GaussianDpEvent(sigma / math.sqrt(rounds))


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------


def event_kind(event: dp_accounting.DpEvent) -> frozenset[MechanismKind]:
    """The mechanism kinds ``event`` contains (empty for no-op and non-private events).

    An accountant can compose the event when these kinds are a subset of its
    :data:`ACCOUNTANT_KINDS`. Raises :class:`UnsupportedEventError` for event types hf_dpsynth does
    not account (Laplace, sampling without replacement, ...).
    """
    if isinstance(event, (dp_accounting.NoOpDpEvent, dp_accounting.NonPrivateDpEvent)):
        return frozenset()
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return frozenset({MechanismKind.GAUSSIAN})
    if isinstance(event, dp_accounting.ZCDpEvent):
        return frozenset({MechanismKind.ZCDP})
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        if isinstance(event.event, dp_accounting.GaussianDpEvent):
            return frozenset({MechanismKind.POISSON_GAUSSIAN})
        raise UnsupportedEventError(
            f"Only a GaussianDpEvent may be Poisson-sampled; got {event.event!r} inside {event!r}. "
            "Build DP-SGD events with hf_dpsynth.privacy.dpsgd_event."
        )
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return event_kind(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        kinds: frozenset[MechanismKind] = frozenset()
        for sub in event.events:
            kinds |= event_kind(sub)
        return kinds
    raise UnsupportedEventError(
        f"hf_dpsynth does not account {type(event).__name__} events ({event!r}). Supported: "
        "Gaussian, Poisson-sampled Gaussian, zCDP, and their (self-)compositions; build them "
        "with gaussian_event, dpsgd_event, zcdp_event or private_evolution_event."
    )


def accountant_for_kinds(kinds: Iterable[MechanismKind | str]) -> AccountantName:
    """PLD when it composes every kind (tighter ε), RDP otherwise (it also composes zCDP)."""
    try:
        wanted = frozenset(MechanismKind(kind) for kind in kinds)
    except ValueError as exc:
        raise UnsupportedEventError(
            f"{exc}; mechanism kinds are {[kind.value for kind in MechanismKind]}."
        ) from None
    return "pld" if wanted <= ACCOUNTANT_KINDS["pld"] else "rdp"


def is_non_private(event: dp_accounting.DpEvent) -> bool:
    """Whether ``event`` contains a mechanism without noise (its ε is infinite)."""
    if isinstance(event, dp_accounting.NonPrivateDpEvent):
        return True
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return event.noise_multiplier == 0
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        return event.sampling_probability > 0 and is_non_private(event.event)
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return event.count > 0 and is_non_private(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return any(is_non_private(sub) for sub in event.events)
    return False


# --------------------------------------------------------------------------------------------
# JSON form
# --------------------------------------------------------------------------------------------

_TYPE_NAMES: Mapping[type, str] = MappingProxyType(
    {
        dp_accounting.GaussianDpEvent: "gaussian",
        dp_accounting.PoissonSampledDpEvent: "poisson_sampled",
        dp_accounting.SelfComposedDpEvent: "self_composed",
        dp_accounting.ComposedDpEvent: "composed",
        dp_accounting.ZCDpEvent: "zcdp",
        dp_accounting.NoOpDpEvent: "no_op",
        dp_accounting.NonPrivateDpEvent: "non_private",
    }
)
_TYPES_BY_NAME: Mapping[str, type] = MappingProxyType({v: k for k, v in _TYPE_NAMES.items()})


def event_to_dict(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """A JSON-able dict for ``event``; :func:`event_from_dict` gives back an equal event.

    Raises :class:`UnsupportedEventError` for event types outside the list in :func:`event_kind`.
    """
    name = _TYPE_NAMES.get(type(event))
    if name is None:
        raise UnsupportedEventError(
            f"Cannot serialise {type(event).__name__} ({event!r}): hf_dpsynth saves only "
            f"{', '.join(cls.__name__ for cls in _TYPE_NAMES)}."
        )
    out: dict[str, Any] = {"type": name}
    if name == "gaussian":
        out["noise_multiplier"] = _field_real(name, "noise_multiplier", event.noise_multiplier)
    elif name == "poisson_sampled":
        out["sampling_probability"] = _field_real(
            name, "sampling_probability", event.sampling_probability, upper=1.0
        )
        out["event"] = event_to_dict(event.event)
    elif name == "self_composed":
        out["count"] = _field_count(name, event.count)
        out["event"] = event_to_dict(event.event)
    elif name == "composed":
        out["events"] = [event_to_dict(sub) for sub in event.events]
    elif name == "zcdp":
        out["rho"] = _field_real(name, "rho", event.rho)
        out["xi"] = _field_real(name, "xi", event.xi)
    return out


def event_parameters(event: Mapping[str, Any] | None) -> dict[str, Any]:
    """σ, q, T and ρ as an event in the JSON form of :func:`event_to_dict` states them, under the names
    a charge's metadata gives them (``noise_multiplier``, ``sampling_probability``, ``num_steps``,
    ``rho``); empty for no event or an event without such parameters.

    A DP card shows these beside each charge's metadata (the metadata takes precedence).
    """
    if not event:
        return {}
    kind = event.get("type")
    if kind == "gaussian":
        return {"noise_multiplier": event["noise_multiplier"]}
    if kind == "poisson_sampled":
        return {"sampling_probability": event["sampling_probability"], **event_parameters(event["event"])}
    if kind == "self_composed":
        return {"num_steps": event["count"], **event_parameters(event["event"])}
    if kind == "zcdp":
        return {"rho": event["rho"]}
    if kind == "non_private":
        return {"noise_multiplier": 0}
    return {}


def event_from_dict(data: Mapping[str, Any]) -> dp_accounting.DpEvent:
    """The event a dict from :func:`event_to_dict` describes.

    Raises :class:`UnsupportedEventError` for an unknown ``type`` and
    :class:`~hf_dpsynth.errors.LedgerFormatError` for a malformed dict.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        raise LedgerFormatError(
            f"An event dict needs a string 'type' field; got {data!r}. "
            "Use event_to_dict to produce one."
        )
    name = data["type"]
    cls = _TYPES_BY_NAME.get(name)
    if cls is None:
        raise UnsupportedEventError(
            f"Unknown event type {name!r} in {dict(data)!r}; known types: "
            f"{', '.join(sorted(_TYPES_BY_NAME))}."
        )
    expected = {
        "gaussian": {"noise_multiplier"},
        "poisson_sampled": {"sampling_probability", "event"},
        "self_composed": {"count", "event"},
        "composed": {"events"},
        "zcdp": {"rho", "xi"},
        "no_op": set(),
        "non_private": set(),
    }[name] | {"type"}
    if set(data) != expected:
        raise LedgerFormatError(
            f"A {name!r} event dict must have exactly the fields {sorted(expected)}; "
            f"got {sorted(data)}."
        )
    if name == "gaussian":
        return cls(_field_real(name, "noise_multiplier", data["noise_multiplier"]))
    if name == "poisson_sampled":
        q = _field_real(name, "sampling_probability", data["sampling_probability"], upper=1.0)
        return cls(q, event_from_dict(data["event"]))
    if name == "self_composed":
        return cls(event_from_dict(data["event"]), _field_count(name, data["count"]))
    if name == "composed":
        if not isinstance(data["events"], list):
            raise LedgerFormatError(f"'events' of a composed event must be a list; got {data!r}.")
        return cls([event_from_dict(sub) for sub in data["events"]])
    if name == "zcdp":
        return cls(_field_real(name, "rho", data["rho"]), _field_real(name, "xi", data["xi"]))
    return cls()


def _field_real(kind: str, field: str, value: Any, *, upper: float | None = None) -> float:
    """A finite float field ≥ 0 (and ≤ ``upper``) of a serialised event."""
    try:
        result = _validation.real(field, value, fix="")
    except InvalidPrivacyParameterError as exc:
        raise LedgerFormatError(f"Bad {field!r} in a {kind!r} event: {exc}") from exc
    if result < 0 or (upper is not None and result > upper):
        bound = f"[0, {upper:g}]" if upper is not None else "≥ 0"
        raise LedgerFormatError(f"{field!r} of a {kind!r} event must be {bound}; got {value!r}.")
    return result


def _field_count(kind: str, value: Any) -> int:
    """A whole-number field ≥ 0 of a serialised event."""
    try:
        return _validation.count("count", value, minimum=0)
    except InvalidPrivacyParameterError as exc:
        raise LedgerFormatError(f"Bad 'count' in a {kind!r} event: {exc}") from exc
