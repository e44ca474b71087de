"""DP keywords in the sampler's prompts (docs/ALGORITHMS.md §8): each prompt carries keywords of its
own label's release only, the keyword bias raises their first tokens until used, and bad
combinations are refused. Post-processing: nothing here charges."""

import numpy as np
import pytest
import torch

from hf_dpsynth.data import TextCodec
from hf_dpsynth.data.keywords import DPKeywords
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.generation import AdapterSynthesizer, generation_info
from hf_dpsynth.generation.adapter_sampler.keyword_bias import KeywordBias, keyword_first_tokens
from hf_dpsynth.models import tiny_causal_lm

CODEC = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="Write a {label} text.{keywords}\n")
RELEASE = DPKeywords(
    stage="keywords", column="label",
    keywords={"spam": (("free", 50.0), ("prize", 30.0), ("call", 20.0)), "ham": (("home", 40.0), ("later", 40.0))},
    k=4, noise_multiplier=1.0, sensitivity=2.0, noise_std=2.0, threshold=8.0, vocabulary_size=100,
    vocabulary_source="test", privacy_unit="example", num_units=100,
)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_causal_lm(seed=3)
    model.eval()
    return model, tok


def test_bias_raises_unused_keywords_first_tokens_only(tiny):
    _, tok = tiny
    first = keyword_first_tokens(tok, "call")
    assert first and all(isinstance(t, int) for t in first)
    # Only tokens that carry the word: never a bare space or a single letter (they start every other word).
    pieces = {tok.decode([t]).strip() for t in first}
    assert pieces and all(len(p) >= 3 and "call".startswith(p.lower()) for p in pieces), pieces
    assert keyword_first_tokens(tok, "zzzz") == frozenset()
    bias = KeywordBias(tok, [["call"], []], prompt_length=2, bias=5.0)
    vocab = len(tok)
    ids = torch.tensor([[1, min(first), 3], [1, 2, 3]])  # a keyword token inside the prompt does not count as used
    raised = bias(ids[:, :2], torch.zeros(2, vocab))
    assert set(torch.nonzero(raised[0]).flatten().tolist()) == set(first)
    assert raised[1].abs().sum() == 0  # a row without keywords is untouched
    used = torch.cat([ids[:, :2], torch.tensor([[min(first)], [0]])], dim=1)
    assert bias(used, torch.zeros(2, vocab)).abs().sum() == 0  # used once: no more bias
    assert KeywordBias(tok, [["call"]], prompt_length=0, bias=0.0)(ids[:1], torch.zeros(1, vocab)).abs().sum() == 0


def test_prompts_carry_keywords_of_their_own_label(tiny):
    model, tok = tiny
    sampler = AdapterSynthesizer(model, tok, codec=CODEC, conditioning={"label": {"ham": 1.0, "spam": 1.0}},
                                 keywords=RELEASE, keywords_per_record=2, max_new_tokens=4, batch_size=4)
    seen = []
    original = sampler._generate_batch

    def record(prompts, pad, device, words):
        seen.extend(zip(prompts, words))
        return original(prompts, pad, device, words)

    sampler._generate_batch = record
    data = sampler.generate(8, seed=0, progress=False)
    assert len(seen) == 8
    for prompt, words in seen:
        label = "spam" if prompt.startswith("Write a spam") else "ham"
        allowed = {t for t, _ in RELEASE.keywords[label]}
        assert len(words) == 2 and set(words) <= allowed
        assert prompt == f"Write a {label} text. Use the words: {', '.join(words)}.\n"
    info = generation_info(data)
    assert info["decoding"]["keywords per prompt"] == 2 and "DP keywords" in info["privacy"]
    assert all(c in ("label=ham", "label=spam") for c in data["condition"])


def test_a_large_bias_puts_a_keyword_in_every_record(tiny):
    model, tok = tiny
    release = DPKeywords(**{**RELEASE.__dict__, "keywords": {"spam": (("call", 1.0),), "ham": (("call", 1.0),)}})
    sampler = AdapterSynthesizer(model, tok, codec=CODEC, conditioning={"label": {"ham": 1.0, "spam": 1.0}},
                                 keywords=release, keywords_per_record=1, keyword_bias=60.0, max_new_tokens=3,
                                 batch_size=6, deduplicate=False)
    first = keyword_first_tokens(tok, "call")
    outputs = []
    original = sampler._generate_batch
    sampler._generate_batch = lambda p, pad, d, w: outputs.extend(original(p, pad, d, w)) or outputs[-len(p):]
    sampler.generate(6, seed=1, progress=False)
    without = AdapterSynthesizer(model, tok, codec=CODEC, conditioning={"label": {"ham": 1.0, "spam": 1.0}},
                                 keywords=release, keywords_per_record=1, keyword_bias=0.0, max_new_tokens=3,
                                 batch_size=6, deduplicate=False)
    plain = without._generate_batch(["Write a ham text.\n"] * 6, tok.eos_token_id, torch.device("cpu"), [["call"]] * 6)
    with_kw = [set(tok(t, add_special_tokens=False)["input_ids"]) & first for t in outputs]
    assert all(with_kw), outputs
    assert sum(bool(set(tok(t, add_special_tokens=False)["input_ids"]) & first) for t in plain) < 6


def test_bad_keyword_settings_are_refused(tiny):
    model, tok = tiny
    weights = {"label": {"ham": 1.0, "spam": 1.0}}
    with pytest.raises(DPConfigError, match="no \\{keywords\\} field"):
        AdapterSynthesizer(model, tok, codec=TextCodec(conditions={"label": ["ham", "spam"]}), conditioning=weights,
                           keywords=RELEASE)
    other = DPKeywords(**{**RELEASE.__dict__, "column": "topic"})
    with pytest.raises(DPConfigError, match="not a condition"):
        AdapterSynthesizer(model, tok, codec=CODEC, conditioning=weights, keywords=other)
    unknown = DPKeywords(**{**RELEASE.__dict__, "keywords": {"eggs": (("free", 1.0),)}})
    with pytest.raises(DPConfigError, match="does not declare"):
        AdapterSynthesizer(model, tok, codec=CODEC, conditioning=weights, keywords=unknown)
    with pytest.raises(ValueError, match="keyword_bias"):
        AdapterSynthesizer(model, tok, codec=CODEC, conditioning=weights, keywords=RELEASE, keyword_bias=-1.0)
    with pytest.raises(ValueError, match="keyword_weighting"):
        AdapterSynthesizer(model, tok, codec=CODEC, conditioning=weights, keywords=RELEASE, keyword_weighting="idf")
    np.testing.assert_allclose(RELEASE.weights("ham", "count"), [40.0, 40.0])
