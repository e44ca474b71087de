"""Each safety gate refuses its bad case, and a legitimate DP output with common short texts passes."""

import json

import pytest

from hf_dpsynth.errors import PublishRefusedError
from hf_dpsynth.hub.gates import (
    CANARY_OWNER_CHECK,
    VERBATIM_OWNER_CHECK,
    check_card,
    check_folder,
    check_release,
    find_verbatim,
)
from hf_dpsynth.resources import load_sms_spam

from _cards import card as _card
from _cards import report as _ledger  # the report of the ledger the cards are rendered from

CARD = _card()
NOT_PRIVATE_CARD = _card(private=False)
CANARY_CARD = _card(owner_checks=(VERBATIM_OWNER_CHECK, CANARY_OWNER_CHECK))  # for a push that checks canaries

PRIVATE = load_sms_spam("train")["text"][:]


def _common_short_messages():
    counts = {}
    for t in PRIVATE:
        counts[t] = counts.get(t, 0) + 1
    return sorted((t for t, n in counts.items() if n >= 3), key=len)


def test_a_dp_release_with_common_short_texts_passes():
    common = _common_short_messages()
    assert "Sorry, I'll call later" in common  # occurs many times in the real data
    synthetic = common[:20] + ["hey are u coming to the party tonight or not", "ok c u at 7 then x"]
    report = check_release(synthetic, ledger_report=_ledger(), card_text=CANARY_CARD, private_texts=PRIVATE,
                           canaries=["zorb quax frimp"])
    assert report.ok and not report.verbatim


def test_a_long_rare_copied_record_is_refused_and_reported_to_the_owner():
    rare_long = next(t for t in PRIVATE if len(t) > 120 and PRIVATE.count(t) == 1)
    with pytest.raises(PublishRefusedError, match="copy long, rare training text") as info:
        check_release(["fine new text", rare_long], ledger_report=_ledger(), card_text=CARD, private_texts=PRIVATE)
    (match,) = info.value.report.verbatim
    assert match.synthetic_index == 1 and match.kind == "record" and match.private_occurrences == 1


def test_a_long_run_of_copied_words_inside_a_record_is_refused():
    rare_long = next(t for t in PRIVATE if len(t.split()) > 20 and PRIVATE.count(t) == 1)
    words = rare_long.split()
    inside = "so anyway " + " ".join(words[2:16]) + " lol"
    matches = find_verbatim([inside], PRIVATE)
    assert len(matches) == 1 and matches[0].kind == "run"
    # fewer consecutive words than the threshold: not a copy
    assert find_verbatim(["so anyway " + " ".join(words[2:10])], PRIVATE) == []


def test_thresholds_are_explicit():
    private = ["a b c d e f g h i j k l m n"] * 3  # long but common: 3 > 2 occurrences
    assert find_verbatim(private[:1], private) == []
    assert len(find_verbatim(private[:1], private, max_private_occurrences=3)) == 1
    assert find_verbatim(["short one"], ["short one"]) == []  # below 40 characters


def test_canaries_no_ledger_no_card_and_dp_off_are_refused():
    canary = "Reminder: glarpo vintu snoobel quaxit"
    with pytest.raises(PublishRefusedError) as info:
        check_release(["x", canary], ledger_report=None, card_text="", private_texts=PRIVATE, canaries=[canary])
    message = str(info.value)
    for reason in ("audit canary", "no privacy ledger", "no card"):
        assert reason in message
    with pytest.raises(PublishRefusedError, match="DP was off"):
        check_release(["x"], ledger_report=_ledger(private=False), card_text=NOT_PRIVATE_CARD, private_texts=PRIVATE)
    allowed = check_release(["x"], ledger_report=_ledger(private=False), card_text=NOT_PRIVATE_CARD,
                            private_texts=PRIVATE, allow_non_private=True)
    assert "non-private release allowed explicitly (the card says so)" in allowed.passed
    with pytest.raises(PublishRefusedError, match="needs the private training texts"):
        check_release(["x"], ledger_report=_ledger(), card_text=CARD)


