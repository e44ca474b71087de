"""Generators: the Synthesizer contract, the private-prediction mechanism against independent
re-computations, its accounting, and bad input."""

import json

import dp_accounting
import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.data import (
    CategoricalColumn,
    DPHistogram,
    ImageCodec,
    IntegerColumn,
    TabularCodec,
    TabularSchema,
    PreparedDataset,
    TextCodec,
    dp_label_histogram,
    prepare_dataset,
)
from hf_dpsynth.errors import (
    DatasetError,
    DPConfigError,
    InvalidPrivacyParameterError,
    PrivacyBudgetExceededError,
    PrivacyUnitMismatchError,
)
from hf_dpsynth.generation import (
    AdapterSynthesizer,
    GeneratedText,
    LockstepContexts,
    PrivatePredictionSynthesizer,
    SparseVectorGate,
    build_dataset,
    generation_info,
    private_prediction_rho,
)
from hf_dpsynth.generation.contexts import recompute_last_logits
from hf_dpsynth.generation.private_prediction.batching import batch_of
from hf_dpsynth.generation.private_prediction.mechanism import aggregate_logits, clip_logits, svt_statistic
from hf_dpsynth.models import tiny_causal_lm

LABELS = {"label": ["ham", "spam"]}
CODEC = TextCodec(conditions=LABELS)


def private_data(n_ham=24, n_spam=8, extra=()):
    texts = [f"see you at {i} pm ok" for i in range(n_ham)] + [f"WIN prize {i} text now" for i in range(n_spam)]
    labels = ["ham"] * n_ham + ["spam"] * n_spam
    for label, text in extra:
        labels.append(label)
        texts.append(text)
    return Dataset.from_dict({"label": labels, "text": texts})


def rdp_ledger(epsilon=8.0, stages=("private_prediction",)):
    ledger = PrivacyLedger(epsilon=epsilon, delta=1e-5, accountant="rdp")
    ledger.plan({s: 1.0 / len(stages) for s in stages})
    return ledger


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_causal_lm(seed=3)
    model.eval()
    return model, tok


def make_pp(tiny, data=None, ledger=None, user_id_column=None, **overrides):
    model, tok = tiny
    kwargs = dict(
        codec=CODEC, ledger=ledger or rdp_ledger(), expected_batch_size=4,
        batches_per_label={"ham": 3, "spam": 2}, clip=2.0, temperature=2.0, max_private_tokens=6,
    )
    kwargs.update(overrides)
    data = data if data is not None else private_data()
    if not isinstance(data, PreparedDataset):  # the generator takes prepared data only
        unit = {} if user_id_column is None else dict(privacy_unit="user", user_id_column=user_id_column,
                                                       max_examples_per_user=1)
        data = prepare_dataset(data, kwargs["codec"], **unit)
    return PrivatePredictionSynthesizer(model, tok, data, **kwargs)


def make_sampler(tiny, **overrides):
    model, tok = tiny
    kwargs = dict(codec=CODEC, conditioning={"label": {"ham": 3.0, "spam": 1.0}}, max_new_tokens=6, batch_size=3)
    kwargs.update(overrides)
    return AdapterSynthesizer(model, tok, **kwargs)


