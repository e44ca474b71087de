"""DP dataset and adapter cards: rendered from real ledgers, checked against the ledger itself, the
schema, golden files (model_cards/examples), and every way an input or a card can be wrong.

Regenerate the golden files with ``HF_DPSYNTH_UPDATE_GOLDEN=1 python -m pytest tests/hub/test_hub_cards.py``;
the comparison ignores version strings and float digits beyond the sixth significant one.
"""

import ast
import dataclasses
import hashlib
import math
import os
import random
import re
import uuid
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.audit.audit import AuditConfig, AuditReport, evaluate_guesses
from hf_dpsynth.data.prepare import PreparationReport
from hf_dpsynth.errors import CardError
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth._markdown import format_value
from hf_dpsynth.hub import card_block, card_inputs, card_reading, cards
from hf_dpsynth.hub.card_block import DP_BLOCK_KEY, dp_block, dp_block_schema
from hf_dpsynth.hub.card_reading import read_dp_block, validate_card
from hf_dpsynth.hub.card_text import NOT_PRIVATE_TITLE
from hf_dpsynth.hub.cards import render_adapter_card, render_dataset_card
from hf_dpsynth.hub.gates import VERBATIM_OWNER_CHECK
from hf_dpsynth.models import DEFAULT_MODEL_ID, DEFAULT_MODEL_NAME
from hf_dpsynth.privacy.disclosure import OWNER_ONLY_HEADING
from hf_dpsynth.privacy import dpsgd_event, event_to_dict, gaussian_event, zcdp_event

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "model_cards" / "examples"
N_USERS = 1000
CAP = 8
SECRET = re.compile("seed", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Releases built with the real ledger, charged as the package's mechanisms charge it
# --------------------------------------------------------------------------------------------


def _histogram_metadata(noise_multiplier, *, unit="user"):
    # as hf_dpsynth.data.statistics charges a label histogram
    return {
        "mechanism": "gaussian_histogram", "columns": ["label"], "num_bins": [2],
        "noise_multiplier": noise_multiplier, "l2_sensitivity": math.sqrt(2) if unit == "user" else 1.0,
        "contribution": "once_per_bin" if unit == "user" else "records",
        "max_examples_per_user": CAP if unit == "user" else None,
    }


def _training_metadata(noise_multiplier, q, steps, batch):
    # as DPSynthTrainer._charge_metadata: run_id is bookkeeping and must not reach a card
    return {
        "mechanism": "DP-SGD (Poisson-subsampled Gaussian)", "noise_multiplier": noise_multiplier,
        "sampling_probability": q, "num_steps": steps, "per_example_max_grad_norm": 1.0,
        "logical_batch_size": batch, "run_id": uuid.uuid4().hex,
    }


TRAINING = {"noise_multiplier": 1.8, "sampling_probability": 0.064, "num_steps": 200}


@pytest.fixture(scope="module")
def user_ledger():
    """User-level: label histogram, DP-SGD training, and an audit run charged to the audit stage (PLD)."""
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-6, privacy_unit="user", num_units=N_USERS)
    ledger.plan({"label_histogram": 0.05, "training": 0.75, "audit": 0.2})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0), privacy_unit="user",
                  num_units=N_USERS, metadata=_histogram_metadata(20.0))
    ledger.charge("training", dpsgd_event(**TRAINING), privacy_unit="user", num_units=N_USERS,
                  metadata=_training_metadata(1.8, 0.064, 200, 64))
    ledger.charge("audit", dpsgd_event(noise_multiplier=3.0, sampling_probability=0.064, num_steps=50),
                  privacy_unit="user", num_units=N_USERS, metadata=_training_metadata(3.0, 0.064, 50, 64))
    return ledger


@pytest.fixture(scope="module")
def prediction_ledger():
    """Example-level: label histogram and private prediction (zCDP): the RDP accountant."""
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-5, num_units=5000)
    ledger.plan({"label_histogram": 0.1, "private_prediction": 0.9})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=15.0), metadata=_histogram_metadata(15.0, unit="example"))
    s, c, tau, r_max = 255, 10.0, 2.0, 32
    ledger.charge("private_prediction", zcdp_event(rho=r_max * 0.5 * (c / (s * tau)) ** 2), metadata={
        "mechanism": "private_prediction", "expected_batch_size": s, "clip": c, "temperature": tau,
        "max_private_tokens": r_max, "svt": None, "num_batches": 19,
    })
    return ledger


@pytest.fixture(scope="module")
def non_private_ledger():
    ledger = PrivacyLedger(epsilon=math.inf, delta=1e-6, num_units=500)
    ledger.charge("training", dpsgd_event(noise_multiplier=0.0, sampling_probability=0.1, num_steps=30),
                  num_units=500, metadata=_training_metadata(0.0, 0.1, 30, 50))
    return ledger