CHAT = "<|im_start|>user\nWrite one {label} SMS text message.<|im_end|>\n<|im_start|>assistant\n"


def test_gates_compare_record_bodies_not_the_public_prompt():
    # With a long prompt template, an encoded record is long and starts with the same words as every
    # other record of its label: the gates must read the bodies, or a common short message would
    # look like a long rare copy (and a saved canary, which carries the prompt, would be missed).
    from datasets import Dataset

    from hf_dpsynth.data import TextCodec
    from hf_dpsynth.hub.gates import record_texts

    codec = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template=CHAT)
    common = next(t for t in _common_short_messages() if len(t) < 20)
    assert len(codec.prompt_for(label="ham") + common) >= 40  # long once the prompt is counted
    bodies = record_texts(Dataset.from_dict({"label": ["ham"], "text": [common]}), codec)
    assert bodies == [common]
    assert check_release(bodies, ledger_report=_ledger(), card_text=CARD, private_texts=PRIVATE).ok
    canary_body = "Reminder: glarpo vintu snoobel quaxit plonk"
    saved_canary = codec.encode({"label": "ham", "text": canary_body})  # how Canaries.save writes it
    with pytest.raises(PublishRefusedError, match="audit canary"):
        check_release([canary_body], ledger_report=_ledger(), card_text=CANARY_CARD, private_texts=PRIVATE,
                      canaries=[saved_canary])
    # A short synthetic text that happens to occur inside a canary is not a canary.
    assert check_release(["Reminder:"], ledger_report=_ledger(), card_text=CANARY_CARD, private_texts=PRIVATE,
                         canaries=[saved_canary]).ok


@pytest.mark.parametrize(
    "name",
    ["checkpoint-10/adapter_model.safetensors", "optimizer.pt", "rng_state_0.pth", "training_args.bin",
     "dp_state.json", "canaries.json", "scheduler.pt", "activation-cache-k2f9/hidden.bin"],
)
def test_folders_with_checkpoints_or_secret_state_are_refused(tmp_path, name):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"{}")
    with pytest.raises(PublishRefusedError, match="never leave the machine"):
        check_folder(tmp_path)


def test_a_seed_inside_any_json_file_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    assert check_folder(tmp_path).ok
    (tmp_path / "notes.json").write_text(json.dumps({"dp_seed": 1234}))
    with pytest.raises(PublishRefusedError, match="seed or RNG state"):
        check_folder(tmp_path)


def test_a_card_without_a_valid_dp_block_is_refused():
    plain = "---\nlicense: other\ntags:\n- synthetic\n---\n# A card without the DP block\n"
    with pytest.raises(PublishRefusedError, match="the card does not validate"):
        check_release(["x"], ledger_report=_ledger(), card_text=plain, private_texts=PRIVATE)


# --------------------------------------------------------------------------------------------
# The card against the ledger, refuted audits, owner-only cards, owner checks (issue 12)
# --------------------------------------------------------------------------------------------

from _cards import ledger as _ledger_object  # noqa: E402


def _dp_release(card_text, ledger_report, **kwargs):
    return check_release(["ok see u soon"], ledger_report=ledger_report, card_text=card_text, private_texts=PRIVATE,
                         **kwargs)