# ------------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("kind", ["adapter_sampler", "private_prediction"])
def test_every_synthesizer_meets_the_contract(tiny, kind, capsys):
    synth = make_sampler(tiny) if kind == "adapter_sampler" else make_pp(tiny)
    first = synth.generate(5, seed=11, progress=True)
    assert "private prediction" in capsys.readouterr().err or kind == "adapter_sampler"
    second = synth.generate(5, seed=11, progress=False)
    assert first.to_dict() == second.to_dict()  # reproducible with an explicit test seed

    info = generation_info(first)
    assert info["generator"] == kind == synth.name
    assert info["num_generated"] == 5
    assert info["num_valid"] + info["num_invalid"] + info["num_duplicates_dropped"] == 5
    assert len(first) == info["num_valid"]
    assert sum(info["invalid_kinds"].values()) == info["num_invalid"]
    assert first.column_names == ["label", "text", "generator", "condition"]
    assert set(first["generator"][:]) <= {kind}
    for row in first:  # every kept record parses, and its provenance matches its condition
        assert CODEC.decode(f"label: {row['label']}\n{row['text']}") == {"label": row["label"], "text": row["text"]}
        assert row["condition"] == f"label={row['label']}"

    description = first.info.description
    if kind == "private_prediction":
        assert "seed" not in description  # the mechanism's randomness is secret
        for text in private_data()["text"][:]:
            assert text not in description
        assert [s for s, _ in synth.privacy_events()] == ["private_prediction"]
    else:
        assert json.loads(description)["hf_dpsynth.generation"]["seed"] == 11  # post-processing: public
        assert synth.privacy_events() == []


def test_structured_outputs_come_back_as_columns():
    schema = TabularSchema([IntegerColumn("age", 17, 90), CategoricalColumn("sex", ("F", "M"), nullable=True)])
    tab = build_dataset(
        [
            GeneratedText("", "sex is M, age is 40"),
            GeneratedText("", "age is 33, sex is missing"),
            GeneratedText("", "age is 200, sex is M"),
            GeneratedText("", "age is 40, sex is M"),
        ],
        TabularCodec(schema),
        generator="test",
        deduplicate=True,
    )
    assert tab["age"][:] == [40, 33] and tab["sex"][:] == ["M", None]
    assert tab.features["age"].dtype == "int64"
    info = generation_info(tab)
    assert info["invalid_kinds"] == {"out_of_bounds": 1} and info["num_duplicates_dropped"] == 1
    img = build_dataset([GeneratedText("label: 3\n", "01\n23\n")], ImageCodec((2, 2), 4, conditions={"label": ["3"]}), generator="t")
    assert img[0]["image"] == [[0, 1], [2, 3]] and img[0]["label"] == "3"


def test_adapter_sampler_conditions_follow_the_dp_histogram(tiny):
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-5, accountant="rdp")
    hist = dp_label_histogram(private_data(), label_column="label", labels=["ham", "spam"], ledger=ledger, noise_multiplier=3.0, seed=0)
    sampler = make_sampler(tiny, conditioning=hist)
    plan = sampler.plan_conditions(40, np.random.default_rng(0))
    expected = hist.allocate(40)
    assert sum(c["label"] == "spam" for c in plan) == expected["spam"]
    assert sum(c["label"] == "ham" for c in plan) == expected["ham"]


# ------------------------------------------------------------------------------------ the mechanism


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(0, 6),
    vocab=st.integers(2, 12),
    s=st.integers(1, 8),
    clip=st.floats(0.1, 20.0),
    data=st.data(),
)
def test_one_record_moves_the_aggregate_by_at_most_c_over_s(rows, vocab, s, clip, data):
    values = st.floats(-1e4, 1e4, allow_nan=False)
    logits = torch.tensor(data.draw(st.lists(st.lists(values, min_size=vocab, max_size=vocab), min_size=rows, max_size=rows)), dtype=torch.float64).reshape(rows, vocab)
    extra = torch.tensor([data.draw(st.lists(values, min_size=vocab, max_size=vocab))], dtype=torch.float64)
    public = torch.tensor(data.draw(st.lists(values, min_size=vocab, max_size=vocab)), dtype=torch.float64)
    before = aggregate_logits(logits, clip=clip, expected_batch_size=s).double()
    after = aggregate_logits(torch.cat([logits, extra]), clip=clip, expected_batch_size=s).double()
    move = after - before
    tol = 1e-5 * max(1.0, clip)
    assert move.abs().max() <= clip / s + tol
    assert move.max() - move.min() <= 2 * clip / s + tol
    d_before = svt_statistic(logits, public, expected_batch_size=s)
    d_after = svt_statistic(torch.cat([logits, extra]), public, expected_batch_size=s)
    assert abs(d_after - d_before) <= 1 / s + 1e-6


