"""DPSynthTrainer end to end on a tiny model: each test checks one row of DP_CORRECTNESS.md."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from peft import LoraConfig, PeftModel
from transformers import TrainerCallback

from hf_dpsynth import DPSynthConfig, DPSynthTrainer, PrivacyLedger
from hf_dpsynth.errors import (
    CheckpointError,
    PrivacyBudgetExceededError,
    DatasetError,
    DPConfigError,
    InvalidPrivacyParameterError,
    PrivacyUnitMismatchError,
    UnsupportedModelError,
)
from hf_dpsynth.models import tiny_causal_lm
from hf_dpsynth.privacy import gaussian_event
from hf_dpsynth.training import trainer as trainer_module

WORDS = "hi call me later free prize win now text stop ok see you soon thanks party tonight station noon".split()


def make_dataset(n, seed=0, users=None):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]
    data = {"text": texts}
    if users is not None:
        data["user"] = [f"u{int(u)}" for u in users]
    return Dataset.from_dict(data)


def lora():
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")


def config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"),
        target_epsilon=4.0,
        logical_batch_size=8,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        dp_seed=1234,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=50,
        accountant="rdp",  # fast; the PLD path is checked against dp-accounting in the first test
    )
    base.update(overrides)
    return DPSynthConfig(**base)


def make_trainer(tmp_path, n=40, dataset=None, ledger=None, model_seed=0, callbacks=None, **overrides):
    model, tok = tiny_causal_lm(seed=model_seed)
    return DPSynthTrainer(
        model=model,
        args=config(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else make_dataset(n),
        processing_class=tok,
        peft_config=lora(),
        ledger=ledger,
        callbacks=callbacks,
    )


def adapter_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


class GradCapture(TrainerCallback):
    """Records the gradient the optimizer is about to apply, for every step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def test_train_reports_dp_accounting_epsilon_and_model_stays_a_peft_model(tmp_path):
    trainer = make_trainer(tmp_path, n=40, max_steps=4, accountant="pld", logging_steps=1)
    frozen_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainable_before = adapter_state(trainer)
    trainer.train()
    report = trainer.privacy_report()
    # Oracle: dp-accounting directly, for the realised (q, σ, steps).
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dp_event.PoissonSampledDpEvent(8 / 40, dp_event.GaussianDpEvent(report.noise_multiplier)), 4)
    assert report.epsilon == pytest.approx(acc.get_epsilon(report.delta), rel=1e-9)
    assert report.epsilon <= 4.0
    assert (report.sampling_probability, report.num_steps, report.steps_taken, report.num_units) == (0.2, 4, 4, 40)
    assert report.delta == pytest.approx(1 / (40 * math.log(40)))
    assert report.private
    assert "not covered" in " ".join(report.notes)
    # Trainable weights changed, frozen ones did not (docs/DP_CORRECTNESS.md 11).
    after = adapter_state(trainer)
    assert any(not torch.equal(trainable_before[n], after[n]) for n in after)
    for n, p in trainer.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(frozen_before[n], p), n
    # No wrapper: generate and save_pretrained work as for any PEFT model (docs/DP_CORRECTNESS.md 10).
    assert isinstance(trainer.model, PeftModel)
    out = trainer.model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    trainer.model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # The ledger was persisted before training and says what was charged.
    saved = json.loads((tmp_path / "out" / "privacy_ledger.json").read_text())
    assert "training" in json.dumps(saved)
    # ε is logged at logging steps, growing with the steps taken, never above the charged ε.
    logged = [h["epsilon"] for h in trainer.state.log_history if "epsilon" in h]
    assert len(logged) == 4 and logged == sorted(logged) and logged[-1] == pytest.approx(report.epsilon)


