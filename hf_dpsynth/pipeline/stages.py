"""The stages of a run that read private data or charge the ledger, one typed function each.

Each stage either reuses its saved output (only with its charge: ``ctx.reuse``) or, when the
command may charge, runs its mechanism after charging the bound ledger; a command that never
charges (``card``, ``evaluate``) is refused instead.

Privacy: every mechanism charges before it runs (the bound ledger is on disk by then); an output
is recorded with the ids of the charges that paid for it (:func:`~hf_dpsynth.pipeline.outputs.record_output`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import ReusedOutputError
from hf_dpsynth.generation.io import load_synthetic, save_synthetic
from hf_dpsynth.pipeline.build import recipe_codec, recipe_lora, recipe_training_config
from hf_dpsynth.pipeline.context import RunContext
from hf_dpsynth.pipeline.data import prepare_recipe_data
from hf_dpsynth.pipeline.folder import RunState
from hf_dpsynth.pipeline.outputs import record_output
from hf_dpsynth.pipeline.recipe import Recipe

__all__ = ["Stage", "attach", "audit", "generation", "keywords", "label_histogram", "ledger", "prepare", "training"]


@dataclass(frozen=True)
class Stage:
    """One step of a run: its log title, whether the recipe has it, and the function that runs it."""

    title: str
    run: Callable[[RunContext], None]
    applies: Callable[[Recipe], bool] = lambda recipe: True


def _prepare(ctx: RunContext) -> None:
    """Read and prepare the private data (bounded, scrubbed, encoded); the run's state is written after."""
    from hf_dpsynth.pipeline.data import source_records

    recipe = ctx.recipe
    ctx.sources = source_records(recipe)  # before the data is read: the digests are of what is prepared
    ctx.state, ctx.recipe = RunState.load(ctx.folder.root, recipe)
    ctx.log(f"    {ctx.recipe.data.source} ({ctx.recipe.data.modality})")
    _, ctx.codec, ctx.prepared = prepare_recipe_data(ctx.recipe)
    ctx.preparation = ctx.prepared.report
    if ctx.state is None:
        ctx.state = RunState.create(ctx.folder.root, ctx.recipe, ctx.sources)
    atomic_write_json(ctx.folder.preparation, ctx.prepared.report.to_dict(include_owner_only=True))
    ctx.log(f"    {ctx.prepared.num_units:,} {ctx.recipe.privacy.unit}s (N, public)")


def _attach(ctx: RunContext) -> None:
    """An existing run, without reading the private data: its state, codec and saved preparation report
    (the data is prepared again only for a folder written before preparation.json existed)."""
    ctx.state, ctx.recipe = RunState.load(ctx.folder.root, ctx.recipe)  # the runner checked that there is one
    ctx.codec = recipe_codec(ctx.recipe)
    if ctx.folder.preparation.is_file():
        ctx.preparation = json.loads(ctx.folder.preparation.read_text(encoding="utf-8"))
    else:
        _, _, ctx.prepared = prepare_recipe_data(ctx.recipe)
        ctx.preparation = ctx.prepared.report


def _ledger(ctx: RunContext) -> None:
    """Open the run's ledger (bound to its file), or start one for a new run: never a fresh ledger
    beside outputs of earlier stages."""
    from hf_dpsynth.privacy import PrivacyLedger, default_delta

    path, p = ctx.folder.ledger_file, ctx.recipe.privacy
    if path.is_file():
        ctx.ledger = PrivacyLedger.open(path)  # bound: it saves itself inside every charge
        _check_opened_ledger(ctx)
        return
    if not ctx.allow_charges or ctx.state.started:
        raise ReusedOutputError(
            f"{ctx.folder.root} has no {path.name}, but its run state records stage(s) {ctx.state.started}: without "
            "the ledger that paid for their outputs, nothing this run released can be reported (a fresh ledger "
            f"would say ε ≈ 0). Restore {path.name}, or rerun the recipe into a new folder."
        )
    n = ctx.prepared.num_units
    delta = p.delta if p.delta is not None else default_delta(n)
    ledger = PrivacyLedger(epsilon=p.epsilon, delta=delta, privacy_unit=p.unit, num_units=n, accountant=p.accountant)
    ledger.plan(dict(p.shares))  # planned before it is first written: a saved ledger always holds its plan
    ctx.ledger = ledger.bind(path)