def test_spread_bound_is_reached():
    # One record whose clipped logits are (c, -c): the move's spread is exactly 2c/s.
    clip, s = 3.0, 5
    move = aggregate_logits(torch.tensor([[100.0, -100.0]]), clip=clip, expected_batch_size=s)
    assert move.tolist() == pytest.approx([clip / s, -clip / s])
    assert clip_logits(torch.tensor([[5.0, 1.0, -50.0]]), 2.0).tolist() == [[2.0, -2.0, -2.0]]


def _record_samples(monkeypatch):
    """Record (scores, mask, token) of every token private prediction samples."""
    recorded = []
    original = PrivatePredictionSynthesizer._sample

    def spy(scores, mask, generator):
        token = original(scores, mask, generator)
        recorded.append((scores.clone(), None if mask is None else mask.clone(), token))
        return token

    monkeypatch.setattr(PrivatePredictionSynthesizer, "_sample", staticmethod(spy))
    return recorded


def test_private_prediction_aggregate_equals_a_direct_recomputation(tiny, monkeypatch):
    model, tok = tiny
    gen = make_pp(tiny, batches_per_label={"ham": 1, "spam": 1}, max_private_tokens=5)
    recorded = _record_samples(monkeypatch)
    gen.generate(1, seed=5, progress=False)  # the first batch in the public order: ham #0
    members = gen._members[("ham", 0)]
    assert len(members) > 1
    prompts = [gen._prompt(gen.instruction.format(example=m), "label: ham\n") for m in members]
    generated = []
    for scores, _, token in recorded:
        z = recompute_last_logits(model, prompts, generated)[:, : len(tok)].double().numpy()
        clipped = np.maximum(-gen.clip, z - z.max(axis=1, keepdims=True) + gen.clip)
        expected = clipped.sum(axis=0) / 4 / gen.temperature  # public s = 4, never the realised size
        np.testing.assert_allclose(scores.double().numpy(), expected, atol=2e-4)
        generated.append(token)


def test_kv_cache_matches_recomputing_everything(tiny):
    model, tok = tiny
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("hello there", "a", "call me later tonight")]
    contexts = LockstepContexts(model, prompts, pad_token_id=tok.pad_token_id)
    generated = []
    for _ in range(8):
        reference = recompute_last_logits(model, prompts, generated)
        torch.testing.assert_close(contexts.logits, reference, atol=1e-4, rtol=1e-4)
        assert torch.equal(contexts.logits.argmax(-1), reference.argmax(-1))
        token = int(reference[0].argmax())  # greedy
        generated.append(token)
        contexts.step(token)


# ------------------------------------------------------------------------------------ accounting


def test_charge_is_rho_of_r_max_whatever_was_used(tiny):
    ledger = rdp_ledger()
    gen = make_pp(tiny, ledger=ledger, max_private_tokens=6)
    out = gen.generate(seed=1, progress=False)
    rho = 6 * 0.5 * (2.0 / (4 * 2.0)) ** 2  # r·½(c/(sτ))², computed here by hand
    (charge,) = ledger.charges
    assert charge.stage == "private_prediction"
    assert isinstance(charge.event, dp_accounting.ZCDpEvent) and charge.event.rho == pytest.approx(rho)
    assert gen.rho() == pytest.approx(rho) and private_prediction_rho(
        max_private_tokens=6, clip=2.0, temperature=2.0, expected_batch_size=4
    ) == pytest.approx(rho)
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.ZCDpEvent(rho))
    assert ledger.epsilon_spent() == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert generation_info(out)["private_tokens_max_used"] <= 6
    # A second run is a second mechanism: charged again.
    gen.generate(seed=2, progress=False)
    assert len(ledger.charges) == 2