@pytest.fixture(scope="module")
def charged_audit(user_ledger):
    config = AuditConfig(delta=1e-6, num_canaries=200)
    # Fixed scores from the standard library's documented-stable random(), so the golden files do not
    # drift with numpy: inclusion bits, then a weak signal (0.3) under standard normal noise (Box-Muller).
    draw = random.Random(0).random
    included = np.array([draw() < 0.5 for _ in range(200)])
    noise = [math.sqrt(-2 * math.log(1 - draw())) * math.cos(2 * math.pi * draw()) for _ in range(200)]
    scores = included * 0.3 + np.array(noise)
    inclusion_hash = hashlib.sha256(np.packbits(included).tobytes() + b"200").hexdigest()
    return AuditReport(
        claimed_epsilon=user_ledger.epsilon_spent("training"), delta=1e-6, config=config,
        inclusion_hash=inclusion_hash, main=evaluate_guesses(scores, included, config, label="DP run"),
        ceiling=config.ceiling(), charged=True,
    )


@pytest.fixture(scope="module")
def uncharged_audit(charged_audit):
    return dataclasses.replace(charged_audit, charged=False)


def _preparation(unit="user"):
    user = unit == "user"
    return PreparationReport(
        privacy_unit=unit, num_units=N_USERS if user else 5000, num_users=N_USERS if user else None,
        max_examples_per_user=CAP if user else None, codec={"modality": "text"}, rounding=None,
        pii_scrubbing={"enabled": True, "types": ["EMAIL", "PHONE", "URL"], "note": "defence in depth only"},
        num_records_read=9731, num_records_kept=6021, duplicates_removed=412, capped_removed=3298,
        rows_clipped_to_bounds=0, pii_replacements={"EMAIL": 17, "PHONE": 203}, records_with_pii=198,
    )


CODEC = {"modality": "text", "conditions": {"label": ["ham", "spam"]}, "text_field": "text", "max_chars": 400}
GENERATION = {
    "generator": "adapter_sampler", "num_generated": 5200, "num_valid": 5000, "num_invalid": 150,
    "invalid_kinds": {"unknown_category": 150}, "num_duplicates_dropped": 50, "codec": CODEC,
    "privacy": "post-processing of DP outputs (the adapter and the conditioning histograms); no budget spent",
    "decoding": {"temperature": 1.0, "top_p": 0.95}, "seed": 12345,  # as AdapterSynthesizer records it
}
SHARED_METRICS = [
    Metric("TSTR accuracy (TF-IDF + logistic regression)", 0.91234, True, "downstream utility", "ε = 3"),
    Metric("distinct-2", 0.6, True, "text fidelity", "ε = 3"),
    Metric("invalid rate", 150 / 5200, True, "validity", "ε = 3"),
]
OWNER_METRICS = [
    Metric("TSTR accuracy on the private test split", 0.95, False, "downstream utility", "ε = ∞ (non-private)",
           note="private held-out split"),
]
OWNER_CHECKS = [VERBATIM_OWNER_CHECK]
OUTPUTS = {"label_histogram": ["label_histogram.json"], "training": ["adapter"], "audit": ["audit.json"]}


def _training_report(ledger, **changes):
    # the keys of TrainingPrivacyReport.to_dict() (checked against trainer.py below)
    report = {
        "epsilon": ledger.epsilon_spent("training"), "epsilon_total": ledger.epsilon_spent(),
        "epsilon_budget": ledger.epsilon, "delta": ledger.delta, **TRAINING, "steps_taken": 200,
        "num_units": ledger.num_units, "logical_batch_size": 64, "per_example_max_grad_norm": 1.0,
        "accountant": ledger.accountant, "privacy_unit": ledger.privacy_unit, "adjacency": "add_or_remove_one",
        "private": ledger.private, "reproducibility_seed_set": False,
        "notes": ("Logged training losses ... are not covered by the guarantee.",),
    }
    report.update(changes)
    return report


@pytest.fixture(scope="module")
def dataset_card(user_ledger, charged_audit):
    return render_dataset_card(
        ledger_report=user_ledger, num_records=5000, codec_info=CODEC, generator_info=GENERATION,
        metrics=SHARED_METRICS + OWNER_METRICS, audit=charged_audit, pretty_name="SMS spam (synthetic, DP)",
        language="en", preparation=_preparation(), owner_checks=OWNER_CHECKS,
        training_report=_training_report(user_ledger), outputs=OUTPUTS,
    )


@pytest.fixture(scope="module")
def adapter_card(user_ledger, charged_audit):
    return render_adapter_card(
        ledger_report=user_ledger, training_report=_training_report(user_ledger),
        metrics=SHARED_METRICS + OWNER_METRICS, audit=charged_audit, language="en",
        repo_id="my-org/sms-spam-dp-lora", preparation=_preparation(), outputs=OUTPUTS,
    )


