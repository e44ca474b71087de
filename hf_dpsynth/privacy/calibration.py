"""ε of composed events, and the smallest noise multiplier that meets an ε target.

Everything here is computed by dp-accounting's accountants: ``PLDAccountant`` with its default
discretisation (the pessimistic estimate, an upper bound on ε) or ``RdpAccountant`` with its
default orders. The noise search uses cheaper dp-accounting estimates only to get close; the σ it
returns is always checked with the exact accountant.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

import dp_accounting
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

from hf_dpsynth.errors import InvalidPrivacyParameterError, UnsupportedEventError
from hf_dpsynth.privacy import _validation
from hf_dpsynth.privacy.accountants import (
    PLD_MIN_NOISE_MULTIPLIER,
    AccountantSpec,
    accountant_name,
    check_supported,
    compose,
    epsilon_of,
)
from hf_dpsynth.privacy.events import (
    AccountantName,
    dpsgd_event,
    is_non_private,
)

__all__ = [
    "Constraint",
    "SigmaOutOfRange",
    "calibrate_dpsgd",
    "SIGMA_REL_TOL",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "default_delta",
    "out_of_range_error",
]

def default_delta(num_units: int) -> float:
    """The default δ = 1/(N·ln N) for N privacy units (ln taken at least at 3, so δ < 1/N always)."""
    return 1.0 / (num_units * math.log(max(num_units, 3)))


SIGMA_REL_TOL = 0.005
"""Calibrated σ are at most this much (relative) above the smallest σ that meets the target."""


_MAX_SIGMA = 1e4
_RDP_MIN_SIGMA = 0.01
# Integer orders are the cheap part of dp-accounting's default RDP orders; a subset of the
# orders can only raise RDP's ε, so a σ meeting the target with them is an upper bound.
_RDP_BRACKET_ORDERS = tuple(o for o in DEFAULT_RDP_ORDERS if float(o).is_integer())
# A coarser PLD grid is ~20x faster; its pessimistic ε is above the default grid's, so its σ is
# an upper bound on the exact σ (checked, not assumed).
_COARSE_PLD_INTERVAL = 2e-3
_RDP_LEVEL_TOL = 0.02
_COARSE_LEVEL_TOL = 1e-3
_DEFAULT_SLOPE = -2.0  # d log ε / d log σ, roughly, for DP-SGD in the usual regime


# --------------------------------------------------------------------------------------------
# Accountants
# --------------------------------------------------------------------------------------------


def compute_epsilon(
    event_or_events: dp_accounting.DpEvent | Iterable[dp_accounting.DpEvent],
    *,
    delta: float,
    accountant: AccountantName = "pld",
) -> float:
    """ε at ``delta`` of one event, or of several composed in order.

    ``accountant="pld"`` is dp-accounting's ``PLDAccountant`` with its default discretisation
    (pessimistic: an upper bound on ε); ``"rdp"`` is ``RdpAccountant`` with its default orders.
    A non-private event (σ = 0) anywhere gives ``math.inf`` at once, without an accountant call.

    Privacy: add/remove-one adjacency of the privacy unit the events were computed for.
    """
    name = accountant_name(accountant)
    target_delta = _validation.delta("delta", delta)
    events = (
        [event_or_events]
        if isinstance(event_or_events, dp_accounting.DpEvent)
        else list(event_or_events)
    )
    for event in events:
        if not isinstance(event, dp_accounting.DpEvent):
            raise UnsupportedEventError(f"Expected dp_accounting events; got {event!r}.")
        check_supported(event, name)
    if any(is_non_private(event) for event in events):
        return math.inf
    acc = AccountantSpec(name).new()
    for event in events:
        compose(acc, event)
    return epsilon_of(acc, target_delta)


# --------------------------------------------------------------------------------------------
# The σ search
# --------------------------------------------------------------------------------------------

Overshoot = Callable[[float], float]
"""``log(ε(σ) / budget)``, the worst over the budgets: > 0 when σ is too small; non-increasing in σ.