def test_sparse_vector_adds_its_term_and_stops_at_r_max(tiny):
    ledger = rdp_ledger(epsilon=20.0)
    gen = make_pp(tiny, ledger=ledger, svt=SparseVectorGate(threshold=0.0, noise=2.0), max_private_tokens=3, max_new_tokens=10)
    rho = 3 * (0.5 * (2.0 / 8.0) ** 2 + 2 / (4 * 2.0) ** 2)
    assert gen.rho() == pytest.approx(rho)
    out = gen.generate(seed=3, progress=False)
    assert generation_info(out)["private_tokens_max_used"] <= 3
    assert ledger.charges[0].event.rho == pytest.approx(rho)
    # A threshold above the statistic's range (L1 ≤ 2) with tiny noise: every token is public.
    public_only = make_pp(tiny, ledger=rdp_ledger(epsilon=200.0), svt=SparseVectorGate(threshold=50.0, noise=1.0),
                          max_private_tokens=3, max_new_tokens=10)
    assert generation_info(public_only.generate(seed=3, progress=False))["private_tokens_max_used"] == 0


def test_largest_affordable_r_max_matches_the_reference_value(tiny):
    # docs/ALGORITHMS.md §3: s = 255, τ = 2, c = 10, ε = 3, δ = 1e-5 allows about 1166 private tokens.
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-5, accountant="rdp")
    gen = make_pp(tiny, ledger=ledger, expected_batch_size=255, clip=10.0, temperature=2.0, max_private_tokens=None,
                  batches_per_label={"ham": 1, "spam": 0})
    assert 1160 <= gen.max_private_tokens <= 1172
    assert not ledger.would_exceed("private_prediction", dp_accounting.ZCDpEvent(gen.rho()))
    assert ledger.would_exceed("private_prediction", dp_accounting.ZCDpEvent(gen.rho(gen.max_private_tokens + 1)))


def test_adding_one_record_never_changes_the_outputs_count_or_other_batches(tiny):
    base = make_pp(tiny, data=private_data())
    more = make_pp(tiny, data=private_data(extra=[("spam", "WIN a brand new car now")]))
    assert base._batch_order() == more._batch_order()
    changed = [key for key in base._members if base._members[key] != more._members[key]]
    assert len(changed) == 1 and changed[0][0] == "spam"
    a = generation_info(base.generate(seed=0, progress=False))
    b = generation_info(more.generate(seed=0, progress=False))
    assert a["num_generated"] == b["num_generated"] == 5  # counted before codec validation


