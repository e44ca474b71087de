"""Private Evolution's synthesizer on the ledger: the stage charged once before the first histogram
(against dp-accounting's own composition), resumed without a redraw, a lost histogram charged again
(and refused once the share is spent), output counts from DP or public numbers only, and no private
text in any prompt. A real tiny model generates; a character-trigram embedding stands in for MiniLM
(any embedding function is the user's choice; the pipeline's real one is tested with the recipe)."""

from __future__ import annotations

import hashlib
import math

import dp_accounting
import numpy as np
import pytest

from hf_dpsynth.data import TextCodec, prepare_dataset
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.errors import CheckpointError, DatasetError, DPConfigError, PrivacyBudgetExceededError, PrivacyUnitMismatchError
from hf_dpsynth.generation import PrivateEvolutionSynthesizer, generation_info
from hf_dpsynth.generation.private_evolution import synthesizer as pe
from hf_dpsynth.generation.private_evolution.state import STATE_FILE
from hf_dpsynth.generation.private_evolution.variation import VariationPrompts, mask_words, select_and_allocate
from hf_dpsynth.models import tiny_causal_lm
from hf_dpsynth.privacy import PrivacyLedger

CODEC = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="Write a {label} text.\n")
SECRET = "qzv"  # in every private text, and in no public prompt


def embed(texts):
    """Hashed character trigrams, L2-normalised: a deterministic public function of each text alone."""
    out = np.zeros((len(texts), 32))
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, hashlib.sha256(padded[i:i + 3].encode()).digest()[0] % 32] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def private_data(n_ham=36, n_spam=12, users=False):
    from datasets import Dataset

    rows = [("ham", f"see you at home {SECRET} {i}") for i in range(n_ham)]
    rows += [("spam", f"win a free prize now {SECRET} {i}") for i in range(n_spam)]
    data = {"label": [r[0] for r in rows], "text": [r[1] for r in rows]}
    if users:
        data["user"] = [f"u{i % 10}" for i in range(len(rows))]
    return Dataset.from_dict(data)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_causal_lm(seed=3)
    model.eval()
    return model, tok


@pytest.fixture(scope="module")
def prepared():
    return prepare_dataset(private_data(), CODEC)


def ledger_for(prepared, share=1.0, epsilon=4.0):
    ledger = PrivacyLedger(epsilon=epsilon, delta=1e-4, num_units=prepared.num_units)
    ledger.plan({"private_evolution": share} if share == 1.0 else {"private_evolution": share, "other": 1.0 - share})
    return ledger


def synthesizer(tiny, prepared, ledger, **kw):
    model, tok = tiny
    options = dict(codec=CODEC, ledger=ledger, embed=embed, embedding_model="trigram-test", num_records=12,
                   num_rounds=3, population=8, max_new_tokens=2, batch_size=8)
    options.update(kw)
    return PrivateEvolutionSynthesizer(model, tok, prepared, **options)


class Spy:
    """Wraps the noise draw: records the ledger's charges at each draw, optionally fails once."""

    def __init__(self, monkeypatch, ledger, fail_on=None):
        self.ledger, self.calls, self.fail_on = ledger, [], fail_on
        real = pe.dp_vote_histogram

        def spy(histogram, sigma, **kw):
            self.calls.append((len(self.ledger.charges), np.asarray(histogram).copy()))
            if self.fail_on is not None and len(self.calls) == self.fail_on:
                raise KeyboardInterrupt("killed while drawing")
            return real(histogram, sigma, **kw)

        monkeypatch.setattr(pe, "dp_vote_histogram", spy)


def test_stage_charged_once_before_the_first_histogram(tiny, prepared, monkeypatch):
    ledger = ledger_for(prepared)
    spy = Spy(monkeypatch, ledger)
    synth = synthesizer(tiny, prepared, ledger)
    data = synth.generate(seed=1, progress=False)
    assert [n for n, _ in spy.calls] == [1, 1, 1]  # T draws, all after the one charge
    (charge,) = ledger.charges
    assert charge.stage == "private_evolution" and charge.metadata["num_rounds"] == 3
    # Oracle: dp-accounting composes T Gaussians of σ itself.
    sigma = synth.sigma
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.GaussianDpEvent(sigma), 3)
    assert ledger.epsilon_spent() == pytest.approx(pld.get_epsilon(1e-4), rel=1e-3)
    assert ledger.epsilon_spent() <= 4.0 + 1e-9 and ledger.epsilon_spent() > 3.5  # σ calibrated to the share
    info = generation_info(data)
    assert info["num_rounds"] == 3 and info["privacy"]["noise_multiplier"] == sigma
    assert info["embedding_model"] == "trigram-test" and info["population"] == {"ham": 8, "spam": 8}
    assert info["num_generated"] == 12 and 0 < len(data) <= 12
    assert synth.privacy_events() == [("private_evolution", dp_accounting.GaussianDpEvent(sigma / math.sqrt(3)))]


