"""``hf-dpsynth run``: a recipe end to end, resumable, with one ledger persisted before each mechanism.

Output folder layout (``recipe.output.dir``):

```
run_state.json          the recipe's fingerprint and each stage's status (a folder holds one run)
privacy_ledger.json     every charge of the release; saved after each charge, before its mechanism
label_histogram.json    the DP label distribution (reused on rerun; lost → charged again)
adapter/                the DP LoRA adapter (adapter_sampler recipes)
checkpoint-*/           training checkpoints (PRIVATE: secret seeds; never uploaded)
synthetic/              the synthetic dataset (data.parquet + generation_info.json)
public_only/            the public-only baseline (base model, no private data; evaluation option)
report/                 the shareable report (Markdown, JSON, plots)
report_owner/           the owner-only report (metrics on private data; do not publish)
summary.json            ε per stage, records, invalid rate, headline utility
README.md               the DP dataset card (adapter/README.md: the DP adapter card)
```

Resuming: a stage whose output was saved is reused; a training stage resumes from its last
checkpoint (a continuation: the ledger already holds its charge); a stage whose output and
checkpoint are both lost runs again and is charged again — never re-run for free.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth._markdown import format_bound
from hf_dpsynth.errors import ClaimRefutedError, DPConfigError, ReusedOutputError
from hf_dpsynth.generation.io import load_synthetic, save_synthetic
from hf_dpsynth.pipeline.build import load_recipe_model, recipe_lora, recipe_training_config
from hf_dpsynth.pipeline.data import check_sources, load_test_data, prepare_recipe_data, source_records
from hf_dpsynth.pipeline.outputs import LOCK_FILE, RunLock, check_reused_output, record_output
from hf_dpsynth.pipeline.recipe import Recipe
from hf_dpsynth.privacy.ledger import LEDGER_FILE

__all__ = ["RunSummary", "dp_setting", "load_run_recipe", "public_baseline_setting", "run_recipe"]

STATE_FILE = "run_state.json"
PUBLIC_ONLY_SETTING = "public-only (ε = 0)"
#: The baseline's name when its labels come from the DP label histogram (it then rests on that release).
PUBLIC_MODEL_DP_LABELS = "public model + DP label distribution"
AUDIT_DIR = "audit"  # a charged audit's results (audit.json holds owner-only control results too)


@dataclass
class RunSummary:
    """What a run produced: ε per stage (shareable), records, invalid rate, headline utility."""

    output_dir: str
    epsilon_spent: float
    delta: float
    stages: dict[str, float] = field(default_factory=dict)
    num_generated: int | None = None
    num_valid: int | None = None
    invalid_rate: float | None = None
    headline: dict[str, Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [("stage", "ε spent")] + [(k, format_bound(v)) for k, v in self.stages.items()]
        rows.append(("total", f"{format_bound(self.epsilon_spent)} (δ = {format_bound(self.delta)})"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b}" for a, b in rows]
        if self.num_generated is not None:
            lines.append(f"records: {self.num_valid} valid of {self.num_generated} generated "
                         f"(invalid rate {self.invalid_rate:.1%})")
        for name, value in self.headline.items():
            lines.append(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
        if self.reused:
            lines.append("reused from an earlier run (not re-run, not re-charged): " + ", ".join(self.reused))
        return "\n".join(lines)


class _State:
    """``run_state.json``: the recipe's fingerprint, the files it read (path and content digest) and
    each stage's status. Written once the data is prepared, so a data error claims no folder."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def load(cls, out: Path, recipe: Recipe) -> tuple[_State | None, Recipe]:
        """The folder's state (None for a new run) and the recipe reading the files the run recorded."""
        path = out / STATE_FILE
        if not path.is_file():
            return None, recipe
        data = json.loads(path.read_text(encoding="utf-8"))
        fingerprint = recipe.fingerprint()
        if data.get("fingerprint") != fingerprint:
            raise DPConfigError(
                f"{out} holds a different run (recipe {data.get('name')!r}, fingerprint {data.get('fingerprint')}); "
                f"this recipe's fingerprint is {fingerprint}. Use another output folder rather than mix two runs."
            )
        return cls(path, data), check_sources(recipe, data.get("sources", {}), where=f"the run in {out}")

    @classmethod
    def create(cls, out: Path, recipe: Recipe, sources: dict[str, Any]) -> _State:
        out.mkdir(parents=True, exist_ok=True)
        state = cls(out / STATE_FILE, {"name": recipe.name, "fingerprint": recipe.fingerprint(),
                                       "recipe": recipe.to_dict(), "sources": sources, "stages": {}})
        state.save()
        return state

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage) == "done"

    def mark(self, stage: str, status: str) -> None:
        self.data["stages"][stage] = status
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def load_run_recipe(folder: str | os.PathLike[str]) -> Recipe:
    """The recipe a run folder was produced with (from its run_state.json)."""
    from hf_dpsynth.pipeline.recipe import load_recipe

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise DPConfigError(f"{folder} holds no run (no {STATE_FILE}); give the output folder of `hf-dpsynth run`.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if "recipe" not in data:
        raise DPConfigError(f"{path} predates recipe recording; rerun the recipe into a new folder.")
    # The files the run read, wherever this command runs from; refused when one changed.
    return check_sources(load_recipe(data["recipe"]), data.get("sources", {}), where=f"the run in {folder}")


def run_recipe(recipe: Recipe, *, output_dir: str | os.PathLike[str] | None = None, progress: bool = True,
               log: Callable[[str], None] = print, stop_after: str | None = None,
               include_owner_only_in_cards: bool = False, allow_charges: bool = True) -> RunSummary | None:
    """Run ``recipe`` (resuming whatever an earlier run in the same folder finished).

    ``stop_after="training"`` stops once the adapter is saved (``hf-dpsynth train``); the
    returned summary is then None. ``include_owner_only_in_cards`` also renders owner-only cards
    (``README.owner.md``, ``adapter.README.owner.md``: never published); ``README.md`` stays
    shareable. ``allow_charges=False`` (``hf-dpsynth evaluate`` and ``card``) never charges: a
    stage that would have to run a mechanism is refused instead.

    Privacy: every reused output is matched to its charge in the loaded ledger (see
    :mod:`hf_dpsynth.pipeline.outputs`); one process at a time uses a run folder.
    """
    if stop_after not in (None, "training"):
        raise DPConfigError(f"stop_after must be None or 'training'; got {stop_after!r}.")
    if stop_after == "training" and recipe.generation.method != "adapter_sampler":
        raise DPConfigError("this recipe has no training stage (its generator is private prediction).")
    out = Path(output_dir or recipe.output.dir).resolve()
    if not allow_charges and not (out / STATE_FILE).is_file():
        raise DPConfigError(f"{out} holds no run ({STATE_FILE} is missing): run `hf-dpsynth run` first.")
    _check_new_folder(out)
    with RunLock(out):
        return _run_locked(recipe, out, progress=progress, log=log, stop_after=stop_after,
                           include_owner_only=include_owner_only_in_cards, allow_charges=allow_charges)


def _check_new_folder(out: Path) -> None:
    if (out / STATE_FILE).is_file() or not out.exists():
        return
    if any(p.name != LOCK_FILE for p in out.iterdir()):
        raise DPConfigError(f"{out} is not empty and holds no run state: choose an empty or new output folder.")


def _refuse_charge(stage: str, out: Path) -> DPConfigError:
    return DPConfigError(
        f"stage {stage!r} of the run in {out} has not finished, and this command never charges the privacy budget: "
        f"run `hf-dpsynth run` on the recipe (output folder {out}) first."
    )


def _run_locked(recipe: Recipe, out: Path, *, progress: bool, log: Callable[[str], None], stop_after: str | None,
                include_owner_only: bool, allow_charges: bool) -> RunSummary | None:
    from hf_dpsynth.data import dp_histograms
    from hf_dpsynth.data.statistics import DPHistogramRelease
    from hf_dpsynth.privacy import PrivacyLedger, default_delta

    sources = source_records(recipe)  # before the data is read: the digests are of what is prepared
    state, recipe = _State.load(out, recipe)
    summary_reused: list[str] = []

    log(f"[1] data: {recipe.data.source} ({recipe.data.modality})")
    data, codec, prepared = prepare_recipe_data(recipe)
    if state is None:
        state = _State.create(out, recipe, sources)
    d, p = recipe.data, recipe.privacy
    n = prepared.num_units
    log(f"    {n:,} {p.unit}s (N, public)")

    ledger_path = out / LEDGER_FILE
    if ledger_path.is_file():
        ledger = PrivacyLedger.open(ledger_path)  # bound: it saves itself inside every charge
    elif not allow_charges or state.data["stages"]:
        started = sorted(state.data["stages"])
        raise ReusedOutputError(
            f"{out} has no {LEDGER_FILE}, but its run state records stage(s) {started}: without the ledger that "
            "paid for their outputs, nothing this run released can be reported (a fresh ledger would say ε ≈ 0). "
            f"Restore {LEDGER_FILE}, or rerun the recipe into a new folder."
        )
    else:
        delta = p.delta if p.delta is not None else default_delta(n)
        ledger = PrivacyLedger(epsilon=p.epsilon, delta=delta, privacy_unit=p.unit, num_units=n, accountant=p.accountant)
        ledger.bind(ledger_path).plan(dict(p.shares))  # bound: it saves itself inside every charge

    def reuse(path: Path) -> None:
        check_reused_output(path, ledger, ledger_path=ledger_path)

    outputs: dict[str, list[str]] = {}  # stage → the outputs it released (for the cards)

    # -- DP label histogram ---------------------------------------------------------------------
    labels = None
    hist_path = out / "label_histogram.json"
    if "label_histogram" in p.shares and codec.conditions:
        if hist_path.is_file() and state.done("label_histogram"):
            reuse(hist_path)
            labels = DPHistogramRelease.load(hist_path)[d.label_column]
            summary_reused.append("label_histogram")
        elif not allow_charges:
            raise _refuse_charge("label_histogram", out)
        else:
            log("[2] DP label histogram")
            release_kwargs = {"user_id_column": d.user_id_column, "max_examples_per_user": p.max_examples_per_user} if p.unit == "user" else {}
            state.mark("label_histogram", "charging")
            # On the prepared units (after the public drop, holdout and contribution rules), so N is the ledger's.
            release = dp_histograms(prepared.dataset, {d.label_column: list(d.labels)}, ledger=ledger, stage="label_histogram",
                                    **release_kwargs)
            release.save(hist_path)
            record_output(hist_path, ledger, ["label_histogram"])
            labels = release[d.label_column]
        state.mark("label_histogram", "done")
        outputs["label_histogram"] = ["DP label distribution (conditions the generation)"]
    label_stages = ["label_histogram"] if labels is not None else []

    model, tok = load_recipe_model(recipe)
    synthetic_path = out / "synthetic"
    g = recipe.generation
    generator_stage = "training" if g.method == "adapter_sampler" else "private_prediction"
    if synthetic_path.is_dir() and state.done("generation"):
        reuse(synthetic_path)
        synthetic = load_synthetic(synthetic_path)
        summary_reused.append("generation")
        if g.method == "adapter_sampler" and (out / "adapter").is_dir():
            reuse(out / "adapter")
    elif not allow_charges:
        raise _refuse_charge("generation" if g.method == "adapter_sampler" or state.done("training") else generator_stage, out)
    elif g.method == "adapter_sampler":
        from hf_dpsynth.generation import AdapterSynthesizer

        model = _train(recipe, out, state, model, tok, prepared, ledger, summary_reused, log, reuse)
        if stop_after == "training":
            log(f"adapter: {out / 'adapter'} (ε spent so far {ledger.epsilon_spent():.4g})")
            return None
        log("[4] sampling the DP adapter (post-processing)")
        sampler = AdapterSynthesizer(model, tok, codec=codec, conditioning=labels, batch_size=g.batch_size,
                                     max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                     guided=g.guided)
        synthetic = sampler.generate(g.num_records, seed=0, progress=progress)
        save_synthetic(synthetic, synthetic_path)
        record_output(synthetic_path, ledger, ["training", *label_stages])
        state.mark("generation", "done")
    else:
        from hf_dpsynth.generation import PrivatePredictionSynthesizer, SparseVectorGate

        log("[3] private prediction (charged once, before generation)")
        counts = labels if labels is not None else None
        pp = PrivatePredictionSynthesizer(
            model, tok, prepared, codec=codec, ledger=ledger, expected_batch_size=g.expected_batch_size,
            label_counts=counts, batches_per_label=None if counts is not None else (n // g.expected_batch_size),
            clip=g.clip, temperature=g.pp_temperature, max_private_tokens=g.max_private_tokens,
            max_new_tokens=g.max_new_tokens if g.svt_threshold is not None else None,
            svt=SparseVectorGate(g.svt_threshold, g.svt_noise) if g.svt_threshold is not None else None,
            public_prompt=g.public_prompt,
        )
        state.mark("generation", "charging")
        synthetic = pp.generate(progress=progress)
        save_synthetic(synthetic, synthetic_path)
        record_output(synthetic_path, ledger, ["private_prediction", *label_stages])
        state.mark("generation", "done")
    if (out / "adapter").is_dir():
        outputs["training"] = ["DP LoRA adapter"]
    outputs.setdefault(generator_stage, []).append("synthetic dataset")

    # A charged audit (recipe validation allows one only with training): run once, then reused.
    audit = None
    if "audit" in p.shares:
        audit = _charged_audit(recipe, out, state, ledger, (data, codec, prepared), summary_reused, log, reuse,
                               allow_charges)
        outputs["audit"] = ["privacy audit result"]

    from hf_dpsynth.generation import generation_info

    info = generation_info(synthetic)
    summary = RunSummary(
        output_dir=str(out), epsilon_spent=ledger.epsilon_spent(), delta=ledger.delta,
        stages={s: ledger.epsilon_spent(s) for s in (ledger.stage_plan or {})},
        num_generated=info["num_generated"], num_valid=info["num_valid"],
        invalid_rate=1 - info["num_valid"] / info["num_generated"] if info["num_generated"] else None,
        reused=summary_reused,
    )
    metrics: list = []
    if recipe.evaluation.enabled:
        references = {}
        if recipe.evaluation.public_only_baseline:
            key = public_baseline_setting(ledger, label_stages)
            references[key] = _public_only(recipe, out, state, codec, labels, len(synthetic) or g.num_records,
                                           progress, log, ledger, label_stages, reuse)
        headline, metrics = _evaluate(recipe, codec, synthetic, ledger, out, log, references)
        summary.headline.update(headline)
    if audit is not None and audit.refuted and not recipe.audit.publish_if_refuted:
        atomic_write_json(out / "summary.json", {**summary.__dict__, "release": "refused: the charged audit refuted ε"})
        for card in (out / "README.md", out / "adapter" / "README.md", *(out / name for name in OWNER_CARDS.values())):
            card.unlink(missing_ok=True)  # an earlier card of this release would not show the refutation
        raise ClaimRefutedError(
            f"{audit.main_verdict} No card was written (earlier ones were removed), and the release must not be published. Find the bug (or the "
            f"privacy claim that is wrong); set audit.publish_if_refuted: true only to publish it anyway, and the "
            f"cards then say that ε̂ > ε. The audit is in {out / AUDIT_DIR}."
        )
    _cards(recipe, out, codec, synthetic, ledger, prepared, metrics, log, include_owner_only, audit, outputs)
    atomic_write_json(out / "summary.json", {**summary.__dict__})
    log("\n" + summary.table())
    return summary


def dp_setting(ledger: Any) -> str:
    """The release's setting label in metric tables: its total ε, rounded up (never understated)."""
    return f"ε = {format_bound(ledger.epsilon_spent())}"


def public_baseline_setting(ledger: Any, label_stages: list[str]) -> str:
    """The baseline's name: public-only when it used nothing private, else what DP release it rests on."""
    if not label_stages:
        return PUBLIC_ONLY_SETTING
    eps = math.fsum(ledger.epsilon_spent(s) for s in label_stages)
    return f"{PUBLIC_MODEL_DP_LABELS} (ε = {format_bound(eps)})"


def _train(recipe, out, state, model, tok, prepared, ledger, reused, log, reuse):
    from peft import PeftModel
    from transformers.trainer_utils import get_last_checkpoint

    from hf_dpsynth.training import DPSynthTrainer

    adapter = out / "adapter"
    if adapter.is_dir() and state.done("training"):
        reuse(adapter)
        reused.append("training")
        return PeftModel.from_pretrained(model, str(adapter))
    t = recipe.training
    checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
    log("[3] DP fine-tuning" + (f" (resuming from {Path(checkpoint).name})" if checkpoint else ""))
    args = recipe_training_config(
        recipe, output_dir=str(out), logical_batch_size=min(t.logical_batch_size, prepared.num_units),
        logging_steps=max(1, t.max_steps // 4),
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500,
        disable_tqdm=False, resume_from_checkpoint=checkpoint, **prepared.training_kwargs(),
    )
    state.mark("training", "charging")
    trainer = DPSynthTrainer(model=model, args=args, train_dataset=prepared, processing_class=tok,
                             peft_config=recipe_lora(recipe, model), ledger=ledger)
    trainer.train(resume_from_checkpoint=checkpoint)
    tmp = out / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    record_output(adapter, ledger, ["training"])
    state.mark("training", "done")
    return trainer.model


def _charged_audit(recipe, out, state, ledger, prepared_data, reused, log, reuse, allow_charges) -> Any:
    """The audit as a stage of the run, its DP run charged to the ledger's ``audit`` share (shareable)."""
    from hf_dpsynth.pipeline.audit_run import audit_recipe, load_audit

    folder = out / AUDIT_DIR
    if state.done("audit") and (folder / "audit.json").is_file():
        reuse(folder)
        reused.append("audit")
        return load_audit(folder)
    if not allow_charges:
        raise _refuse_charge("audit", out)
    log("[4b] privacy audit (charged to the release ledger, stage 'audit')")
    state.mark("audit", "charging")
    report = audit_recipe(recipe, output_dir=folder, log=lambda m: log("    " + m), ledger=ledger,
                          prepared_data=prepared_data)
    record_output(folder, ledger, ["audit"])
    state.mark("audit", "done")
    return report


#: Where owner-only renders of the cards go (never README.md, never inside adapter/: nothing uploads them).
OWNER_CARDS = {"dataset": "README.owner.md", "adapter": "adapter.README.owner.md"}


def _cards(recipe, out, codec, synthetic, ledger, prepared, metrics, log, include_owner_only=False, audit=None,
           outputs=None) -> None:
    """The DP dataset card (``README.md``) and, for adapter recipes, the adapter card; with
    ``include_owner_only`` also their owner-only renders (:data:`OWNER_CARDS`)."""
    from hf_dpsynth.models import DEFAULT_MODEL_NAME

    base = None if recipe.model.name in ("default", DEFAULT_MODEL_NAME) else recipe.model.name
    from hf_dpsynth.generation import generation_info
    from hf_dpsynth.hub.cards import render_adapter_card, render_dataset_card
    common = {"ledger_report": ledger, "metrics": metrics, "audit": audit, "outputs": outputs or {},
              "refuted_audit_override": bool(audit is not None and audit.refuted and recipe.audit.publish_if_refuted)}
    written = []
    for owner in (False, True) if include_owner_only else (False,):
        if len(synthetic) == 0:
            log("    no valid synthetic record: no dataset card (there is nothing to publish)")
        else:
            path = out / (OWNER_CARDS["dataset"] if owner else "README.md")
            _write(path, str(render_dataset_card(
                num_records=len(synthetic), codec_info=codec.to_dict(), generator_info=generation_info(synthetic),
                pretty_name=f"{recipe.name} (synthetic, DP)", preparation=prepared.report, include_owner_only=owner,
                owner_checks=release_owner_checks(recipe), **common,
            )))
            written.append(path)
        if (out / "adapter").is_dir() and base == "tiny":
            log("    (adapter card skipped: a random tiny model has no Hub id to name as base_model)")
        elif (out / "adapter").is_dir():
            path = out / (OWNER_CARDS["adapter"] if owner else "adapter/README.md")
            _write(path, str(render_adapter_card(base_model=base, include_owner_only=owner, **common)))
            written.append(path)
    if written:
        log("    cards: " + ", ".join(map(str, written)) + (" (the .owner.md files are owner-only: never publish them)"
                                                             if include_owner_only else ""))


def release_owner_checks(recipe: Recipe) -> list[str]:
    """The owner-side checks the push applies to this run's dataset (DP_CORRECTNESS row 29): the
    verbatim gate always, the canary gate when the recipe's audit inserted canaries."""
    from hf_dpsynth.hub.gates import CANARY_OWNER_CHECK, VERBATIM_OWNER_CHECK

    return [VERBATIM_OWNER_CHECK] + ([CANARY_OWNER_CHECK] if "audit" in recipe.privacy.shares else [])


def _write(path: Path, text: str) -> None:
    from hf_dpsynth._io import atomic_write_text

    atomic_write_text(path, text)


def _public_only(recipe, out, state, codec, labels, num_records, progress, log, ledger, label_stages, reuse) -> Any:
    """The public baseline: the base model prompted with the codec's prefixes and no private record.

    Privacy: the only data-dependent input is the label distribution, the DP release already
    charged (then the baseline is named after it, not "public-only"); the base model never sees a
    private record.
    """
    from hf_dpsynth.generation import AdapterSynthesizer

    path = out / "public_only"
    if path.is_dir() and state.done("public_only"):
        reuse(path)
        return load_synthetic(path)
    log("[5] public baseline: the base model, no private record"
        + (" (labels drawn from the DP label distribution)" if label_stages else " (ε = 0)"))
    model, tok = load_recipe_model(recipe)
    g = recipe.generation
    sampler = AdapterSynthesizer(model, tok, codec=codec, conditioning=labels, batch_size=g.batch_size,
                                 max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p)
    public = sampler.generate(num_records, seed=1, progress=progress)
    save_synthetic(public, path)
    record_output(path, ledger, label_stages)
    state.mark("public_only", "done")
    return public


def _evaluate(recipe, codec, synthetic, ledger, out, log, references=None) -> tuple[dict[str, Any], list]:
    from hf_dpsynth.evaluation import Report, evaluate

    log("[5] evaluation against held-out real data (owner-only: not DP)")
    test = load_test_data(recipe)
    if len(synthetic) == 0:
        log("    no valid synthetic record: nothing to evaluate")
        return {"evaluation": "no valid synthetic record"}, []
    try:
        usable = {k: v for k, v in (references or {}).items() if len(v) > 0}
        result = evaluate(synthetic, test, codec=codec, embeddings=recipe.evaluation.embeddings,
                          setting=dp_setting(ledger), references=usable or None)
    except Exception as exc:  # e.g. a single class among few synthetic records
        log(f"    evaluation skipped: {exc}")
        return {"evaluation": f"skipped ({type(exc).__name__})"}, []
    report = Report(f"{recipe.name}: synthetic data report", privacy=ledger.report().to_dict())
    report.extend(result.metrics)
    report.save(out / "report")
    report.save(out / "report_owner", include_owner_only=True)
    headline: dict[str, Any] = {}
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
    headline["report"] = str(out / "report" / "report.md")
    return headline, result.metrics
