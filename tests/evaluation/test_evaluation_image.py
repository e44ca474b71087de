"""Image metrics (hf_dpsynth/evaluation/image.py):

* TSTR: two trivially separable classes score 1.0; scikit-learn's digits score far above chance,
  and with shuffled labels at chance (0.1);
* the hidden-layer features are exactly the ones the fitted MLP computes (its class probabilities
  follow from them through the output layer);
* the feature Fréchet distance is 0 for a set against itself and ranks noise far from real digits;
* bad input: one class, mismatched shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_dpsynth.data import load_digits_images
from hf_dpsynth.errors import DatasetError, SchemaError
from hf_dpsynth.evaluation.image import (
    FEATURE_FRECHET_NAME,
    ImageClassifier,
    evaluate_images,
    fit_image_classifier,
    image_feature_frechet,
    tstr_image,
)
from hf_dpsynth.evaluation.text import REAL_DATA_SETTING


@pytest.fixture(scope="module")
def digits():
    data = load_digits_images()
    images = np.asarray(data["image"][:], dtype=float)
    labels = data["label"][:]
    return images, labels


def test_tstr_image_on_two_separable_classes_is_perfect():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 4, size=(30, 8, 8))
    light = rng.integers(12, 17, size=(30, 8, 8))
    images = np.concatenate([dark, light])
    labels = ["dark"] * 30 + ["light"] * 30
    result = tstr_image(images[::2], labels[::2], images[1::2], labels[1::2], max_value=16)
    assert result.accuracy == 1.0 and result.macro_f1 == 1.0
    assert (result.n_train, result.n_test) == (30, 30)


def test_tstr_image_on_digits_and_with_shuffled_labels(digits):
    images, labels = digits
    real = tstr_image(images[:600], labels[:600], images[1200:], labels[1200:], max_value=16)
    assert real.accuracy > 0.85 and real.positive_label is None  # ten classes: macro F1 only
    shuffled = list(np.random.default_rng(0).permutation(labels[:600]))
    chance = tstr_image(images[:600], shuffled, images[1200:], labels[1200:], max_value=16)
    assert abs(chance.accuracy - 0.1) < 0.06


def test_features_are_the_mlps_hidden_layer(digits):
    images, labels = digits
    classifier = fit_image_classifier(images[:400], labels[:400], max_value=16)
    assert isinstance(classifier, ImageClassifier)
    features = classifier.features(images[400:450])
    assert features.shape == (50, 64) and (features >= 0).all()  # ReLU units
    model = classifier.model
    logits = features @ model.coefs_[-1] + model.intercepts_[-1]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = model.predict_proba(images[400:450].reshape(50, -1) / 16)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-9)
    assert classifier.predict(images[400:402]) == [str(p) for p in model.predict(images[400:402].reshape(2, -1) / 16)]


def test_feature_frechet_ranks_noise_far_from_digits(digits):
    images, labels = digits
    classifier = fit_image_classifier(images[1200:], labels[1200:], max_value=16)
    real = images[1200:]
    assert image_feature_frechet(real, real.copy(), classifier) == pytest.approx(0.0, abs=1e-6)
    other_digits = image_feature_frechet(real, images[:500], classifier)
    noise = np.random.default_rng(0).integers(0, 17, size=(500, 8, 8))
    assert image_feature_frechet(real, noise, classifier) > 3 * other_digits
    with pytest.raises(TypeError, match="ImageClassifier"):
        image_feature_frechet(real, real, classifier.model)


def test_image_bad_input(digits):
    images, labels = digits
    with pytest.raises(DatasetError, match=r"only the class '3'.*at least 2 classes"):
        tstr_image(images[:10], ["3"] * 10, images[10:20], labels[10:20])
    with pytest.raises(DatasetError, match="64 pixels but the test images have 16"):
        tstr_image(images[:10], labels[:10], np.zeros((5, 4, 4)), labels[:5])
    with pytest.raises(DatasetError, match="10 training images but 9 labels"):
        tstr_image(images[:10], labels[:9], images[10:20], labels[10:20])
    with pytest.raises(ValueError, match="max_value must be a positive number"):
        tstr_image(images[:10], labels[:10], images[10:20], labels[10:20], max_value=0)


def test_evaluate_images_and_sharing(digits):
    data = load_digits_images()
    synthetic, real, train = data.select(range(300)), data.select(range(1500, 1797)), data.select(range(300, 700))
    result = evaluate_images(synthetic, real, max_value=16, real_train=train)
    assert result.tstr.accuracy > 0.8 and result.feature_frechet > 0
    assert result.ceiling.tstr.n_train == 400 and result.ceiling.ceiling is None
    metrics = result.to_metrics(setting="ε = 8", shareable=True, synthetic_shareable=True)
    frechet = [m for m in metrics if m.name == FEATURE_FRECHET_NAME]
    assert [m.setting for m in frechet] == ["ε = 8", REAL_DATA_SETTING]
    assert frechet[0].shareable and not frechet[1].shareable
    assert "not comparable to published FID" in FEATURE_FRECHET_NAME

    with pytest.raises(DatasetError, match="synthetic dataset is empty"):
        evaluate_images(synthetic.select([]), real)
    with pytest.raises(SchemaError, match="no column 'image'"):
        evaluate_images(synthetic.rename_column("image", "pixels"), real)
    unlabelled = evaluate_images(Dataset.from_dict({"image": synthetic["image"][:]}), real, label_column=None)
    assert unlabelled.tstr is None and unlabelled.feature_frechet is None
