"""Events: constructors, validation, kinds, JSON round trips (oracle: dp-accounting itself)."""

from __future__ import annotations

import json
import math

import dp_accounting as dpa
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from hf_dpsynth.errors import InvalidPrivacyParameterError, LedgerFormatError, UnsupportedEventError
from hf_dpsynth.privacy import (
    STAGE_KINDS,
    MechanismKind,
    accountant_for_kinds,
    dpsgd_event,
    event_from_dict,
    event_kind,
    event_to_dict,
    gaussian_event,
    is_non_private,
    private_evolution_event,
    zcdp_event,
)


def _eps(accountant, event, delta=1e-5):
    acc = accountant()
    acc.compose(event)
    return acc.get_epsilon(delta)


def test_constructors_build_the_documented_events():
    assert gaussian_event(noise_multiplier=2.0) == dpa.GaussianDpEvent(2.0)
    assert dpsgd_event(noise_multiplier=1.1, sampling_probability=0.01, num_steps=100) == (
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.1)), 100)
    )
    assert zcdp_event(rho=0.25) == dpa.ZCDpEvent(0.25)
    assert private_evolution_event(noise_multiplier=6.0, num_rounds=4) == dpa.GaussianDpEvent(3.0)


def test_zero_noise_is_non_private_and_zero_steps_is_no_op():
    assert gaussian_event(noise_multiplier=0) == dpa.NonPrivateDpEvent()
    assert dpsgd_event(noise_multiplier=0.0, sampling_probability=0.1, num_steps=5) == (
        dpa.NonPrivateDpEvent()
    )
    assert dpsgd_event(noise_multiplier=1.0, sampling_probability=0.1, num_steps=0) == (
        dpa.NoOpDpEvent()
    )
    assert private_evolution_event(noise_multiplier=0.0, num_rounds=3) == dpa.NonPrivateDpEvent()
    assert private_evolution_event(noise_multiplier=2.0, num_rounds=0) == dpa.NoOpDpEvent()
    assert is_non_private(dpa.ComposedDpEvent([dpa.GaussianDpEvent(1.0), dpa.NonPrivateDpEvent()]))
    assert not is_non_private(gaussian_event(noise_multiplier=1.0))


@pytest.mark.parametrize("accountant", [PLDAccountant, RdpAccountant])
def test_private_evolution_event_equals_composing_the_rounds(accountant):
    sigma, rounds = 8.0, 10
    ours = _eps(accountant, private_evolution_event(noise_multiplier=sigma, num_rounds=rounds))
    composed = _eps(accountant, dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(sigma), rounds))
    assert ours == pytest.approx(composed, rel=1e-6)


def test_private_evolution_matches_the_documented_mu_gdp_values():
    # docs/ALGORITHMS.md §4: δ = 1e-6, T = 10, ε = 4 needs σ ≈ 3.77.
    event = private_evolution_event(noise_multiplier=3.77, num_rounds=10)
    assert _eps(PLDAccountant, event, delta=1e-6) == pytest.approx(4.0, abs=0.02)


@pytest.mark.parametrize("accountant", [PLDAccountant, RdpAccountant])
def test_full_batch_dpsgd_is_accounted_as_the_plain_gaussian(accountant):
    # q = 1 stays a Poisson event of rate 1; dp-accounting treats it as the Gaussian itself.
    full_batch = dpsgd_event(noise_multiplier=2.0, sampling_probability=1.0, num_steps=8)
    ours = _eps(accountant, full_batch)
    plain = _eps(accountant, dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(2.0), 8))
    assert ours == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": -1.0, "sampling_probability": 0.1, "num_steps": 10},
        {"noise_multiplier": math.nan, "sampling_probability": 0.1, "num_steps": 10},
        {"noise_multiplier": math.inf, "sampling_probability": 0.1, "num_steps": 10},
        {"noise_multiplier": "1.0", "sampling_probability": 0.1, "num_steps": 10},
        {"noise_multiplier": True, "sampling_probability": 0.1, "num_steps": 10},
        {"noise_multiplier": 1.0, "sampling_probability": 0.0, "num_steps": 10},
        {"noise_multiplier": 1.0, "sampling_probability": 1.5, "num_steps": 10},
        {"noise_multiplier": 1.0, "sampling_probability": -0.1, "num_steps": 10},
        {"noise_multiplier": 1.0, "sampling_probability": 0.1, "num_steps": -1},
        {"noise_multiplier": 1.0, "sampling_probability": 0.1, "num_steps": 2.5},
        {"noise_multiplier": 1.0, "sampling_probability": 0.1, "num_steps": True},
    ],
)
def test_dpsgd_event_rejects_bad_parameters(kwargs):
    with pytest.raises(InvalidPrivacyParameterError) as info:
        dpsgd_event(**kwargs)
    assert "got" in str(info.value)  # says what was given