def test_votes_are_the_records_nearest_candidates(tiny, prepared, monkeypatch):
    """Round 1's votes against brute force: each record's candidate is a nearest one of its own label
    (distance recomputed directly), and the pre-noise histogram counts exactly those choices."""
    ledger = ledger_for(prepared)
    spy = Spy(monkeypatch, ledger)
    chosen = []
    real = pe.vote_histogram
    monkeypatch.setattr(pe, "vote_histogram", lambda nb, c, users=None: chosen.append(np.asarray(nb)) or real(nb, c, users))
    synth = synthesizer(tiny, prepared, ledger)
    synth.generate(seed=2, progress=False)
    population = synth._last_state.initial
    flat = [(lab, t) for lab in ("ham", "spam") for t in population[lab]]
    bodies = [synth._body(lab, t) for lab, t in flat]
    valid = [i for i, b in enumerate(bodies) if b is not None]
    cand = embed([bodies[i] for i in valid])
    for row, (text, label) in enumerate(zip(prepared.dataset["completion"], prepared.dataset["label"])):
        x = embed([text])[0]
        pool = [j for j, i in enumerate(valid) if flat[i][0] == label]
        distances = {j: float(np.sum((x - cand[j]) ** 2)) for j in pool}
        (pick,) = chosen[0][row]
        assert pick in distances and distances[pick] <= min(distances.values()) + 1e-9
    np.testing.assert_allclose(spy.calls[0][1], np.bincount(chosen[0].ravel(), minlength=len(valid)), atol=1e-12)