def test_poisson_sampling_rate_and_no_unit_twice(tmp_path, monkeypatch):
    seen = []
    real_collate = trainer_module.collate

    def recording_collate(examples, rows, **kw):
        seen[-1].extend(rows)
        return real_collate(examples, rows, **kw)

    monkeypatch.setattr(trainer_module, "collate", recording_collate)

    class StepMarker(TrainerCallback):
        def on_step_begin(self, *a, **k):
            seen.append([])

    trainer = make_trainer(tmp_path, n=30, logical_batch_size=6, max_steps=60, learning_rate=0.0,
                           callbacks=[StepMarker()], noise_multiplier=1.0, target_epsilon=None)
    trainer.train()
    sizes = [len(s) for s in seen]
    assert len(sizes) == 60
    assert all(len(set(s)) == len(s) for s in seen)  # no unit twice in one step
    q = 6 / 30
    rate = sum(sizes) / (60 * 30)
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / (60 * 30))
    assert len(set(sizes)) > 3  # batch sizes vary (Poisson), never a fixed size


def test_forced_full_draw_loses_no_unit_and_empty_draw_still_steps(tmp_path, monkeypatch):
    seen = []
    real_collate = trainer_module.collate
    monkeypatch.setattr(trainer_module, "collate", lambda ex, rows, **kw: (seen.extend(rows), real_collate(ex, rows, **kw))[1])
    # q = 1: every unit in every step, spread over ceil(23/4) = 6 chunks; nothing truncated.
    trainer = make_trainer(tmp_path, n=23, logical_batch_size=23, max_steps=2, target_epsilon=8.0)
    trainer.train()
    assert sorted(seen) == sorted(list(range(23)) * 2)

    # q tiny: empty draws happen, and each still takes a (noise-only) step.
    capture = GradCapture()
    trainer = make_trainer(tmp_path / "b", n=200, logical_batch_size=1, max_steps=6, callbacks=[capture],
                           target_epsilon=8.0, dp_seed=7)
    draws = [trainer_module.PoissonSampler(num_units=200, sampling_probability=1 / 200,
                                           seed=trainer_module.SecretSeeds.fresh(7).sampling).draw(s) for s in range(6)]
    assert any(len(d) == 0 for d in draws)
    trainer.train()
    assert trainer.state.global_step == 6 and len(capture.grads) == 6
    for step, d in enumerate(draws):
        if len(d) == 0:
            assert all(float(g.abs().max()) > 0 for g in capture.grads[step].values())  # pure noise


def test_noise_std_matches_sigma_times_clip(tmp_path):
    # No example has target tokens: the clipped sum is exactly 0, so the update is pure noise / (q·N).
    ds = Dataset.from_dict({"input_ids": [[3, 4, 5]] * 20, "labels": [[-100, -100, -100]] * 20})
    capture = GradCapture()
    trainer = make_trainer(tmp_path, dataset=ds, logical_batch_size=10, max_steps=1, callbacks=[capture],
                           per_example_max_grad_norm=0.5, target_epsilon=2.0)
    trainer.train()
    sigma = trainer.plan.noise_multiplier
    noise = torch.cat([g.reshape(-1) for g in capture.grads[0].values()]) * trainer.plan.expected_batch_size
    assert noise.numel() > 5000
    assert float(noise.std()) == pytest.approx(sigma * 0.5, rel=0.05)
    assert abs(float(noise.mean())) < 5 * sigma * 0.5 / math.sqrt(noise.numel())


def test_add_remove_one_example_moves_the_pre_noise_sum_by_at_most_clip(tmp_path):
    clip = 1e-3  # small enough that every example is clipped: equality is reached
    grads = []
    for n, sub in (("full", 12), ("minus_one", 11)):
        capture = GradCapture()
        ds = make_dataset(12).select(range(sub))
        trainer = make_trainer(tmp_path / n, dataset=ds, logical_batch_size=sub, max_steps=1, callbacks=[capture],
                               per_example_max_grad_norm=clip, noise_multiplier=0.0, target_epsilon=None)
        trainer.train()
        scale = trainer.plan.expected_batch_size  # q·N = N here (q = 1)
        grads.append(torch.cat([g.reshape(-1) for g in capture.grads[0].values()]) * scale)
        assert not trainer.privacy_report().private and math.isinf(trainer.privacy_report().epsilon)
    diff = float((grads[0] - grads[1]).norm())
    assert diff <= clip * (1 + 1e-4)
    assert diff == pytest.approx(clip, rel=1e-3)


