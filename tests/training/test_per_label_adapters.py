"""One adapter per label (``adapter_per_label``): one DP-SGD event, sensitivity C over all adapters together,
each adapter's noisy sum divided by q·ñ_ℓ with the DP count. Oracles: add/remove one example, and
dp-accounting's ε of a single-adapter run with the same (q, σ, T)."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

from hf_dpsynth import DPSynthConfig, DPSynthTrainer
from hf_dpsynth.errors import DatasetError, DPConfigError
from hf_dpsynth.models import tiny_causal_lm

WORDS = "hi call me later free prize win now text stop ok see you soon thanks party tonight station noon".split()


def labelled(n=12, seed=0, labels=("ham", "spam")):
    rng = np.random.default_rng(seed)
    return Dataset.from_dict({
        "text": [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 10)))) for _ in range(n)],
        "label": [labels[i % len(labels)] for i in range(n)],
    })


class GradCapture(TrainerCallback):
    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def trainer_of(tmp_path, dataset, counts=None, callbacks=(), **overrides):
    model, tok = tiny_causal_lm()
    args = dict(output_dir=str(tmp_path / "out"), logical_batch_size=len(dataset), per_device_train_batch_size=4,
                max_steps=1, learning_rate=1e-2, dp_seed=7, report_to="none", save_strategy="no", use_cpu=True,
                disable_tqdm=True, accountant="rdp", noise_multiplier=0.0, per_example_max_grad_norm=1e-3,
                adapter_per_label="label", label_counts=counts or {"ham": 6.0, "spam": 6.0})
    args.update(overrides)
    return DPSynthTrainer(model=model, args=DPSynthConfig(**args), train_dataset=dataset, processing_class=tok,
                          peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"),
                          callbacks=list(callbacks))


def pre_noise(trainer, capture):
    """Each adapter's captured gradient times its divisor q·ñ_ℓ: the clipped sums, concatenated per adapter."""
    trainer.train()
    q = trainer.plan.sampling_probability
    out = {}
    for i, name in enumerate(trainer._labels.names):
        grads = [g.reshape(-1) for n, g in capture.grads[0].items() if f".{name}." in n]
        out[name] = torch.cat(grads) * trainer._labels.expected_batch_size(i, q)
    return out


def test_adding_or_removing_one_example_moves_only_its_labels_adapter_by_at_most_the_clip(tmp_path):
    clip = 1e-3  # every example is clipped: the bound is reached
    data = labelled(12)
    capture = GradCapture()
    full = pre_noise(trainer_of(tmp_path / "full", data, callbacks=[capture]), capture)
    assert set(full) == {"label_0", "label_1"} and all(float(v.norm()) > 0 for v in full.values())
    for removed in (0, 1):  # a ham example, then a spam example
        capture = GradCapture()
        keep = [i for i in range(12) if i != removed]
        minus = pre_noise(trainer_of(tmp_path / f"minus{removed}", data.select(keep), callbacks=[capture],
                                     logical_batch_size=11), capture)
        moved = {name: float((full[name] - minus[name]).norm()) for name in full}
        own = f"label_{removed % 2}"
        assert moved[own] == pytest.approx(clip, rel=1e-3)
        assert all(v < 1e-9 for name, v in moved.items() if name != own)  # the other adapter does not move
        total = math.sqrt(sum(v * v for v in moved.values()))
        assert total <= clip * (1 + 1e-4)


def test_each_adapter_is_divided_by_its_dp_count_never_the_real_one(tmp_path):
    data = labelled(12)  # 6 ham, 6 spam
    sums = []
    for counts in ({"ham": 6.0, "spam": 6.0}, {"ham": 3.0, "spam": 24.0}):
        capture = GradCapture()
        trainer = trainer_of(tmp_path / str(counts["spam"]), data, counts=counts, callbacks=[capture])
        trainer.train()
        sums.append({n: g for n, g in capture.grads[0].items()})
    for name, g in sums[0].items():
        ratio = 6.0 / 3.0 if ".label_0." in name else 6.0 / 24.0  # the update scales with 1 / ñ_ℓ
        torch.testing.assert_close(sums[1][name], g * ratio, rtol=1e-5, atol=1e-12)
    # A released DPHistogram is taken as it is (its noisy counts, in its label order).
    from hf_dpsynth.data.statistics import DPHistogram

    hist = DPHistogram("label", ("ham", "spam"), (3.0, 24.0), (3.0, 24.0), (0.11, 0.89))
    assert trainer_of(tmp_path / "hist", data, counts=hist)._labels.dp_counts == (3.0, 24.0)
    # A DP count below 1 (noise) is used as 1 (post-processing), never a division by ~0 or a negative.
    trainer = trainer_of(tmp_path / "neg", data, counts={"ham": -4.0, "spam": 6.0})
    assert trainer._labels.expected_batch_size(0, 0.5) == 0.5