Once one budget is exceeded the others may be skipped, so a positive value can be below the true
worst; its sign is always right.
"""


class SigmaOutOfRange(Exception):
    """No σ in the searched range is the answer: ``side`` says which end was hit."""

    def __init__(self, side: Literal["above", "below"], sigma: float) -> None:
        super().__init__(side, sigma)
        self.side = side
        self.sigma = sigma


class _Point(NamedTuple):
    u: float  # log σ
    sigma: float
    value: float  # overshoot(sigma)


@dataclasses.dataclass(frozen=True)
class _Bracket:
    lo: float  # exceeds (overshoot > 0)
    hi: float  # meets the budget (overshoot ≤ 0)
    hi_value: float
    slope: float  # d overshoot / d log σ near the root


def _solve(
    overshoot: Overshoot,
    start: float,
    *,
    tol: float,
    slope: float,
    min_sigma: float,
    max_sigma: float,
    known: float | None = None,
) -> _Bracket:
    """A bracket lo < hi ≤ lo·(1 + tol) of the root of ``overshoot``, searching from ``start``.

    Works on u = log σ. Brackets with Newton steps (slope from earlier evaluations), then
    narrows by interpolation, probing one tolerance step below the best passing point as soon as
    the root is predicted there, so it usually stops two evaluations after bracketing.
    """
    width_goal = math.log1p(tol)
    u_min, u_max = math.log(min_sigma), math.log(max_sigma)

    def point(u: float, sigma: float | None = None, known_value: float | None = None) -> _Point:
        sigma = math.exp(u) if sigma is None else sigma
        return _Point(u, sigma, overshoot(sigma) if known_value is None else known_value)

    if min_sigma <= start <= max_sigma:
        first = point(math.log(start), start, known)
    else:
        first = point(min(max(math.log(start), u_min), u_max))
    newest = [first]
    a = first if first.value > 0 else None  # exceeds
    b = first if first.value <= 0 else None  # meets

    # 1. Bracket: Newton steps past the predicted root, at least doubling while they fall short.
    step = 0.0
    while a is None or b is None:
        going_up = b is None
        old = a if going_up else b
        assert old is not None
        if math.isfinite(old.value) and old.value != 0:
            newton = abs(old.value / slope) * 1.5 + width_goal
        else:
            newton = math.log(2.0)
        step = min(max(newton, 2 * step), math.log(4.0) if going_up else math.log(1.5))
        u_new = min(max(old.u + (step if going_up else -step), u_min), u_max)
        if u_new == old.u:
            raise SigmaOutOfRange("above" if going_up else "below", old.sigma)
        new = point(u_new)
        newest.append(new)
        if math.isfinite(new.value) and math.isfinite(old.value) and new.value != old.value:
            slope = min((new.value - old.value) / (new.u - old.u), -1e-3)
        if new.value > 0:
            a = new
        else:
            b = new

    # 2. Narrow.
    stalled = 0
    while b.u - a.u > width_goal * (1 + 1e-12):
        width = b.u - a.u
        # Secant through the two newest points (closer to the root than the two ends of a wide
        # bracket: the criterion is convex in log σ); the bracket's own secant, or its midpoint,
        # when that falls outside.
        root = _secant_root(newest[-2], newest[-1])
        if not a.u < root < b.u:
            root = _secant_root(a, b)
        if not a.u < root < b.u:
            root = a.u + width / 2
        if stalled >= 2:
            u = a.u + width / 2
        elif b.u - root <= width_goal:
            u = b.u - width_goal
        else:
            u = root + width_goal / 4
        new = point(u if a.u < u < b.u else a.u + width / 2)
        newest.append(new)
        if new.value > 0:
            a = new
        else:
            b = new
        stalled = stalled + 1 if (b.u - a.u) > 0.5 * width else 0
    return _Bracket(lo=a.sigma, hi=b.sigma, hi_value=b.value, slope=slope)


def _secant_root(p: _Point, r: _Point) -> float:
    """Where the line through two points of the criterion crosses 0 (NaN when it does not)."""
    if not (math.isfinite(p.value) and math.isfinite(r.value)) or p.value == r.value:
        return math.nan
    return p.u + p.value * (r.u - p.u) / (p.value - r.value)


def _smallest_sigma(
    overshoot: Overshoot,
    *,
    approximations: Sequence[tuple[Overshoot, float]] = (),
    rel_tol: float = SIGMA_REL_TOL,
    start: float = 1.0,
    min_sigma: float,
    max_sigma: float = _MAX_SIGMA,
) -> float:
    """The smallest σ with ``overshoot(σ) ≤ 0``, returned at most ``rel_tol`` (relative) above it.

    ``overshoot`` is the exact criterion (``overshoot(σ) > 0`` is the "exceeds" predicate; using
    the log-ratio instead of a bool lets the search interpolate). ``approximations`` are cheaper
    criteria, each paired with the relative tolerance to solve it to; each should over-estimate ε
    (its σ is then above the exact one) and they only choose where the exact criterion is
    evaluated. The result always meets the exact criterion. Its minimality is certified either by
    an exact evaluation at a σ within ``rel_tol`` below it, or — to save one exact evaluation, the
    expensive part — when the exact overshoot at the result is within half the change that the
    last approximation shows over one tolerance step (the approximations differ from the exact
    accountant by a discretisation offset that barely moves over 0.5 % of σ).

    Raises ``SigmaOutOfRange`` when the answer lies outside [min_sigma, max_sigma].
    """
    sigma, slope = start, _DEFAULT_SLOPE
    last: tuple[Overshoot, _Bracket] | None = None
    for approximation, tol in approximations:
        bracket = _solve(
            approximation, sigma, tol=tol, slope=slope, min_sigma=min_sigma, max_sigma=max_sigma
        )
        sigma, slope, last = bracket.hi, bracket.slope, (approximation, bracket)
    value = overshoot(sigma)
    if last is not None:
        approximation, bracket = last
        # How much the criterion grows over one tolerance step below sigma.
        step = approximation(sigma / (1 + rel_tol)) - bracket.hi_value
        if 0 < step < math.inf:
            slope = -step / math.log1p(rel_tol)
            for attempt in range(3):
                if -0.5 * step < value <= 0:
                    return sigma
                if attempt == 2 or not math.isfinite(value):
                    break
                # Newton step on the exact criterion, aiming a quarter step above its root.
                u = math.log(sigma) - value / slope + 0.25 * math.log1p(rel_tol)
                sigma = min(max(math.exp(u), min_sigma), max_sigma)
                value = overshoot(sigma)
    bracket = _solve(
        overshoot,
        sigma,
        tol=rel_tol,
        slope=slope,
        min_sigma=min_sigma,
        max_sigma=max_sigma,
        known=value,
    )
    return bracket.hi


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One ε budget a new DP-SGD event must fit: the events already spent against it, and ε."""

    events: tuple[dp_accounting.DpEvent, ...]
    budget: float
    exact_base: dp_accounting.PrivacyAccountant | None = None  # ``events`` already composed


