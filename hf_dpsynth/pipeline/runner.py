"""``hf-dpsynth run``, ``card`` and ``evaluate``: a recipe as an ordered list of stages over one run folder.

A run's stages (:mod:`~hf_dpsynth.pipeline.stages` for those that read private data or charge,
:mod:`~hf_dpsynth.pipeline.release` for the rest), each logged with its number:

    data → privacy ledger → DP label histogram → DP keywords → DP fine-tuning → synthetic records → privacy audit
    → public baseline → evaluation → release check → cards → summary

(a stage the recipe does not have is left out). ``card`` and ``evaluate`` run only the stages they
need, over the saved outputs: they read no private training data (the preparation report is saved)
and load no model unless a stage they run generates (the public baseline).

Resuming: a stage whose output was saved is reused only with its charge; a training stage resumes
from its last checkpoint (a continuation: the ledger already holds its charge); a stage whose
output and checkpoint are both lost runs again and is charged again — never re-run for free. The
folder layout is in :mod:`~hf_dpsynth.pipeline.folder`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.pipeline import release, stages
from hf_dpsynth.pipeline.context import RunContext, RunSummary
from hf_dpsynth.pipeline.folder import RunFolder
from hf_dpsynth.pipeline.outputs import RunLock
from hf_dpsynth.pipeline.recipe import Recipe
from hf_dpsynth.pipeline.stages import Stage

__all__ = ["CARD_STAGES", "EVALUATE_STAGES", "RUN_STAGES", "evaluate_run", "render_run_cards", "run_recipe"]

RUN_STAGES: tuple[Stage, ...] = (
    stages.prepare, stages.ledger, stages.label_histogram, stages.keywords, stages.training, stages.generation, stages.audit,
    release.public_baseline, release.evaluation, release.release_check, release.cards, release.summary,
)
#: ``hf-dpsynth card``: the cards from the saved outputs and metrics (nothing evaluated, nothing charged).
CARD_STAGES: tuple[Stage, ...] = (
    stages.attach, stages.ledger, stages.label_histogram, stages.keywords, stages.training, stages.generation, stages.audit,
    release.saved_metrics, release.release_check, release.cards,
)
#: ``hf-dpsynth evaluate``: evaluation (and the public baseline) over the saved outputs, then the cards.
EVALUATE_STAGES: tuple[Stage, ...] = (
    stages.attach, stages.ledger, stages.label_histogram, stages.keywords, stages.training, stages.generation, stages.audit,
    release.public_baseline, release.evaluation, release.release_check, release.cards, release.summary,
)


def run_recipe(recipe: Recipe, *, output_dir: str | os.PathLike[str] | None = None, progress: bool = True,
               log: Callable[[str], None] = print, stop_after: str | None = None,
               include_owner_only_in_cards: bool = False) -> RunSummary | None:
    """Run ``recipe`` (resuming whatever an earlier run in the same folder finished).

    ``stop_after="training"`` stops once the adapter is saved (``hf-dpsynth train``); the
    returned summary is then None. ``include_owner_only_in_cards`` also renders owner-only cards
    (``README.owner.md``, ``adapter.README.owner.md``: never published); ``README.md`` stays
    shareable.

    Privacy: every reused output is matched to its charge in the loaded ledger (see
    :mod:`hf_dpsynth.pipeline.outputs`); one process at a time uses a run folder.
    """
    if stop_after not in (None, "training"):
        raise DPConfigError(f"stop_after must be None or 'training'; got {stop_after!r}.")
    if stop_after == "training" and recipe.generation.method != "adapter_sampler":
        raise DPConfigError(f"this recipe has no training stage (its generator is {recipe.generation.method}).")
    folder = RunFolder(Path(output_dir or recipe.output.dir).resolve())
    folder.check_new()
    ctx = RunContext(recipe=recipe, folder=folder, log=log, progress=progress, allow_charges=True,
                     include_owner_only=include_owner_only_in_cards, stop_after=stop_after)
    return _run(ctx, RUN_STAGES, stop_after=stop_after)


def render_run_cards(run_dir: str | os.PathLike[str], recipe: Recipe, *, include_owner_only: bool = False,
                     log: Callable[[str], None] = print) -> None:
    """(Re)render a finished run's cards from its ledger and saved outputs (``hf-dpsynth card``). Never charges."""
    ctx = _existing(run_dir, recipe, log=log, include_owner_only=include_owner_only)
    _run(ctx, CARD_STAGES)


def evaluate_run(run_dir: str | os.PathLike[str], recipe: Recipe, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> RunSummary | None:
    """Evaluate a finished run (``hf-dpsynth evaluate``) and re-render its cards. Never charges."""
    ctx = _existing(run_dir, recipe, log=log, progress=progress)
    return _run(ctx, EVALUATE_STAGES)


def _existing(run_dir: str | os.PathLike[str], recipe: Recipe, **options) -> RunContext:
    folder = RunFolder(Path(run_dir).resolve())
    if not folder.state_file.is_file():
        raise DPConfigError(f"{folder.root} holds no run ({folder.state_file.name} is missing): run `hf-dpsynth run` "
                            "first.")
    return RunContext(recipe=recipe, folder=folder, allow_charges=False, **{"progress": False, **options})


def _run(ctx: RunContext, plan: Sequence[Stage], *, stop_after: str | None = None) -> RunSummary | None:
    todo = [stage for stage in plan if stage.applies(ctx.recipe)]
    with RunLock(ctx.folder.root):
        for number, stage in enumerate(todo, start=1):
            ctx.log(f"[{number}/{len(todo)}] {stage.title}")
            stage.run(ctx)
            if stop_after == "training" and stage is stages.training and not ctx.state.done("generation"):
                return None  # `hf-dpsynth train`: the adapter is saved (a finished run goes on to its cards)
    return ctx.summary