def _check_opened_ledger(ctx: RunContext) -> None:
    """The folder's ledger must be the recipe's: its budget, unit, plan and (when prepared) N."""
    from hf_dpsynth.errors import DPConfigError

    ledger, p = ctx.ledger, ctx.recipe.privacy
    plan = {name: stage.share for name, stage in (ledger.stage_plan or {}).items()}
    found = {"epsilon": ledger.epsilon, "privacy unit": ledger.privacy_unit, "shares": plan}
    wanted = {"epsilon": float(p.epsilon), "privacy unit": p.unit, "shares": {k: float(v) for k, v in p.shares.items()}}
    if ctx.prepared is not None:
        found["N"], wanted["N"] = ledger.num_units, ctx.prepared.num_units
    differing = [key for key in wanted if found[key] != wanted[key]]
    if differing:
        raise DPConfigError(
            f"{ctx.folder.ledger_file} is not this recipe's ledger: its {', '.join(differing)} "
            f"({', '.join(f'{k} {found[k]!r}' for k in differing)}) differ from the recipe's "
            f"({', '.join(f'{k} {wanted[k]!r}' for k in differing)}). Restore the run's own ledger, or rerun the "
            "recipe into a new folder."
        )


def _label_histogram(ctx: RunContext) -> None:
    """The DP label distribution the generation is conditioned on (Gaussian histogram, charged)."""
    from hf_dpsynth.data import dp_histograms
    from hf_dpsynth.data.statistics import DPHistogramRelease

    d, p, path = ctx.recipe.data, ctx.recipe.privacy, ctx.folder.label_histogram
    if path.is_file() and ctx.state.done("label_histogram"):
        ctx.reuse(path)
        ctx.labels = DPHistogramRelease.load(path)[d.label_column]
        ctx.reused.append("label_histogram")
    elif not ctx.allow_charges:
        raise ctx.refuse_charge("label_histogram")
    else:
        user = {"user_id_column": d.user_id_column, "max_examples_per_user": p.max_examples_per_user} if p.unit == "user" else {}
        ctx.state.mark("label_histogram", "charging")
        # On the prepared units (after the public drop, holdout and contribution rules), so N is the ledger's.
        release = dp_histograms(ctx.prepared.dataset, {d.label_column: list(d.labels)}, ledger=ctx.ledger,
                                stage="label_histogram", **user)
        release.save(path)
        record_output(path, ctx.ledger, ["label_histogram"])
        ctx.labels = release[d.label_column]
    ctx.state.mark("label_histogram", "done")
    ctx.outputs["label_histogram"] = ["DP label distribution (conditions the generation)"]


def _has_label_histogram(recipe: Recipe) -> bool:
    # The codec's conditions: tables carry their label among the columns (no condition), text and images a prefix.
    d = recipe.data
    return "label_histogram" in recipe.privacy.shares and bool(d.label_column and d.labels) and d.modality != "tabular"