@pytest.fixture(scope="module")
def owner_only_card(prediction_ledger, uncharged_audit):
    generation = {
        "generator": "private_prediction", "num_generated": 19, "num_valid": 18, "num_invalid": 1,
        "invalid_kinds": {"missing_label": 1}, "num_duplicates_dropped": 0,
        "privacy": {"stage": "private_prediction", "expected_batch_size": 255, "clip": 10.0, "temperature": 2.0,
                    "max_private_tokens": 32, "sparse_vector": None},
        "batches_per_label": {"ham": 16, "spam": 3}, "max_new_tokens": 48,
    }
    return render_dataset_card(
        ledger_report=prediction_ledger.report().to_dict(), num_records=18, codec_info=CODEC,
        generator_info=generation, metrics=SHARED_METRICS + OWNER_METRICS, audit=uncharged_audit,
        pretty_name="SMS spam via private prediction", preparation=_preparation("example"),
        include_owner_only=True, notes=["A demonstration release: 18 records only."],
        outputs={"label_histogram": ["label_histogram.json"], "private_prediction": ["synthetic"]},
    )


@pytest.fixture(scope="module")
def non_private_card(non_private_ledger):
    return render_adapter_card(
        ledger_report=non_private_ledger, base_model="HuggingFaceTB/SmolLM2-360M-Instruct",
        metrics=SHARED_METRICS,
    )


# --------------------------------------------------------------------------------------------
# Golden files
# --------------------------------------------------------------------------------------------


def _normalised(text):
    """The card with what legitimately changes between machines and releases masked out."""
    text = text.replace("\r\n", "\n")
    text = re.sub(r"(?m)^(\s+(?:hf_dpsynth|dp-accounting|python)): .*$", r"\1: <version>", text)
    text = re.sub(r"`(hf_dpsynth|dp-accounting|Python) [^`]+`", r"`\1 <version>`", text)
    return re.sub(r"\d+\.\d{7,}(?:e[-+]?\d+)?", lambda m: f"{float(m.group()):.6g}", text)


