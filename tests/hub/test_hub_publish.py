"""Publishing through the real clients to the local test Hub (tests/hub/hub_server.py, scaffolding):
what arrives is the synthetic data and its card; a refused release uploads nothing."""

import io
import uuid

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from hf_dpsynth.data import TextCodec
from hf_dpsynth.errors import PublishRefusedError
from hf_dpsynth.hub.publish import push_adapter, push_synthetic_dataset
from hf_dpsynth.resources import load_sms_spam

from _cards import card as _card
from _cards import report as _ledger  # the report of the ledger the cards are rendered from

CARD = _card()

CODEC = TextCodec(conditions={"label": ["ham", "spam"]})
PRIVATE = [CODEC.encode(r) for r in load_sms_spam("train").select(range(300))]


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
    # the data and its card came in one commit (after the Hub's initial one), and load back through datasets
    stored = hub.get_repo("dataset", repo)
    assert len(stored.commits) == 2 and stored.commits[stored.refs["main"]].oid == result.commit
    assert set(files) == {".gitattributes", "README.md", *shards}
    from datasets import load_dataset

    assert load_dataset(repo, split="train").to_list() == _synthetic().to_list()


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
    from hf_dpsynth.hub.card_reading import read_dp_block, validate_card
    from hf_dpsynth.hub.cards import render_adapter_card
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


def _adapter_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    return folder


def test_a_stale_card_refuses_both_pushes_and_uploads_nothing(hub_env, tmp_path):
    from _cards import ledger as _ledger_object

    from hf_dpsynth.privacy import gaussian_event

    ledger = _ledger_object()
    stale = _card(ledger_report=ledger)
    ledger.charge("training", gaussian_event(noise_multiplier=3.0), metadata={"noise_multiplier": 3.0})
    data_repo, model_repo = (f"{hub_env.user}/stale-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("data", "model"))
    with pytest.raises(PublishRefusedError, match=r"does not match the ledger.*re-render the card"):
        push_synthetic_dataset(_synthetic(), data_repo, card=stale, ledger_report=ledger.report().to_dict(),
                               private_texts=PRIVATE, codec=CODEC, token=hub_env.token)
    with pytest.raises(PublishRefusedError, match=r"does not match the ledger.*re-render the card"):
        push_adapter(_adapter_folder(tmp_path), model_repo, card=stale, ledger_report=ledger.report().to_dict(),
                     token=hub_env.token)
    assert hub_env.hub.get_repo("dataset", data_repo) is None and hub_env.hub.get_repo("model", model_repo) is None
    fresh = _card(ledger_report=ledger)
    push_synthetic_dataset(_synthetic(), data_repo, card=fresh, ledger_report=ledger.report().to_dict(),
                           private_texts=PRIVATE, codec=CODEC, token=hub_env.token)
    push_adapter(_adapter_folder(tmp_path), model_repo, card=fresh, ledger_report=ledger.report().to_dict(),
                 token=hub_env.token)
    assert hub_env.hub.read_file("dataset", data_repo, "README.md").decode() == fresh


@pytest.mark.parametrize("repo_type", ["dataset", "model"])
def test_a_private_push_into_an_existing_public_repo_is_refused(hub_env, tmp_path, repo_type):
    hub = hub_env.hub
    repo = f"{hub_env.user}/public-{repo_type}-{uuid.uuid4().hex[:8]}"
    hub.create_repo(repo_type, repo, private=False)  # made public earlier, by hand or by another tool
    before = dict(hub.get_repo(repo_type, repo).commits)

    def push(**kwargs):
        if repo_type == "dataset":
            return push_synthetic_dataset(_synthetic(), repo, card=CARD, ledger_report=_ledger(), private_texts=PRIVATE,
                                          codec=CODEC, token=hub_env.token, **kwargs)
        return push_adapter(_adapter_folder(tmp_path), repo, card=CARD, ledger_report=_ledger(), token=hub_env.token,
                            **kwargs)

    with pytest.raises(PublishRefusedError, match="already exists and is public") as info:
        push()  # private=True, the default
    assert "update_repo_settings" in str(info.value)
    stored = hub.get_repo(repo_type, repo)
    assert stored.private is False and stored.commits == before  # refused, not made private: nothing uploaded
    # The fix the message names: make it private, then the push goes through (and the repo stays private).
    hub_env.api().update_repo_settings(repo, repo_type=repo_type, private=True)
    assert hub.get_repo(repo_type, repo).private is True
    result = push()
    assert result.private is True and hub_env.api().repo_info(repo, repo_type=repo_type).private is True
    assert len(stored.commits) == len(before) + 1  # one commit: the release and its card together
    assert stored.commits[stored.refs["main"]].files["README.md"].content == CARD.encode()


def test_a_public_push_on_purpose_says_it_is_public(hub_env):
    repo = f"{hub_env.user}/open-{uuid.uuid4().hex[:8]}"
    result = push_synthetic_dataset(_synthetic(), repo, card=CARD, ledger_report=_ledger(), private_texts=PRIVATE,
                                    codec=CODEC, token=hub_env.token, private=False)
    assert result.private is False and hub_env.hub.get_repo("dataset", repo).private is False


def test_each_push_is_one_commit_and_replaces_the_shards_of_an_earlier_one(hub_env, tmp_path):
    from datasets import load_dataset

    hub = hub_env.hub
    repo = f"{hub_env.user}/repush-{uuid.uuid4().hex[:8]}"
    hub.create_repo("dataset", repo, private=True)
    old = Dataset.from_dict({"label": ["spam"] * 4, "text": ["old"] * 4})
    # an earlier release in two shards: a push that left either behind would load it with the new data
    hub.commit_files("dataset", repo, {f"data/train-0000{i}-of-00002.parquet": _parquet(old) for i in range(2)},
                     lfs=True)
    commits = len(hub.get_repo("dataset", repo).commits)
    push_synthetic_dataset(_synthetic(), repo, card=CARD, ledger_report=_ledger(), private_texts=PRIVATE, codec=CODEC,
                           token=hub_env.token)
    stored = hub.get_repo("dataset", repo)
    assert len(stored.commits) == commits + 1
    assert [f for f in hub.list_files("dataset", repo) if f.startswith("data/")] == ["data/train-00000-of-00001.parquet"]
    assert load_dataset(repo, split="train").to_list() == _synthetic().to_list()

    model_repo = f"{hub_env.user}/adapter-{uuid.uuid4().hex[:8]}"
    push_adapter(_adapter_folder(tmp_path), model_repo, card=CARD, ledger_report=_ledger(), token=hub_env.token)
    model = hub.get_repo("model", model_repo)
    assert len(model.commits) == 2  # the Hub's initial commit, then the adapter with its card
    head = model.commits[model.refs["main"]]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(head.files)


def _parquet(dataset):
    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    return buffer.getvalue()