def test_shared_ledger_leaves_training_exactly_its_share(tmp_path):
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-4, privacy_unit="example", num_units=40)
    ledger.plan({"label_histogram": 0.1, "training": 0.9})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0))
    trainer = make_trainer(tmp_path, n=40, ledger=ledger, target_epsilon=None, max_steps=3)
    trainer.train()
    report = trainer.privacy_report()
    assert report.epsilon <= 0.9 * 3.0 * (1 + 1e-9)
    assert report.epsilon >= 0.9 * 3.0 * 0.97  # calibrated to (nearly) all of its share
    assert ledger.epsilon_spent() <= 3.0
    assert report.delta == 1e-4 and report.num_units == 40


def test_ledger_must_match_unit_and_n_and_owns_the_budget(tmp_path):
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-4, privacy_unit="example", num_units=40)
    with pytest.raises(DPConfigError, match="must be unset"):
        make_trainer(tmp_path, n=40, ledger=ledger)
    with pytest.raises(PrivacyUnitMismatchError, match="N = 41"):
        make_trainer(tmp_path, n=41, ledger=ledger, target_epsilon=None)
    user_ledger = PrivacyLedger(epsilon=3.0, delta=1e-4, privacy_unit="user", num_units=40)
    with pytest.raises(PrivacyUnitMismatchError, match="privacy_unit"):
        make_trainer(tmp_path, n=40, ledger=user_ledger, target_epsilon=None)


def test_public_units_are_for_a_charged_audit_only_and_n_counts_the_private_units(tmp_path):
    _, tok = tiny_causal_lm(seed=0)

    def build(ledger, stage="audit", public=5, n=45):
        return DPSynthTrainer(model=tiny_causal_lm(seed=0)[0], args=config(tmp_path, target_epsilon=None, max_steps=2),
                              train_dataset=make_dataset(n), processing_class=tok, peft_config=lora(), ledger=ledger,
                              ledger_stage=stage, public_units=public)

    ledger = PrivacyLedger(epsilon=3.0, delta=1e-4, privacy_unit="example", num_units=40)
    ledger.plan({"training": 0.5, "audit": 0.5})
    with pytest.raises(DPConfigError, match="audit run charged"):
        build(ledger, stage="training")
    with pytest.raises(DPConfigError, match="audit run charged"):
        build(None)
    with pytest.raises(PrivacyUnitMismatchError, match="N = 41"):
        build(ledger, public=4)  # 45 units, 4 of them public: 41 private, but the ledger protects 40
    trainer = build(ledger)
    trainer.train()
    (charge,) = ledger.charges
    assert charge.stage == "audit" and charge.metadata["public_units"] == 5
    assert charge.metadata["sampling_probability"] == pytest.approx(trainer.args.logical_batch_size / 45)
    assert ledger.num_units == 40


def test_resume_from_checkpoint_continues_the_run_exactly(tmp_path):
    full = make_trainer(tmp_path / "full", n=30, max_steps=4)
    full.train()
    full_state = adapter_state(full)

    crashed = make_trainer(tmp_path / "crash", n=30, max_steps=4, save_strategy="steps", save_steps=2)

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt  # a crash after the checkpoint at step 2

    crashed.add_callback(Crash())
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    checkpoint = tmp_path / "crash" / "out" / "checkpoint-2"
    assert (checkpoint / "dp_state.json").is_file()

    # A fresh process: the same base model, a freshly initialised adapter (another Trainer seed),
    # a new trainer: nothing of the run but the checkpoint.
    resumed = make_trainer(tmp_path / "crash", n=30, max_steps=4, save_strategy="steps", save_steps=2, seed=7)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in adapter_state(resumed).items():
        torch.testing.assert_close(value, full_state[name], rtol=1e-5, atol=1e-7)
    assert resumed.privacy_report().epsilon == pytest.approx(full.privacy_report().epsilon, rel=1e-12)
    assert resumed.ledger.epsilon_spent() == pytest.approx(full.ledger.epsilon_spent(), rel=1e-12)
    training_charges = [c for c in resumed.ledger.charges if c.stage == "training"]
    assert len(training_charges) == 1  # re-recorded once, not charged twice

    # A checkpoint without the DP state cannot be resumed.
    (checkpoint / "dp_state.json").unlink()
    again = make_trainer(tmp_path / "crash", n=30, max_steps=4)
    with pytest.raises(CheckpointError, match="dp_state.json"):
        again.train(resume_from_checkpoint=str(checkpoint))


