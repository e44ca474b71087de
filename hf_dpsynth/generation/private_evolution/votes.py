"""Private Evolution's vote: each privacy unit casts one vote of L2 norm ≤ 1 over the candidates.

Lin et al. (ICLR 2024) and Aug-PE (Xie et al., ICML 2024): every private record finds its k nearest
candidates in an embedding space (among the candidates of its own label) and gives each 1/√k, so
its vote vector has L2 norm exactly 1. At user level a user's m records share one vote
v_u = (1/m)·Σ v_i over the histograms of all labels together (norm ≤ 1 by the triangle inequality).
The histogram is the sum of the units' votes, so adding or removing one unit moves it by at most 1
in L2; the noisy histogram adds N(0, σ²) to every candidate, with noise from OS entropy.

The T rounds of a run compose to ``private_evolution_event(σ, T)`` (one Gaussian of σ/√T, exact);
:func:`pe_noise_multiplier` calibrates σ to the stage's share for T up front, and the caller charges
the whole stage once, before the first histogram is drawn.

Nothing here reads a record's position: a record's vote depends on its own embedding, its label and
the public candidates alone (ties broken by candidate index, which is public), so the vote histogram
is 1-stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_dpsynth.data.statistics import one_gaussian_noise_multiplier
from hf_dpsynth.data.units import group_rows_by_user
from hf_dpsynth.errors import DatasetError, InvalidPrivacyParameterError

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["check_embeddings", "dp_vote_histogram", "nearest_candidates", "pe_noise_multiplier",
           "vote_histogram"]

_CHUNK = 1024  # private rows per distance block: bounds memory at chunk × candidates floats


def check_embeddings(private: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both embedding matrices as float64, or a clear error (shapes and finiteness only: no value
    is named, the private embeddings are private)."""
    out = []
    for name, array in (("private record", private), ("candidate", candidates)):
        matrix = np.asarray(array, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
            raise DatasetError(f"The {name} embeddings must be a non-empty 2-D array (rows × dimension); "
                               f"got shape {tuple(matrix.shape)}.")
        if not np.isfinite(matrix).all():
            raise DatasetError(f"The {name} embeddings hold a NaN or infinite value: check the embedding model.")
        out.append(matrix)
    if out[0].shape[1] != out[1].shape[1]:
        raise DatasetError(f"Embedding dimension mismatch: the private records have {out[0].shape[1]} dimensions, "
                           f"the candidates {out[1].shape[1]}. Embed both with the same model.")
    return out[0], out[1]


def nearest_candidates(private: np.ndarray, record_labels: Sequence[int], candidates: np.ndarray,
                       candidate_labels: Sequence[int], k: int) -> np.ndarray:
    """For each private record, the indices of its ``k`` nearest candidates (squared L2 distance)
    among the candidates of its own label, nearest first; ties go to the lower candidate index.

    Raises DatasetError when a label that a record has has fewer than ``k`` candidates."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidPrivacyParameterError(f"k (nearest candidates per vote) must be a positive integer; got {k!r}.")
    private, candidates = check_embeddings(private, candidates)
    record_labels = np.asarray(record_labels, dtype=np.int64)
    candidate_labels = np.asarray(candidate_labels, dtype=np.int64)
    if record_labels.shape != (private.shape[0],) or candidate_labels.shape != (candidates.shape[0],):
        raise DatasetError("There must be one label per private record and one per candidate.")
    out = np.empty((private.shape[0], k), dtype=np.int64)
    for label in np.unique(record_labels):
        pool = np.flatnonzero(candidate_labels == label)
        if pool.size < k:
            raise DatasetError(f"Label index {int(label)} has {pool.size} candidate(s) but each vote goes to "
                               f"k = {k}: generate at least k candidates per label (or lower k).")
        rows = np.flatnonzero(record_labels == label)
        pool_matrix = candidates[pool]
        pool_norms = np.einsum("ij,ij->i", pool_matrix, pool_matrix)
        for start in range(0, rows.size, _CHUNK):
            block = private[rows[start:start + _CHUNK]]
            distances = pool_norms[None, :] - 2.0 * block @ pool_matrix.T  # + |x|², the same for every candidate
            order = np.argsort(distances, axis=1, kind="stable")[:, :k]
            out[rows[start:start + _CHUNK]] = pool[order]
    return out


def vote_histogram(neighbours: np.ndarray, num_candidates: int, user_ids: Sequence[Any] | None = None) -> np.ndarray:
    """The pre-noise vote histogram (private: the caller adds noise before anything leaves).

    Each record gives 1/√k to each of its k neighbours (L2 norm 1); with ``user_ids`` a user's records
    share one vote, their votes averaged (L2 norm ≤ 1)."""
    neighbours = np.asarray(neighbours, dtype=np.int64)
    k = neighbours.shape[1]
    weight = 1.0 / math.sqrt(k)
    histogram = np.zeros(num_candidates, dtype=np.float64)
    if user_ids is None:
        np.add.at(histogram, neighbours.ravel(), weight)
        return histogram
    if len(user_ids) != neighbours.shape[0]:
        raise DatasetError(f"There must be one user id per private record; got {len(user_ids)} for "
                           f"{neighbours.shape[0]} records.")
    for rows in group_rows_by_user(user_ids).values():
        np.add.at(histogram, neighbours[rows].ravel(), weight / len(rows))
    return histogram


def dp_vote_histogram(histogram: np.ndarray, noise_multiplier: float, *, seed: int | None = None) -> np.ndarray:
    """The histogram plus N(0, σ²) per candidate (sensitivity 1). The caller must have charged the
    stage first. ``seed`` fixes the noise for tests only; by default it comes from OS entropy."""
    sigma = float(noise_multiplier)
    if not math.isfinite(sigma) or sigma < 0:
        raise InvalidPrivacyParameterError(f"noise_multiplier must be a non-negative number; got {noise_multiplier!r}.")
    rng = np.random.default_rng(seed)
    histogram = np.asarray(histogram, dtype=np.float64)
    return histogram + rng.normal(0.0, sigma, size=histogram.shape) if sigma > 0 else histogram.copy()


def pe_noise_multiplier(ledger: PrivacyLedger, stage: str, num_rounds: int, noise_multiplier: float | None = None) -> float:
    """σ of each round's vote: the given one, or the smallest the stage's planned share allows for
    ``num_rounds`` rounds. T rounds of σ are one Gaussian of σ/√T, so σ = √T × the σ of one
    sensitivity-1 Gaussian calibrated to the share (exact, as :func:`private_evolution_event`)."""
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
        raise InvalidPrivacyParameterError(f"num_rounds must be a positive integer; got {num_rounds!r}.")
    if noise_multiplier is not None:
        return float(noise_multiplier)
    one_round = one_gaussian_noise_multiplier(ledger, stage, None, what="Private Evolution")
    return one_round * math.sqrt(num_rounds)
