"""Each safety gate refuses its bad case, and a legitimate DP output with common short texts passes."""

import json

import pytest

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.errors import PublishRefusedError
from hf_dpsynth.hub.gates import check_folder, check_release, find_verbatim
from hf_dpsynth.privacy import gaussian_event
from hf_dpsynth.resources import load_sms_spam

from _cards import card as _card

CARD = _card()

PRIVATE = load_sms_spam("train")["text"][:]


def _ledger(private=True):
    ledger = PrivacyLedger(epsilon=4.0 if private else float("inf"), delta=1e-6, accountant="rdp")
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=5.0 if private else 0.0))
    return ledger.report().to_dict()


def _common_short_messages():
    counts = {}
    for t in PRIVATE:
        counts[t] = counts.get(t, 0) + 1
    return sorted((t for t, n in counts.items() if n >= 3), key=len)


def test_a_dp_release_with_common_short_texts_passes():
    common = _common_short_messages()
    assert "Sorry, I'll call later" in common  # occurs many times in the real data
    synthetic = common[:20] + ["hey are u coming to the party tonight or not", "ok c u at 7 then x"]
    report = check_release(synthetic, ledger_report=_ledger(), card_text=CARD, private_texts=PRIVATE, canaries=["zorb quax frimp"])
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
        check_release(["x"], ledger_report=_ledger(private=False), card_text=CARD, private_texts=PRIVATE)
    allowed = check_release(["x"], ledger_report=_ledger(private=False), card_text=CARD, private_texts=PRIVATE,
                            allow_non_private=True)
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
        check_release([canary_body], ledger_report=_ledger(), card_text=CARD, private_texts=PRIVATE, canaries=[saved_canary])
    # A short synthetic text that happens to occur inside a canary is not a canary.
    assert check_release(["Reminder:"], ledger_report=_ledger(), card_text=CARD, private_texts=PRIVATE,
                         canaries=[saved_canary]).ok


@pytest.mark.parametrize(
    "name",
    ["checkpoint-10/adapter_model.safetensors", "optimizer.pt", "rng_state_0.pth", "training_args.bin",
     "dp_state.json", "canaries.json", "scheduler.pt"],
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