@pytest.mark.parametrize("where", ["new_stage", "same_stage"])
def test_a_stale_card_is_refused_and_the_re_rendered_card_passes(where):
    from hf_dpsynth.privacy import gaussian_event

    ledger = _ledger_object()
    stale = _card(ledger_report=ledger)
    before = ledger.report().to_dict()
    assert _dp_release(stale, before).ok and check_card(stale, ledger_report=before).ok
    # A crash after a new charge, before the card was re-rendered: the card understates ε.
    ledger.charge("training" if where == "new_stage" else "label_histogram", gaussian_event(noise_multiplier=3.0),
                  metadata={"mechanism": "gaussian", "noise_multiplier": 3.0})
    after = ledger.report().to_dict()
    assert after["epsilon_spent"] > before["epsilon_spent"]  # the oracle: the ledger moved, the card did not
    for gate in (lambda: _dp_release(stale, after), lambda: check_card(stale, ledger_report=after)):  # dataset, adapter
        with pytest.raises(PublishRefusedError, match=r"re-render the card \(hf-dpsynth card RUN_DIR\)") as info:
            gate()
        (failure,) = [f for f in info.value.report.failures if "does not match the ledger" in f]
        assert f"epsilon (card {before['epsilon_spent']!r}, ledger {after['epsilon_spent']!r})" in failure
        if where == "new_stage":
            assert "stages (card ['label_histogram'], ledger ['label_histogram', 'training'])" in failure
        else:
            assert "stages[label_histogram].epsilon_spent" in failure
            assert "stages[label_histogram] number of charges (card 1, ledger 2)" in failure
    fresh = _card(ledger_report=ledger)
    assert _dp_release(fresh, after).ok and check_card(fresh, ledger_report=ledger).ok
    # Every ledger-derived field is compared: δ, N, the unit and a charge's parameters too.
    for key, value in (("delta", 2e-6), ("num_units", 4460), ("accountant", "pld"), ("epsilon_budget", 5.0)):
        with pytest.raises(PublishRefusedError, match=f"does not match the ledger.*{key} "):
            check_card(fresh, ledger_report={**after, key: value})
    changed = {**after, "stages": [dict(s) for s in after["stages"]]}
    changed["stages"][0]["charges"] = [{**changed["stages"][0]["charges"][0], "noise_multiplier": 4.0},
                                       *changed["stages"][0]["charges"][1:]]
    with pytest.raises(PublishRefusedError, match=r"stages\[label_histogram\]\.charges\[0\]\.parameters"):
        check_card(fresh, ledger_report=changed)


def _audit(claimed_epsilon, *, refuted):
    import hashlib

    import numpy as np

    from hf_dpsynth.audit.audit import AuditConfig, AuditReport, evaluate_guesses

    config = AuditConfig(delta=1e-6, num_canaries=200)
    included = np.arange(200) % 2 == 0
    scores = included * 10.0 if refuted else np.zeros(200)  # perfectly separated: ε̂ = the design's ceiling
    return AuditReport(claimed_epsilon=claimed_epsilon, delta=1e-6, config=config,
                       inclusion_hash=hashlib.sha256(np.packbits(included).tobytes()).hexdigest(),
                       main=evaluate_guesses(scores, included, config), ceiling=config.ceiling(), public_data=True)


def test_a_refuted_audit_stops_the_push_unless_overridden_and_stated_in_the_card():
    from hf_dpsynth.errors import CardError
    from hf_dpsynth.hub.card_reading import read_dp_block

    ledger = _ledger_object()
    report = ledger.report().to_dict()
    audit = _audit(ledger.epsilon_spent(), refuted=True)
    assert audit.main.epsilon_lower_bound > ledger.epsilon_spent()  # planted: ε̂ > claimed ε
    refuted = _card(ledger_report=ledger, audit=audit)
    assert read_dp_block(refuted)["audit"]["refuted"] is True
    with pytest.raises(PublishRefusedError, match="audit refuted the claimed guarantee"):
        _dp_release(refuted, report)
    with pytest.raises(PublishRefusedError, match="audit refuted the claimed guarantee"):
        check_card(refuted, ledger_report=report)  # the adapter push too
    # The override flag alone is not enough: the card must say so.
    with pytest.raises(PublishRefusedError, match="does not state that the refuted audit"):
        _dp_release(refuted, report, allow_refuted_audit=True)
    stated = _card(ledger_report=ledger, audit=audit, refuted_audit_override=True)
    with pytest.raises(PublishRefusedError, match="audit refuted"):
        _dp_release(stated, report)  # the statement alone is not enough either
    passed = _dp_release(stated, report, allow_refuted_audit=True)
    assert "refuted audit published by explicit override (the card says ε̂ > ε)" in passed.passed
    override = read_dp_block(stated)["audit"]["override"]
    assert "ε̂ > ε" in override and "published anyway" in override
    assert f"**Refuted audit, published anyway: ε̂ > ε.** {override}" in stated
    # An audit that did not refute the claim needs no flag and takes no override.
    fine = _audit(ledger.epsilon_spent(), refuted=False)
    assert _dp_release(_card(ledger_report=ledger, audit=fine), report).ok
    with pytest.raises(CardError, match="did not refute"):
        _card(ledger_report=ledger, audit=fine, refuted_audit_override=True)
    with pytest.raises(CardError, match="no audit"):
        _card(ledger_report=ledger, refuted_audit_override=True)


