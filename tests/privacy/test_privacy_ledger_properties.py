"""Property: no sequence of charges leaves the ledger above its budget or a stage above its share."""

from __future__ import annotations

import math

import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_dpsynth.errors import PrivacyBudgetExceededError
from hf_dpsynth.privacy import PrivacyLedger, dpsgd_event, gaussian_event

DELTA = 1e-5
SLACK = 1 + 1e-9
STAGES = ["label_histogram", "category_histograms", "training", "private_evolution", "audit"]

# Noise kept ≥ 2 so that each PLD composition stays in the 10-100 ms range.
gaussians = st.builds(
    lambda sigma: gaussian_event(noise_multiplier=sigma), st.floats(2.0, 30.0)
)
dpsgd = st.builds(
    lambda sigma, q, steps: dpsgd_event(
        noise_multiplier=sigma, sampling_probability=q, num_steps=steps
    ),
    st.floats(2.0, 8.0),
    st.floats(0.001, 0.1),
    st.integers(1, 40),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_charges_never_exceed_the_budget_or_a_share(data):
    accountant = data.draw(st.sampled_from(["pld", "rdp"]), label="accountant")
    epsilon = data.draw(st.floats(0.3, 5.0), label="epsilon")
    stages = data.draw(st.lists(st.sampled_from(STAGES), min_size=1, max_size=3, unique=True))
    raw = data.draw(st.lists(st.floats(0.05, 1.0), min_size=len(stages), max_size=len(stages)))
    scale = max(1.0, math.fsum(raw))
    shares = {stage: share / scale for stage, share in zip(stages, raw)}

    ledger = PrivacyLedger(epsilon=epsilon, delta=DELTA, accountant=accountant)
    ledger.plan(shares)
    accepted = []
    for _ in range(data.draw(st.integers(1, 5), label="charges")):
        stage = data.draw(st.sampled_from(stages))
        event = data.draw(st.one_of(gaussians, dpsgd))
        before = (ledger.epsilon_spent(), len(ledger.charges))
        try:
            ledger.charge(stage, event)
            accepted.append((stage, event))
        except PrivacyBudgetExceededError:
            assert (ledger.epsilon_spent(), len(ledger.charges)) == before  # unchanged
        assert ledger.epsilon_spent() <= epsilon * SLACK
        for name, share in shares.items():
            assert ledger.epsilon_spent(name) <= share * epsilon * SLACK
            assert ledger.remaining(name) >= 0

    # Independent oracle: dp-accounting on the accepted events gives the ledger's ε.
    cls = PLDAccountant if accountant == "pld" else RdpAccountant
    direct = cls()
    for _, event in accepted:
        direct.compose(event)
    expected = direct.get_epsilon(DELTA) if accepted else 0.0
    assert ledger.epsilon_spent() == pytest.approx(expected, rel=1e-12, abs=1e-15)