def test_user_level_counts_users_and_caps_contributions(tmp_path, monkeypatch):
    users = [i % 10 for i in range(60)]  # 10 users, 6 examples each; cap 4 -> 40 examples
    ds = make_dataset(60, users=users)
    seen = []
    real_collate = trainer_module.collate
    monkeypatch.setattr(trainer_module, "collate", lambda ex, rows, **kw: (seen.append(list(rows)), real_collate(ex, rows, **kw))[1])
    trainer = make_trainer(tmp_path, dataset=ds, privacy_unit="user", user_id_column="user", max_examples_per_user=4,
                           logical_batch_size=10, per_device_train_batch_size=3, max_steps=1, target_epsilon=20.0)
    assert trainer.plan.num_units == 10 and trainer.plan.num_examples == 40
    assert trainer.plan.sampling_probability == 1.0
    trainer.train()
    processed = sorted(r for chunk in seen for r in chunk)
    assert processed == list(range(40))  # every capped example of every drawn user, once
    assert trainer.privacy_report().privacy_unit == "user"


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(max_grad_norm=1.0), DPConfigError, "per_example_max_grad_norm"),
        (dict(average_tokens_across_devices=True), DPConfigError, "batch-wide token count"),
        (dict(gradient_accumulation_steps=2), DPConfigError, "logical_batch_size"),
        (dict(push_to_hub=True), DPConfigError, "hf_dpsynth.hub"),
        (dict(fp16=True), DPConfigError, "bf16"),
        (dict(target_epsilon=0.0), InvalidPrivacyParameterError, "target_epsilon"),
        (dict(target_delta=1.5), InvalidPrivacyParameterError, "target_delta"),
        (dict(privacy_unit="user"), DPConfigError, "user_id_column"),
        (dict(privacy_unit="user", user_id_column="user"), DPConfigError, "max_examples_per_user"),
    ],
)
def test_config_refuses_settings_that_break_dp(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        config(tmp_path, **overrides)
    assert not (tmp_path / "out").exists()


def test_load_best_model_on_private_eval_is_refused(tmp_path):
    with pytest.raises(DPConfigError, match="not differentially private"):
        config(tmp_path, load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps")


def test_bad_input_fails_before_training_and_writes_nothing(tmp_path):
    cases = [
        (dict(dataset=Dataset.from_dict({"text": []})), DatasetError, "empty"),
        (dict(dataset=Dataset.from_dict({"body": ["a b c"] * 5})), DatasetError, "dataset_text_field"),
        (dict(n=5, logical_batch_size=8), DPConfigError, "exceeds the number of privacy units"),
        (dict(n=40, target_delta=0.03), InvalidPrivacyParameterError, "below 1/N"),
        (dict(n=10, privacy_unit="user", user_id_column="user", max_examples_per_user=2), DatasetError, "'user'"),
        (dict(n=40, target_epsilon=None), DPConfigError, "target_epsilon"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            make_trainer(tmp_path, **kwargs)
        assert not (tmp_path / "out").exists()


def test_model_with_batchnorm_is_refused(tmp_path):
    model, tok = tiny_causal_lm()
    model.model.extra_bn = torch.nn.BatchNorm1d(4)
    with pytest.raises(UnsupportedModelError, match="mixes the examples"):
        DPSynthTrainer(model=model, args=config(tmp_path), train_dataset=make_dataset(20), processing_class=tok,
                       peft_config=lora())
    assert not (tmp_path / "out").exists()


def test_dp_randomness_comes_from_dp_seed_or_os_entropy_never_the_trainer_seed(tmp_path, monkeypatch):
    real_collate = trainer_module.collate

    def draws(path, **overrides):
        seen = []
        monkeypatch.setattr(trainer_module, "collate",
                            lambda ex, rows, **kw: (seen.append(list(rows)), real_collate(ex, rows, **kw))[1])
        capture = GradCapture()
        trainer = make_trainer(tmp_path / path, n=40, max_steps=3, callbacks=[capture], **overrides)
        trainer.train()
        return seen, capture.grads

    same_a, grads_a = draws("a", dp_seed=5, seed=1)
    same_b, grads_b = draws("b", dp_seed=5, seed=2)
    assert same_a == same_b  # the Trainer's seed does not move the draws
    # ... nor the noise: with lr 0 the adapter stays at its (seed-dependent) init... so compare the
    # noise directly: same dp_seed, same draws, same per-step noise (the gradients differ only by
    # the adapter init, which is public; the noise part is identical).
    from hf_dpsynth.training.sampler import noise_generator
    seeds = trainer_module.SecretSeeds.fresh(5)
    n1 = torch.randn(8, generator=noise_generator(seeds.noise, 0))
    n2 = torch.randn(8, generator=noise_generator(trainer_module.SecretSeeds.fresh(5).noise, 0))
    assert torch.equal(n1, n2) and not torch.equal(n1, torch.randn(8, generator=noise_generator(seeds.noise, 1)))
    assert len(grads_a) == len(grads_b) == 3
    fresh_a, _ = draws("c", dp_seed=None, seed=42)
    fresh_b, _ = draws("d", dp_seed=None, seed=42)
    assert fresh_a != fresh_b  # same public seed, different secret draws (OS entropy)
    assert trainer_module.SecretSeeds.fresh(None) != trainer_module.SecretSeeds.fresh(None)


def test_checkpoints_hold_private_state_and_report_says_so(tmp_path):
    trainer = make_trainer(tmp_path, n=20, max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "dp_state.json").read_text())
    assert "PRIVATE" in state["warning"]
    text = str(trainer.privacy_report())
    assert "ε (training stage)" in text and "not covered" in text


def test_user_level_removing_one_user_moves_the_pre_noise_sum_by_at_most_clip(tmp_path):
    """Users interleaved in time order and over the cap: one user's removal moves the sum by <= C."""
    users = [0, 1, 2, 0, 3, 1, 0, 2, 0, 1, 3, 0, 2, 0, 1]  # user 0 has 6 rows, cap 3
    ds = make_dataset(len(users), users=users, seed=3)
    clip = 1e-3  # every user's gradient is clipped: equality is reachable
    sums = {}
    for name, keep in (("all", None), ("without_u2", [i for i, u in enumerate(users) if u != 2])):
        capture = GradCapture()
        data = ds if keep is None else ds.select(keep)
        n_users = len(set(data["user"]))
        trainer = make_trainer(tmp_path / name, dataset=data, privacy_unit="user", user_id_column="user",
                               max_examples_per_user=3, logical_batch_size=n_users, per_device_train_batch_size=2,
                               max_steps=1, callbacks=[capture], per_example_max_grad_norm=clip,
                               noise_multiplier=0.0, target_epsilon=None)
        trainer.train()
        sums[name] = torch.cat([g.reshape(-1) for g in capture.grads[0].values()]) * trainer.plan.expected_batch_size
    diff = float((sums["all"] - sums["without_u2"]).norm())
    assert diff <= clip * (1 + 1e-4)
    assert diff == pytest.approx(clip, rel=1e-3)


def test_contribution_cap_of_one_user_does_not_depend_on_other_users():
    from hf_dpsynth.data.units import build_privacy_units

    users = ["a", "b", "a", "b", "b", "a", "b", "b", "b"]
    ds = make_dataset(len(users)).add_column("uid", users)

    def kept_texts_of_b(data):
        units, rows = build_privacy_units(data, privacy_unit="user", user_id_column="uid", max_examples_per_user=3)
        return sorted(data[r]["text"] for r in rows if data[r]["uid"] == "b")

    without_a = ds.select([i for i, u in enumerate(users) if u != "a"])
    assert kept_texts_of_b(ds) == kept_texts_of_b(without_a)
    units, rows = build_privacy_units(ds, privacy_unit="user", user_id_column="uid", max_examples_per_user=3)
    # Each unit holds exactly one user's rows.
    for u in range(units.num_units):
        assert len({ds[rows[i]]["uid"] for i in units.examples_of(u)}) == 1


def test_refusals_that_protect_the_schedule(tmp_path):
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import DefaultFlowCallback

    with pytest.raises(DPConfigError, match="EarlyStoppingCallback"):
        make_trainer(tmp_path, n=20, callbacks=[EarlyStoppingCallback()])
    trainer = make_trainer(tmp_path / "es", n=20)
    with pytest.raises(DPConfigError, match="EarlyStoppingCallback"):
        trainer.add_callback(EarlyStoppingCallback)
    with pytest.raises(DPConfigError, match="auto_find_batch_size"):
        config(tmp_path, auto_find_batch_size=True)
    with pytest.raises(DPConfigError, match="optimizer"):
        config(tmp_path, optim="adalomo")
    # Without the Trainer's own stopping rule, the trainer still never steps past the charged T.
    # (5 steps per epoch, 7 charged: the Trainer iterates 2 epochs = 10 ticks.)
    trainer = make_trainer(tmp_path / "overrun", n=40, max_steps=7)
    trainer.remove_callback(DefaultFlowCallback)
    with pytest.raises(PrivacyBudgetExceededError, match="Step 8 of a run charged for 7 steps"):
        trainer.train()
    assert trainer.state.global_step == 7


def test_warmup_does_not_trip_the_first_step_check(tmp_path):
    trainer = make_trainer(tmp_path, n=20, max_steps=3, warmup_steps=2)
    trainer.train()
    assert trainer.state.global_step == 3


def test_resume_on_other_data_is_refused_and_earlier_ledger_is_never_forgotten(tmp_path):
    first = make_trainer(tmp_path, n=30, max_steps=2, save_strategy="steps", save_steps=1)
    first.train()
    other = make_trainer(tmp_path, dataset=make_dataset(30, seed=9), max_steps=2)
    with pytest.raises(CheckpointError, match="different data"):
        other.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-1"))
    # A new run in the same folder with a fresh ledger would forget the first run's spend.
    again = make_trainer(tmp_path, n=30, max_steps=2)
    with pytest.raises(CheckpointError, match="earlier run"):
        again.train()
    # Charged on top of the loaded ledger, it is accepted.
    ledger = PrivacyLedger.load(tmp_path / "out" / "privacy_ledger.json")
    spent_before = ledger.epsilon_spent()
    on_top = make_trainer(tmp_path, n=30, max_steps=2, ledger=ledger, target_epsilon=None)
    assert on_top.plan.noise_multiplier > 3 * first.plan.noise_multiplier  # only the remainder is left
    on_top.train()
    assert spent_before < ledger.epsilon_spent() <= 4.0
    assert len([c for c in ledger.charges if c.stage == "training"]) == 2


def test_a_trainable_weight_used_outside_its_layer_is_refused(tmp_path):
    trainer = make_trainer(tmp_path, n=20, max_steps=1)
    lora_a = next(t.param for t in trainer._trainable if "lora_A" in t.name)
    # The weight also enters the loss through a functional call the hooks cannot see.
    trainer.model.base_model.model.model.norm.register_forward_hook(
        lambda m, i, out: out + 0.1 * (out[..., : lora_a.shape[1]] @ lora_a.T).sum(-1, keepdim=True)
    )
    with pytest.raises(UnsupportedModelError, match="do not add up"):
        trainer.train()


def test_resume_with_a_fresh_ledger_never_forgets_an_earlier_charge(tmp_path):
    """output_dir's ledger holds a histogram charge and the training charge; a resume that re-records only
    the training charge into a fresh ledger would overwrite it and forget the histogram's spend."""
    from hf_dpsynth.privacy import default_delta

    # σ fixed and δ the trainer's default, so that a fresh-ledger resume has the checkpoint's exact plan and
    # reaches the re-recording (not the "different DP settings" refusal).
    ledger = PrivacyLedger(epsilon=10.0, delta=default_delta(30), privacy_unit="example", num_units=30)
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0), metadata={"mechanism": "histogram"})
    first = make_trainer(tmp_path, n=30, max_steps=2, save_strategy="steps", save_steps=1, ledger=ledger,
                         target_epsilon=None, noise_multiplier=1.0)
    first.train()
    out = tmp_path / "out"
    ledger_file = out / "privacy_ledger.json"
    saved = ledger_file.read_bytes()
    assert sorted(c.stage for c in PrivacyLedger.load(ledger_file).charges) == ["label_histogram", "training"]
    checkpoint = str(out / "checkpoint-1")

    fresh = make_trainer(tmp_path, n=30, max_steps=2, save_strategy="steps", save_steps=1,
                         target_epsilon=None, noise_multiplier=1.0)
    with pytest.raises(CheckpointError, match="label_histogram"):
        fresh.train(resume_from_checkpoint=checkpoint)
    assert ledger_file.read_bytes() == saved  # the file is unchanged
    assert fresh.ledger.charges == ()  # refused before the re-recording, not after

    # output_dir's ledger lost: the checkpoint's own ledger still knows the histogram charge.
    ledger_file.unlink()
    again = make_trainer(tmp_path, n=30, max_steps=2, target_epsilon=None, noise_multiplier=1.0)
    with pytest.raises(CheckpointError, match="label_histogram"):
        again.train(resume_from_checkpoint=checkpoint)
    assert not ledger_file.exists()
    ledger_file.write_bytes(saved)

    # Resuming with the loaded ledger continues the run: both charges kept, nothing charged twice.
    loaded = PrivacyLedger.load(ledger_file)
    resumed = make_trainer(tmp_path, n=30, max_steps=2, save_strategy="steps", save_steps=1, ledger=loaded,
                           target_epsilon=None, noise_multiplier=1.0)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.state.global_step == 2
    kept = PrivacyLedger.load(ledger_file)
    assert sorted(c.stage for c in kept.charges) == ["label_histogram", "training"]
    assert kept.epsilon_spent() == pytest.approx(first.ledger.epsilon_spent(), rel=1e-12)


def _own_token_gradients(model, names, examples):
    """Oracle: each example alone (unpadded, batch of one), its mean next-token NLL over its own target
    tokens, differentiated by plain autograd."""
    params = dict(model.named_parameters())
    grads = []
    for ids, labels in zip(examples.input_ids, examples.labels):
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        targets = torch.tensor(labels)[1:]
        mask = targets != -100
        loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [params[n] for n in names])]))
    return torch.stack(grads)


