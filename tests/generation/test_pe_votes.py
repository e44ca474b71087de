"""Private Evolution's vote histogram against independent oracles: the add/remove sensitivity bound
(recomputed from scratch without the unit), brute-force nearest neighbours, and dp-accounting's
own composition of T Gaussian rounds."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from hf_dpsynth.errors import DatasetError, InvalidPrivacyParameterError
from hf_dpsynth.generation.private_evolution.votes import (
    dp_vote_histogram,
    nearest_candidates,
    pe_noise_multiplier,
    vote_histogram,
)
from hf_dpsynth.privacy import PrivacyLedger
from hf_dpsynth.privacy.events import private_evolution_event


def _population(seed: int, n: int = 60, c: int = 24, d: int = 8, labels: int = 2):
    rng = np.random.default_rng(seed)
    private = rng.normal(size=(n, d))
    record_labels = rng.integers(0, labels, size=n)
    candidates = rng.normal(size=(c, d))
    candidate_labels = np.arange(c) % labels
    return private, record_labels, candidates, candidate_labels


def _histogram(private, record_labels, candidates, candidate_labels, k, user_ids=None):
    neighbours = nearest_candidates(private, record_labels, candidates, candidate_labels, k)
    return vote_histogram(neighbours, len(candidates), user_ids)


def test_nearest_candidates_match_brute_force_within_the_label():
    private, record_labels, candidates, candidate_labels = _population(0)
    got = nearest_candidates(private, record_labels, candidates, candidate_labels, 3)
    for i, x in enumerate(private):
        pool = [j for j in range(len(candidates)) if candidate_labels[j] == record_labels[i]]
        expected = sorted(pool, key=lambda j: (float(np.sum((x - candidates[j]) ** 2)), j))[:3]
        assert list(got[i]) == expected


@pytest.mark.parametrize("k", [1, 2, 5])
def test_one_record_added_or_removed_moves_the_histogram_by_at_most_one(k):
    """Row 36's oracle at example level: recompute without each record; equality is reached."""
    private, record_labels, candidates, candidate_labels = _population(k)
    full = _histogram(private, record_labels, candidates, candidate_labels, k)
    moves = []
    for i in range(len(private)):
        keep = np.arange(len(private)) != i
        without = _histogram(private[keep], record_labels[keep], candidates, candidate_labels, k)
        moves.append(float(np.linalg.norm(full - without)))
    assert max(moves) <= 1.0 + 1e-12
    assert min(moves) == pytest.approx(1.0)  # every record's vote has norm exactly 1


def test_one_user_added_or_removed_moves_the_histogram_by_at_most_one():
    """At user level a user's records share one vote over all labels' histograms together."""
    private, record_labels, candidates, candidate_labels = _population(7, n=80)
    rng = np.random.default_rng(1)
    user_ids = [f"u{int(u)}" for u in rng.integers(0, 25, size=len(private))]
    user_ids[0] = "alone"  # one user with a single record reaches the bound
    full = _histogram(private, record_labels, candidates, candidate_labels, 3, user_ids)
    moves = {}
    for user in set(user_ids):
        keep = np.asarray([u != user for u in user_ids])
        without = _histogram(private[keep], record_labels[keep], candidates, candidate_labels, 3,
                             [u for u in user_ids if u != user])
        moves[user] = float(np.linalg.norm(full - without))
    assert max(moves.values()) <= 1.0 + 1e-12
    assert moves["alone"] == pytest.approx(1.0)
    # Without the per-user average a user of m records would move it by up to m: the bound is real.
    per_record = _histogram(private, record_labels, candidates, candidate_labels, 3)
    heavy = max(set(user_ids), key=user_ids.count)
    keep = np.asarray([u != heavy for u in user_ids])
    unshared = _histogram(private[keep], record_labels[keep], candidates, candidate_labels, 3)
    assert np.linalg.norm(per_record - unshared) > 1.0


def test_a_records_vote_does_not_depend_on_its_position():
    private, record_labels, candidates, candidate_labels = _population(3)
    order = np.random.default_rng(5).permutation(len(private))
    a = _histogram(private, record_labels, candidates, candidate_labels, 2)
    b = _histogram(private[order], record_labels[order], candidates, candidate_labels, 2)
    np.testing.assert_allclose(a, b)


def test_noise_has_the_calibrated_std_and_comes_from_os_entropy_by_default():
    histogram = np.zeros(20000)
    noisy = dp_vote_histogram(histogram, 2.5, seed=0)
    assert float(np.std(noisy)) == pytest.approx(2.5, rel=0.03)
    assert not np.array_equal(dp_vote_histogram(histogram, 2.5), dp_vote_histogram(histogram, 2.5))


def test_bad_embeddings_get_clear_errors():
    private, record_labels, candidates, candidate_labels = _population(0)
    with pytest.raises(DatasetError, match="dimension mismatch"):
        nearest_candidates(private, record_labels, candidates[:, :4], candidate_labels, 1)
    with pytest.raises(DatasetError, match="fewer|candidate\\(s\\)"):
        nearest_candidates(private, record_labels, candidates[:2], candidate_labels[:2] * 0, 1)
    bad = private.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        nearest_candidates(bad, record_labels, candidates, candidate_labels, 1)
    with pytest.raises(DatasetError, match="at least k"):
        nearest_candidates(private, record_labels, candidates, candidate_labels, 13)


@pytest.mark.parametrize("rounds", [1, 4, 10])
def test_the_event_equals_dp_accounting_composing_the_rounds(rounds):
    sigma = 6.0
    composed = dp_accounting.pld.PLDAccountant()
    composed.compose(dp_accounting.GaussianDpEvent(sigma), rounds)
    ours = dp_accounting.pld.PLDAccountant()
    ours.compose(private_evolution_event(noise_multiplier=sigma, num_rounds=rounds))
    assert ours.get_epsilon(1e-6) == pytest.approx(composed.get_epsilon(1e-6), rel=1e-3)


@pytest.mark.parametrize("epsilon, expected", [(1.0, 13.4), (4.0, 3.77)])
def test_calibrated_sigma_meets_the_share_for_t_rounds(epsilon, expected):
    """ALGORITHMS §4 check values: δ = 1e-6, T = 10."""
    ledger = PrivacyLedger(epsilon=epsilon, delta=1e-6, num_units=1000)
    ledger.plan({"private_evolution": 1.0})
    sigma = pe_noise_multiplier(ledger, "private_evolution", 10)
    assert sigma == pytest.approx(expected, rel=0.02)
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma), 10)
    assert accountant.get_epsilon(1e-6) <= epsilon * (1 + 1e-6)
    tighter = dp_accounting.pld.PLDAccountant()
    tighter.compose(dp_accounting.GaussianDpEvent(sigma / 1.02), 10)
    assert tighter.get_epsilon(1e-6) > epsilon
    assert math.isfinite(sigma)


def test_calibration_without_a_planned_share_is_refused():
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-6, num_units=1000)
    with pytest.raises(InvalidPrivacyParameterError, match="plan the ledger"):
        pe_noise_multiplier(ledger, "private_evolution", 10)
    with pytest.raises(InvalidPrivacyParameterError, match="num_rounds"):
        pe_noise_multiplier(ledger, "private_evolution", 0, noise_multiplier=3.0)