def _keywords(ctx: RunContext) -> None:
    """DP keywords per label over the tokenizer's public vocabulary (Gaussian, charged; docs/ALGORITHMS.md §8)."""
    from hf_dpsynth.data.keywords import DPKeywords, KeywordVocabulary, dp_keywords

    d, kw, path = ctx.recipe.data, ctx.recipe.keywords, ctx.folder.keywords
    if path.is_file() and ctx.state.done("keywords"):
        ctx.reuse(path)
        ctx.keywords = DPKeywords.load(path)
        ctx.reused.append("keywords")
    elif not ctx.allow_charges:
        raise ctx.refuse_charge("keywords")
    else:
        if kw.vocabulary == "tokenizer":
            from hf_dpsynth.models import DEFAULT_MODEL_ID

            _, tok = ctx.model_and_tokenizer()
            name = DEFAULT_MODEL_ID if ctx.recipe.model.name == "default" else Path(ctx.recipe.model.name).name
            vocabulary = KeywordVocabulary.from_tokenizer(tok, min_length=kw.min_length,
                                                          skip_most_common=kw.skip_most_common, name=name)
        else:
            words = Path(kw.vocabulary).read_text(encoding="utf-8").split()
            vocabulary = KeywordVocabulary.from_words(words, source=f"declared public word list {Path(kw.vocabulary).name}")
        ctx.state.mark("keywords", "charging")
        # The prepared units' body texts (scrubbed, bounded): N is the ledger's.
        ctx.keywords = dp_keywords(ctx.prepared.dataset, text_column="completion", label_column=d.label_column,
                                   labels=list(d.labels), vocabulary=vocabulary, ledger=ctx.ledger, k=kw.k,
                                   threshold_sigmas=kw.threshold_sigmas, user_id_column=d.user_id_column)
        ctx.keywords.save(path)
        record_output(path, ctx.ledger, ["keywords"])
    ctx.state.mark("keywords", "done")
    released = ", ".join(f"{len(v)} for {label}" for label, v in ctx.keywords.keywords.items())
    ctx.log(f"    keywords released: {released}")
    ctx.outputs["keywords"] = ["DP keywords per label (condition the prompts)"]


def _is_adapter(recipe: Recipe) -> bool:
    return recipe.generation.method == "adapter_sampler"