def test_batches_come_from_dp_counts_and_a_stable_hash(tiny):
    ledger = rdp_ledger(stages=("label_histogram", "private_prediction"))
    hist = dp_label_histogram(private_data(), label_column="label", labels=["ham", "spam"], ledger=ledger, noise_multiplier=2.0, seed=1)
    gen = make_pp(tiny, ledger=ledger, batches_per_label=None, label_counts=hist)
    assert gen._batches == {lab: int(count // 4) for lab, count in zip(hist.categories, hist.counts)}
    assert batch_of("some record", 7) == batch_of("some record", 7)  # no per-process salt
    assert len({batch_of(f"r{i}", 5) for i in range(100)}) == 5


def test_user_level_one_contribution_per_user(tiny):
    data = Dataset.from_dict(
        {"user": ["a"] * 10 + ["b", "c"], "label": ["ham"] * 12, "text": [f"msg {i}" for i in range(12)]}
    )
    ledger = PrivacyLedger(epsilon=8.0, delta=1e-5, accountant="rdp", privacy_unit="user")
    ledger.plan({"private_prediction": 1.0})
    gen = make_pp(tiny, data=data, ledger=ledger, user_id_column="user", batches_per_label={"ham": 1, "spam": 0})
    assert len(gen._members[("ham", 0)]) == 3


def test_prepared_dataset_is_accepted(tiny):
    prepared = prepare_dataset(private_data(extra=[("ham", "mail jo@example.com")]), CODEC)
    gen = make_pp(tiny, data=prepared)
    texts = [t for members in gen._members.values() for t in members]
    assert "label: ham\nmail <EMAIL>" in texts


# ------------------------------------------------------------------------------------ privacy unit, N, δ


def _ledger(unit="example", delta=1e-5, num_units=None):
    ledger = PrivacyLedger(epsilon=8.0, delta=delta, accountant="rdp", privacy_unit=unit, num_units=num_units)
    ledger.plan({"private_prediction": 1.0})
    return ledger


def _users_data():
    return Dataset.from_dict({
        "user": ["a", "a", "b", "c", "c", "d"], "label": ["ham", "ham", "spam", "ham", "spam", "ham"],
        "text": [f"msg {i}" for i in range(6)],
    })


def test_a_ledger_at_another_privacy_unit_is_refused_before_anything_is_charged(tiny):
    # A user-level ledger with data that has no user column would run at record level while the
    # card claims user level.
    ledger = _ledger("user")
    with pytest.raises(PrivacyUnitMismatchError, match=r"protects one 'user'.*one record.*user_id_column="):
        make_pp(tiny, ledger=ledger)
    user_prepared = prepare_dataset(_users_data(), CODEC)  # prepared at example level: no user column
    with pytest.raises(PrivacyUnitMismatchError, match="protects one 'user'"):
        make_pp(tiny, data=user_prepared, ledger=ledger, batches_per_label={"ham": 1, "spam": 1})
    assert ledger.charges == ()
    example_ledger = _ledger("example")
    with pytest.raises(PrivacyUnitMismatchError, match=r"protects one 'example'.*one user"):
        make_pp(tiny, data=_users_data(), ledger=example_ledger, user_id_column="user", batches_per_label={"ham": 1, "spam": 1})
    wrong_n = _ledger("example", num_units=33)
    with pytest.raises(PrivacyUnitMismatchError, match="N = 33 examples, but the private data has N = 32"):
        make_pp(tiny, ledger=wrong_n)
    assert example_ledger.charges == () and wrong_n.charges == ()


def test_a_delta_at_or_above_one_over_n_is_refused(tiny):
    for delta in (1 / 32, 0.2):  # 32 records: δ = 1/N exactly is refused too
        ledger = _ledger(delta=delta)
        with pytest.raises(InvalidPrivacyParameterError, match=r"not below 1/N = 0.0312 for the N = 32 examples"):
            make_pp(tiny, ledger=ledger)
        assert ledger.charges == () and ledger.num_units is None
    # At user level N counts users: 4 users, so δ = 0.3 is refused although 6 records would allow it.
    with pytest.raises(InvalidPrivacyParameterError, match="N = 4 users"):
        make_pp(tiny, data=_users_data(), ledger=_ledger("user", delta=0.3), user_id_column="user",
                batches_per_label={"ham": 1, "spam": 1})
    make_pp(tiny, ledger=_ledger(delta=0.99 / 32))  # just below 1/N passes


@pytest.mark.parametrize("unit", ["example", "user"])
def test_a_matching_ledger_is_charged_with_the_unit_and_n(tiny, unit):
    ledger = _ledger(unit)
    if unit == "user":
        prepared = prepare_dataset(_users_data(), CODEC, privacy_unit="user", user_id_column="user", max_examples_per_user=2)
        gen = make_pp(tiny, data=prepared, ledger=ledger, batches_per_label={"ham": 1, "spam": 1})
        expected_n = 4
    else:
        gen = make_pp(tiny, ledger=ledger)
        expected_n = 32
    assert (gen.privacy_unit, gen.num_units) == (unit, expected_n)
    gen.generate(1, seed=0, progress=False)
    (charge,) = ledger.charges
    assert (charge.metadata["privacy_unit"], charge.metadata["num_units"]) == (unit, expected_n)
    assert ledger.num_units == expected_n  # the ledger adopted N from the charge
    assert ledger.report().privacy_unit == unit


# ------------------------------------------------------------------------------------ prompt templates


def test_prepared_data_with_a_prompt_template_batches_by_the_source_labels(tiny):
    import dataclasses

    codec = TextCodec(conditions=LABELS, prompt_template="<|im_start|>user\nWrite a {label} SMS.<|im_end|>\n")
    source = private_data()
    label_of = dict(zip(source["text"][:], source["label"][:]))
    prepared = prepare_dataset(source, codec)
    gen = make_pp(tiny, data=prepared, codec=codec)
    seen = []
    for (label, _), members in gen._members.items():
        prefix = codec.prompt_for(label=label)
        for text in members:
            assert text.startswith(prefix)
            assert label_of[text[len(prefix):]] == label  # the source row's label, not a parse of the prompt
            seen.append(text[len(prefix):])
    assert sorted(seen) == sorted(source["text"][:])  # every record is in exactly one batch
    info = generation_info(gen.generate(seed=0, progress=False))
    assert info["num_generated"] == 5
    # Without the condition column (a hand-made PreparedDataset) the label is the declared value whose
    # prefix is exactly the prompt: the same batches.
    bare = dataclasses.replace(prepared, dataset=prepared.dataset.remove_columns("label"))
    assert make_pp(tiny, data=bare, codec=codec)._members == gen._members
    other = TextCodec(conditions=LABELS, prompt_template="Another {label} template\n")
    with pytest.raises(DatasetError, match="Row 0 of the prepared data has neither a 'label' column nor a prompt"):
        make_pp(tiny, data=bare, codec=other)


def test_raw_records_are_prepared_first_and_rows_that_do_not_fit_are_named_without_their_value(tiny):
    model, tok = tiny
    data = Dataset.from_dict({"label": ["ham", "topsecretlabel"], "text": ["a", "b"]})
    with pytest.raises(DPConfigError, match="must be a PreparedDataset.*prepare_dataset"):  # one way in
        PrivatePredictionSynthesizer(model, tok, data, codec=CODEC, ledger=rdp_ledger(), expected_batch_size=4,
                                     batches_per_label={"ham": 1, "spam": 1})
    with pytest.raises(DatasetError, match=r"Row 1 \(column 'label'\) does not fit the codec") as info:
        make_pp(tiny, data=data, batches_per_label={"ham": 1, "spam": 1})
    assert "topsecretlabel" not in str(info.value)


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_is_refused_before_anything_runs(tiny):
    model, tok = tiny
    ledger = rdp_ledger(epsilon=0.05)
    with pytest.raises(PrivacyBudgetExceededError, match="even one private token"):
        make_pp(tiny, ledger=ledger, clip=10.0)
    assert ledger.charges == ()
    with pytest.raises(DPConfigError, match="More batches than the DP label counts support"):
        make_pp(tiny, label_counts={"ham": 8, "spam": 3}, batches_per_label={"ham": 3, "spam": 0})
    with pytest.raises(DPConfigError, match="no label_histogram charge"):
        make_pp(tiny, batches_per_label=None, label_counts=DPHistogram("label", ("ham", "spam"), (9.0, 9.0), (9.0, 9.0), (0.5, 0.5)))
    with pytest.raises(DPConfigError, match="Never the real per-label counts"):
        make_pp(tiny, batches_per_label=None)
    with pytest.raises(DPConfigError, match="No batch"):
        make_pp(tiny, batches_per_label=None, label_counts={"ham": 3, "spam": 3})
    with pytest.raises(DPConfigError, match="public logits only"):
        make_pp(tiny, top_k=5)
    with pytest.raises(ValueError, match="num_records"):
        make_pp(tiny).generate(0)
    with pytest.raises(DPConfigError, match="exceeds the 5 batches"):
        make_pp(tiny).generate(6)
    big_tok_model, _ = tiny_causal_lm(vocab_size=300)
    with pytest.raises(DPConfigError, match="do not belong together"):
        AdapterSynthesizer(big_tok_model, tok, codec=CODEC, conditioning={"label": {"ham": 1, "spam": 1}})
    empty = DPHistogram("label", ("ham", "spam"), (-3.0, -1.0), (0.0, 0.0), (0.5, 0.5))
    with pytest.raises(DPConfigError, match="empty"):
        make_sampler(tiny, conditioning=empty)
    with pytest.raises(DPConfigError, match="same public list"):
        make_sampler(tiny, conditioning={"label": {"ham": 1.0}})
    with pytest.raises(ValueError, match="num_records"):
        make_sampler(tiny).generate(-1)


# ------------------------------------------------------------------------------------ modalities, real model


@pytest.mark.parametrize("modality", ["tabular", "image"])
def test_private_prediction_runs_for_each_modality(tiny, modality):
    if modality == "tabular":
        codec = TabularCodec(TabularSchema([IntegerColumn("age", 17, 90), CategoricalColumn("sex", ("F", "M"))]),
                             conditions={"label": ["ham", "spam"]})
        data = Dataset.from_dict({"label": ["ham", "spam"] * 6, "age": list(range(20, 32)), "sex": ["F", "M", "M"] * 4})
    else:
        codec = ImageCodec((2, 3), 4, conditions={"label": ["ham", "spam"]})
        data = Dataset.from_dict({"label": ["ham", "spam"] * 6, "image": [[[i % 4] * 3, [0, 1, 2]] for i in range(12)]})
    gen = make_pp(tiny, data=data, codec=codec, batches_per_label={"ham": 2, "spam": 1})
    info = generation_info(gen.generate(seed=0, progress=False))
    assert info["num_generated"] == 3
    assert info["num_valid"] + info["num_invalid"] == 3
    members = gen._members[("ham", 0)] + gen._members[("ham", 1)]
    assert all(codec.decode(m)["label"] == "ham" for m in members) and len(members) == 6


@pytest.mark.slow
def test_both_generators_on_the_default_model():
    from hf_dpsynth.models import load_model_and_tokenizer
    from hf_dpsynth.resources import load_sms_spam

    model, tok = load_model_and_tokenizer()
    data = load_sms_spam("train").select(range(16))
    ledger = rdp_ledger(epsilon=16.0)
    pp = PrivatePredictionSynthesizer(model, tok, prepare_dataset(data, CODEC), codec=CODEC, ledger=ledger,
                                      expected_batch_size=4,
                                      batches_per_label={"ham": 1, "spam": 1}, clip=1.0, max_private_tokens=8)
    info = generation_info(pp.generate(seed=0, progress=False))
    assert info["num_generated"] == 2 and info["private_tokens_max_used"] <= 8
    sampler = AdapterSynthesizer(model, tok, codec=CODEC, conditioning={"label": {"ham": 1.0, "spam": 1.0}},
                                 max_new_tokens=12, batch_size=4)
    out = sampler.generate(4, seed=0, progress=False)
    assert generation_info(out)["num_generated"] == 4 and len(out) >= 1


def test_top_k_mask_comes_from_the_public_prompt_only(tiny, monkeypatch):
    # docs/DP_CORRECTNESS.md row 19: with top_k = 1 the mask must keep exactly the public prompt's argmax,
    # recomputed here from the public prompt alone, whatever the private logits say.
    model, tok = tiny
    gen = make_pp(tiny, ledger=rdp_ledger(epsilon=50.0), public_prompt="Write one message.", top_k=1,
                  batches_per_label={"ham": 1, "spam": 0}, max_private_tokens=4)
    seen = _record_samples(monkeypatch)
    gen.generate(1, seed=0, progress=False)
    public_prompt = gen._prompt(gen.public_prompt, "label: ham\n")
    generated = []
    for _, mask, token in seen:
        public_logits = recompute_last_logits(model, [public_prompt], generated)[0, : len(tok)]
        assert int(mask.sum()) == 1 and bool(mask[int(public_logits.argmax())])
        assert token == int(public_logits.argmax())
        generated.append(token)
