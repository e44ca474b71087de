"""dp-accounting's accountants as the ledger and the calibration use them: which accountant, its
checks (what it can compose, how little noise PLD can evaluate), composing an event, reading ε.

Everything is computed by dp-accounting: ``PLDAccountant`` with its default discretisation (the
pessimistic estimate, an upper bound on ε) or ``RdpAccountant`` with its default orders; a cheaper
:class:`AccountantSpec` (a coarser grid, fewer orders) only ever gives a larger ε.
"""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from hf_dpsynth.errors import InvalidPrivacyParameterError, UnsupportedEventError
from hf_dpsynth.privacy.events import ACCOUNTANT_KINDS, AccountantName, event_kind

__all__ = ["PLD_MIN_NOISE_MULTIPLIER", "AccountantSpec", "accountant_name", "check_pld_noise", "check_supported",
           "compose", "epsilon_of"]


PLD_MIN_NOISE_MULTIPLIER = 0.1
"""Below this (effective) noise multiplier the PLD accountant is refused.

A Gaussian with σ = 0.1 already has ε ≈ 92 at δ = 1e-5, and dp-accounting's PLD for σ → 0 needs
memory and time growing like 1/σ² (σ = 1e-3 asks for a 76 GiB array): such events are refused
with a clear error instead of hanging or crashing. The RDP accountant has no such limit.
"""


@dataclasses.dataclass(frozen=True)
class AccountantSpec:
    """How to build one dp-accounting accountant: the exact ones, or a cheaper estimate."""

    name: AccountantName
    value_discretization_interval: float | None = None
    orders: tuple[float, ...] | None = None

    def new(self) -> dp_accounting.PrivacyAccountant:
        if self.name == "pld":
            if self.value_discretization_interval is None:
                return PLDAccountant()
            return PLDAccountant(value_discretization_interval=self.value_discretization_interval)
        return RdpAccountant() if self.orders is None else RdpAccountant(orders=self.orders)


def accountant_name(accountant: str) -> AccountantName:
    if accountant not in ACCOUNTANT_KINDS:
        raise InvalidPrivacyParameterError(
            f"accountant must be 'pld' or 'rdp'; got {accountant!r}. Use 'pld' (tighter) unless "
            "a zCDP mechanism such as private prediction is composed, which needs 'rdp'."
        )
    return accountant  # type: ignore[return-value]


def check_supported(event: dp_accounting.DpEvent, accountant: AccountantName) -> None:
    """Raises UnsupportedEventError when ``accountant`` cannot compose ``event``."""
    missing = event_kind(event) - ACCOUNTANT_KINDS[accountant]
    if missing:
        raise UnsupportedEventError(
            f"The {accountant.upper()} accountant cannot compose {sorted(map(str, missing))} "
            f"mechanisms (event {event!r}). Use accountant='rdp', which composes every kind."
        )


def check_pld_noise(event: dp_accounting.DpEvent, count: int = 1) -> None:
    """Refuses Gaussian components too noiseless for dp-accounting's PLD (see the constant)."""
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        check_pld_noise(event.event, count * event.count)
    elif isinstance(event, dp_accounting.ComposedDpEvent):
        for sub in event.events:
            check_pld_noise(sub, count)
    elif isinstance(event, dp_accounting.PoissonSampledDpEvent):
        if event.sampling_probability > 0:
            check_pld_noise(event.event, 1)  # PLD self-composes the sampled event
    elif isinstance(event, dp_accounting.GaussianDpEvent) and event.noise_multiplier > 0:
        effective = event.noise_multiplier / math.sqrt(count)
        if effective < PLD_MIN_NOISE_MULTIPLIER:
            raise InvalidPrivacyParameterError(
                f"The PLD accountant cannot evaluate a Gaussian with noise multiplier "
                f"{effective:.3g} (σ = {event.noise_multiplier:g} composed {count} times): its "
                f"ε is above ~90 at δ = 1e-5 and dp-accounting would need minutes and gigabytes "
                f"for it. Use noise_multiplier ≥ {PLD_MIN_NOISE_MULTIPLIER} (per composed "
                "Gaussian), or accountant='rdp'."
            )


def compose(accountant: dp_accounting.PrivacyAccountant, event: dp_accounting.DpEvent) -> None:
    """Composes ``event`` into ``accountant`` (in place), after hf_dpsynth's own checks."""
    if isinstance(accountant, PLDAccountant):
        check_pld_noise(event)
    try:
        accountant.compose(event)
    except dp_accounting.UnsupportedEventError as exc:  # pragma: no cover - checked before
        raise UnsupportedEventError(str(exc)) from exc


def epsilon_of(accountant: dp_accounting.PrivacyAccountant, delta: float) -> float:
    return float(accountant.get_epsilon(delta))
