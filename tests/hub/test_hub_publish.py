"""Publishing through the real clients to the local test Hub (tests/hub/hub_server.py, scaffolding):
what arrives is the synthetic data and its card; a refused release uploads nothing."""

import io
import uuid

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.data import TextCodec
from hf_dpsynth.errors import PublishRefusedError
from hf_dpsynth.hub.publish import push_adapter, push_synthetic_dataset
from hf_dpsynth.privacy import gaussian_event
from hf_dpsynth.resources import load_sms_spam

from _cards import card as _card

CARD = _card()

CODEC = TextCodec(conditions={"label": ["ham", "spam"]})
PRIVATE = [CODEC.encode(r) for r in load_sms_spam("train").select(range(300))]


def _ledger(private=True):
    ledger = PrivacyLedger(epsilon=4.0 if private else float("inf"), delta=1e-6, accountant="rdp")
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=5.0 if private else 0.0))
    return ledger.report().to_dict()


def _synthetic():
    return Dataset.from_dict({"label": ["ham", "spam", "ham"], "text": ["ok see u soon", "WIN a new phone txt now", "on my way"],
                              "generator": ["adapter_sampler"] * 3, "condition": ["label=ham", "label=spam", "label=ham"]})


def test_push_round_trip(hub_env):
    repo = f"{hub_env.user}/synthetic-sms-{uuid.uuid4().hex[:8]}"
    result = push_synthetic_dataset(_synthetic(), repo, card=CARD, ledger_report=_ledger(), private_texts=PRIVATE,
                                    codec=CODEC, token=hub_env.token)
    assert result.private and "no long, rare verbatim training record" in result.gates_passed
    hub = hub_env.hub
    assert hub.get_repo("dataset", repo).private
    files = hub.list_files("dataset", repo)
    shards = [f for f in files if f.endswith(".parquet")]
    assert shards
    rows = pq.read_table(io.BytesIO(hub.read_file("dataset", repo, shards[0]))).to_pylist()
    assert rows == _synthetic().to_list()
    assert hub.read_file("dataset", repo, "README.md").decode() == CARD


def test_a_refused_release_uploads_nothing(hub_env):
    repo = f"{hub_env.user}/leaky-{uuid.uuid4().hex[:8]}"
    copied = next(t for t in PRIVATE if len(t) > 100)
    leaky = Dataset.from_dict({"label": ["ham"], "text": [copied.split("\n", 1)[1]]})
    with pytest.raises(PublishRefusedError, match="copy long, rare training text"):
        push_synthetic_dataset(leaky, repo, card=CARD, ledger_report=_ledger(), private_texts=PRIVATE, codec=CODEC,
                               token=hub_env.token)
    with pytest.raises(PublishRefusedError, match="DP was off"):
        push_synthetic_dataset(_synthetic(), repo, card=CARD, ledger_report=_ledger(private=False), private_texts=PRIVATE,
                               codec=CODEC, token=hub_env.token)
    assert hub_env.hub.get_repo("dataset", repo) is None


def test_adapter_push_refuses_secret_state_and_uploads_the_adapter(hub_env, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "training_args.bin").write_bytes(b"pickled seeds")
    repo = f"{hub_env.user}/adapter-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PublishRefusedError, match="training_args.bin"):
        push_adapter(folder, repo, card=CARD, ledger_report=_ledger(), token=hub_env.token)
    assert hub_env.hub.get_repo("model", repo) is None
    (folder / "training_args.bin").unlink()
    push_adapter(folder, repo, card=CARD, ledger_report=_ledger(), token=hub_env.token)
    files = hub_env.hub.list_files("model", repo)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert hub_env.hub.get_repo("model", repo).private


def test_a_dp_trained_adapter_and_its_card_round_trip_through_the_hub(hub_env, tmp_path):
    """A real DP-trained LoRA adapter with its rendered card: pushed, then loaded back by peft and
    huggingface_hub from the (local, test-only) Hub, weights identical, card valid and restating the ledger."""
    import torch
    from huggingface_hub import ModelCard
    from peft import LoraConfig, PeftModel

    from hf_dpsynth import DPSynthConfig, DPSynthTrainer
    from hf_dpsynth.hub.cards import read_dp_block, render_adapter_card, validate_card
    from hf_dpsynth.models import tiny_causal_lm

    texts = [r["text"] for r in load_sms_spam("train").select(range(40))]
    model, tok = tiny_causal_lm(seed=0)
    args = DPSynthConfig(output_dir=str(tmp_path / "train"), target_epsilon=4.0, logical_batch_size=8,
                         per_device_train_batch_size=8, max_steps=2, use_cpu=True, report_to="none",
                         save_strategy="no", disable_tqdm=True, max_length=32)
    trainer = DPSynthTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                             processing_class=tok, peft_config=LoraConfig(r=4, target_modules="all-linear"))
    trainer.train()
    folder = tmp_path / "adapter"
    trainer.model.save_pretrained(str(folder))
    repo = f"{hub_env.user}/dp-adapter-{uuid.uuid4().hex[:8]}"
    card = render_adapter_card(ledger_report=trainer.ledger, training_report=trainer.privacy_report(), repo_id=repo)
    push_adapter(folder, repo, card=str(card), ledger_report=trainer.ledger.report().to_dict(), token=hub_env.token)

    assert hub_env.hub.get_repo("model", repo).private
    loaded = PeftModel.from_pretrained(tiny_causal_lm(seed=0)[0], repo, token=hub_env.token)
    mine = {n: p for n, p in trainer.model.named_parameters() if "lora_" in n}
    theirs = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        torch.testing.assert_close(theirs[name], mine[name], rtol=0, atol=0, msg=name)
    downloaded = ModelCard.load(repo, repo_type="model", token=hub_env.token)
    validate_card(downloaded)
    block = read_dp_block(downloaded)
    assert block["epsilon"] == pytest.approx(trainer.ledger.epsilon_spent())
    assert block["privacy_unit"] == "example" and block["num_units"] == 40
    assert downloaded.data.library_name == "peft" and downloaded.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
