"""Canaries, scores, guesses and verdicts; and the audit catching real bugs on a tiny model."""

import hashlib
import math
import tempfile

import numpy as np
import pytest
from datasets import Dataset

from hf_dpsynth.audit import (
    AuditConfig,
    NGramModel,
    evaluate_guesses,
    make_canaries,
    ngram_scores,
    run_audit,
)
from hf_dpsynth.audit.audit import AuditReport, _auc, _tpr_at_fpr
from hf_dpsynth.data import (
    CategoricalColumn,
    ImageCodec,
    IntegerColumn,
    TabularCodec,
    TabularSchema,
    TextCodec,
    prepare_dataset,
)
from hf_dpsynth.errors import DatasetError, InvalidPrivacyParameterError

CODEC = TextCodec(conditions={"label": ["ham", "spam"]})


# ------------------------------------------------------------------------------------ canaries


def test_canaries_are_fresh_seeded_and_committed():
    a = make_canaries(CODEC, 400, seed=3)
    b = make_canaries(CODEC, 400, seed=3)
    c = make_canaries(CODEC, 400, seed=4)
    assert a.records == b.records and (a.included == b.included).all()
    assert a.records != c.records
    assert 150 < a.num_included < 250  # each in with probability ½
    expected = hashlib.sha256(np.packbits(a.included).tobytes() + b"400").hexdigest()
    assert a.inclusion_hash == expected
    texts = [r["text"] for r in a.records]
    assert len(set(texts)) == 400
    assert all(r["label"] in ("ham", "spam") for r in a.records)


def test_canaries_are_saved_for_the_downstream_gate(tmp_path):
    import json

    canaries = make_canaries(CODEC, 200, seed=5)
    canaries.save(tmp_path / "canaries.json")
    saved = json.loads((tmp_path / "canaries.json").read_text())
    assert saved["inclusion_hash"] == canaries.inclusion_hash
    assert saved["canaries"] == [CODEC.encode(r) for r in canaries.records]
    assert "included" not in saved


def test_too_few_canaries_are_refused_with_the_minimum():
    with pytest.raises(InvalidPrivacyParameterError, match="at least 200"):
        make_canaries(CODEC, 100, seed=0)


def test_canaries_for_tables_and_images_fit_their_codec():
    schema = TabularSchema([IntegerColumn("age", 17, 90), CategoricalColumn("sex", ("F", "M"), nullable=True)])
    tab = make_canaries(TabularCodec(schema), 200, seed=0)
    codec = TabularCodec(schema)
    assert all(codec.decode(codec.encode(r)) == r for r in tab.records)
    img_codec = ImageCodec((4, 4), 5)
    img = make_canaries(img_codec, 200, seed=0)
    assert all(img_codec.decode(img_codec.encode(r))["image"].shape == (4, 4) for r in img.records)


def test_insertion_adds_exactly_the_included_canaries():
    prepared = prepare_dataset(Dataset.from_dict({"label": ["ham"] * 5, "text": [f"m {i}" for i in range(5)]}), CODEC)
    canaries = make_canaries(CODEC, 200, seed=1)
    once = canaries.insert_into(prepared)
    twice = canaries.insert_into(prepared, repeat=2)
    assert len(once) == 5 + canaries.num_included and len(twice) == 5 + 2 * canaries.num_included
    assert once.select(range(5)).to_dict() == prepared.dataset.to_dict()
    prompts, completions = canaries.prompts_and_completions()
    inserted = set(once["completion"][5:])
    assert inserted == {completions[i] for i in np.flatnonzero(canaries.included)}
    users = prepare_dataset(
        Dataset.from_dict({"u": ["a", "a"], "label": ["ham"] * 2, "text": ["x", "y"]}), CODEC,
        privacy_unit="user", user_id_column="u", max_examples_per_user=2,
    )
    with_users = canaries.insert_into(users)
    assert len(set(with_users["u"][2:])) == canaries.num_included  # each canary its own user


