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


def _labels(values: Sequence[int], count: int, num_labels: int, what: str) -> np.ndarray:
    """Integer label indices in [0, num_labels), one per row (no value is named: they may be private)."""
    try:
        labels = np.asarray(values)
    except (TypeError, ValueError):
        raise DatasetError(f"The {what} labels must be integer label indices.") from None
    if labels.shape != (count,):
        raise DatasetError(f"There must be one label per {what}; got {labels.shape[0] if labels.ndim else 0} "
                           f"for {count}.")
    if count and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"The {what} labels must be integer label indices; got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if count and (labels.min() < 0 or labels.max() >= num_labels):
        raise DatasetError(f"A {what} label lies outside the {num_labels} declared labels "
                           f"(indices 0 … {num_labels - 1}).")
    return labels


def nearest_candidates(private: np.ndarray, record_labels: Sequence[int], candidates: np.ndarray,
                       candidate_labels: Sequence[int], k: int, num_labels: int) -> np.ndarray:
    """For each private record, the indices of its ``k`` nearest candidates (squared L2 distance)
    among the candidates of its own label, nearest first; ties go to the lower candidate index.

    Every one of the ``num_labels`` public labels must have at least ``k`` candidates; this is
    checked before any record is read, so the error says nothing about which labels the records
    hold. Each record's distances are computed on its own (one matrix-vector product), so they
    cannot depend on which other records are present."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidPrivacyParameterError(f"k (nearest candidates per vote) must be a positive integer; got {k!r}.")
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise DatasetError(f"num_labels must be a positive integer; got {num_labels!r}.")
    private, candidates = check_embeddings(private, candidates)
    candidate_labels = _labels(candidate_labels, candidates.shape[0], num_labels, "candidate")
    pools = [np.flatnonzero(candidate_labels == label) for label in range(num_labels)]
    for label, pool in enumerate(pools):
        if pool.size < k:
            raise DatasetError(f"Label index {label} has {pool.size} candidate(s) but each vote goes to "
                               f"k = {k}: generate at least k candidates per label (or lower k).")
    record_labels = _labels(record_labels, private.shape[0], num_labels, "private record")
    out = np.empty((private.shape[0], k), dtype=np.int64)
    for label, pool in enumerate(pools):
        pool_matrix = candidates[pool]
        pool_norms = np.einsum("ij,ij->i", pool_matrix, pool_matrix)
        for row in np.flatnonzero(record_labels == label):
            distances = pool_norms - 2.0 * (pool_matrix @ private[row])  # + |x|², the same for every candidate
            out[row] = pool[np.argsort(distances, kind="stable")[:k]]
    return out


def vote_histogram(neighbours: np.ndarray, num_candidates: int, user_ids: Sequence[Any] | None = None) -> np.ndarray:
    """The pre-noise vote histogram (private: the caller adds noise before anything leaves).

    Each record gives 1/√k to each of its k neighbours (L2 norm 1); with ``user_ids`` a user's records
    share one vote, their votes averaged (L2 norm ≤ 1)."""
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise DatasetError(f"num_candidates must be a positive integer; got {num_candidates!r}.")
    try:
        neighbours = np.asarray(neighbours)
    except (TypeError, ValueError):
        raise DatasetError("neighbours must be a 2-D array of candidate indices.") from None
    if neighbours.ndim != 2 or neighbours.shape[1] < 1:
        raise DatasetError(f"neighbours must be a 2-D array (records × k, k ≥ 1); got shape {neighbours.shape}.")
    if neighbours.size and not np.issubdtype(neighbours.dtype, np.integer):
        raise DatasetError(f"neighbours must hold integer candidate indices; got dtype {neighbours.dtype}.")
    neighbours = neighbours.astype(np.int64)
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= num_candidates):
        raise DatasetError(f"A neighbour index lies outside the {num_candidates} candidates.")
    ordered = np.sort(neighbours, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        # A repeated candidate would get 2/√k from one record: its vote norm would exceed 1.
        raise DatasetError("A record names the same candidate twice among its neighbours: each vote's "
                           "k candidates must be distinct (its L2 norm would exceed 1).")
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


def dp_vote_histogram(histogram: np.ndarray, noise_multiplier: float, *, non_private: bool = False,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """The histogram plus N(0, σ²) per candidate (sensitivity 1). The caller must have charged the
    stage first. The noise comes from OS entropy; ``rng`` is for tests only. σ = 0 (no privacy) is
    refused unless ``non_private=True`` says so (the ε = ∞ reference runs)."""
    sigma = _sigma(noise_multiplier, allow_zero=non_private)
    histogram = np.asarray(histogram, dtype=np.float64)
    if sigma == 0:
        return histogram.copy()
    rng = np.random.default_rng() if rng is None else rng
    return histogram + rng.normal(0.0, sigma, size=histogram.shape)


def _sigma(noise_multiplier: Any, *, allow_zero: bool) -> float:
    try:
        sigma = float(noise_multiplier)
    except (TypeError, ValueError):
        sigma = float("nan")
    if isinstance(noise_multiplier, bool) or not math.isfinite(sigma) or sigma < 0 or (sigma == 0 and not allow_zero):
        need = "a non-negative number" if allow_zero else "a positive number (σ = 0 is no privacy: pass non_private=True)"
        raise InvalidPrivacyParameterError(f"noise_multiplier must be {need}; got {noise_multiplier!r}.")
    return sigma


def pe_noise_multiplier(ledger: PrivacyLedger, stage: str, num_rounds: int, noise_multiplier: float | None = None) -> float:
    """σ of each round's vote: the given one, or the smallest the stage's planned share allows for
    ``num_rounds`` rounds. T rounds of σ are one Gaussian of σ/√T, so σ = √T × the σ of one
    sensitivity-1 Gaussian calibrated to the share (exact, as :func:`private_evolution_event`)."""
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
        raise InvalidPrivacyParameterError(f"num_rounds must be a positive integer; got {num_rounds!r}.")
    if noise_multiplier is not None:
        return _sigma(noise_multiplier, allow_zero=False)
    one_round = one_gaussian_noise_multiplier(ledger, stage, None, what="Private Evolution")
    sigma = one_round * math.sqrt(num_rounds)
    while sigma / math.sqrt(num_rounds) < one_round:  # never below the calibrated σ by a rounding ulp
        sigma = math.nextafter(sigma, math.inf)
    return sigma
