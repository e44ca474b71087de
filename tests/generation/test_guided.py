"""Schema-guided decoding of tabular rows: the value scores are the model's own (checked against a plain
forward pass without the shared cache), values are drawn in proportion to them, wide integers stay in
bounds, and every row parses."""

import itertools

import numpy as np
import pytest
import torch

from hf_dpsynth.data import TabularCodec, TabularSchema, TextCodec
from hf_dpsynth.data.tabular import CategoricalColumn, FloatColumn, IntegerColumn
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.generation import AdapterSynthesizer, generation_info
from hf_dpsynth.generation.guided import SchemaGuidedDecoder, _feasible
from hf_dpsynth.models import tiny_causal_lm

SCHEMA = TabularSchema([
    CategoricalColumn("sex", ("Female", "Male")),
    CategoricalColumn("work", ("Private", "State-gov", "Never-worked"), nullable=True),
    IntegerColumn("age", 17, 90),
    IntegerColumn("gain", 95, 1203),  # wider than max_enumerated below: digit by digit
    FloatColumn("score", 0.0, 1.0, precision=1),
])


@pytest.fixture(scope="module")
def model_and_tok():
    return tiny_causal_lm(seed=0)


def _oracle(model, tok, context, text):
    """log p(text tokens | context) from one plain forward pass over the whole sequence."""
    suffix = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([list(context) + suffix])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(suffix))


def test_value_scores_are_the_models_log_probabilities(model_and_tok):
    model, tok = model_and_tok
    decoder = SchemaGuidedDecoder(model, tok, TabularCodec(SCHEMA), max_enumerated=100)
    context = tok("sex is Male, work is", add_special_tokens=False)["input_ids"]
    values = ["Private", "State-gov", "Never-worked", "missing"]
    scores = decoder.value_logprobs(context, values, last=False)
    expected = [_oracle(model, tok, context, " " + v + ",") for v in values]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    # After the last column the value must be followed by the end of sequence, not a comma.
    last = decoder.value_logprobs(context, values, last=True)
    eos = tok.eos_token_id
    for value, score in zip(values, last):
        suffix = tok(" " + value, add_special_tokens=False)["input_ids"] + [eos]
        ids = torch.tensor([context + suffix])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        assert score == pytest.approx(sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(suffix)), abs=1e-4)


def test_values_are_drawn_in_proportion_to_the_models_probabilities(model_and_tok):
    model, tok = model_and_tok
    schema = TabularSchema([CategoricalColumn("work", ("Private", "State-gov", "Never-worked"))])
    # A high temperature spreads the random tiny model's (nearly one-hot) preferences, so that drawing
    # the argmax, or uniformly, would both fail below; the temperature divides each value's log probability.
    decoder = SchemaGuidedDecoder(model, tok, TabularCodec(schema), temperature=8.0)
    context = tok("work is", add_special_tokens=False)["input_ids"]
    start = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    scores = decoder.value_logprobs(start + context, schema["work"].categories, last=True) / 8.0
    target = np.exp(scores - scores.max())
    target /= target.sum()
    assert target.max() < 0.8 and np.sort(target)[-2] > 0.15  # the check below can tell these apart
    rows = decoder.sample([""] * 600, np.random.default_rng(0))
    counts = np.array([sum(r == f"work is {c}" for r in rows) for c in schema["work"].categories])
    assert counts.sum() == 600
    # Binomial tolerance: 4 standard deviations per category.
    sd = np.sqrt(600 * target * (1 - target))
    assert np.all(np.abs(counts - 600 * target) <= 4 * sd + 1), (counts, 600 * target)


def test_feasible_prefixes_are_exactly_those_with_a_completion_in_bounds():
    for lower, upper in [(95, 1203), (0, 99999), (17, 90), (0, 0), (5, 5), (100, 100)]:
        width = len(str(upper))
        prefixes = {str(n)[:k] for n in range(lower, upper + 1) for k in range(1, len(str(n)) + 1)}
        for length in range(1, width + 1):
            for digits in itertools.product("0123456789", repeat=length):
                prefix = "".join(digits)
                assert _feasible(prefix, lower, upper) == (prefix in prefixes), (prefix, lower, upper)


def test_every_guided_row_parses_and_wide_integers_stay_in_bounds(model_and_tok):
    model, tok = model_and_tok
    codec = TabularCodec(SCHEMA)
    decoder = SchemaGuidedDecoder(model, tok, codec, max_enumerated=100)
    rows = decoder.sample([""] * 40, np.random.default_rng(1))
    parsed = codec.parse_many(rows)
    assert parsed.num_valid == 40, parsed.invalid[:3]
    gains = [r["gain"] for r in parsed.records]
    assert all(95 <= g <= 1203 for g in gains) and len(set(gains)) > 5


def test_the_sampler_guides_tabular_rows_by_default_and_says_so(model_and_tok):
    model, tok = model_and_tok
    sampler = AdapterSynthesizer(model, tok, codec=TabularCodec(SCHEMA), batch_size=8)
    data = sampler.generate(8, seed=0, progress=False)
    info = generation_info(data)
    assert info["num_valid"] + info["num_duplicates_dropped"] == 8 and info["num_invalid"] == 0
    assert info["decoding"]["guided"].startswith("schema")
    # The same seed gives the same rows (the seed is public).
    assert sampler.generate(8, seed=0, progress=False).to_list() == data.to_list()


def test_guided_decoding_where_it_cannot_apply(model_and_tok):
    model, tok = model_and_tok
    with pytest.raises(DPConfigError, match="TabularCodec"):
        AdapterSynthesizer(model, tok, codec=TextCodec(conditions={"label": ["ham", "spam"]}),
                           conditioning={"label": {"ham": 1, "spam": 1}}, guided=True)
    wide = TabularCodec(TabularSchema([FloatColumn("x", 0.0, 1000.0, precision=2)]))
    with pytest.raises(DPConfigError, match="cannot write column 'x'"):
        AdapterSynthesizer(model, tok, codec=wide, guided=True)
    sampler = AdapterSynthesizer(model, tok, codec=wide)  # the default falls back to free sampling, on the record
    assert sampler.guided is None and sampler.decoding["guided"].startswith("no: free sampling")