# ------------------------------------------------------------------------------------ scores and guesses


def test_ngram_model_by_hand_and_minimum_size():
    corpus = ["a b"] * 100
    lm = NGramModel(corpus, n=1, k=1.0)
    # unigrams: a 100, b 100, </s> 100 -> total 300, vocab 3 + unknown = 4
    assert lm.mean_log_prob("a") == pytest.approx(np.mean([math.log(101 / 304), math.log(101 / 304)]))
    with pytest.raises(DatasetError, match="at least 200"):
        NGramModel(["only a few words"] * 3)
    seen = "zorblat quexing frimp"
    scores = ngram_scores([seen] + ["see you later at the station"] * 60, [seen, "glarp vintu snoob"])
    assert scores[0] > scores[1]


def test_auc_and_tpr_by_hand():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    included = np.array([False, True, False, True])
    assert _auc(scores, included) == pytest.approx(0.75)  # pairs (in > out): (2>1), (4>1), (4>3) of 4
    s = np.concatenate([np.arange(100.0), [200.0, 50.5]])
    inc = np.array([False] * 100 + [True, True])
    assert _tpr_at_fpr(s, inc) == pytest.approx(0.5)  # threshold = 2nd-highest OUT (98): 200 above, 50.5 not


def test_perfect_scores_reach_the_design_ceiling_and_random_ones_do_not():
    config = AuditConfig(delta=1e-5, num_canaries=1000, guesses="two_sided")
    included = np.random.default_rng(0).random(1000) < 0.5
    perfect = evaluate_guesses(included.astype(float), included, config)
    assert perfect.num_correct == perfect.num_guesses
    assert perfect.epsilon_lower_bound == pytest.approx(config.ceiling().epsilon)
    assert perfect.auc == 1.0
    noise = evaluate_guesses(np.random.default_rng(1).normal(size=1000), included, config)
    assert noise.epsilon_lower_bound < 0.5 and 0.4 < noise.auc < 0.6
    with pytest.raises(ValueError, match="1000 canaries"):
        evaluate_guesses(np.zeros(10), np.zeros(10, dtype=bool), config)
    with pytest.raises(InvalidPrivacyParameterError, match="needs 400 canaries"):
        AuditConfig(delta=1e-5, num_canaries=300, grid=(200,))


def _report(eps_hat, claimed, *, positive=None, charged=False, m=200):
    config = AuditConfig(delta=1e-5, num_canaries=m, guesses="in_only", grid=(40,), significance=0.01)
    included = np.arange(m) % 2 == 0
    main = evaluate_guesses(np.arange(m, dtype=float), included, config)
    main = type(main)(**{**main.__dict__, "epsilon_lower_bound": eps_hat})
    pos = None if positive is None else type(main)(**{**main.__dict__, "epsilon_lower_bound": positive, "label": "positive control"})
    return AuditReport(claimed_epsilon=claimed, delta=1e-5, config=config, inclusion_hash="h", main=main,
                       ceiling=config.ceiling(), positive_control=pos, charged=charged)


def test_verdicts_and_sharing():
    assert _report(2.0, 1.0).verdict.startswith("BUG")
    assert _report(2.0, 1.0).refuted
    ok = _report(0.3, 1.0, positive=1.8)
    assert "did not refute" in ok.verdict and "too weak" not in ok.verdict and "could not" not in ok.verdict
    assert "too weak" in _report(0.3, 1.0, positive=0.5).verdict
    assert "could not refute ε = 8" in _report(0.3, 8.0).verdict  # ceiling 2.09 < 8
    owner = {m.name: m for m in _report(0.3, 1.0, positive=1.8).to_metrics()}
    assert not owner["ε̂ (one-run lower bound)"].shareable and owner["claimed ε"].shareable
    assert not owner["ε̂, positive control"].shareable
    charged = {m.name: m for m in _report(0.3, 1.0, charged=True).to_metrics()}
    assert charged["ε̂ (one-run lower bound)"].shareable


