"""The stages of a run after its mechanisms: the public baseline, the evaluation, the release check
(a refuted audit stops the release), the cards and the summary.

Privacy: nothing here charges. The baseline uses only the DP label release; the evaluation's
metrics on held-out real data are owner-only (labelled so in every file); the cards carry only
shareable values unless the owner asks for a separate owner-only render.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from hf_dpsynth._io import atomic_write_json, atomic_write_text
from hf_dpsynth._markdown import format_bound
from hf_dpsynth.errors import ClaimRefutedError
from hf_dpsynth.generation.io import load_synthetic, save_synthetic
from hf_dpsynth.pipeline.context import RunContext, RunSummary
from hf_dpsynth.pipeline.data import load_test_data
from hf_dpsynth.pipeline.outputs import record_output
from hf_dpsynth.pipeline.recipe import Recipe
from hf_dpsynth.pipeline.stages import Stage

__all__ = ["PUBLIC_MODEL_DP_LABELS", "PUBLIC_ONLY_SETTING", "cards", "dp_setting", "evaluation", "public_baseline",
           "public_baseline_setting", "release_check", "release_owner_checks", "saved_metrics", "summary"]

PUBLIC_ONLY_SETTING = "public-only (ε = 0)"
#: The baseline's name when its labels come from the DP label histogram (it then rests on that release).
PUBLIC_MODEL_DP_LABELS = "public model + DP label distribution"


def dp_setting(ledger: Any) -> str:
    """The release's setting label in metric tables: its total ε, rounded up (never understated)."""
    return f"ε = {format_bound(ledger.epsilon_spent())}"


def public_baseline_setting(ledger: Any, label_stages: list[str]) -> str:
    """The baseline's name: public-only when it used nothing private, else what DP release it rests on."""
    if not label_stages:
        return PUBLIC_ONLY_SETTING
    eps = math.fsum(ledger.epsilon_spent(s) for s in label_stages)
    return f"{PUBLIC_MODEL_DP_LABELS} (ε = {format_bound(eps)})"


def _public_baseline(ctx: RunContext) -> None:
    """The base model prompted with the codec's prefixes and no private record.

    Privacy: the only data-dependent input is the label distribution, the DP release already
    charged (then the baseline is named after it, not "public-only"); the base model never sees a
    private record.
    """
    from hf_dpsynth.generation import AdapterSynthesizer

    path, g = ctx.folder.public_only, ctx.recipe.generation
    key = public_baseline_setting(ctx.ledger, ctx.label_stages)
    if path.is_dir() and ctx.state.done("public_only"):
        ctx.reuse(path)
        ctx.references[key] = load_synthetic(path)
        return
    ctx.log("    the base model, no private record"
            + (" (labels drawn from the DP label distribution)" if ctx.label_stages else " (ε = 0)"))
    model, tok = ctx.model_and_tokenizer()
    # PEFT put the DP adapter's layers into the base model in place: the baseline samples with them switched off.
    adapter = ctx.adapter_model
    base = adapter.disable_adapter() if adapter is not None else contextlib.nullcontext()
    with base:
        # The same public prompt as the DP run, without its DP keywords (their field stays empty).
        sampler = AdapterSynthesizer(adapter if adapter is not None else model, tok, codec=ctx.codec,
                                     **ctx.sampler_options(keywords=False))
        public = sampler.generate(len(ctx.synthetic) or g.num_records, seed=1, progress=ctx.progress)
    save_synthetic(public, path)
    record_output(path, ctx.ledger, ctx.label_stages)
    ctx.state.mark("public_only", "done")
    ctx.references[key] = public