def test_an_owner_only_card_is_never_published():
    from hf_dpsynth.evaluation.metric import Metric

    ledger = _ledger_object()
    owner = Metric("TSTR on the private test split", 0.9, False, "downstream utility", "ε = 1")
    owner_card = _card(ledger_report=ledger, metrics=[owner], include_owner_only=True)
    assert "owner_only_included: true" in owner_card
    for gate in (lambda: _dp_release(owner_card, ledger.report().to_dict()),
                 lambda: check_card(owner_card, ledger_report=ledger.report().to_dict())):
        with pytest.raises(PublishRefusedError, match="owner-only values"):
            gate()
    assert _dp_release(_card(ledger_report=ledger, metrics=[owner]), ledger.report().to_dict()).ok


def test_the_card_must_state_every_owner_check_the_push_applies():
    assert "compared with the private training records" in VERBATIM_OWNER_CHECK
    assert "refused" in VERBATIM_OWNER_CHECK and "never filtered or re-generated" in VERBATIM_OWNER_CHECK
    assert "canaries" in CANARY_OWNER_CHECK and "never filtered or re-generated" in CANARY_OWNER_CHECK
    silent = _card(owner_checks=())
    with pytest.raises(PublishRefusedError, match=r"owner_checks does not state .*\(verbatim gate;") as info:
        _dp_release(silent, _ledger())
    assert "VERBATIM_OWNER_CHECK" in str(info.value)
    # With canaries the canary gate runs too and must be stated as well.
    with pytest.raises(PublishRefusedError, match=r"\(canary gate;"):
        _dp_release(CARD, _ledger(), canaries=["zorb quax frimp"])
    assert _dp_release(CANARY_CARD, _ledger(), canaries=["zorb quax frimp"]).ok
    assert _dp_release(CARD, _ledger()).ok
    assert VERBATIM_OWNER_CHECK in CARD  # the rendered card says it (row 29)


def test_a_short_canary_body_is_caught_by_its_body_and_ordinary_words_are_not():
    from hf_dpsynth.data import TextCodec

    ham = "Hi glarpo vintu snob"  # a 20-character canary body
    assert len(ham) == 20
    for codec in (TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template=CHAT),
                  TextCodec(conditions={"label": ["ham", "spam"]})):
        saved = [codec.encode({"label": "ham", "text": ham}),  # as Canaries.save writes them: with the prompt
                 codec.encode({"label": "spam", "text": "Hey there zorb quax frimp plonk"})]
        for record in (ham, "ok " + ham + " lol"):  # equal to, or containing, the canary body
            with pytest.raises(PublishRefusedError, match="contain an audit canary"):
                check_release(["fine", record], ledger_report=_ledger(), card_text=CANARY_CARD, private_texts=PRIVATE,
                              canaries=saved, codec=codec)
        # Short ordinary words that occur inside a canary (its in-distribution opening) are not a canary.
        for record in ("Hey there", "Hi", "hey there, coming tonight?"):
            assert check_release([record], ledger_report=_ledger(), card_text=CANARY_CARD, private_texts=PRIVATE,
                                 canaries=saved, codec=codec).ok