def calibrate_dpsgd(
    constraints: Sequence[Constraint],
    *,
    accountant: AccountantName,
    delta: float,
    sampling_probability: float,
    num_steps: int,
) -> float:
    """Smallest σ (within SIGMA_REL_TOL) such that adding dpsgd_event(σ, q, T) fits every budget.

    Shared by :func:`calibrate_noise_multiplier` (one empty constraint) and the ledger's
    ``calibrate`` (the total and the stage's share, with what was already charged). Raises
    ``SigmaOutOfRange``.
    """

    def criterion(spec: AccountantSpec, exact: bool) -> Overshoot:
        bases = []
        for constraint in constraints:
            if exact and constraint.exact_base is not None:
                base = constraint.exact_base
            else:
                base = spec.new()
                for event in constraint.events:
                    compose(base, event)
            bases.append((base, constraint.budget))

        def overshoot(sigma: float) -> float:
            event = dpsgd_event(
                noise_multiplier=sigma, sampling_probability=sampling_probability,
                num_steps=num_steps,
            )
            worst = -math.inf
            for i, (base, budget) in enumerate(bases):
                acc = copy.deepcopy(base)
                compose(acc, event)
                eps = epsilon_of(acc, delta)
                worst = max(worst, math.log(eps / budget) if eps > 0 else -math.inf)
                if worst > 0:
                    # Exceeds already: the other budgets cannot change the verdict. Try this
                    # (binding) budget first next time.
                    bases.insert(0, bases.pop(i))
                    break
            return worst

        return overshoot

    exact = criterion(AccountantSpec(accountant), exact=True)
    if accountant == "pld":
        approximations = [
            (criterion(AccountantSpec("rdp", orders=_RDP_BRACKET_ORDERS), exact=False),
             _RDP_LEVEL_TOL),
            (criterion(AccountantSpec("pld", value_discretization_interval=_COARSE_PLD_INTERVAL),
                       exact=False), _COARSE_LEVEL_TOL),
        ]
        min_sigma = PLD_MIN_NOISE_MULTIPLIER
    else:
        approximations = []
        min_sigma = _RDP_MIN_SIGMA
    return _smallest_sigma(exact, approximations=approximations, min_sigma=min_sigma)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    target_delta: float,
    sampling_probability: float,
    num_steps: int,
    accountant: AccountantName = "pld",
) -> float:
    """The smallest DP-SGD noise multiplier σ whose ``num_steps`` steps at rate q meet (ε, δ).

    The returned σ meets the target under the exact accountant (dp-accounting's default PLD, or
    default RDP) and is at most 0.5 % (:data:`SIGMA_REL_TOL`) above the smallest σ that does:
    ``σ / 1.005`` exceeds the target. The search brackets with RDP, narrows with a coarse PLD grid
    and checks with the exact accountant, so 10,000 steps take about a second.

    Privacy: the guarantee is (target_epsilon, target_delta)-DP for add/remove of one privacy
    unit, provided training really Poisson-samples at ``sampling_probability`` for exactly
    ``num_steps`` steps with per-unit clipping. Raises InvalidPrivacyParameterError for targets
    outside what the accountant can evaluate.
    """
    name = accountant_name(accountant)
    epsilon = _validation.epsilon("target_epsilon", target_epsilon)
    delta = _validation.delta("target_delta", target_delta)
    q = _validation.sampling_probability("sampling_probability", sampling_probability)
    steps = _validation.count("num_steps", num_steps, minimum=1)
    try:
        return calibrate_dpsgd(
            [Constraint(events=(), budget=epsilon)],
            accountant=name, delta=delta, sampling_probability=q, num_steps=steps,
        )
    except SigmaOutOfRange as exc:
        raise out_of_range_error(exc, name, what=f"target_epsilon = {epsilon:g}") from None


def out_of_range_error(
    exc: SigmaOutOfRange, accountant: AccountantName, *, what: str
) -> InvalidPrivacyParameterError:
    """The error for a σ search whose answer lies outside the range hf_dpsynth evaluates."""
    if exc.side == "above":
        return InvalidPrivacyParameterError(
            f"No noise multiplier up to {_MAX_SIGMA:g} meets {what}: the target is too small "
            "for these steps. Raise the target ε, or take fewer steps or a lower sampling rate."
        )
    hint = " or accountant='rdp'" if accountant == "pld" else ""
    return InvalidPrivacyParameterError(
        f"{what} is met even with noise multiplier {exc.sigma:.3g}, the smallest the "
        f"{accountant.upper()} accountant evaluates here: such a target gives almost no privacy. "
        f"Use a smaller ε{hint}."
    )
