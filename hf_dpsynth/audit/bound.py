"""The one-run ε lower bound of Steinke, Nasr & Jagielski (NeurIPS 2023), with its δ term.

m canaries, each included independently with probability ½; after one training run the auditor
guesses "in" for some canaries and "out" for others (r guesses), v of them right. If the pipeline
is (ε, δ)-DP then, with q = e^ε / (1 + e^ε),

    P[correct ≥ v] ≤ P[Binom(r, q) ≥ v] + 2·m·δ·α_v,
    α_v = max_{i = 1..v} (1/i)·P[v > Binom(r, q) ≥ v − i],

so every ε whose right-hand side is below the significance level is refuted; ε̂ is the largest.
ε̂ is a *lower* bound: it can show a guarantee is false, never that it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from hf_dpsynth.errors import InvalidPrivacyParameterError

__all__ = ["AuditCeiling", "audit_ceiling", "guess_grid", "one_run_epsilon_lower_bound", "one_run_p_value"]

_EPS_MAX = 100.0


def _check_counts(num_canaries: int, num_guesses: int, num_correct: int) -> None:
    for name, value in (("num_canaries", num_canaries), ("num_guesses", num_guesses), ("num_correct", num_correct)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidPrivacyParameterError(f"{name} must be a non-negative integer; got {value!r}.")
    if num_canaries < 1:
        raise InvalidPrivacyParameterError("num_canaries must be at least 1.")
    if num_guesses > num_canaries:
        raise InvalidPrivacyParameterError(f"num_guesses ({num_guesses}) cannot exceed num_canaries ({num_canaries}).")
    if num_correct > num_guesses:
        raise InvalidPrivacyParameterError(f"num_correct ({num_correct}) cannot exceed num_guesses ({num_guesses}).")


def one_run_p_value(epsilon: float, *, num_canaries: int, num_guesses: int, num_correct: int, delta: float) -> float:
    """The bound on P[≥ v correct guesses] for an (ε, δ)-DP pipeline (the test's p-value)."""
    _check_counts(num_canaries, num_guesses, num_correct)
    r, v = int(num_guesses), int(num_correct)
    if v == 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-epsilon))  # e^ε / (1 + e^ε), stable for large ε
    tail = float(stats.binom.sf(v - 1, r, q))
    cdf = stats.binom.cdf(np.arange(-1, v), r, q)  # cdf[j + 1] = P[B ≤ j], j = -1..v-1
    i = np.arange(1, v + 1)
    between = cdf[v] - cdf[v - i]  # P[v - i ≤ B ≤ v - 1]
    alpha = float(np.max(between / i))
    return tail + 2.0 * num_canaries * delta * alpha


def one_run_epsilon_lower_bound(
    *, num_canaries: int, num_guesses: int, num_correct: int, delta: float, significance: float = 0.05
) -> float:
    """ε̂: the largest ε refuted at ``significance`` by v correct of r guesses on m canaries.

    Check values (significance 0.05, δ = 1e-5), (m, r, v) → ε̂: (100, 100, 100) → 3.490;
    (1000, 600, 600) → 5.270; (1000, 100, 50) → 0; (1000, 100, 60) → 0.0495; (1000, 100, 70) → 0.469.
    """
    _check_counts(num_canaries, num_guesses, num_correct)
    if not 0 < significance < 1:
        raise InvalidPrivacyParameterError(f"significance must be in (0, 1); got {significance!r}.")
    if not 0 <= delta < 1:
        raise InvalidPrivacyParameterError(f"delta must be in [0, 1); got {delta!r}.")

    def excess(eps: float) -> float:
        return one_run_p_value(eps, num_canaries=num_canaries, num_guesses=num_guesses,
                               num_correct=num_correct, delta=delta) - significance

    if excess(0.0) >= 0:
        return 0.0
    if excess(_EPS_MAX) < 0:
        return _EPS_MAX
    return float(optimize.brentq(excess, 0.0, _EPS_MAX, xtol=1e-10))


def guess_grid(num_canaries: int, fractions: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2)) -> tuple[int, ...]:
    """The pre-registered numbers of guesses k ∈ {m/100, m/50, m/20, m/10, m/5} (at least 1 each)."""
    return tuple(sorted({max(1, int(round(f * num_canaries))) for f in fractions}))


@dataclass(frozen=True)
class AuditCeiling:
    """The largest ε̂ an audit design can certify (every guess right), and at which k."""

    epsilon: float
    k: int
    num_guesses: int
    significance_per_test: float


def audit_ceiling(
    *,
    num_canaries: int,
    grid: Sequence[int] | None = None,
    two_sided: bool = False,
    delta: float,
    significance: float = 0.05,
) -> AuditCeiling:
    """The ceiling of a design: the best ε̂ over the grid with all guesses right, Bonferroni-corrected.

    With the default grid, δ = 1e-5, significance 0.05: "in"-only 2.09 / 3.70 / 4.32 for
    m = 200 / 1000 / 2000; two-sided (k₊ = k₋ = k) 2.81 / 4.40 / 5.02.
    """
    ks = tuple(grid) if grid is not None else guess_grid(num_canaries)
    if not ks:
        raise InvalidPrivacyParameterError("the guess grid is empty.")
    per_test = significance / len(ks)
    best = AuditCeiling(0.0, ks[0], 0, per_test)
    for k in ks:
        r = 2 * k if two_sided else k
        if r > num_canaries:
            raise InvalidPrivacyParameterError(
                f"the grid asks for {r} guesses but there are only {num_canaries} canaries; use at least {r} canaries."
            )
        eps = one_run_epsilon_lower_bound(num_canaries=num_canaries, num_guesses=r, num_correct=r, delta=delta,
                                          significance=per_test)
        if eps > best.epsilon:
            best = AuditCeiling(eps, k, r, per_test)
    return best