@pytest.mark.parametrize(
    ("fixture", "name"),
    [("dataset_card", "dataset_card.md"), ("adapter_card", "adapter_card.md"),
     ("owner_only_card", "dataset_card_private_prediction_owner_only.md"),
     ("non_private_card", "adapter_card_not_private.md")],
)
def test_rendered_cards_match_the_golden_examples(fixture, name, request):
    text = str(request.getfixturevalue(fixture))
    path = EXAMPLES / name
    if os.environ.get("HF_DPSYNTH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run the tests once with HF_DPSYNTH_UPDATE_GOLDEN=1"
    assert _normalised(path.read_text(encoding="utf-8")) == _normalised(text)
    validate_card(path.read_text(encoding="utf-8"))  # the committed example is itself a valid card


def test_normalisation_masks_versions_and_float_noise_only():
    a = "    python: 3.11.7\n`Python 3.11.7` ε 2.891790684636174 σ = 1.5"
    b = "    python: 3.12.1\n`Python 3.12.1` ε 2.891790684636179 σ = 1.5"
    assert _normalised(a) == _normalised(b)
    assert _normalised(a) != _normalised(a.replace("2.891790684636174", "2.8918")), "a real change must show"
    assert _normalised(a) != _normalised(a.replace("σ = 1.5", "σ = 1.6"))


def test_the_two_schema_copies_are_identical_and_a_valid_schema():
    packaged = (REPO / "hf_dpsynth" / "hub" / "templates" / "dp_block.schema.json").read_bytes()
    assert (REPO / "model_cards" / "dp_block.schema.json").read_bytes() == packaged
    jsonschema.Draft202012Validator.check_schema(dp_block_schema())


# --------------------------------------------------------------------------------------------
# Content: the block is the ledger's, the card says what it must
# --------------------------------------------------------------------------------------------


def test_the_block_restates_the_ledger_exactly(user_ledger, charged_audit):
    block = dp_block(user_ledger, audit=charged_audit)
    jsonschema.validate(block, dp_block_schema())  # the schema itself, not only our wrapper
    assert block["epsilon"] == user_ledger.epsilon_spent() and block["epsilon_budget"] == 4.0
    assert block["delta"] == 1e-6 and block["private"] is True and block["accountant"] == "pld"
    assert (block["privacy_unit"], block["adjacency"]) == ("user", "add_or_remove_one")
    assert block["num_units"] == block["num_users"] == N_USERS and block["max_examples_per_user"] == CAP
    assert block["randomness"] == "os_entropy"
    by_name = {s["name"]: s for s in block["stages"]}
    assert list(by_name) == ["label_histogram", "training", "audit"]
    charges = {c.stage: c for c in user_ledger.charges}
    for name, stage in by_name.items():
        assert stage["epsilon_spent"] == user_ledger.epsilon_spent(name)
        assert stage["share"] == user_ledger.stage_plan[name].share
        (charge,) = stage["charges"]
        assert charge["event"] == event_to_dict(charges[name].event)
        expected = {k: v for k, v in charges[name].metadata.items() if k != "run_id"}
        assert charge["parameters"] == expected
    assert by_name["training"]["sampling"] == "poisson" and by_name["label_histogram"]["sampling"] == "none"
    assert block["audit"]["basis"] == "charged"
    assert block["audit"]["epsilon_lower_bound"] == charged_audit.main.epsilon_lower_bound
    texts = " ".join(block["not_covered"])
    for words in ("Training losses", "tuning", "base model"):
        assert words in texts
    assert "k·ε" not in texts  # the group caveat is for example-level releases


def test_an_example_level_card_says_a_person_with_several_records_is_protected_as_a_group(prediction_ledger):
    assert any("k·ε" in item for item in dp_block(prediction_ledger)["not_covered"])


def test_the_report_dict_gives_the_same_block_without_events(user_ledger):
    from_ledger = dp_block(user_ledger)
    from_report = dp_block(user_ledger.report().to_dict())
    for stage in from_ledger["stages"]:
        for charge in stage["charges"]:
            del charge["event"]
    assert from_report == from_ledger


def test_round_trip_of_the_block_through_the_card_and_huggingface_hub(dataset_card, adapter_card, user_ledger,
                                                                      charged_audit, tmp_path):
    expected = dp_block(user_ledger, audit=charged_audit, max_examples_per_user=CAP, owner_checks=OWNER_CHECKS,
                        outputs=OUTPUTS)
    assert read_dp_block(str(dataset_card)) == expected
    dataset_card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert read_dp_block(loaded) == expected and loaded.data[DP_BLOCK_KEY] == expected
    adapter_expected = dp_block(user_ledger, audit=charged_audit, max_examples_per_user=CAP, outputs=OUTPUTS)
    assert read_dp_block(ModelCard(str(adapter_card))) == adapter_expected


def test_dataset_card_metadata(dataset_card):
    assert isinstance(dataset_card, DatasetCard)
    data = dataset_card.data.to_dict()
    assert data["license"] == "other" and data["language"] == ["en"]
    assert {"synthetic", "differential-privacy"} <= set(data["tags"])
    assert data["size_categories"] == ["1K<n<10K"]
    assert data["task_categories"] == ["text-generation", "text-classification"]
    assert data["pretty_name"] == "SMS spam (synthetic, DP)"
    text = dataset_card.text
    title = next(line for line in text.splitlines() if line.startswith("# "))
    eps = card_block.epsilon_text(dataset_card.data[DP_BLOCK_KEY]["epsilon"])
    assert f"ε = {eps}" in title and "user-level" in title and NOT_PRIVATE_TITLE not in title
    assert "1,000 users" in text  # N is disclosed (docs/DP_CORRECTNESS.md 21b)
    for heading in ("## Privacy", "### Stages of the privacy ledger", "## Utility", "## Audit",
                    "## Not covered by the guarantee"):
        assert heading in text
    assert "σ = 1.8, q = 0.064, T = 200, C = 1, expected batch = 64" in text
    assert "TSTR accuracy (TF-IDF + logistic regression) | ε = 3 | 0.912" in text
    assert VERBATIM_OWNER_CHECK in text  # row 29: the non-DP owner check is stated


def test_adapter_card_names_the_base_model_and_its_q4_1_weights(adapter_card):
    assert isinstance(adapter_card, ModelCard)
    data = adapter_card.data.to_dict()
    assert data["base_model"] == DEFAULT_MODEL_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["library_name"] == "peft" and "differential-privacy" in data["tags"]
    assert "Q4_1" in adapter_card.text and "dequantised" in adapter_card.text
    assert DEFAULT_MODEL_NAME in adapter_card.text
    assert "| steps taken | 200 |" in adapter_card.text
    assert 'PeftModel.from_pretrained(model, "my-org/sms-spam-dp-lora")' in adapter_card.text


def test_private_prediction_parameters_come_from_the_charge_and_its_event(owner_only_card, prediction_ledger):
    block = read_dp_block(str(owner_only_card))
    assert block["accountant"] == "rdp" and block["privacy_unit"] == "example" and block["num_users"] is None
    (stage,) = [s for s in block["stages"] if s["name"] == "private_prediction"]
    assert stage["kind"] == "zcdp" and "event" not in stage["charges"][0]  # from a report dict: no events
    assert "s = 255, c = 10, τ = 2, r_max = 32" in owner_only_card.text
    with_events = render_dataset_card(ledger_report=prediction_ledger, num_records=18, codec_info=CODEC,
                                      generator_info={"generator": "private_prediction"})
    rho = prediction_ledger.charges[-1].event.rho
    assert f"ρ = {format_value(rho)}" in with_events.text


def test_owner_only_values_are_absent_by_default(dataset_card, adapter_card, uncharged_audit, prediction_ledger):
    for card in (dataset_card, adapter_card):
        text = str(card)
        assert OWNER_ONLY_HEADING not in text and read_dp_block(text)["owner_only_included"] is False
        assert "private test split" not in text and "TSTR accuracy (TF-IDF" in text
        for count in ("duplicates_removed", "capped_removed", "3298", "records_with_pii"):
            assert count not in text
    quiet = render_dataset_card(ledger_report=prediction_ledger, num_records=18, codec_info=CODEC,
                                generator_info={"generator": "private_prediction"}, audit=uncharged_audit)
    assert "audit" not in read_dp_block(str(quiet)) and "ε̂" not in str(quiet)


def test_owner_only_values_appear_only_labelled_with_the_option(owner_only_card, uncharged_audit):
    text = owner_only_card.text
    assert f"## {OWNER_ONLY_HEADING}" in text
    owner_part = text.split(f"## {OWNER_ONLY_HEADING}")[1]
    shared_part = text.split(f"## {OWNER_ONLY_HEADING}")[0]
    assert "without\ndifferential privacy" in owner_part
    assert "TSTR accuracy on the private test split" in owner_part and "private test split" not in shared_part
    assert "| duplicates_removed | 412 |" in owner_part and "EMAIL 17, PHONE 203" in owner_part
    eps_hat = format_value(uncharged_audit.main.epsilon_lower_bound)
    assert "ε̂" not in shared_part and "## Audit" not in shared_part
    assert f"| audit | ε̂ (one-run lower bound) |  | {eps_hat} |" in owner_part
    block = read_dp_block(str(owner_only_card))
    assert block["owner_only_included"] is True and "audit" not in block
    assert any(OWNER_ONLY_HEADING in item for item in block["not_covered"])


def test_include_owner_only_with_nothing_owner_only_adds_no_section(prediction_ledger):
    card = render_dataset_card(ledger_report=prediction_ledger, num_records=18, codec_info=CODEC,
                               generator_info={"generator": "private_prediction"}, metrics=SHARED_METRICS,
                               include_owner_only=True)
    assert OWNER_ONLY_HEADING not in str(card) and read_dp_block(str(card))["owner_only_included"] is False


def test_a_non_private_run_says_so_in_the_title(non_private_card):
    block = read_dp_block(str(non_private_card))
    assert block["private"] is False and block["epsilon"] == "inf" and block["epsilon_budget"] == "inf"
    title = next(line for line in non_private_card.text.splitlines() if line.startswith("# "))
    assert title.endswith(NOT_PRIVATE_TITLE) and "NOT differentially private" in title
    assert "not-differentially-private" in non_private_card.data.tags
    assert block["not_covered"][0].startswith("Everything")
    assert non_private_card.data.base_model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert "Q4_1" not in non_private_card.text
    assert "σ = 0" in non_private_card.text


def test_no_card_ever_mentions_a_seed(dataset_card, adapter_card, owner_only_card, non_private_card):
    for card in (dataset_card, adapter_card, owner_only_card, non_private_card):
        assert not SECRET.search(str(card))
    # GENERATION carries the sampler's "seed": it was dropped, like the run id
    assert "12345" not in str(dataset_card)
    for card in (dataset_card, adapter_card):
        for charge in _charges_of(card):
            assert "run_id" not in charge["parameters"]


def _charges_of(card):
    return [c for s in read_dp_block(str(card))["stages"] for c in s["charges"]]


def test_secrets_anywhere_in_the_inputs_are_dropped():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-6, num_units=100, accountant="rdp")
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=4.0), metadata={
        "mechanism": "gaussian_histogram", "noise_multiplier": 4.0, "dp_seed": 7, "noise_seed": 8,
        "nested": {"rng_state": [1, 2], "random_state": 3, "kept": 1}, "Sampling_Seed": 9,
    })
    card = render_adapter_card(
        ledger_report=ledger, base_model="org/model", training_stage="label_histogram",
        training_report={**_training_report(ledger), "noise_multiplier": 4.0, "sampling_probability": 1.0,
                         "num_steps": 1, "reproducibility_seed_set": True},
    )
    text = str(card)
    assert not SECRET.search(text) and "rng" not in text.lower() and "random_state" not in text
    (charge,) = _charges_of(card)
    assert charge["parameters"] == {"mechanism": "gaussian_histogram", "noise_multiplier": 4.0, "nested": {"kept": 1}}
    block = read_dp_block(text)
    assert block["randomness"] == "fixed_for_reproducibility"
    assert any("reproducibility setting" in item for item in block["not_covered"]) and "**Caveat:**" in text