def test_resume_never_redraws_a_saved_histogram(tiny, prepared, monkeypatch, tmp_path):
    ledger = ledger_for(prepared)
    spy = Spy(monkeypatch, ledger)
    synth = synthesizer(tiny, prepared, ledger, state_dir=tmp_path)
    calls = {"n": 0}
    real = synth.sampler.complete

    def crash_in_round_two(prompts, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # initial population, round 1's variations, then round 2's
            raise KeyboardInterrupt("killed")
        return real(prompts, **kw)

    monkeypatch.setattr(synth.sampler, "complete", crash_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(seed=3, progress=False)
    assert len(spy.calls) == 2 and len(ledger.charges) == 1
    saved = (tmp_path / STATE_FILE).read_text()
    again = synthesizer(tiny, prepared, ledger, state_dir=tmp_path)
    data = again.generate(seed=3, progress=False)
    assert len(spy.calls) == 3  # only round 3 was drawn on resume
    assert len(ledger.charges) == 1  # no second charge
    assert again._last_state.rounds[1].histogram == __import__("json").loads(saved)["rounds"][1]["histogram"]
    assert len(data) > 0
    # Other settings on the same folder are refused, naming what differs.
    with pytest.raises(CheckpointError, match="k"):
        synthesizer(tiny, prepared, ledger, state_dir=tmp_path, k=2).generate(seed=3, progress=False)
    # The state was paid for by this ledger: another one is refused (its outputs would go unpaid).
    other = ledger_for(prepared)
    with pytest.raises(CheckpointError, match="another ledger"):
        synthesizer(tiny, prepared, other, state_dir=tmp_path).generate(seed=3, progress=False)
    assert other.charges == ()


def test_lost_histogram_is_charged_again_and_refused_once_the_share_is_spent(tiny, prepared, monkeypatch, tmp_path):
    ledger = ledger_for(prepared)
    spy = Spy(monkeypatch, ledger, fail_on=2)  # killed while drawing round 2
    synth = synthesizer(tiny, prepared, ledger, state_dir=tmp_path, noise_multiplier=8.0)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(seed=4, progress=False)
    assert len(ledger.charges) == 1
    spy.fail_on = None
    synthesizer(tiny, prepared, ledger, state_dir=tmp_path, noise_multiplier=8.0).generate(seed=4, progress=False)
    redraws = [c for c in ledger.charges if c.metadata.get("redraw_round") == 2]
    assert len(redraws) == 1 and len(ledger.charges) == 2
    assert [n for n, _ in spy.calls] == [1, 1, 2, 2]  # the redraw came after its own charge
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.GaussianDpEvent(8.0), 4)  # T + 1 Gaussians in all
    assert ledger.epsilon_spent() == pytest.approx(pld.get_epsilon(1e-4), rel=1e-3)

    # With σ calibrated to the whole share, a redraw does not fit: refused, nothing drawn.
    tight = ledger_for(prepared)
    spy2 = Spy(monkeypatch, tight, fail_on=1)
    folder = tmp_path / "tight"
    with pytest.raises(KeyboardInterrupt):
        synthesizer(tiny, prepared, tight, state_dir=folder).generate(seed=4, progress=False)
    spy2.fail_on = None
    with pytest.raises(PrivacyBudgetExceededError):
        synthesizer(tiny, prepared, tight, state_dir=folder).generate(seed=4, progress=False)
    assert len(spy2.calls) == 1 and len(tight.charges) == 1


def test_output_counts_come_from_public_or_dp_numbers_never_the_real_ones(tiny, prepared):
    ledger = ledger_for(prepared)
    synth = synthesizer(tiny, prepared, ledger, label_counts={"ham": 1.0, "spam": 3.0}, num_records=20)
    assert synth.outputs == {"ham": 5, "spam": 15}  # the data is 3:1 the other way
    assert synthesizer(tiny, prepared, ledger, num_records=20).outputs == {"ham": 10, "spam": 10}
    hist = DPHistogram("label", ("ham", "spam"), (30.0, 30.0), (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(DPConfigError, match="no label_histogram charge"):
        synthesizer(tiny, prepared, ledger, label_counts=hist)
    # The default population rule reads only σ and the DP counts (or N / labels).
    default = synthesizer(tiny, prepared, ledger, population=None, num_records=400)
    expected = int(max(pe.MIN_POPULATION, min(200, prepared.num_units / 2 / (pe.VOTES_PER_SIGMA * default.sigma))))
    assert default.population == {"ham": expected, "spam": expected}


def test_no_private_text_reaches_a_prompt(tiny, prepared, monkeypatch):
    ledger = ledger_for(prepared)
    synth = synthesizer(tiny, prepared, ledger)
    prompts = []
    real = synth.sampler.complete

    def watch(batch, **kw):
        prompts.extend(batch)
        return real(batch, **kw)

    monkeypatch.setattr(synth.sampler, "complete", watch)
    synth.generate(seed=5, progress=False)
    assert len(prompts) >= 16 + 2 * 4 + 2 * 2
    assert not any(SECRET in p for p in prompts)
    assert not any(text in p for p in prompts for text in prepared.dataset["completion"])


def test_user_level_votes_are_averaged_per_user(tiny, monkeypatch):
    prepared = prepare_dataset(private_data(users=True), CODEC, privacy_unit="user", user_id_column="user",
                               max_examples_per_user=5)
    with pytest.raises(PrivacyUnitMismatchError, match="user"):
        synthesizer(tiny, prepared, ledger_for(prepared))
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-3, privacy_unit="user", num_units=prepared.num_units)
    ledger.plan({"private_evolution": 1.0})
    seen = []
    real = pe.vote_histogram
    monkeypatch.setattr(pe, "vote_histogram", lambda nb, c, users=None: seen.append(users) or real(nb, c, users))
    synthesizer(tiny, prepared, ledger).generate(seed=6, progress=False)
    assert seen and all(users is not None and len(set(users)) == prepared.num_units for users in seen)
    assert ledger.charges[0].metadata and ledger.privacy_unit == "user"


def test_refusals_before_anything_is_charged(tiny, prepared):
    ledger = ledger_for(prepared)
    with pytest.raises(DPConfigError, match="ledger"):
        synthesizer(tiny, prepared, None)  # σ calibrated needs a ledger
    with pytest.raises(DPConfigError, match="non-private"):
        synthesizer(tiny, prepared, ledger, noise_multiplier=0)  # σ = 0 never charged to a ledger
    with pytest.raises(PrivacyBudgetExceededError):
        synthesizer(tiny, prepared, ledger, noise_multiplier=0.2)
    with pytest.raises(DPConfigError, match="at least"):
        synthesizer(tiny, prepared, ledger, population=1)
    with pytest.raises(DPConfigError, match="PreparedDataset"):
        synthesizer(tiny, private_data(), ledger)
    bad = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="Write a {label} text.\n", max_chars=1)
    synth = synthesizer(tiny, prepare_dataset(private_data(), CODEC), ledger, codec=bad)
    with pytest.raises(DatasetError, match="nothing was charged"):
        synth.generate(seed=0, progress=False)
    assert ledger.charges == ()


def test_non_private_reference_charges_nothing(tiny, prepared):
    synth = synthesizer(tiny, prepared, None, noise_multiplier=0)
    data = synth.generate(seed=7, progress=False)
    assert synth.privacy_events() == []
    assert "non-private" in generation_info(data)["privacy"]


def test_selection_keeps_the_best_and_shares_by_votes():
    kept, shares = select_and_allocate([5.0, -1.0, 9.0, 3.0, 7.0], [True, True, False, True, True], keep=2, size=6,
                                       threshold=1.0)
    assert kept == [4, 0]  # 9.0 is invalid: never kept
    assert shares == [2, 2]  # 6 and 4 above the threshold: 4 slots split 2.4 / 1.6 → 2 / 2
    kept, shares = select_and_allocate([0.1, 0.2], [True, True], keep=2, size=5, threshold=1.0)
    assert kept == [1, 0] and sorted(shares) == [1, 2]  # no vote clears it: equal shares (remainder to the better)
    assert select_and_allocate([1.0], [False], keep=1, size=2) == ([], [])
    rng = np.random.default_rng(0)
    masked = mask_words("one two three four five six seven eight nine ten", 0.3, rng)
    assert masked.split().count("_") == 3 and len(masked.split()) == 10
    with pytest.raises(DPConfigError):
        VariationPrompts(paraphrase=None, fill_in=None)
    with pytest.raises(DPConfigError, match="candidate"):
        VariationPrompts(paraphrase="no field")