def test_add_remove_one_example_with_a_partly_binding_clip_through_the_trainer(tmp_path):
    """Row 4 with a clip that binds for some examples only: a batch-level normalisation (tokens in the
    chunk, num_items_in_batch) would change the unclipped examples' contributions when one is removed."""
    def run(path, dataset, clip):
        capture = GradCapture()
        trainer = make_trainer(tmp_path / path, dataset=dataset, logical_batch_size=len(dataset), max_steps=1,
                               per_device_train_batch_size=4, callbacks=[capture], per_example_max_grad_norm=clip,
                               noise_multiplier=0.0, target_epsilon=None)
        return trainer, capture

    ds = make_dataset(12, seed=5)  # 3 to 11 words: different token counts, 3 chunks of 4
    untrained, _ = run("untrained", ds, clip=1.0)
    names = [n for n, p in untrained.model.named_parameters() if p.requires_grad]
    oracle = _own_token_gradients(untrained.model, names, untrained._examples)  # at the adapter's initial weights
    norms = oracle.norm(dim=1)
    clip = float(norms.median())
    factor = (clip / norms).clamp(max=1.0)
    clipped = (norms > clip).nonzero().flatten().tolist()
    unclipped = (norms < clip).nonzero().flatten().tolist()
    assert len(clipped) >= 3 and len(unclipped) >= 3

    def pre_noise_sum(trainer, capture):
        trainer.train()
        assert trainer.plan.sampling_probability == 1.0  # every example in the one step
        return torch.cat([capture.grads[0][n].reshape(-1) for n in names]) * trainer.plan.expected_batch_size

    full, capture = run("full_clipped", ds, clip=clip)
    total = pre_noise_sum(full, capture)
    expected = (factor[:, None] * oracle).sum(dim=0)
    scale = float(expected.norm())
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-5 * scale)

    # Remove the first clipped and the first unclipped example (later examples move to other chunks).
    for k in (clipped[0], unclipped[0]):
        keep = [i for i in range(12) if i != k]
        minus, capture = run(f"minus_{k}", ds.select(keep), clip=clip)
        assert minus._examples.input_ids == [full._examples.input_ids[i] for i in keep]
        reduced = pre_noise_sum(minus, capture)
        # The others' contributions are unchanged: the sum without k is the oracle's sum over the others.
        torch.testing.assert_close(reduced, (factor[keep, None] * oracle[keep]).sum(dim=0), rtol=1e-4,
                                   atol=1e-5 * scale)
        moved = float((total - reduced).norm())
        assert moved <= clip * (1 + 1e-4)
        assert moved == pytest.approx(min(clip, float(norms[k])), rel=1e-3)