def test_displayed_epsilon_never_understates_the_bound():
    for value in (1.2341, 1.23400001, 0.1999362761517017, 2.995760207580577, 9.99951, 123.45678, 4.0, 1e-4 + 1e-10):
        shown = float(card_block.epsilon_text(value))
        assert value <= shown <= value * (1 + 1e-3)
    assert card_block.epsilon_text("inf") == "∞" and card_block.epsilon_text(1.2341) == "1.235"
    assert card_block.epsilon_text(0.1 * 3.0) == "0.3"  # float noise (0.30000000000000004) is not rounded up


@pytest.mark.parametrize(("n", "category"), [(1, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (5000, "1K<n<10K"),
                                             (10_000, "10K<n<100K"), (2_500_000, "1M<n<10M")])
def test_size_category(n, category):
    assert cards._size_category(n) == category


def test_base_model_names(tmp_path):
    assert card_inputs.resolve_base_model(None) == (DEFAULT_MODEL_ID, True)
    assert card_inputs.resolve_base_model(DEFAULT_MODEL_NAME) == (DEFAULT_MODEL_ID, True)
    cache = "/home/someone/.cache/hf_dpsynth/models/SmolLM2-135M-Instruct-Q4_1-0123456789ab"
    assert card_inputs.resolve_base_model(cache) == (DEFAULT_MODEL_ID, True)  # the folder the default was dequantised into
    assert card_inputs.resolve_base_model("HuggingFaceTB/SmolLM2-360M-Instruct") == ("HuggingFaceTB/SmolLM2-360M-Instruct", False)
    for local in (str(tmp_path), "/data/private/my-model", "./out/adapter"):
        with pytest.raises(CardError, match="local path"):
            card_inputs.resolve_base_model(local)


def test_the_training_report_keys_read_here_exist_in_TrainingPrivacyReport():
    # importing training takes seconds (torch, transformers): read its source instead
    tree = ast.parse((REPO / "hf_dpsynth" / "training" / "report.py").read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingPrivacyReport"]
    fields = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    assert set(card_inputs._TRAINING_KEYS) <= fields
    assert set(_training_report(PrivacyLedger(epsilon=1.0, delta=1e-6))) == fields


# --------------------------------------------------------------------------------------------
# Bad input raises CardError
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["delta", "num_units", "stages", "versions", "private"])
def test_a_ledger_report_missing_a_field_is_refused(user_ledger, missing):
    report = user_ledger.report().to_dict()
    del report[missing]
    with pytest.raises(CardError, match=f"lacks \\['{missing}'\\]"):
        dp_block(report)


def test_malformed_ledger_reports_are_refused(user_ledger):
    report = user_ledger.report().to_dict()
    del report["stages"][1]["charges"]
    with pytest.raises(CardError, match="'training' of the ledger report lacks \\['charges'\\]"):
        dp_block(report)
    with pytest.raises(CardError, match="N is public|does not know N"):
        dp_block({**user_ledger.report().to_dict(), "num_units": None})
    with pytest.raises(CardError, match="no stages"):
        dp_block({**user_ledger.report().to_dict(), "stages": []})
    with pytest.raises(CardError, match="privacy_unit"):
        dp_block({**user_ledger.report().to_dict(), "privacy_unit": "household"})
    with pytest.raises(CardError, match="exceeds the budget"):
        dp_block({**user_ledger.report().to_dict(), "epsilon_spent": 5.0})
    with pytest.raises(CardError, match="epsilon"):
        dp_block({**user_ledger.report().to_dict(), "epsilon_spent": "inf"})  # private but ε = ∞
    with pytest.raises(CardError, match="ledger_report must be"):
        dp_block([("epsilon_spent", 1.0)])


def _replace_block(text, change):
    metadata, body = card_reading._front_matter(text)
    change(metadata)
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n" + body


def test_cards_without_the_block_or_with_wrong_tags_are_refused(dataset_card, adapter_card):
    text = str(dataset_card)
    assert validate_card(text)["pretty_name"] == "SMS spam (synthetic, DP)"
    no_block = _replace_block(text, lambda m: m.pop(DP_BLOCK_KEY))
    for check in (validate_card, read_dp_block):
        with pytest.raises(CardError, match="no 'differential_privacy' block"):
            check(no_block)
    with pytest.raises(CardError, match="tag 'differential-privacy'"):
        validate_card(_replace_block(text, lambda m: m.update(tags=["synthetic", "privacy"])))
    with pytest.raises(CardError, match="tag 'synthetic'"):
        validate_card(_replace_block(text, lambda m: m.update(tags=["differential-privacy"])))
    with pytest.raises(CardError, match="base_model"):
        validate_card(_replace_block(str(adapter_card), lambda m: m.pop("base_model")))
    with pytest.raises(CardError, match="no YAML metadata"):
        validate_card(dataset_card.text)
    with pytest.raises(CardError, match="does not parse"):
        validate_card("---\ntags: [unclosed\n---\n# t\n")
    with pytest.raises(CardError, match="Expected a card"):
        validate_card(42)
    untitled = re.sub(r"(?m)^# .*$", "", str(adapter_card), count=1)
    assert "# the dequantised Q4_1 weights" in untitled  # a comment in the usage snippet is no title
    with pytest.raises(CardError, match="no title"):
        validate_card(untitled)


def test_a_tampered_block_or_title_is_refused(dataset_card, non_private_card):
    text = str(dataset_card)
    with pytest.raises(CardError, match="does not validate"):
        validate_card(_replace_block(text, lambda m: m[DP_BLOCK_KEY].update(adjacency="replace_one")))
    with pytest.raises(CardError, match="does not validate"):
        validate_card(_replace_block(text, lambda m: m[DP_BLOCK_KEY]["stages"][0]["charges"][0]["parameters"]
                                     .update(noise_seed=1)))
    with pytest.raises(CardError, match="num_users"):
        validate_card(_replace_block(text, lambda m: m[DP_BLOCK_KEY].update(num_users=999)))
    with pytest.raises(CardError, match="must not say"):
        validate_card(text.replace("# SMS spam (synthetic, DP) —", f"# {NOT_PRIVATE_TITLE}: SMS spam —", 1))
    with pytest.raises(CardError, match="must say"):
        validate_card(str(non_private_card).replace(f" — {NOT_PRIVATE_TITLE}", "", 1))
    with pytest.raises(CardError, match="owner_only_included = False"):
        validate_card(text + f"\n## {OWNER_ONLY_HEADING}\n\n| loss | 1.2 |\n")
    with pytest.raises(CardError, match="mentions a seed"):
        validate_card(text + "\nThe noise seed was 42.\n")


def test_bad_render_inputs_are_refused(user_ledger, prediction_ledger, non_private_ledger, charged_audit, tmp_path):
    base = {"ledger_report": prediction_ledger, "num_records": 18, "codec_info": CODEC, "generator_info": {"generator": "x"}}
    with pytest.raises(CardError, match="value \\[1, 2\\]"):
        render_dataset_card(**base, metrics=[Metric("m", [1, 2], True, "s")])
    with pytest.raises(CardError, match="shareable = None"):
        render_dataset_card(**base, metrics=[{"name": "m", "value": 1.0, "section": "s"}])
    with pytest.raises(CardError, match="num_records"):
        render_dataset_card(**{**base, "num_records": 0})
    with pytest.raises(CardError, match="codec_info must be a mapping"):
        render_dataset_card(**{**base, "codec_info": ["text"]})
    with pytest.raises(CardError, match="preparation has num_units = 1000"):
        render_dataset_card(**base, preparation=_preparation("user"))
    with pytest.raises(CardError, match="the ledger has no charge in its 'audit'|no charge in its 'audit' stage"):
        render_dataset_card(**base, audit=charged_audit)  # charged, but not to this ledger
    with pytest.raises(CardError, match="training report has delta"):
        render_adapter_card(ledger_report=user_ledger, training_report=_training_report(user_ledger, delta=1e-7))
    with pytest.raises(CardError, match="noise_multiplier"):
        render_adapter_card(ledger_report=user_ledger, training_report=_training_report(user_ledger, noise_multiplier=1.7))
    with pytest.raises(CardError, match="lacks \\['steps_taken'\\]"):
        render_adapter_card(ledger_report=user_ledger,
                            training_report={k: v for k, v in _training_report(user_ledger).items() if k != "steps_taken"})
    with pytest.raises(CardError, match="no charge in stage 'training'"):
        render_adapter_card(ledger_report=prediction_ledger)
    with pytest.raises(CardError, match="local path"):
        render_adapter_card(ledger_report=non_private_ledger, base_model=str(tmp_path))
    with pytest.raises(CardError, match="owner_checks"):
        render_dataset_card(**base, owner_checks="verbatim gate")


# --------------------------------------------------------------------------------------------
# Each stage's outputs (issue 12, item 3), δ rounded up, the refuted-audit override in the schema
# --------------------------------------------------------------------------------------------


def test_each_stage_lists_the_outputs_it_released(dataset_card, user_ledger):
    block = read_dp_block(str(dataset_card))
    assert {s["name"]: s["outputs"] for s in block["stages"]} == OUTPUTS
    rows = {line.split(" | ")[0].lstrip("| "): line for line in dataset_card.text.splitlines()
            if line.startswith("| ") and " | " in line}
    assert rows["training"].endswith("| adapter |") and rows["label_histogram"].endswith("| label_histogram.json |")
    assert {s["name"]: s["outputs"] for s in dp_block(user_ledger)["stages"]} == {s: [] for s in OUTPUTS}


def test_a_stage_that_released_output_without_a_charge_or_outside_the_ledger_is_refused():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-6, num_units=1000)
    ledger.plan({"label_histogram": 0.1, "training": 0.9})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0), metadata=_histogram_metadata(20.0, unit="example"))
    assert [s["charges"] for s in ledger.report().to_dict()["stages"]][1] == []  # planned, never charged
    block = dp_block(ledger, outputs={"label_histogram": ["label_histogram.json"]})
    with pytest.raises(CardError, match="'training' released \\['adapter'\\] but holds no charge"):
        dp_block(ledger, outputs={"label_histogram": ["label_histogram.json"], "training": ["adapter"]})
    with pytest.raises(CardError, match="'private_prediction'.*which the ledger does not hold"):
        dp_block(ledger, outputs={"private_prediction": ["synthetic"]})
    with pytest.raises(CardError, match="outputs\\['training'\\] must hold non-empty strings"):
        dp_block(ledger, outputs={"training": [""]})
    # The schema alone refuses it too (a card edited by hand, read by another tool).
    tampered = {**block, "stages": [block["stages"][0], {**block["stages"][1], "outputs": ["adapter"]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tampered, dp_block_schema())
    with pytest.raises(CardError, match="holds no charge|does not validate"):
        card_block.validate_block(tampered)
    without = {**block, "stages": [{k: v for k, v in s.items() if k != "outputs"} for s in block["stages"]]}
    with pytest.raises(CardError, match="outputs"):
        card_block.validate_block(without)  # every stage entry lists its outputs (format_version 2)


def test_delta_and_the_factor_e_epsilon_are_rounded_up_in_the_card():
    ledger = PrivacyLedger(epsilon=2.0, delta=1.2341e-6, num_units=1000)
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=3.0), metadata=_histogram_metadata(3.0, unit="example"))
    card = render_dataset_card(ledger_report=ledger, num_records=3, codec_info=CODEC, generator_info={"generator": "x"})
    title = next(line for line in card.text.splitlines() if line.startswith("# "))
    delta = re.search(r"δ = ([0-9.e-]+),", title).group(1)
    assert 1.2341e-6 <= float(delta) <= 1.2341e-6 * 1.01 and delta == "1.24e-6"  # not 1.23e-6 (nearest)
    assert "| δ | 1.24e-6 |" in card.text
    factor = float(re.search(r"factor e\^ε ≈ ([0-9.]+)", card.text).group(1))
    assert factor >= math.exp(ledger.epsilon_spent())


