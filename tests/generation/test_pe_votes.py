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
    neighbours = nearest_candidates(private, record_labels, candidates, candidate_labels, k, 2)
    return vote_histogram(neighbours, len(candidates), user_ids)


def test_nearest_candidates_match_brute_force_within_the_label():
    private, record_labels, candidates, candidate_labels = _population(0)
    got = nearest_candidates(private, record_labels, candidates, candidate_labels, 3, 2)
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
    # The same histogram whatever order the users' records come in.
    order = np.random.default_rng(2).permutation(len(private))
    shuffled = _histogram(private[order], record_labels[order], candidates, candidate_labels, 3,
                          [user_ids[i] for i in order])
    np.testing.assert_allclose(shuffled, full, atol=1e-12)
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
    noisy = dp_vote_histogram(histogram, 2.5, rng=np.random.default_rng(0))
    assert float(np.std(noisy)) == pytest.approx(2.5, rel=0.03)
    assert not np.array_equal(dp_vote_histogram(histogram, 2.5), dp_vote_histogram(histogram, 2.5))


def test_no_noise_is_refused_unless_said_so():
    histogram = np.arange(5.0)
    with pytest.raises(InvalidPrivacyParameterError, match="non_private=True"):
        dp_vote_histogram(histogram, 0.0)
    np.testing.assert_array_equal(dp_vote_histogram(histogram, 0.0, non_private=True), histogram)
    for bad in (-1.0, float("nan"), "x", True):
        with pytest.raises(InvalidPrivacyParameterError, match="noise_multiplier"):
            dp_vote_histogram(histogram, bad)


def test_bad_embeddings_get_clear_errors():
    private, record_labels, candidates, candidate_labels = _population(0)
    with pytest.raises(DatasetError, match="dimension mismatch"):
        nearest_candidates(private, record_labels, candidates[:, :4], candidate_labels, 1, 2)
    bad = private.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        nearest_candidates(bad, record_labels, candidates, candidate_labels, 1, 2)
    with pytest.raises(DatasetError, match="at least k"):
        nearest_candidates(private, record_labels, candidates, candidate_labels, 13, 2)


def test_every_public_label_needs_k_candidates_whatever_labels_the_records_hold():
    """The error must not reveal which labels the records hold: a label no record has is checked too."""
    private, _, candidates, _ = _population(0)
    only_zero = np.zeros(len(private), dtype=np.int64)
    candidate_labels = np.zeros(len(candidates), dtype=np.int64)  # label 1 has no candidate
    with pytest.raises(DatasetError, match="Label index 1 has 0 candidate"):
        nearest_candidates(private, only_zero, candidates, candidate_labels, 1, 2)


@pytest.mark.parametrize("labels, match", [
    (lambda n: np.full(n, 2), "outside the 2 declared labels"),
    (lambda n: np.full(n, -1), "outside the 2 declared labels"),
    (lambda n: np.zeros(n, dtype=np.float64) + 0.7, "integer label indices; got dtype float64"),
    (lambda n: ["a"] * n, "integer label indices"),
    (lambda n: np.zeros(n - 1, dtype=np.int64), "one label per private record"),
])
def test_bad_record_labels_are_refused_without_naming_a_value(labels, match):
    private, _, candidates, candidate_labels = _population(0)
    with pytest.raises(DatasetError, match=match) as error:
        nearest_candidates(private, labels(len(private)), candidates, candidate_labels, 1, 2)
    assert "0.7" not in str(error.value)


@pytest.mark.parametrize("neighbours, match", [
    (np.zeros(4, dtype=np.int64), "2-D"),
    (np.zeros((4, 0), dtype=np.int64), "k ≥ 1"),
    (np.array([[0, 1], [2, 24]]), "outside the 24 candidates"),
    (np.array([[0, 1], [-1, 2]]), "outside the 24 candidates"),
    (np.array([[0, 1], [3, 3]]), "same candidate twice"),
    (np.array([[0.0, 1.0]]), "integer candidate indices"),
])
def test_bad_neighbours_are_refused(neighbours, match):
    with pytest.raises(DatasetError, match=match):
        vote_histogram(neighbours, 24)


def test_duplicate_neighbours_would_break_the_bound():
    """Why distinct neighbours are required: a record naming one candidate twice has norm √2."""
    weight = 1 / math.sqrt(2)
    assert math.hypot(2 * weight) > 1.0 + 1e-9
    np.testing.assert_allclose(vote_histogram(np.array([[3, 5]]), 8),
                               [0, 0, 0, weight, 0, weight, 0, 0])


def test_exact_ties_go_to_the_lower_candidate_index_and_bound_holds():
    """Duplicate candidates tie exactly; a record's choice must not change when others are removed."""
    private, record_labels, candidates, candidate_labels = _population(4)
    candidates = np.concatenate([candidates, candidates])  # every candidate has an exact twin
    candidate_labels = np.concatenate([candidate_labels, candidate_labels])
    got = nearest_candidates(private, record_labels, candidates, candidate_labels, 2, 2)
    assert all(row[0] < 24 and row[1] == row[0] + 24 for row in got)  # the tie goes to the lower index first
    full = vote_histogram(got, len(candidates))
    for i in range(len(private)):
        keep = np.arange(len(private)) != i
        rest = nearest_candidates(private[keep], record_labels[keep], candidates, candidate_labels, 2, 2)
        np.testing.assert_array_equal(rest, got[keep])  # the others' neighbours are unchanged
        assert np.linalg.norm(full - vote_histogram(rest, len(candidates))) == pytest.approx(1.0)


def test_many_records_match_brute_force_and_stay_put_when_one_leaves():
    """Past any block size: 1,500 records, each one's neighbours as brute force finds them."""
    private, record_labels, candidates, candidate_labels = _population(9, n=1500, c=40, d=6)
    got = nearest_candidates(private, record_labels, candidates, candidate_labels, 2, 2)
    distances = ((private[:, None, :] - candidates[None, :, :]) ** 2).sum(-1)
    distances[record_labels[:, None] != candidate_labels[None, :]] = np.inf
    expected = np.argsort(distances, axis=1, kind="stable")[:, :2]
    assert (got == expected).mean() > 0.999  # float rounding may reorder near-ties only
    keep = np.arange(len(private)) != 700
    np.testing.assert_array_equal(
        nearest_candidates(private[keep], record_labels[keep], candidates, candidate_labels, 2, 2), got[keep])


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
    for bad in (0.0, -2.0, float("inf")):
        with pytest.raises(InvalidPrivacyParameterError, match="noise_multiplier"):
            pe_noise_multiplier(ledger, "private_evolution", 3, noise_multiplier=bad)


@pytest.mark.parametrize("rounds", [3, 7, 10, 13])
def test_the_stage_charge_never_exceeds_the_calibrated_one_round_sigma(rounds):
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-6, num_units=1000)
    ledger.plan({"private_evolution": 1.0})
    sigma = pe_noise_multiplier(ledger, "private_evolution", rounds)
    one = ledger.calibrate("private_evolution", sampling_probability=1.0, num_steps=1)
    assert sigma / math.sqrt(rounds) >= one