def test_every_adapter_gets_its_noise_even_when_no_unit_of_its_label_is_drawn(tmp_path):
    # No example has target tokens (and only ham is present): each adapter's update is pure noise N(0, σ²C²)/(q·ñ_ℓ).
    data = Dataset.from_dict({"input_ids": [[3, 4, 5]] * 20, "labels": [[-100] * 3] * 20, "label": ["ham"] * 20})
    capture = GradCapture()
    trainer = trainer_of(tmp_path, data, counts={"ham": 20.0, "spam": 40.0}, callbacks=[capture], noise_multiplier=2.0,
                         per_example_max_grad_norm=0.5, logical_batch_size=10)
    trainer.train()
    q = trainer.plan.sampling_probability
    noises = []
    for i, name in enumerate(trainer._labels.names):
        noise = torch.cat([g.reshape(-1) for n, g in capture.grads[0].items() if f".{name}." in n])
        noise = noise * trainer._labels.expected_batch_size(i, q)
        assert noise.numel() > 5000
        assert float(noise.std()) == pytest.approx(2.0 * 0.5, rel=0.05)
        noises.append(noise)
    # Independent draws: one noise vector shared by the adapters would release their difference without noise.
    correlation = float(torch.corrcoef(torch.stack(noises))[0, 1])
    assert abs(correlation) < 0.05


def test_label_adapters_with_the_activation_cache_train_as_on_the_plain_path(tmp_path):
    model_states = []
    for mode in ("off", "memory"):
        model, tok = tiny_causal_lm(num_hidden_layers=4)
        args = DPSynthConfig(output_dir=str(tmp_path / mode / "out"), logical_batch_size=8, per_device_train_batch_size=4,
                             max_steps=3, learning_rate=1e-2, dp_seed=7, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True, accountant="rdp", noise_multiplier=1.0, target_delta=1e-3,
                             adapter_per_label="label", label_counts={"ham": 20.0, "spam": 20.0}, activation_cache=mode)
        peft = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, layers_to_transform=[2, 3],
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        trainer = DPSynthTrainer(model=model, args=args, train_dataset=labelled(40), processing_class=tok, peft_config=peft)
        trainer.train()
        model_states.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n})
    for name, value in model_states[0].items():
        torch.testing.assert_close(model_states[1][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_one_dp_sgd_event_for_all_labels_as_for_one_adapter(tmp_path):
    data = labelled(40)
    per_label = trainer_of(tmp_path / "per", data, noise_multiplier=1.0, logical_batch_size=8, max_steps=3,
                           per_example_max_grad_norm=1.0, target_delta=1e-3)
    per_label.train()
    single = trainer_of(tmp_path / "one", data, noise_multiplier=1.0, logical_batch_size=8, max_steps=3,
                        per_example_max_grad_norm=1.0, target_delta=1e-3, adapter_per_label=None, label_counts=None)
    single.train()
    assert [c.stage for c in per_label.ledger.charges] == ["training"]  # one charge, not one per label
    assert per_label.ledger.epsilon_spent() == pytest.approx(single.ledger.epsilon_spent(), rel=1e-9)
    assert per_label.privacy_report().epsilon == pytest.approx(single.privacy_report().epsilon, rel=1e-9)
    saved = tmp_path / "adapters"
    per_label.model.save_pretrained(str(saved))
    assert (saved / "label_0" / "adapter_model.safetensors").is_file()
    assert (saved / "label_1" / "adapter_model.safetensors").is_file()


def test_refusals(tmp_path):
    data = labelled(12)
    with pytest.raises(DPConfigError, match="example-level only"):
        trainer_of(tmp_path / "u", data.add_column("user", ["a"] * 12), privacy_unit="user", user_id_column="user",
                   max_examples_per_user=2)
    args = DPSynthConfig(output_dir=str(tmp_path / "late"), adapter_per_label="label", label_counts={"ham": 6, "spam": 6},
                         noise_multiplier=1.0, report_to="none", use_cpu=True)
    args.privacy_unit, args.user_id_column, args.max_examples_per_user = "user", "user", 2  # after the config's checks
    model, tok = tiny_causal_lm()
    with pytest.raises(DPConfigError, match="example-level only"):
        DPSynthTrainer(model=model, args=args, train_dataset=data.add_column("user", ["a"] * 12), processing_class=tok,
                       peft_config=LoraConfig(r=4, target_modules="all-linear"))
    with pytest.raises(DPConfigError, match="equal as text"):
        trainer_of(tmp_path / "dup", data, counts={1: 6.0, "1": 6.0})
    with pytest.raises(DPConfigError, match="needs label_counts"):
        trainer_of(tmp_path / "c", data, label_counts=None)
    with pytest.raises(DPConfigError, match="at least two labels"):
        trainer_of(tmp_path / "one", data, counts={"ham": 6.0})
    with pytest.raises(DatasetError, match="not one of the declared labels") as error:
        trainer_of(tmp_path / "x", labelled(12, labels=("ham", "secret-label")))
    assert "secret-label" not in str(error.value)
    with pytest.raises(DatasetError, match="not a column"):
        trainer_of(tmp_path / "col", data, adapter_per_label="category")


def test_a_per_label_run_resumes_from_its_checkpoint_exactly(tmp_path):
    data = labelled(30)
    common = dict(noise_multiplier=1.0, logical_batch_size=8, max_steps=4, per_example_max_grad_norm=1.0,
                  target_delta=1e-3, counts=None)

    def state(trainer):
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}

    full = trainer_of(tmp_path / "full", data, **common)
    full.train()

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    crashed = trainer_of(tmp_path / "crash", data, callbacks=[Crash()], save_strategy="steps", save_steps=2, **common)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = trainer_of(tmp_path / "crash", data, save_strategy="steps", save_steps=2, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "crash" / "out" / "checkpoint-2"))
    expected = state(full)
    assert len(expected) == 2 * 2 * 7 * 2  # A and B, 7 projections, 2 layers, 2 labels
    for name, value in state(resumed).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-7, msg=name)
