"""A trainer's adapter is shared only through hf_dpsynth.hub's gates and DP card (docs/DP_CORRECTNESS.md 27, 32).

The inherited ``Trainer.push_to_hub`` uploads ``output_dir`` (the run folder: owner-only reports,
checkpoints with the run's secret seeds) with a card of hyper-parameters and losses; the inherited
checkpoint push runs whenever ``args.push_to_hub`` is True, which can be set after the config refused it.
"""

import importlib.util
import json
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors

from hf_dpsynth import DPSynthTrainer
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.hub.adapter import push_trainer_adapter, write_trainer_adapter_card
from hf_dpsynth.hub.card_reading import read_dp_block, validate_card

from hf_dpsynth.models import tiny_causal_lm
from test_trainer import config, lora, make_dataset, make_trainer

# The local test Hub and its client-patching fixture, from tests/hub/conftest.py (not visible from here).
_HUB_TESTS = Path(__file__).resolve().parents[1] / "hub"
if str(_HUB_TESTS) not in sys.path:
    sys.path.insert(0, str(_HUB_TESTS))  # tests/hub/conftest.py imports hub_server
_spec = importlib.util.spec_from_file_location("_hub_test_fixtures", _HUB_TESTS / "conftest.py")
_hub_fixtures = sys.modules.setdefault("_hub_test_fixtures", importlib.util.module_from_spec(_spec))
if not hasattr(_hub_fixtures, "hub_env"):
    _spec.loader.exec_module(_hub_fixtures)
hub_server = _hub_fixtures.hub_server
hub_env = _hub_fixtures.hub_env

BASE = "test-org/tiny-llama"  # a Hub id for the random tiny base model (it has none of its own)


def trained(tmp_path, **overrides):
    trainer = make_trainer(tmp_path, n=20, max_steps=2, **overrides)
    trainer.train()
    return trainer


def test_trainer_push_to_hub_uploads_only_the_adapter_and_its_dp_card(hub_env, tmp_path):
    # Checkpoints (with dp_state.json: the secret seeds) and the ledger sit in output_dir.
    trainer = trained(tmp_path, save_strategy="steps", save_steps=1)
    out = Path(trainer.args.output_dir)
    assert (out / "checkpoint-1" / "dp_state.json").is_file() and (out / "privacy_ledger.json").is_file()
    repo = f"{hub_env.user}/dp-trainer-{uuid.uuid4().hex[:8]}"

    result = push_trainer_adapter(trainer, repo_id=repo, token=hub_env.token, finetuned_from=BASE)

    assert result.repo_id == repo and result.private
    stored = hub_env.hub.get_repo("model", repo)
    assert stored is not None and stored.private  # private unless asked otherwise
    files = set(hub_env.hub.list_files("model", repo)) - {".gitattributes"}
    assert files == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    # The weights are this trainer's adapter, exactly (oracle: peft's own adapter state dict).
    from peft import get_peft_model_state_dict

    uploaded = load_safetensors(hub_env.hub.read_file("model", repo, "adapter_model.safetensors"))
    mine = get_peft_model_state_dict(trainer.model)
    assert uploaded.keys() == mine.keys() and mine
    for name, value in mine.items():
        torch.testing.assert_close(uploaded[name], value.detach().cpu(), rtol=0, atol=0, msg=name)
    # The README is the DP adapter card, restating this run's ledger; no seed anywhere.
    card = hub_env.hub.read_file("model", repo, "README.md").decode()
    metadata = validate_card(card)
    assert metadata["library_name"] == "peft" and metadata["base_model"] == BASE
    block = read_dp_block(card)
    assert block["epsilon"] == pytest.approx(trainer.ledger.epsilon_spent(), rel=1e-3)
    assert block["num_units"] == 20 and block["privacy_unit"] == "example"
    config_json = json.loads(hub_env.hub.read_file("model", repo, "adapter_config.json"))
    assert "seed" not in json.dumps(config_json).lower()