def _evaluation(ctx: RunContext) -> None:
    """Utility and fidelity against held-out real data (owner-only: not DP); saved for the cards."""
    from hf_dpsynth.evaluation import Report, evaluate

    recipe, folder, synthetic, ledger = ctx.recipe, ctx.folder, ctx.synthetic, ctx.ledger
    test = load_test_data(recipe)
    if len(synthetic) == 0:
        ctx.log("    no valid synthetic record: nothing to evaluate")
        ctx.headline.update({"evaluation": "no valid synthetic record"})
        return
    try:
        usable = {k: v for k, v in ctx.references.items() if len(v) > 0}
        result = evaluate(synthetic, test, codec=ctx.codec, embeddings=recipe.evaluation.embeddings,
                          setting=dp_setting(ledger), references=usable or None)
    except Exception as exc:  # e.g. a single class among few synthetic records
        ctx.log(f"    evaluation skipped: {exc}")
        ctx.headline.update({"evaluation": f"skipped ({type(exc).__name__})"})
        return
    report = Report(f"{recipe.name}: synthetic data report", privacy=ledger.report().to_dict())
    report.extend(result.metrics)
    report.save(folder.report)
    report.save(folder.report_owner, include_owner_only=True)
    atomic_write_json(folder.metrics, {"owner_only": "some metrics were computed on private data without DP",
                                       "metrics": [m.to_dict() for m in result.metrics]})
    ctx.metrics = list(result.metrics)
    headline = ctx.headline
    if result.primary_metric:
        headline[f"{result.primary_metric} (owner-only)"] = result.value(result.primary_metric)
        for setting in usable:
            try:
                headline[f"{result.primary_metric}, {setting} (owner-only)"] = result.value(result.primary_metric, setting)
            except KeyError:
                pass
    if result.beats_public_only is not None:
        headline[f"DP beat the public baseline ({result.primary_metric}, owner-only)"] = result.beats_public_only
    # Fidelity to the real data (text with embeddings): how real the records look and how much of the
    # real data they cover, for the DP run and each reference.
    for metric in result.metrics:
        if metric.name.startswith(("Fréchet distance", "k-NN precision", "k-NN recall")):
            where = "" if metric.setting == result.setting else f", {metric.setting}"
            headline[f"{metric.name}{where} (owner-only)"] = metric.value
    headline["report"] = str(folder.report / "report.md")


def _saved_metrics(ctx: RunContext) -> None:
    """The metrics the run's evaluation saved (``hf-dpsynth card`` re-renders; it evaluates nothing)."""
    from hf_dpsynth.evaluation.metric import Metric

    if ctx.folder.metrics.is_file():
        data = json.loads(ctx.folder.metrics.read_text(encoding="utf-8"))
        ctx.metrics = [Metric.from_dict(m) for m in data["metrics"]]


def _summary_of(ctx: RunContext) -> RunSummary:
    from hf_dpsynth.generation import generation_info

    info, ledger = generation_info(ctx.synthetic), ctx.ledger
    return RunSummary(
        output_dir=str(ctx.folder.root), epsilon_spent=ledger.epsilon_spent(), delta=ledger.delta,
        stages={s: ledger.epsilon_spent(s) for s in (ledger.stage_plan or {})},
        num_generated=info["num_generated"], num_valid=info["num_valid"],
        invalid_rate=1 - info["num_valid"] / info["num_generated"] if info["num_generated"] else None,
        headline=dict(ctx.headline), reused=list(ctx.reused),
    )


def _release_check(ctx: RunContext) -> None:
    """A charged audit that refutes the claim (ε̂ > ε) stops the release, unless the recipe overrides it."""
    audit, folder = ctx.audit, ctx.folder
    if audit is None or not audit.refuted or ctx.recipe.audit.publish_if_refuted:
        return
    atomic_write_json(folder.summary, {**_summary_of(ctx).__dict__, "release": "refused: the charged audit refuted ε"})
    for card in folder.cards:
        card.unlink(missing_ok=True)  # an earlier card of this release would not show the refutation
    raise ClaimRefutedError(
        f"{audit.main_verdict} No card was written (earlier ones were removed), and the release must not be "
        "published. Find the bug (or the privacy claim that is wrong); set audit.publish_if_refuted: true only to "
        f"publish it anyway, and the cards then say that ε̂ > ε. The audit is in {folder.audit}."
    )