def _training(ctx: RunContext) -> None:
    """DP-SGD LoRA fine-tuning (charged for its whole schedule before step 1), resumable from checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint

    from hf_dpsynth.training import DPSynthTrainer
    from hf_dpsynth.training.per_label import load_adapters

    out, adapter = ctx.folder.root, ctx.folder.adapter
    if ctx.state.done("generation") or not ctx.allow_charges:
        if not ctx.state.done("generation"):
            raise ctx.refuse_charge("generation")
        if adapter.is_dir():
            ctx.reuse(adapter)
            ctx.outputs["training"] = ["DP LoRA adapter"]
        return  # the synthetic data is saved: the adapter is not needed again
    model, tok = ctx.model_and_tokenizer()
    if adapter.is_dir() and ctx.state.done("training"):
        ctx.reuse(adapter)
        ctx.reused.append("training")
        ctx.adapter_model = load_adapters(model, adapter, len(ctx.recipe.data.labels) if ctx.recipe.lora.per_label else 0)
        ctx.outputs["training"] = ["DP LoRA adapter"]
        return
    t, prepared = ctx.recipe.training, ctx.prepared
    checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
    if checkpoint:
        ctx.log(f"    resuming from {Path(checkpoint).name}")
    per_label = {}
    if ctx.recipe.lora.per_label:  # one adapter per label, each divided by q times its DP count (never the real one)
        d, labels = ctx.recipe.data, ctx.labels
        per_label = {"adapter_per_label": d.label_column,
                     "label_counts": {v: labels.noisy_counts[labels.categories.index(v)] for v in d.labels}}
    args = recipe_training_config(
        ctx.recipe, output_dir=str(out), logical_batch_size=min(t.logical_batch_size, prepared.num_units), **per_label,
        logging_steps=max(1, t.max_steps // 4),
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500,
        disable_tqdm=False, resume_from_checkpoint=checkpoint, **prepared.training_kwargs(),
    )
    ctx.state.mark("training", "charging")
    trainer = DPSynthTrainer(model=model, args=args, train_dataset=prepared, processing_class=tok,
                             peft_config=recipe_lora(ctx.recipe, model), ledger=ctx.ledger)
    trainer.train(resume_from_checkpoint=checkpoint)
    tmp = out / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    record_output(adapter, ctx.ledger, ["training"])
    ctx.state.mark("training", "done")
    ctx.adapter_model = trainer.model
    ctx.outputs["training"] = ["DP LoRA adapter"]
    if ctx.stop_after == "training":
        ctx.log(f"adapter: {adapter} (ε spent so far {ctx.ledger.epsilon_spent():.4g})")


_GENERATION_STAGE = {"adapter_sampler": "training", "prompted": "keywords", "private_prediction": "private_prediction"}


def _generation(ctx: RunContext) -> None:
    """The synthetic records: the DP adapter or the base model sampled with DP prompts (post-processing),
    or private prediction (charged)."""
    g, path = ctx.recipe.generation, ctx.folder.synthetic
    stage = _GENERATION_STAGE[g.method]
    if path.is_dir() and ctx.state.done("generation"):
        ctx.reuse(path)
        ctx.synthetic = load_synthetic(path)
        ctx.reused.append("generation")
    elif not ctx.allow_charges:
        raise ctx.refuse_charge("private_prediction" if g.method == "private_prediction" else "generation")
    elif g.method in ("adapter_sampler", "prompted"):
        from hf_dpsynth.generation import AdapterSynthesizer

        base, tok = ctx.model_and_tokenizer()
        model = ctx.adapter_model if g.method == "adapter_sampler" else base
        sampler = AdapterSynthesizer(model, tok, codec=ctx.codec, guided=g.guided, **ctx.sampler_options(keywords=True))
        ctx.synthetic = sampler.generate(g.num_records, seed=0, progress=ctx.progress)
        save_synthetic(ctx.synthetic, path)
        paid = ["training"] if g.method == "adapter_sampler" else []
        record_output(path, ctx.ledger, [*paid, *ctx.label_stages, *ctx.keyword_stages])
        ctx.state.mark("generation", "done")
    else:
        from hf_dpsynth.generation import PrivatePredictionSynthesizer, SparseVectorGate

        model, tok = ctx.model_and_tokenizer()
        counts, n = ctx.labels, ctx.prepared.num_units
        pp = PrivatePredictionSynthesizer(
            model, tok, ctx.prepared, codec=ctx.codec, ledger=ctx.ledger, expected_batch_size=g.expected_batch_size,
            label_counts=counts, batches_per_label=None if counts is not None else (n // g.expected_batch_size),
            clip=g.clip, temperature=g.pp_temperature, max_private_tokens=g.max_private_tokens,
            max_new_tokens=g.max_new_tokens if g.svt_threshold is not None else None,
            svt=SparseVectorGate(g.svt_threshold, g.svt_noise) if g.svt_threshold is not None else None,
            public_prompt=g.public_prompt, clip_against_public=g.pp_clip_against_public, top_k=g.pp_top_k,
        )
        ctx.state.mark("generation", "charging")
        ctx.synthetic = pp.generate(progress=ctx.progress)
        save_synthetic(ctx.synthetic, path)
        record_output(path, ctx.ledger, ["private_prediction", *ctx.label_stages])
        ctx.state.mark("generation", "done")
    ctx.outputs.setdefault(stage, []).append("synthetic dataset")


def _audit(ctx: RunContext) -> None:
    """The charged audit (recipe validation allows one only with training): run once, then reused."""
    from hf_dpsynth.pipeline.audit_run import audit_recipe, load_audit

    folder = ctx.folder.audit
    ctx.outputs["audit"] = ["privacy audit result"]
    if ctx.state.done("audit") and (folder / "audit.json").is_file():
        ctx.reuse(folder)
        ctx.reused.append("audit")
        ctx.audit = load_audit(folder)
        return
    if not ctx.allow_charges:
        raise ctx.refuse_charge("audit")
    ctx.state.mark("audit", "charging")
    prepared = (None, ctx.codec, ctx.prepared)
    ctx.audit = audit_recipe(ctx.recipe, output_dir=folder, log=lambda m: ctx.log("    " + m), ledger=ctx.ledger,
                             prepared_data=prepared)
    record_output(folder, ctx.ledger, ["audit"])
    ctx.state.mark("audit", "done")


prepare = Stage("data", _prepare)
attach = Stage("the run folder (no private data read)", _attach)
ledger = Stage("privacy ledger", _ledger)
label_histogram = Stage("DP label histogram", _label_histogram, _has_label_histogram)
keywords = Stage("DP keywords per label", _keywords, lambda recipe: "keywords" in recipe.privacy.shares)
training = Stage("DP fine-tuning (charged for the whole schedule before step 1)", _training, _is_adapter)
generation = Stage("synthetic records", _generation)
audit = Stage("privacy audit (charged to the release ledger, stage 'audit')",
              _audit, lambda recipe: "audit" in recipe.privacy.shares)
