"""evaluate() (hf_dpsynth/evaluation/evaluator.py): dispatch per modality, reference settings, the
real-data ceiling, sharing flags, the public-only verdict, the invalid rate, bad input.

Sharing rules checked here (docs/ALGORITHMS.md §7): a metric that reads the real test set is shareable
only when the test set is public and the synthetic set is the DP run or the public-only run; the
ε = ∞ reference and the real ceiling are never shareable; metrics of a DP synthetic set alone
(invalid rate, distinct-n) are shareable whatever the test set.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from datasets import Dataset

from hf_dpsynth.data import ImageCodec, TabularCodec, TextCodec, load_digits_images
from hf_dpsynth.data.tabular import CategoricalColumn, IntegerColumn, TabularSchema
from hf_dpsynth.errors import DatasetError, SchemaError
from hf_dpsynth.evaluation.evaluator import EvaluationResult, evaluate
from hf_dpsynth.evaluation.text import (
    OWNER_ONLY_NOTE,
    REAL_DATA_SETTING,
    TextEvaluation,
)
from hf_dpsynth.generation import GeneratedText, build_dataset
from hf_dpsynth.resources import load_sms_spam

SMS = TextCodec("text", conditions={"label": ["ham", "spam"]})
DP, INF, PUBLIC = "ε = 4", "ε = ∞ (non-private)", "public-only (ε = 0)"
TSTR = "TSTR accuracy (TF-IDF + logistic regression)"


@pytest.fixture(scope="module")
def sms():
    train, test = load_sms_spam("train"), load_sms_spam("test").select(range(400))
    good = train.select(range(400))
    shuffled = train.select(range(400, 800))
    shuffled = Dataset.from_dict({"label": list(np.random.default_rng(0).permutation(shuffled["label"])),
                                  "text": shuffled["text"]})
    return {"test": test, "good": good, "shuffled": shuffled, "inf": train.select(range(800, 1200)),
            "train": train.select(range(1200, 1700))}


def _generated(data: Dataset, num_invalid: int) -> Dataset:
    """``data`` as a generator's output: each row a generated text, plus ``num_invalid`` empty ones."""
    outputs = [GeneratedText(prefix=f"label: {r['label']}\n", text=r["text"], condition=f"label={r['label']}")
               for r in data]
    outputs += [GeneratedText(prefix="label: spam\n", text="   ", condition="label=spam")] * num_invalid
    return build_dataset(outputs, SMS, generator="test")


def _by(result: EvaluationResult) -> dict[tuple[str, str], object]:
    return {(m.setting, m.name): m for m in result.metrics}


def test_text_settings_sharing_ceiling_and_verdict(sms):
    synthetic = _generated(sms["good"], num_invalid=20)
    result = evaluate(synthetic, sms["test"], codec=SMS, setting=DP, embeddings=False,
                      references={INF: sms["inf"], PUBLIC: sms["shuffled"]}, real_train=sms["train"])
    assert result.modality == "text" and result.primary_metric == TSTR
    assert set(result.evaluations) == {DP, INF, PUBLIC, REAL_DATA_SETTING}
    assert isinstance(result.evaluations[DP], TextEvaluation)
    by = _by(result)

    # every setting has its TSTR accuracy, and the values are the per-modality results
    for setting in (DP, INF, PUBLIC, REAL_DATA_SETTING):
        assert by[(setting, TSTR)].value == result.evaluations[setting].tstr_tfidf.accuracy
    assert result.value(TSTR) == by[(DP, TSTR)].value
    assert result.value(TSTR, PUBLIC) < result.value(TSTR)  # shuffled labels lose
    assert result.beats_public_only is True
    assert by[(DP, f"beats the public-only baseline ({TSTR})")].value == "yes"

    # the invalid rate comes from the generation summary: 20 of 420 outputs, shareable
    rate = by[(DP, "invalid rate")]
    assert rate.value == pytest.approx(20 / 420) and rate.shareable and rate.section == "generation"
    assert by[(DP, "outputs generated")].value == 420
    assert (INF, "invalid rate") not in by  # a plain Dataset has no generation summary

    # private test set: everything that reads it is owner-only, with the note
    assert not by[(DP, TSTR)].shareable and by[(DP, TSTR)].note == OWNER_ONLY_NOTE
    assert not by[(DP, f"beats the public-only baseline ({TSTR})")].shareable
    # ... but what reads only the DP (or public-only) synthetic set is shareable
    assert by[(DP, "distinct-2")].shareable and by[(PUBLIC, "distinct-2")].shareable
    # the ε = ∞ run and the ceiling are owner-only throughout
    assert not any(m.shareable for m in result.metrics if m.setting in (INF, REAL_DATA_SETTING))
    assert all(m.note == OWNER_ONLY_NOTE for m in result.metrics if not m.shareable)
    assert set(result.shareable_metrics()) == {m for m in result.metrics if m.shareable}


def test_a_public_test_set_makes_dp_and_public_only_shareable_but_never_the_ceiling(sms):
    result = evaluate(sms["good"], sms["test"], codec=SMS, setting=DP, embeddings=False, test_is_public=True,
                      references={INF: sms["inf"], PUBLIC: sms["shuffled"]}, real_train=sms["train"])
    by_setting: dict[str, set[bool]] = {}
    for m in result.metrics:
        by_setting.setdefault(m.setting, set()).add(m.shareable)
    assert by_setting == {DP: {True}, PUBLIC: {True}, INF: {False}, REAL_DATA_SETTING: {False}}


