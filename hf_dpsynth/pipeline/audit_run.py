"""The one-run audit of a recipe's DP training, as its own training run.

Canaries are inserted into the prepared data and the recipe's training is repeated with the
release's hyper-parameters — the noise multiplier σ the release's training stage was charged with
(or would be), the same sampling probability q and steps, the same clip — so the audit tests the
mechanism that produced the release, without canaries ever entering the release. The claimed ε is
that training stage's.

Two ways to run it:

* ``hf-dpsynth audit RECIPE``: beside the run, uncharged; its results are owner-only.
* a recipe whose ``privacy.shares`` has an ``audit`` entry: ``hf-dpsynth run`` charges the audit's
  DP run to the release ledger (stage ``audit``) before it trains, so its result may be published
  and the cards show it. Its controls (a run without DP, and a DP run without canaries) also train
  on the private data and are not charged: they stay owner-only, and so does the part of the
  verdict that rests on them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.pipeline.recipe import Recipe

__all__ = ["audit_canaries", "audit_recipe", "load_audit"]


def audit_recipe(recipe: Recipe, *, output_dir: str | os.PathLike[str], log: Any = print, ledger: Any = None,
                 prepared_data: Any = None) -> Any:
    """Run the audit of ``recipe`` into ``output_dir`` (``audit.json``, ``audit_report/``); returns the AuditReport.

    With ``ledger`` (the release ledger, which already holds the release's training charge and
    plans an ``audit`` share, bound to its file), the audit's DP run is charged to stage ``audit``
    before it trains (the bound ledger saves itself inside the charge); the results may then be shared.
    ``prepared_data``: what :func:`prepare_recipe_data` returned, when the caller has it already.
    """

    from hf_dpsynth.audit import AuditConfig, run_audit
    from hf_dpsynth.evaluation import Report
    from hf_dpsynth.pipeline.data import prepare_recipe_data
    from hf_dpsynth.pipeline.build import load_recipe_model, recipe_lora, recipe_training_config
    from hf_dpsynth.privacy import calibrate_noise_multiplier, default_delta
    from hf_dpsynth.training import DPSynthTrainer

    if recipe.generation.method != "adapter_sampler":
        raise DPConfigError("the audit repeats a recipe's DP training; this recipe has none (private prediction).")
    if recipe.lora.per_label:
        raise DPConfigError("the audit does not yet repeat a training with one adapter per label (lora.per_label): it "
                            "would audit a single adapter instead. Audit the recipe with lora.per_label: false.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    p, t, a = recipe.privacy, recipe.training, recipe.audit
    _, codec, prepared = prepared_data if prepared_data is not None else prepare_recipe_data(recipe)
    n = prepared.num_units
    claimed = p.epsilon * float(p.shares.get("training", 1.0))
    batch = min(t.logical_batch_size, n)
    if ledger is not None:
        trained = [c for c in ledger.charges if c.stage == "training"]
        if not trained or ledger.path is None:
            raise DPConfigError("a charged audit repeats the release's charged training: train first, with the "
                                "release ledger bound to its file (PrivacyLedger.open or bind).")
        delta = ledger.delta
        sigma = float(trained[-1].metadata["noise_multiplier"])  # exactly the σ the release was charged with
        claimed = ledger.epsilon_spent("training")
    else:
        delta = p.delta if p.delta is not None else default_delta(n)
        # The release's σ: calibrated for its training stage's share of ε on the real data's N and schedule.
        sigma = calibrate_noise_multiplier(target_epsilon=claimed, target_delta=delta, sampling_probability=batch / n,
                                           num_steps=t.max_steps, accountant=p.accountant or "pld")
    log(f"audit: {a.num_canaries} canaries, claimed ε = {claimed:.3g} (the training stage), σ = {sigma:.4g}"
        + (" — charged to the release ledger" if ledger is not None else " — owner-only"))
    base_rows = len(prepared.dataset)

    def train(dataset: Any, private: bool) -> Any:
        model, tok = load_recipe_model(recipe)
        units = len(dataset)
        canaries = len(dataset) - base_rows  # each inserted canary is a unit of its own (one row, or a new user)
        charged = ledger is not None and private and canaries > 0  # the main run; the controls stay owner-only
        # The release's q = B / N: with N + canaries units the batch grows in proportion (rounded down, so
        # the audit's q never exceeds the release's and its charge never exceeds the training stage's).
        audit_batch = max(1, (batch * (n + canaries)) // n) if canaries > 0 else min(batch, units)
        args = recipe_training_config(
            recipe, output_dir=tempfile.mkdtemp(prefix="hf_dpsynth_audit_"),
            logical_batch_size=audit_batch, save_strategy="no", disable_tqdm=True,
            noise_multiplier=sigma if private else 0.0,
            target_delta=None if charged else min(delta, 0.5 / units),
            **({} if p.unit == "example" else prepared.training_kwargs()),
        )
        charge = {"ledger": ledger, "ledger_stage": "audit", "public_units": canaries} if charged else {}
        trainer = DPSynthTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                 peft_config=recipe_lora(recipe, model), **charge)
        trainer.train()  # a charged run: the bound release ledger saved its charge before the first step
        return trainer.model

    config = AuditConfig(delta=delta, num_canaries=a.num_canaries, guesses=a.guesses, significance=a.significance,
                         seed=a.seed, suffix_words=a.suffix_words)
    _, tok = load_recipe_model(recipe)
    report = run_audit(train, prepared, codec=codec, claimed_epsilon=claimed, config=config, tokenizer=tok,
                       controls=a.controls, ledger=ledger)
    atomic_write_json(out / "audit.json", {
        "owner_only": "the controls (and, unless charged, the whole audit) trained on private data: "
                      "publish only what the card shows",
        **report.to_dict(), "verdict": report.verdict,
    })
    owner = Report(f"{recipe.name}: privacy audit (owner-only)")
    report.add_to(owner)
    try:
        owner.save(out / "audit_report", include_owner_only=True)
    except ImportError:  # matplotlib missing: the JSON above holds every figure
        pass
    log(report.verdict)
    return report


def load_audit(folder: str | os.PathLike[str]) -> Any:
    """The AuditReport saved by :func:`audit_recipe` in ``folder``."""
    import json

    from hf_dpsynth.audit import AuditReport

    data = json.loads((Path(folder) / "audit.json").read_text(encoding="utf-8"))
    data.pop("owner_only", None)
    data.pop("verdict", None)  # derived
    return AuditReport.from_dict(data)


def audit_canaries(recipe: Recipe, codec: Any) -> list[str]:
    """The texts of the canaries a recipe's audit inserts (made again from its pre-registered design:
    the same seed gives the same canaries), for the push's canary gate (owner-side)."""
    from hf_dpsynth.audit.canaries import make_canaries

    a = recipe.audit
    canaries = make_canaries(codec, a.num_canaries, seed=a.seed, suffix_words=a.suffix_words)
    return [codec.encode_body(record, order_seed=None) for record in canaries.records]