def test_the_trainer_itself_does_not_publish_and_says_where_the_gated_path_is(tmp_path):
    trainer = trained(tmp_path)
    for inherited, use in ((lambda: trainer.push_to_hub(), "hf_dpsynth.hub.push_trainer_adapter"),
                           (lambda: trainer.push_to_hub(repo_id="me/adapter", finetuned_from=BASE),
                            "hf_dpsynth.hub.push_trainer_adapter"),
                           (lambda: trainer.create_model_card(finetuned_from=BASE),
                            "hf_dpsynth.hub.write_trainer_adapter_card")):
        with pytest.raises(DPConfigError, match=use.replace(".", r"\.")):
            inherited()
    assert not (Path(trainer.args.output_dir) / "README.md").exists()


def test_the_adapter_push_refuses_before_training_or_without_a_base_model_id(tmp_path):
    trainer = make_trainer(tmp_path, n=20, max_steps=1)
    with pytest.raises(DPConfigError, match="train\\(\\) first"):
        push_trainer_adapter(trainer, repo_id="me/adapter", finetuned_from=BASE)
    trainer.train()
    with pytest.raises(DPConfigError, match="finetuned_from"):
        push_trainer_adapter(trainer, repo_id="me/adapter")  # the tiny model has no Hub id: the card cannot name it
    with pytest.raises(DPConfigError, match="repo_id"):
        push_trainer_adapter(trainer, finetuned_from=BASE)
    with pytest.raises(DPConfigError, match="dataset"):
        push_trainer_adapter(trainer, repo_id="me/adapter", finetuned_from=BASE, dataset="me/private-sms")


def test_push_to_hub_set_after_construction_is_refused_before_anything_is_charged(tmp_path):
    trainer = make_trainer(tmp_path, n=20, max_steps=2)
    trainer.args.push_to_hub = True  # the config refused it at construction; nothing stops an assignment
    trainer.args.hub_strategy = "all_checkpoints"
    with pytest.raises(DPConfigError, match="push_to_hub=True .*hf_dpsynth.hub") as refused:
        trainer.train()
    assert "all_checkpoints" in str(refused.value)  # says what was given
    assert trainer.ledger.charges == () and not (tmp_path / "out" / "privacy_ledger.json").exists()
    assert trainer.state.global_step == 0

    # Set on the config before the trainer is built: refused before Trainer.__init__ creates a repo.
    model, tok = tiny_causal_lm()
    args = config(tmp_path / "b")
    args.push_to_hub = True
    with pytest.raises(DPConfigError, match="push_to_hub=True"):
        DPSynthTrainer(model=model, args=args, train_dataset=make_dataset(20), processing_class=tok, peft_config=lora())
    with pytest.raises(DPConfigError, match="hf_dpsynth.hub"):
        config(tmp_path / "c").set_push_to_hub("me/model", strategy="checkpoint")


def test_create_model_card_writes_the_dp_adapter_card(tmp_path):
    trainer = trained(tmp_path)
    write_trainer_adapter_card(trainer, finetuned_from=BASE, license="apache-2.0")
    text = (Path(trainer.args.output_dir) / "README.md").read_text()
    metadata = validate_card(text)  # the DP tag, block, schema and title checks
    assert metadata["library_name"] == "peft" and metadata["base_model"] == BASE
    assert metadata["license"] == "apache-2.0"
    block = read_dp_block(text)
    assert block["epsilon"] == pytest.approx(trainer.ledger.epsilon_spent(), rel=1e-3)
    assert block["delta"] == pytest.approx(trainer.ledger.delta)
    # Not the Trainer's card: no hyper-parameter list, no training-loss table (losses are not DP).
    assert "Training hyperparameters" not in text and "learning_rate" not in text
    with pytest.raises(DPConfigError, match="tags"):
        write_trainer_adapter_card(trainer, finetuned_from=BASE, tags=["sms"])
