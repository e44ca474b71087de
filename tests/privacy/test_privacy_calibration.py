"""compute_epsilon and noise calibration (oracles: dp-accounting's accountants called directly)."""

from __future__ import annotations

import math
import time

import dp_accounting as dpa
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from hf_dpsynth.errors import InvalidPrivacyParameterError, UnsupportedEventError
from hf_dpsynth.privacy import (
    SIGMA_REL_TOL,
    calibrate_noise_multiplier,
    compute_epsilon,
    dpsgd_event,
    gaussian_event,
    zcdp_event,
)
from hf_dpsynth.privacy.calibration import SigmaOutOfRange, _smallest_sigma

DELTA = 1e-5


def _direct(accountant, events, delta=DELTA):
    acc = accountant()
    for event in events:
        acc.compose(event)
    return acc.get_epsilon(delta)


def _dpsgd(sigma, q, steps):
    return dpsgd_event(noise_multiplier=sigma, sampling_probability=q, num_steps=steps)


# ------------------------------------------------------------------------------------------
# compute_epsilon
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant, cls", [("pld", PLDAccountant), ("rdp", RdpAccountant)])
def test_compute_epsilon_equals_dp_accounting(accountant, cls):
    events = [gaussian_event(noise_multiplier=4.0), _dpsgd(2.0, 0.02, 300)]
    assert compute_epsilon(events, delta=DELTA, accountant=accountant) == _direct(cls, events)
    assert compute_epsilon(events[1], delta=DELTA, accountant=accountant) == _direct(
        cls, events[1:]
    )


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_non_private_event_gives_inf_at_once(accountant):
    events = [_dpsgd(1.0, 0.01, 10_000), gaussian_event(noise_multiplier=0.0)]
    start = time.perf_counter()
    assert compute_epsilon(events, delta=DELTA, accountant=accountant) == math.inf
    assert time.perf_counter() - start < 0.2  # no accountant call (the PLD one takes ~1 s)
    assert compute_epsilon(dpa.NonPrivateDpEvent(), delta=DELTA) == math.inf


def test_zcdp_needs_rdp():
    with pytest.raises(UnsupportedEventError, match="rdp"):
        compute_epsilon(zcdp_event(rho=0.1), delta=DELTA, accountant="pld")
    assert compute_epsilon(zcdp_event(rho=0.1), delta=DELTA, accountant="rdp") == _direct(
        RdpAccountant, [dpa.ZCDpEvent(0.1)]
    )


def test_compute_epsilon_validates_its_arguments():
    event = gaussian_event(noise_multiplier=1.0)
    for delta in (0.0, 1.0, -1e-5, math.nan):
        with pytest.raises(InvalidPrivacyParameterError):
            compute_epsilon(event, delta=delta)
    with pytest.raises(InvalidPrivacyParameterError):
        compute_epsilon(event, delta=DELTA, accountant="prv")  # type: ignore[arg-type]


def test_pld_refuses_nearly_noiseless_gaussians_instead_of_exhausting_memory():
    # dp-accounting's PLD for σ = 1e-3 would allocate ~76 GiB.
    start = time.perf_counter()
    with pytest.raises(InvalidPrivacyParameterError, match="rdp"):
        compute_epsilon(dpa.GaussianDpEvent(1e-3), delta=DELTA)
    with pytest.raises(InvalidPrivacyParameterError):
        compute_epsilon(dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(1.0), 10_000), delta=DELTA)
    assert time.perf_counter() - start < 0.5
    assert compute_epsilon(dpa.GaussianDpEvent(1e-3), delta=DELTA, accountant="rdp") > 1e5


# ------------------------------------------------------------------------------------------
# calibrate_noise_multiplier
# ------------------------------------------------------------------------------------------


def _check_calibrated(sigma, *, epsilon, q, steps, accountant="pld", delta=DELTA):
    cls = PLDAccountant if accountant == "pld" else RdpAccountant
    assert _direct(cls, [_dpsgd(sigma, q, steps)], delta) <= epsilon  # meets the target
    smaller = sigma / (1 + SIGMA_REL_TOL)
    assert _direct(cls, [_dpsgd(smaller, q, steps)], delta) > epsilon  # and is the smallest


@pytest.mark.parametrize(
    "epsilon, q, steps, accountant",
    [
        (1.0, 0.01, 1000, "pld"),
        (4.0, 0.05, 200, "pld"),
        (8.0, 1.0, 3, "pld"),
        (2.0, 0.2, 50, "pld"),
        (1.0, 0.01, 1000, "rdp"),
        (8.0, 0.05, 500, "rdp"),
    ],
)
def test_calibration_meets_the_target_and_is_the_smallest(epsilon, q, steps, accountant):
    sigma = calibrate_noise_multiplier(
        target_epsilon=epsilon, target_delta=DELTA, sampling_probability=q, num_steps=steps,
        accountant=accountant,
    )
    _check_calibrated(sigma, epsilon=epsilon, q=q, steps=steps, accountant=accountant)