def release_owner_checks(recipe: Recipe) -> list[str]:
    """The owner-side checks the push applies to this run's dataset (docs/DP_CORRECTNESS.md row 29): the
    verbatim gate always, the canary gate when the recipe's audit inserted canaries."""
    from hf_dpsynth.hub.gates import CANARY_OWNER_CHECK, VERBATIM_OWNER_CHECK

    return [VERBATIM_OWNER_CHECK] + ([CANARY_OWNER_CHECK] if "audit" in recipe.privacy.shares else [])


def selection_notes(recipe: Recipe) -> list[str]:
    """The cards' statement of the recipe's declared selection (``privacy.configurations_tried``)."""
    p = recipe.privacy
    if p.configurations_tried <= 1:
        return []
    return [f"This recipe's settings were chosen among {p.configurations_tried} configurations compared on "
            f"{p.chosen_on.strip().rstrip('.')}. Only this run is accounted: the runs it was chosen from are outside "
            "the guarantee (a choice made on private data reveals something about it)."]


def _cards(ctx: RunContext) -> None:
    """The DP dataset card (``README.md``) and, for adapter recipes, the adapter card; with
    ``include_owner_only`` also their owner-only renders (:data:`~hf_dpsynth.pipeline.folder.OWNER_CARDS`)."""
    from hf_dpsynth.generation import generation_info
    from hf_dpsynth.hub.cards import render_adapter_card, render_dataset_card
    from hf_dpsynth.models import DEFAULT_MODEL_NAME

    recipe, folder, synthetic, audit = ctx.recipe, ctx.folder, ctx.synthetic, ctx.audit
    base = None if recipe.model.name in ("default", DEFAULT_MODEL_NAME) else recipe.model.name
    common = {"ledger_report": ctx.ledger, "metrics": ctx.metrics, "audit": audit, "outputs": ctx.outputs,
              "notes": selection_notes(recipe),
              "refuted_audit_override": bool(audit is not None and audit.refuted and recipe.audit.publish_if_refuted)}
    written = []
    for owner in (False, True) if ctx.include_owner_only else (False,):
        if len(synthetic) == 0:
            ctx.log("    no valid synthetic record: no dataset card (there is nothing to publish)")
        else:
            path = folder.owner_card("dataset") if owner else folder.dataset_card
            atomic_write_text(path, str(render_dataset_card(
                num_records=len(synthetic), codec_info=ctx.codec.to_dict(), generator_info=generation_info(synthetic),
                pretty_name=f"{recipe.name} (synthetic, DP)", preparation=ctx.preparation, include_owner_only=owner,
                owner_checks=release_owner_checks(recipe), **common,
            )))
            written.append(path)
        if folder.adapter.is_dir() and base == "tiny":
            ctx.log("    (adapter card skipped: a random tiny model has no Hub id to name as base_model)")
        elif folder.adapter.is_dir():
            path = folder.owner_card("adapter") if owner else folder.adapter_card
            atomic_write_text(path, str(render_adapter_card(base_model=base, include_owner_only=owner, **common)))
            written.append(path)
    if written:
        ctx.log("    cards: " + ", ".join(map(str, written)) + (" (the .owner.md files are owner-only: never publish "
                                                                 "them)" if ctx.include_owner_only else ""))


def _summary(ctx: RunContext) -> None:
    result = _summary_of(ctx)
    atomic_write_json(ctx.folder.summary, {**result.__dict__})
    ctx.log("\n" + result.table())
    ctx.summary = result


public_baseline = Stage("public baseline: the base model, no private record", _public_baseline,
                        lambda recipe: recipe.evaluation.enabled and recipe.evaluation.public_only_baseline)
evaluation = Stage("evaluation against held-out real data (owner-only: not DP)", _evaluation,
                   lambda recipe: recipe.evaluation.enabled)
saved_metrics = Stage("the saved evaluation metrics", _saved_metrics)
release_check = Stage("release check (a refuted audit stops the release)", _release_check,
                      lambda recipe: "audit" in recipe.privacy.shares)
cards = Stage("cards", _cards)
summary = Stage("summary", _summary)
