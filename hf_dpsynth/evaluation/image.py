"""Utility and fidelity of small synthetic images (docs/ALGORITHMS.md §7).

* :func:`tstr_image` — a small MLP (scikit-learn, fixed seed) trained on synthetic images,
  scored on real ones;
* :func:`image_feature_frechet` — the Fréchet distance between real and synthetic images in the
  hidden layer of such a classifier. The formula is FID's, but the features are those of a small
  MLP trained for this evaluation, not Inception-v3 on 299×299 images: the values are **not
  comparable to published FID** numbers, only to each other (same classifier, same test set);
* :func:`evaluate_images` — both, as an :class:`ImageEvaluation`.

Images are flattened and divided by ``max_value`` (the codec's public ``input_max``, e.g. 16 for
scikit-learn's digits), so pixels lie in [0, 1].

Privacy: not DP. A classifier trained on private images, and every metric that reads a private
test set, is for the data owner only (see ``to_metrics``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_dpsynth.errors import DatasetError
from hf_dpsynth.evaluation.embeddings import frechet_distance
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth.evaluation._common import (
    REAL_DATA_SETTING,
    ClassificationResult,
    check_classes,
    check_not_empty,
    classification_scores,
    get_column,
    labels_as_strings,
    make_metric,
    require_sklearn,
    sharing,
)

__all__ = [
    "FEATURE_FRECHET_NAME",
    "ImageClassifier",
    "ImageEvaluation",
    "evaluate_images",
    "fit_image_classifier",
    "image_feature_frechet",
    "tstr_image",
]

IMAGE_SECTION = "image fidelity"
#: The metric name of :func:`image_feature_frechet` (it says what the number is not).
FEATURE_FRECHET_NAME = "Fréchet distance (MLP classifier features; not comparable to published FID)"
_HIDDEN = (64,)
_MAX_ITER = 300
_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def _image_matrix(images: Any, what: str) -> np.ndarray:
    """Images (a sequence of 2-D arrays or nested lists, or one array) as rows of pixels."""
    try:
        array = np.asarray(images if isinstance(images, np.ndarray) else list(images), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"the {what} images are not numeric arrays of one shape: {exc}") from None
    if array.ndim < 2 or array.shape[0] == 0:
        raise DatasetError(f"the {what} images must be a non-empty list of images; got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise DatasetError(f"the {what} images have NaN or infinite pixels.")
    return array.reshape(array.shape[0], -1)


def _same_pixels(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise DatasetError(
            f"the {what_a} images have {a.shape[1]} pixels but the {what_b} images have {b.shape[1]}: "
            "both must have the codec's shape."
        )


def _scale_of(max_value: float | None, *matrices: np.ndarray) -> float:
    if max_value is None:
        top = max(float(m.max()) for m in matrices)
        return top if top > 0 else 1.0
    if isinstance(max_value, bool) or not isinstance(max_value, (int, float)) or not max_value > 0:
        raise ValueError(f"max_value must be a positive number (the largest possible grey value); got {max_value!r}.")
    return float(max_value)


def _mlp(hidden_layer_sizes: Sequence[int], random_state: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=tuple(hidden_layer_sizes), max_iter=_MAX_ITER, random_state=random_state)


@dataclass(frozen=True)
class ImageClassifier:
    """A fitted MLP on images scaled by ``max_value``; its hidden layer is the feature space."""

    model: Any
    max_value: float
    num_pixels: int

    def _inputs(self, images: Any, what: str) -> np.ndarray:
        x = _image_matrix(images, what)
        if x.shape[1] != self.num_pixels:
            raise DatasetError(f"the {what} images have {x.shape[1]} pixels; this classifier takes {self.num_pixels}.")
        return x / self.max_value

    def predict(self, images: Any) -> list[str]:
        """The predicted label of each image."""
        return [str(p) for p in self.model.predict(self._inputs(images, "given"))]

    def features(self, images: Any, *, what: str = "given") -> np.ndarray:
        """The activations of the last hidden layer for each image: shape (n, hidden units)."""
        h = self._inputs(images, what)
        activation = _ACTIVATIONS[self.model.activation]
        for weights, bias in zip(self.model.coefs_[:-1], self.model.intercepts_[:-1]):
            h = activation(h @ weights + bias)
        return h


def fit_image_classifier(
    images: Any,
    labels: Sequence[Any],
    *,
    max_value: float | None = None,
    hidden_layer_sizes: Sequence[int] = _HIDDEN,
    random_state: int = 0,
) -> ImageClassifier:
    """Fit the evaluation MLP (ReLU hidden layers, Adam, fixed ``random_state``) on labelled images.

    ``max_value`` (default: the largest pixel given) scales pixels to [0, 1]; pass the codec's
    ``input_max`` so that every classifier scales alike.
    """
    require_sklearn()
    from sklearn.exceptions import ConvergenceWarning

    x = _image_matrix(images, "training")
    y = labels_as_strings(labels, "training")
    if len(y) != len(x):
        raise DatasetError(f"got {len(x)} training images but {len(y)} labels.")
    check_classes(y, "feature classifier's training")
    scale = _scale_of(max_value, x)
    model = _mlp(hidden_layer_sizes, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x / scale, np.asarray(y, dtype=object))
    return ImageClassifier(model=model, max_value=scale, num_pixels=x.shape[1])


def tstr_image(
    train_images: Any,
    train_labels: Sequence[Any],
    test_images: Any,
    test_labels: Sequence[Any],
    *,
    max_value: float | None = None,
    hidden_layer_sizes: Sequence[int] = _HIDDEN,
    random_state: int = 0,
    positive_label: str | None = None,
) -> ClassificationResult:
    """Train the evaluation MLP on (synthetic) ``train_*``, report its scores on real ``test_*``.

    Images are flattened and divided by ``max_value`` (default: the largest pixel of both sets).
    DatasetError when the training labels have fewer than two classes or the shapes differ.
    """
    train = _image_matrix(train_images, "training")
    test = _image_matrix(test_images, "test")
    return _tstr(train, train_labels, test, test_labels, scale=_scale_of(max_value, train, test),
                 hidden_layer_sizes=hidden_layer_sizes, random_state=random_state, positive_label=positive_label)


def _tstr(train: np.ndarray, train_labels: Sequence[Any], test: np.ndarray, test_labels: Sequence[Any], *,
          scale: float, hidden_layer_sizes: Sequence[int] = _HIDDEN, random_state: int = 0,
          positive_label: str | None = None, what: str = "synthetic") -> ClassificationResult:
    _same_pixels(train, test, "training", "test")
    for x, y, part in ((train, train_labels, "training"), (test, test_labels, "test")):
        if len(x) != len(y):
            raise DatasetError(f"got {len(x)} {part} images but {len(y)} labels.")
    return classification_scores(
        lambda: _mlp(hidden_layer_sizes, random_state), train / scale, train_labels, test / scale, test_labels,
        model=f"MLP {'-'.join(map(str, hidden_layer_sizes))} on pixels", positive_label=positive_label, what=what,
    )


def image_feature_frechet(real_images: Any, synth_images: Any, classifier: ImageClassifier) -> float:
    """The Fréchet distance between real and synthetic images in ``classifier``'s hidden layer.

    FID's formula on a small MLP's features: **not comparable to published FID**; compare values
    computed with the same classifier and the same real images only. Each set needs 2 images.
    """
    if not isinstance(classifier, ImageClassifier):
        raise TypeError(
            f"classifier must be an ImageClassifier (see fit_image_classifier); got {type(classifier).__name__}."
        )
    real = classifier.features(real_images, what="real")
    return frechet_distance(real, classifier.features(synth_images, what="synthetic"))


@dataclass(frozen=True)
class ImageEvaluation:
    """Every image metric of one synthetic set against real test images.

    ``tstr`` is None without labels; ``feature_frechet`` None without labels or a classifier;
    ``ceiling`` is the same evaluation of the real training images, when given.
    """

    n_synthetic: int
    n_real: int
    tstr: ClassificationResult | None = None
    feature_frechet: float | None = None
    ceiling: ImageEvaluation | None = None

    @property
    def primary(self) -> ClassificationResult | None:
        """The headline downstream result (TSTR)."""
        return self.tstr

    def to_metrics(self, *, setting: str, shareable: bool, synthetic_shareable: bool | None = None) -> list[Metric]:
        """The metrics (then the ceiling's, never shareable). ``shareable``: the real test images are
        public; ``synthetic_shareable`` (default ``shareable``): the synthetic images may be published.
        The feature classifier is trained on the test images, so the Fréchet distance needs both too."""
        _, both = sharing(shareable, synthetic_shareable)
        rows: list[Metric] = []
        if self.tstr is not None:
            rows += self.tstr.to_metrics(setting=setting, shareable=both)
        if self.feature_frechet is not None:
            rows.append(make_metric(FEATURE_FRECHET_NAME, self.feature_frechet, section=IMAGE_SECTION,
                                    setting=setting, shareable=both))
        if self.ceiling is not None:
            rows += self.ceiling.to_metrics(setting=REAL_DATA_SETTING, shareable=False, synthetic_shareable=False)
        return rows


def evaluate_images(
    synthetic: Any,
    real_test: Any,
    *,
    image_column: str = "image",
    label_column: str | None = "label",
    max_value: float | None = None,
    real_train: Any | None = None,
    feature_classifier: ImageClassifier | None = None,
    positive_label: str | None = None,
) -> ImageEvaluation:
    """Evaluate synthetic images against real test images (Datasets or pandas DataFrames).

    TSTR with the evaluation MLP, and the Fréchet distance in the hidden layer of
    ``feature_classifier`` — by default an MLP fitted on the real *test* images (fixed seed), so
    that every synthetic set evaluated against this test set is measured in the same feature
    space. ``max_value``: the codec's ``input_max`` (default: the largest pixel of the test
    images). With ``real_train``, the same evaluation of the real training images (the ceiling).
    """
    return _evaluate_images(synthetic, real_test, image_column=image_column, label_column=label_column,
                            max_value=max_value, real_train=real_train, feature_classifier=feature_classifier,
                            positive_label=positive_label, role="synthetic")


def _evaluate_images(synthetic: Any, real_test: Any, *, image_column: str, label_column: str | None,
                     max_value: float | None, real_train: Any, feature_classifier: ImageClassifier | None,
                     positive_label: str | None, role: str) -> ImageEvaluation:
    """evaluate_images, with ``role`` naming the evaluated set in errors ("synthetic", "real training")."""
    n_synth = check_not_empty(synthetic, f"{role} dataset",
                              minimum="Image evaluation needs at least 2 images of at least 2 labels.")
    n_real = check_not_empty(real_test, "real test set", minimum="Evaluation needs held-out real images.")
    synth = _image_matrix(get_column(synthetic, image_column, what=f"{role} dataset"), role)
    real = _image_matrix(get_column(real_test, image_column, what="real test set"), "real test")
    _same_pixels(synth, real, role, "real test")
    scale = _scale_of(max_value, real)
    tstr = frechet = None
    if label_column is not None:
        synth_labels = get_column(synthetic, label_column, what=f"{role} dataset")
        real_labels = get_column(real_test, label_column, what="real test set")
        tstr = _tstr(synth, synth_labels, real, real_labels, scale=scale, positive_label=positive_label, what=role)
        if feature_classifier is None:
            feature_classifier = fit_image_classifier(real, real_labels, max_value=scale)
    if feature_classifier is not None:
        if n_synth < 2:
            raise DatasetError(f"the {role} dataset has 1 image; the Fréchet distance needs at least 2.")
        frechet = image_feature_frechet(real, synth, feature_classifier)
    ceiling = None
    if real_train is not None:
        ceiling = _evaluate_images(real_train, real_test, image_column=image_column, label_column=label_column,
                                   max_value=scale, real_train=None, feature_classifier=feature_classifier,
                                   positive_label=positive_label, role="real training")
    return ImageEvaluation(n_synthetic=n_synth, n_real=n_real, tstr=tstr, feature_frechet=frechet, ceiling=ceiling)
