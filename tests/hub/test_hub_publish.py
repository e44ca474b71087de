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
