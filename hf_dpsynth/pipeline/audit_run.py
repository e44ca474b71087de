"""``hf-dpsynth audit RECIPE``: the one-run audit of a recipe's DP training, as its own run.

Canaries are inserted into the prepared data and the recipe's training is repeated with the
release's hyper-parameters — the same q, steps, clip and noise multiplier σ the release's training
stage used or would use — so the audit tests the mechanism that produced the release, without
canaries ever entering the release. The claimed ε is that training stage's. Its results are
owner-only (the audit trains on the private data and is not charged to the release ledger).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.pipeline.recipe import Recipe

__all__ = ["audit_recipe"]


def audit_recipe(recipe: Recipe, *, output_dir: str | os.PathLike[str], log: Any = print) -> Any:
    """Run the audit of ``recipe`` into ``output_dir`` (``audit.json``, ``audit_report/``); returns the AuditReport."""
    import torch

    from hf_dpsynth.audit import AuditConfig, run_audit
    from hf_dpsynth.evaluation import Report
    from hf_dpsynth.pipeline.runner import (
        load_recipe_model,
        prepare_recipe_data,
        recipe_lora,
    )
    from hf_dpsynth.privacy import calibrate_noise_multiplier, default_delta
    from hf_dpsynth.training import DPSynthConfig, DPSynthTrainer

    if recipe.generation.method != "adapter_sampler":
        raise DPConfigError("the audit repeats a recipe's DP training; this recipe has none (private prediction).")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    p, t, a = recipe.privacy, recipe.training, recipe.audit
    _, codec, prepared = prepare_recipe_data(recipe)
    n = prepared.num_units
    delta = p.delta if p.delta is not None else default_delta(n)
    claimed = p.epsilon * float(p.shares.get("training", 1.0))
    batch = min(t.logical_batch_size, n)
    # The release's σ: calibrated for its training stage's share of ε on the real data's N and schedule.
    sigma = calibrate_noise_multiplier(target_epsilon=claimed, target_delta=delta, sampling_probability=batch / n,
                                       num_steps=t.max_steps, accountant=p.accountant or "pld")
    log(f"audit: {a.num_canaries} canaries, claimed ε = {claimed:.3g} (the training stage), σ = {sigma:.4g}")

    def train(dataset: Any, private: bool) -> Any:
        model, tok = load_recipe_model(recipe)
        units = len(dataset)
        args = DPSynthConfig(
            output_dir=tempfile.mkdtemp(prefix="hf_dpsynth_audit_"), per_example_max_grad_norm=t.per_example_max_grad_norm,
            logical_batch_size=min(batch, units), per_device_train_batch_size=t.per_device_train_batch_size,
            max_steps=t.max_steps, learning_rate=t.learning_rate, max_length=t.max_length,
            use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no", disable_tqdm=True,
            noise_multiplier=sigma if private else 0.0, target_delta=min(delta, 0.5 / units),
            **({} if p.unit == "example" else prepared.training_kwargs()),
        )
        trainer = DPSynthTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                 peft_config=recipe_lora(recipe, model))
        trainer.train()
        return trainer.model

    config = AuditConfig(delta=delta, num_canaries=a.num_canaries, guesses=a.guesses, significance=a.significance,
                         seed=a.seed, suffix_words=a.suffix_words)
    _, tok = load_recipe_model(recipe)
    report = run_audit(train, prepared, codec=codec, claimed_epsilon=claimed, config=config, tokenizer=tok,
                       controls=a.controls)
    atomic_write_json(out / "audit.json", {
        "owner_only": "the audit trained on private data and is not charged: do not publish",
        "claimed_epsilon": claimed, "epsilon_lower_bound": report.main.epsilon_lower_bound,
        "num_canaries": report.main.num_canaries, "num_guesses": report.main.num_guesses,
        "num_correct": report.main.num_correct, "ceiling": report.ceiling.epsilon, "auc": report.main.auc,
        "positive_control": None if report.positive_control is None else report.positive_control.epsilon_lower_bound,
        "negative_control": None if report.negative_control is None else report.negative_control.epsilon_lower_bound,
        "inclusion_hash": report.inclusion_hash, "verdict": report.verdict,
    })
    owner = Report(f"{recipe.name}: privacy audit (owner-only)")
    report.add_to(owner)
    try:
        owner.save(out / "audit_report", include_owner_only=True)
    except ImportError:  # matplotlib missing: the JSON above holds every figure
        pass
    log(report.verdict)
    return report