def test_calibration_of_10k_steps_is_fast_and_exact():
    start = time.perf_counter()
    sigma = calibrate_noise_multiplier(
        target_epsilon=4.0, target_delta=DELTA, sampling_probability=0.01, num_steps=10_000
    )
    elapsed = time.perf_counter() - start
    # ~1 s on 2 cores; plain bisection over the default PLD takes ~7.5 s. Generous for CI.
    assert elapsed < 5.0
    _check_calibrated(sigma, epsilon=4.0, q=0.01, steps=10_000)


def test_calibration_is_monotone_in_epsilon_and_steps():
    def calibrate(epsilon, steps):
        return calibrate_noise_multiplier(
            target_epsilon=epsilon, target_delta=DELTA, sampling_probability=0.02, num_steps=steps
        )

    by_epsilon = [calibrate(epsilon, 500) for epsilon in (0.5, 1.0, 2.0)]
    assert by_epsilon == sorted(by_epsilon, reverse=True)
    by_steps = [calibrate(1.0, steps) for steps in (50, 200, 800)]
    assert by_steps == sorted(by_steps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_epsilon": 0.0},
        {"target_epsilon": -1.0},
        {"target_epsilon": math.inf},
        {"target_delta": 0.0},
        {"target_delta": 1.0},
        {"target_delta": 1.5},
        {"sampling_probability": 0.0},
        {"sampling_probability": 1.01},
        {"num_steps": 0},
        {"num_steps": -5},
        {"accountant": "moments"},
    ],
)
def test_calibration_validates_its_arguments(kwargs):
    args = {
        "target_epsilon": 1.0, "target_delta": DELTA, "sampling_probability": 0.01,
        "num_steps": 100,
    }
    args.update(kwargs)
    with pytest.raises(InvalidPrivacyParameterError) as info:
        calibrate_noise_multiplier(**args)
    message = str(info.value)
    assert "got" in message  # what was given ...
    assert any(word in message for word in ("Pass", "Use", "use"))  # ... and how to fix it


def test_calibration_refuses_unreachable_targets():
    with pytest.raises(InvalidPrivacyParameterError, match="too small"):
        calibrate_noise_multiplier(
            target_epsilon=1e-7, target_delta=DELTA, sampling_probability=1.0, num_steps=1000
        )


# ------------------------------------------------------------------------------------------
# The shared search helper, against a criterion with a known root
# ------------------------------------------------------------------------------------------


def _analytic(root, exponent=2.0, offset=0.0):
    # log(ε(σ)/budget) with ε ∝ σ^-exponent, shifted up by ``offset`` (a pessimistic estimate).
    return lambda sigma: exponent * (math.log(root) - math.log(sigma)) + offset


@pytest.mark.parametrize("root", [0.37, 1.0, 4.2, 950.0])
@pytest.mark.parametrize("start", [0.2, 1.0, 50.0])
def test_smallest_sigma_brackets_the_root_within_tolerance(root, start):
    sigma = _smallest_sigma(_analytic(root), start=start, min_sigma=0.1)
    assert root <= sigma <= root * (1 + SIGMA_REL_TOL) * (1 + 1e-12)


@pytest.mark.parametrize("offset", [0.0, 0.001, 0.02, 0.3])
def test_smallest_sigma_with_approximations_stays_exact(offset):
    calls = []

    def exact(sigma):
        calls.append(sigma)
        return _analytic(2.5)(sigma)

    approximations = [(_analytic(2.5, 1.7, offset * 3), 0.02), (_analytic(2.5, 2.0, offset), 1e-3)]
    sigma = _smallest_sigma(exact, approximations=approximations, min_sigma=0.1)
    assert 2.5 <= sigma <= 2.5 * (1 + SIGMA_REL_TOL) * (1 + 1e-12)
    if offset <= 0.001:
        assert len(calls) == 1  # a close approximation leaves one exact evaluation


def test_smallest_sigma_reports_an_answer_out_of_range():
    with pytest.raises(SigmaOutOfRange) as info:
        _smallest_sigma(lambda sigma: 1.0, min_sigma=0.1, max_sigma=100.0)
    assert info.value.side == "above"
    with pytest.raises(SigmaOutOfRange) as info:
        _smallest_sigma(_analytic(0.01), min_sigma=0.1)
    assert info.value.side == "below"


def test_default_delta_is_below_one_over_n_for_every_n():
    from hf_dpsynth.privacy import default_delta

    assert default_delta(1000) == pytest.approx(1 / (1000 * math.log(1000)))
    assert all(default_delta(n) < 1 / n for n in range(1, 50))