def test_an_override_without_a_refuted_audit_does_not_validate(charged_audit, user_ledger):
    block = dp_block(user_ledger, audit=charged_audit)
    assert block["audit"]["refuted"] is False
    statement = card_block.refuted_audit_statement(block["audit"]["epsilon_lower_bound"], block["audit"]["claimed_epsilon"])
    tampered = {**block, "audit": {**block["audit"], "override": statement}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tampered, dp_block_schema())
    refuted = {**block, "audit": {**block["audit"], "refuted": True, "override": "published anyway"}}
    with pytest.raises(CardError, match="override statement"):
        card_block.validate_block(refuted)


def test_the_drop_invalid_rule_is_stated_and_its_counts_stay_owner_only(user_ledger):
    prep = dataclasses.replace(_preparation(), drop_invalid=True, invalid_dropped={"empty_text": 7})
    common = dict(ledger_report=user_ledger, num_records=5000, codec_info=CODEC, generator_info=GENERATION,
                  metrics=SHARED_METRICS, preparation=prep, owner_checks=OWNER_CHECKS, outputs=OUTPUTS,
                  training_report=_training_report(user_ledger))
    shared = str(render_dataset_card(**common))
    assert "rows that do not fit the schema" in shared and "1-stable" in shared
    assert "empty_text" not in shared and "invalid_dropped" not in shared
    owner = str(render_dataset_card(**common, include_owner_only=True)).split(f"## {OWNER_ONLY_HEADING}")[1]
    assert "invalid_dropped" in owner and "empty_text" in owner
    without = str(render_dataset_card(**{**common, "preparation": _preparation()}))
    assert "rows that do not fit the schema" not in without