def test_synthetic_only_audit_with_a_generator_that_copies_its_data():
    # A "generator" that emits its training completions verbatim: the n-gram attack must see it.
    filler = prepare_dataset(Dataset.from_dict({"label": ["ham"] * 40, "text": [f"see you at {i} ok" for i in range(40)]}), CODEC)
    config = AuditConfig(delta=1e-5, num_canaries=200, score="ngram", guesses="in_only", grid=(40,), significance=0.01)
    leaky = lambda data, private: data["completion"][:]  # noqa: E731
    report = run_audit(leaky, filler, codec=CODEC, claimed_epsilon=1.0, config=config, controls=False)
    assert report.refuted and report.main.num_correct == 40


# ------------------------------------------------------------------------------------ must catch bugs
# Design (pre-registered): m = 200 canaries (2 made-up words after an in-distribution opening, each
# inserted once), "in"-only guesses, k = 40, significance 0.01: ε̂ > 1 needs >= 36 of 40 right. The
# score is log p_adapter - log p_base. A tiny 2-layer model with LoRA r = 16 (lm_head included, so a
# random base can sharpen its outputs), 500 steps of 64 expected units, lr 0.01, C = 1, claimed ε ≤ 1.

AUDIT = AuditConfig(delta=1e-5, num_canaries=200, guesses="in_only", grid=(40,), significance=0.01, suffix_words=2)


def _train(data, private):
    from peft import LoraConfig

    from hf_dpsynth import DPSynthConfig, DPSynthTrainer
    from hf_dpsynth.models import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=0)
    privacy = dict(target_epsilon=1.0) if private else dict(noise_multiplier=0.0)
    args = DPSynthConfig(
        # (the negative control trains on the 20 filler rows alone: a smaller batch there)
        output_dir=tempfile.mkdtemp(), logical_batch_size=min(64, len(data) // 2), per_device_train_batch_size=64, max_steps=500,
        learning_rate=0.01, max_length=48, dp_seed=1, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, logging_steps=10_000, accountant="rdp", per_example_max_grad_norm=1.0, target_delta=1e-5,
        **privacy,
    )
    trainer = DPSynthTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]),
    )
    trainer.train()
    if private:
        assert trainer.privacy_report().epsilon <= 1.0
    return trainer.model


@pytest.fixture(scope="module")
def filler():
    from hf_dpsynth.resources import load_sms_spam

    return prepare_dataset(load_sms_spam("train").select(range(20)), TextCodec(), scrub_pii=False)


@pytest.mark.slow
def test_audit_passes_correct_dp_and_its_controls_behave(filler):
    from hf_dpsynth.models import tiny_tokenizer

    report = run_audit(_train, filler, codec=TextCodec(), claimed_epsilon=1.0, config=AUDIT, tokenizer=tiny_tokenizer())
    assert report.main.epsilon_lower_bound <= 1.0, report.verdict
    assert report.positive_control.epsilon_lower_bound > 1.0, "the attack must catch the same pipeline without DP"
    assert report.negative_control.epsilon_lower_bound < 0.5
    assert "did not refute" in report.verdict and "too weak" not in report.verdict


@pytest.mark.slow
def test_audit_flags_a_planted_bug(filler, monkeypatch):
    from hf_dpsynth.models import tiny_tokenizer
    from hf_dpsynth.training import grad_sample

    original = grad_sample.ClippedSum.add_noise

    def no_noise(self, *, noise_multiplier, generator):  # the bug: noise off, the ledger still says ε ≤ 1
        return original(self, noise_multiplier=0.0, generator=generator)

    monkeypatch.setattr(grad_sample.ClippedSum, "add_noise", no_noise)
    report = run_audit(_train, filler, codec=TextCodec(), claimed_epsilon=1.0, config=AUDIT, tokenizer=tiny_tokenizer(),
                       controls=False)
    assert report.refuted and report.verdict.startswith("BUG")
    assert report.main.num_correct >= 36
