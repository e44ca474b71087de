"""The one-run bound (Steinke, Nasr & Jagielski 2023) against docs/ALGORITHMS.md §6's check values and
an independent re-computation of its p-value from binomial probabilities."""

import math

import pytest

from hf_dpsynth.audit import audit_ceiling, guess_grid, one_run_epsilon_lower_bound, one_run_p_value
from hf_dpsynth.errors import InvalidPrivacyParameterError


@pytest.mark.parametrize(
    ("m", "r", "v", "expected"),
    [(100, 100, 100, 3.490), (1000, 600, 600, 5.270), (1000, 100, 50, 0.0), (1000, 100, 60, 0.0495), (1000, 100, 70, 0.469)],
)
def test_check_values(m, r, v, expected):
    got = one_run_epsilon_lower_bound(num_canaries=m, num_guesses=r, num_correct=v, delta=1e-5, significance=0.05)
    assert got == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize(
    ("m", "in_only", "two_sided"), [(200, 2.09, 2.81), (1000, 3.70, 4.40), (2000, 4.32, 5.02)]
)
def test_ceilings_of_the_default_grid(m, in_only, two_sided):
    assert guess_grid(m) == tuple(sorted({round(f * m) for f in (0.01, 0.02, 0.05, 0.1, 0.2)}))
    assert audit_ceiling(num_canaries=m, delta=1e-5).epsilon == pytest.approx(in_only, abs=6e-3)
    assert audit_ceiling(num_canaries=m, delta=1e-5, two_sided=True).epsilon == pytest.approx(two_sided, abs=6e-3)


def test_ci_sizing_of_the_bug_catching_design():
    # m = 200, k = 40, significance 0.01: "in"-only needs >= 36 of 40 right for ε̂ > 1.
    bound = lambda r, v: one_run_epsilon_lower_bound(num_canaries=200, num_guesses=r, num_correct=v, delta=1e-5, significance=0.01)  # noqa: E731
    assert [round(bound(40, v), 2) for v in (35, 36, 38, 40)][1:] == [1.02, 1.42, 2.09]
    assert bound(40, 35) <= 1 < bound(40, 36)
    assert bound(80, 67) <= 1 < bound(80, 68)  # two-sided, k+ = k- = 40


def _p_value_by_hand(eps, m, r, v, delta):
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]
    tail = sum(pmf[v:])
    alpha = max(sum(pmf[v - i : v]) / i for i in range(1, v + 1))
    return tail + 2 * m * delta * alpha


@pytest.mark.parametrize(("m", "r", "v"), [(30, 20, 17), (50, 10, 10), (100, 40, 30), (20, 12, 3)])
@pytest.mark.parametrize("eps", [0.0, 0.5, 1.7, 3.0])
def test_p_value_equals_a_direct_computation(m, r, v, eps):
    got = one_run_p_value(eps, num_canaries=m, num_guesses=r, num_correct=v, delta=1e-3)
    assert got == pytest.approx(_p_value_by_hand(eps, m, r, v, 1e-3), rel=1e-9, abs=1e-15)


def test_the_delta_term_is_kept():
    without = one_run_epsilon_lower_bound(num_canaries=1000, num_guesses=100, num_correct=90, delta=0.0)
    with_delta = one_run_epsilon_lower_bound(num_canaries=1000, num_guesses=100, num_correct=90, delta=1e-4)
    assert with_delta < without


def test_bad_input():
    with pytest.raises(InvalidPrivacyParameterError, match="cannot exceed num_guesses"):
        one_run_epsilon_lower_bound(num_canaries=10, num_guesses=5, num_correct=6, delta=1e-5)
    with pytest.raises(InvalidPrivacyParameterError, match="cannot exceed num_canaries"):
        one_run_epsilon_lower_bound(num_canaries=10, num_guesses=11, num_correct=6, delta=1e-5)
    with pytest.raises(InvalidPrivacyParameterError, match="significance"):
        one_run_epsilon_lower_bound(num_canaries=10, num_guesses=5, num_correct=5, delta=1e-5, significance=1.5)
    with pytest.raises(InvalidPrivacyParameterError, match="use at least 80 canaries"):
        audit_ceiling(num_canaries=50, grid=(40,), two_sided=True, delta=1e-5)