def test_other_constructors_reject_bad_parameters():
    with pytest.raises(InvalidPrivacyParameterError):
        gaussian_event(noise_multiplier=-0.5)
    with pytest.raises(InvalidPrivacyParameterError):
        zcdp_event(rho=-1.0)
    with pytest.raises(InvalidPrivacyParameterError):
        zcdp_event(rho=math.inf)
    with pytest.raises(InvalidPrivacyParameterError):
        private_evolution_event(noise_multiplier=1.0, num_rounds=-2)


def test_constructors_are_keyword_only():
    with pytest.raises(TypeError):
        gaussian_event(1.0)  # type: ignore[misc]


EVENTS = [
    gaussian_event(noise_multiplier=1.5),
    dpsgd_event(noise_multiplier=0.9, sampling_probability=0.003, num_steps=12345),
    zcdp_event(rho=0.125),
    dpa.ZCDpEvent(0.5, 0.01),
    dpa.NoOpDpEvent(),
    dpa.NonPrivateDpEvent(),
    dpa.ComposedDpEvent(
        [
            gaussian_event(noise_multiplier=3.0),
            dpa.SelfComposedDpEvent(
                dpa.ComposedDpEvent([zcdp_event(rho=0.1), dpa.NoOpDpEvent()]), 3
            ),
            dpsgd_event(noise_multiplier=1.0 / 3.0, sampling_probability=0.1, num_steps=7),
        ]
    ),
]


@pytest.mark.parametrize("event", EVENTS)
def test_event_dict_round_trips_exactly_through_json(event):
    data = json.loads(json.dumps(event_to_dict(event), allow_nan=False))
    assert event_from_dict(data) == event


def test_unknown_event_types_are_refused():
    with pytest.raises(UnsupportedEventError):
        event_to_dict(dpa.LaplaceDpEvent(1.0))
    with pytest.raises(UnsupportedEventError):
        event_from_dict({"type": "laplace", "noise_multiplier": 1.0})
    with pytest.raises(UnsupportedEventError):
        event_kind(dpa.LaplaceDpEvent(1.0))
    with pytest.raises(UnsupportedEventError):
        event_kind(dpa.PoissonSampledDpEvent(0.1, dpa.LaplaceDpEvent(1.0)))


@pytest.mark.parametrize(
    "data",
    [
        {"noise_multiplier": 1.0},
        {"type": "gaussian"},
        {"type": "gaussian", "noise_multiplier": -1.0},
        {"type": "gaussian", "noise_multiplier": 1.0, "extra": 1},
        {"type": "poisson_sampled", "sampling_probability": 2.0, "event": {"type": "no_op"}},
        {"type": "self_composed", "count": 1.5, "event": {"type": "no_op"}},
        {"type": "composed", "events": {"type": "no_op"}},
    ],
)
def test_malformed_event_dicts_are_refused(data):
    with pytest.raises(LedgerFormatError):
        event_from_dict(data)


def test_event_kinds_and_accountant_choice():
    assert event_kind(gaussian_event(noise_multiplier=1.0)) == {MechanismKind.GAUSSIAN}
    assert event_kind(dpsgd_event(noise_multiplier=1, sampling_probability=0.1, num_steps=2)) == {
        MechanismKind.POISSON_GAUSSIAN
    }
    assert event_kind(zcdp_event(rho=0.1)) == {MechanismKind.ZCDP}
    assert event_kind(dpa.NonPrivateDpEvent()) == frozenset()
    mixed = dpa.ComposedDpEvent([gaussian_event(noise_multiplier=1.0), zcdp_event(rho=0.1)])
    assert event_kind(mixed) == {MechanismKind.GAUSSIAN, MechanismKind.ZCDP}
    assert accountant_for_kinds(["gaussian", "poisson_gaussian"]) == "pld"
    assert accountant_for_kinds(event_kind(mixed)) == "rdp"


def test_stage_vocabulary():
    assert {name: kind.value for name, kind in STAGE_KINDS.items()} == {
        "label_histogram": "gaussian",
        "category_histograms": "gaussian",
        "keywords": "gaussian",
        "training": "poisson_gaussian",
        "private_prediction": "zcdp",
        "private_evolution": "gaussian",
        "audit": "poisson_gaussian",
        "federated": "gaussian",
    }