def test_first_step_check_fires_when_the_optimizer_does_not_hold_the_adapter(tmp_path):
    """Row 11: loss and ε look normal, but the optimizer steps on other parameters: the adapter never moves."""
    model, tok = tiny_causal_lm(seed=0)
    stray = torch.nn.Parameter(torch.zeros(3))
    stray.grad = torch.ones(3)  # it does move: only the adapter's weights do not
    trainer = DPSynthTrainer(model=model, args=config(tmp_path, max_steps=3), train_dataset=make_dataset(20),
                             processing_class=tok, peft_config=lora(),
                             optimizers=(torch.optim.SGD([stray], lr=0.1), None))
    before = adapter_state(trainer)
    with pytest.raises(UnsupportedModelError, match="No trainable weight changed .* learning rate was 0.1"):
        trainer.train()
    assert trainer.state.global_step == 1  # caught after the first step, not at the end
    assert all(torch.equal(before[n], v) for n, v in adapter_state(trainer).items())


def test_first_step_check_fires_when_a_frozen_weight_changes(tmp_path):
    """Row 11: something besides DP-SGD (here a callback; in practice weight decay on frozen weights, a tied
    parameter) updates a frozen weight with the raw data."""
    class TouchesAFrozenWeight(TrainerCallback):
        def __init__(self, through_data):
            self.through_data = through_data

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            frozen = next(p for p in model.parameters() if not p.requires_grad)
            with torch.no_grad():
                # `.data` writes (as older optimizers' weight decay does) bypass the version counter.
                (frozen.data if self.through_data else frozen).add_(1e-3)

    for through_data in (False, True):
        trainer = make_trainer(tmp_path / str(through_data), n=20, max_steps=3,
                               callbacks=[TouchesAFrozenWeight(through_data)])
        with pytest.raises(UnsupportedModelError, match="frozen \\(non-trainable\\) weight changed"):
            trainer.train()
        assert trainer.state.global_step == 1


def _tiny_moe(output_router_logits):
    from transformers import MixtralConfig, MixtralForCausalLM

    from hf_dpsynth.models import tiny_tokenizer

    tok = tiny_tokenizer(400)
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        output_router_logits=output_router_logits, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MixtralForCausalLM(cfg), tok


def test_moe_router_auxiliary_loss_is_refused(tmp_path):
    """Row 18: the router's load-balancing loss is computed over all tokens of the batch, so one example's
    gradient would depend on the others."""
    attention_lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model, tok = _tiny_moe(output_router_logits=True)
    with pytest.raises(UnsupportedModelError, match="router auxiliary loss .*output_router_logits=False"):
        DPSynthTrainer(model=model, args=config(tmp_path, max_steps=1), train_dataset=make_dataset(20),
                       processing_class=tok, peft_config=attention_lora)
    assert not (tmp_path / "out").exists()
    # The fix the error names works: without the router loss the same model trains.
    model, tok = _tiny_moe(output_router_logits=False)
    trainer = DPSynthTrainer(model=model, args=config(tmp_path, max_steps=1), train_dataset=make_dataset(20),
                             processing_class=tok, peft_config=attention_lora)
    trainer.train()
    assert trainer.state.global_step == 1
