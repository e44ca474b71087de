"""Private prediction clipped against the public prompt (issue 14, item 5): the score vector is
``log p_pub + (1/s)·Σ clip(log p_i − log p_pub, ±c)``; one record still moves each coordinate by at
most c/s (spread 2c/s, reached), so ρ per token is unchanged; an empty batch samples the public
model; and the option needs a public prompt."""

import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.data import TextCodec, prepare_dataset
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.generation import PrivatePredictionSynthesizer
from hf_dpsynth.generation.private_prediction.mechanism import aggregate_logits
from hf_dpsynth.models import tiny_causal_lm

CODEC = TextCodec(conditions={"label": ["ham", "spam"]})


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(0, 6), vocab=st.integers(2, 12), s=st.integers(1, 8), clip=st.floats(0.1, 20.0), data=st.data())
def test_one_record_moves_the_public_referenced_aggregate_by_at_most_c_over_s(rows, vocab, s, clip, data):
    values = st.floats(-1e3, 1e3, allow_nan=False)
    draw = lambda n: torch.tensor(data.draw(st.lists(st.lists(values, min_size=vocab, max_size=vocab), min_size=n,  # noqa: E731
                                                     max_size=n)), dtype=torch.float64).reshape(n, vocab)
    logits, extra, public = draw(rows), draw(1), draw(1)[0]
    before = aggregate_logits(logits, clip=clip, expected_batch_size=s, public_logits=public).double()
    after = aggregate_logits(torch.cat([logits, extra]), clip=clip, expected_batch_size=s, public_logits=public).double()
    move = after - before
    tol = 1e-9 * max(1.0, clip)
    assert move.abs().max() <= clip / s + tol
    assert move.max() - move.min() <= 2 * clip / s + tol


def test_the_bound_is_reached_and_an_empty_batch_is_the_public_model():
    clip, s = 2.0, 4
    # The private context puts its mass where the public prompt puts none: the move is (c, −c, 0)/s.
    public = torch.tensor([-10.0, 10.0, 0.0])
    move = aggregate_logits(torch.tensor([[10.0, -10.0, 0.0]]), clip=clip, expected_batch_size=s, public_logits=public)
    reference = torch.log_softmax(public.double(), dim=-1)
    assert (move - reference).tolist() == pytest.approx([clip / s, -clip / s, 0.0], abs=1e-6)
    empty = aggregate_logits(torch.zeros((0, 3)), clip=clip, expected_batch_size=s, public_logits=public)
    assert empty.tolist() == pytest.approx(reference.tolist())
    agree = aggregate_logits(torch.tensor([[1.0, 3.0]] * 3) + 7.0, clip=clip, expected_batch_size=s,
                             public_logits=torch.tensor([1.0, 3.0]))
    assert agree.tolist() == pytest.approx(torch.log_softmax(torch.tensor([1.0, 3.0]).double(), dim=-1).tolist(), abs=1e-6)


def _pp(tiny, **options):
    model, tok = tiny
    data = prepare_dataset(Dataset.from_dict({"label": ["ham"] * 8 + ["spam"] * 8,
                                              "text": [f"message {i} ok" for i in range(16)]}), CODEC)
    ledger = PrivacyLedger(epsilon=8.0, delta=1e-5, accountant="rdp")
    ledger.plan({"private_prediction": 1.0})
    return PrivatePredictionSynthesizer(model, tok, data, codec=CODEC, ledger=ledger, expected_batch_size=4,
                                        batches_per_label={"ham": 2, "spam": 2}, clip=2.0, max_private_tokens=3,
                                        **options), ledger


def plain_ledger_event(pp):
    from hf_dpsynth.privacy.events import zcdp_event

    return zcdp_event(rho=pp.rho())


def test_the_charge_is_the_same_and_says_how_it_was_clipped():
    tiny = tiny_causal_lm(seed=3)
    with pytest.raises(DPConfigError, match="give public_prompt"):
        _pp(tiny, clip_against_public=True)
    plain, plain_ledger = _pp(tiny)
    against, ledger = _pp(tiny, clip_against_public=True, public_prompt="Write a text message.", top_k=20)
    assert against.rho() == plain.rho()
    data = against.generate(progress=False, seed=0)
    (charge,) = ledger.charges
    assert charge.metadata["clipped"] == "against the public prompt" and charge.metadata["top_k"] == 20
    assert charge.event == plain_ledger_event(plain)
    assert 1 <= len(data) + data.info.description.count("num_invalid") and len(data) <= 4