def test_beats_public_only_false_and_none(sms):
    swapped = evaluate(sms["shuffled"], sms["test"], codec=SMS, embeddings=False, references={PUBLIC: sms["good"]})
    assert swapped.beats_public_only is False and swapped.setting == "DP"
    assert swapped.value(f"beats the public-only baseline ({TSTR})") == "no"
    without = evaluate(sms["good"], sms["test"], codec=SMS, embeddings=False, references={INF: sms["inf"]})
    assert without.beats_public_only is None
    assert not any(m.name.startswith("beats") for m in without.metrics)
    unlabelled = evaluate(sms["good"], sms["test"], codec=TextCodec("text"), embeddings=False,
                          references={PUBLIC: sms["shuffled"]})
    assert unlabelled.primary_metric is None and unlabelled.beats_public_only is None


def test_test_embeddings_are_computed_once(sms, monkeypatch):
    calls: list[int] = []

    def fake_embed(texts, **_):  # deterministic 8-d vectors; counts the texts embedded per call
        calls.append(len(texts))
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(8) for t in texts])

    monkeypatch.setattr("hf_dpsynth.evaluation.embeddings.embed_texts", fake_embed)
    monkeypatch.setattr("hf_dpsynth.evaluation.text.embed_texts", fake_embed)
    small = {k: v.select(range(60)) for k, v in sms.items()}
    result = evaluate(small["good"], small["test"], codec=SMS, setting=DP, references={PUBLIC: small["shuffled"]},
                      real_train=small["train"])
    assert calls == [60, 60, 60, 60]  # the test set once, then DP, ceiling, public-only
    by = _by(result)
    pr = "k-NN recall (k = 5, all-MiniLM-L6-v2)"
    assert (DP, pr) in by and (REAL_DATA_SETTING, pr) in by and not by[(DP, pr)].shareable


def test_tabular_dispatch_with_the_default_target():
    schema = TabularSchema([IntegerColumn("x", 0, 99), CategoricalColumn("label", ("no", "yes"))])
    rng = np.random.default_rng(0)

    def rows(n: int) -> Dataset:
        x = rng.integers(0, 100, size=n).tolist()
        return Dataset.from_dict({"x": x, "label": ["yes" if v >= 50 else "no" for v in x]})

    result = evaluate(rows(150), rows(150), codec=TabularCodec(schema), references={PUBLIC: rows(150)},
                      test_is_public=True)
    assert result.modality == "tabular"
    assert result.primary_metric == "TSTR accuracy (gradient-boosted trees, target 'label')"  # the last column
    assert result.value(result.primary_metric) == 1.0
    assert result.beats_public_only is False  # equal is not better
    assert result.value("1-way marginal TVD (mean over 2 columns)") < 0.2
    assert all(m.shareable for m in result.metrics)


def test_image_dispatch():
    data = load_digits_images()
    codec = ImageCodec((8, 8), 17, conditions={"label": [str(i) for i in range(10)]})
    result = evaluate(data.select(range(300)), data.select(range(1500, 1797)), codec=codec, setting=DP)
    assert result.modality == "image" and result.primary_metric == "TSTR accuracy (MLP 64 on pixels)"
    assert result.value(result.primary_metric) > 0.8
    assert result.value("Fréchet distance (MLP classifier features; not comparable to published FID)") > 0


def test_bad_input(sms):
    good, test = sms["good"], sms["test"]
    with pytest.raises(DatasetError, match="synthetic dataset is empty.*at least 2"):
        evaluate(good.select([]), test, codec=SMS)
    with pytest.raises(DatasetError, match=r"reference 'public-only \(ε = 0\)' is empty"):
        evaluate(good, test, codec=SMS, references={PUBLIC: good.select([])})
    with pytest.raises(SchemaError, match=r"synthetic dataset lacks column\(s\) \['label'\]"):
        evaluate(good.remove_columns("label"), test, codec=SMS)
    with pytest.raises(SchemaError, match="real test set lacks"):
        evaluate(good, test.rename_column("text", "message"), codec=SMS)
    only_ham = good.filter(lambda r: r["label"] == "ham")
    with pytest.raises(DatasetError, match=r"the synthetic set has only the class 'ham'.*at least 2 classes"):
        evaluate(only_ham, test, codec=SMS, embeddings=False)
    with pytest.raises(DatasetError, match=r"the real training set has only the class 'ham'"):
        evaluate(good, test, codec=SMS, embeddings=False, real_train=only_ham)
    with pytest.raises(ValueError, match="more than one reference"):
        evaluate(good, test, codec=SMS, references={PUBLIC: good, "public-only prompts": good})
    with pytest.raises(ValueError, match="clash"):
        evaluate(good, test, codec=SMS, references={"DP": good})
    with pytest.raises(SchemaError, match="TextCodec, TabularCodec or ImageCodec"):
        evaluate(good, test, codec=object())
    with pytest.raises(SchemaError, match="target 'topic'"):
        evaluate(good, test, codec=SMS, target="topic")
