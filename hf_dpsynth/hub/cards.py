"""Rendering DP dataset and adapter cards, through huggingface_hub.

A card has two parts. Its YAML metadata holds the conventional Hub fields (license, tags,
task categories, size category, ``base_model`` and ``library_name: peft`` for an adapter) and a
machine-readable ``differential_privacy:`` block (:func:`~hf_dpsynth.hub.card_block.dp_block`),
validated against ``templates/dp_block.schema.json``. Its Markdown body, rendered from the Jinja
templates in ``templates/`` (:mod:`~hf_dpsynth.hub.card_text`), states the same guarantee in plain
words: the privacy section, a table of the ledger's stages with their mechanism parameters, the
audit when it may be shared, a utility table of shareable metrics, what the guarantee does not
cover and, only on request, owner-only values. Every rendered card is validated
(:func:`~hf_dpsynth.hub.card_reading.validate_card`) before it is returned.

Every privacy figure comes from the ledger's report (``PrivacyLedger.report().to_dict()``, or the
ledger itself, which adds each charge's dp-accounting event); nothing is recomputed here.

Privacy: a card releases only public facts about the release (ε, δ, unit, N, mechanism parameters)
and the values that are shareable by construction. Owner-only values (metrics on private data,
preparation counts, an uncharged audit on private data) enter a card only with
``include_owner_only=True``, under a heading that says the guarantee does not cover them. No
secret of a mechanism (random state of any kind) ever enters a card: such keys are dropped from
every mapping the card is built from, and a rendered card that still mentions one is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from hf_dpsynth.errors import CardError
from hf_dpsynth.hub.card_block import DP_BLOCK_KEY, dp_block
from hf_dpsynth.hub.card_inputs import (
    TrainingFacts,
    check_consistency,
    check_preparation,
    checked_mapping,
    checked_strings,
    nonempty_string,
    one_line,
    optional_strings,
    positive_int,
    preparation_facts,
    resolve_base_model,
    training_facts,
    without_secrets,
)
from hf_dpsynth.hub.card_reading import validate_card
from hf_dpsynth.hub.card_text import (
    card_title,
    common_context,
    generation_rows,
    mapping_rows,
    metric_rows,
    render_template,
    training_rows,
)
from hf_dpsynth.models import DEFAULT_MODEL_GGUF, DEFAULT_MODEL_NAME

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import DatasetCard, ModelCard

__all__ = [
    "ADAPTER_TAGS",
    "DATASET_TAGS",
    "render_adapter_card",
    "render_dataset_card",
]

DATASET_TAGS = ("synthetic", "differential-privacy", "hf-dpsynth")
ADAPTER_TAGS = ("differential-privacy", "dp-sgd", "lora", "peft", "hf-dpsynth")
NOT_PRIVATE_TAG = "not-differentially-private"


class _Release(NamedTuple):
    """What both cards share."""

    block: dict[str, Any]
    """The ``differential_privacy`` block."""
    training: TrainingFacts
    context: dict[str, Any]
    """The template context common to both cards."""


def render_dataset_card(
    *,
    ledger_report: Any,
    num_records: int,
    codec_info: Mapping[str, Any],
    generator_info: Mapping[str, Any],
    metrics: Sequence[Any] = (),
    audit: Any = None,
    license: str = "other",
    task_categories: Sequence[str] | None = None,
    pretty_name: str = "Synthetic data (hf_dpsynth)",
    language: str | Sequence[str] | None = None,
    include_owner_only: bool = False,
    preparation: Any = None,
    training_report: Any = None,
    owner_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> DatasetCard:
    """The card of a synthetic dataset, rendered from ``templates/dataset_card.md.j2`` and validated.

    Args:
        ledger_report: the release ledger's report (see :func:`~hf_dpsynth.hub.card_block.dp_block`).
        num_records: the number of records published.
        codec_info: the codec's public configuration (``codec.to_dict()``).
        generator_info: ``generation_info(dataset)``.
        metrics: :class:`~hf_dpsynth.evaluation.Metric` rows (or their ``to_dict()``); shareable ones
            form the Utility table, owner-only ones appear only with ``include_owner_only``.
        audit: an ``AuditReport``; shown when shareable (owner-only values with ``include_owner_only``).
        license, task_categories, pretty_name, language: Hub metadata; task categories default from
            the codec's modality.
        include_owner_only: show owner-only values, under a heading saying the guarantee does not cover them.
        preparation: the ``PreparationReport`` (or its ``to_dict(include_owner_only=True)``): PII
            scrubbing and the user cap are shown; its counts are owner-only.
        training_report: ``trainer.privacy_report()`` when the data comes from a DP-fine-tuned
            adapter (checked against the ledger).
        owner_checks: non-DP checks on the private data applied before release: the push refuses a card
            that does not list each check it applies (``hf_dpsynth.hub.gates.VERBATIM_OWNER_CHECK``, and
            ``CANARY_OWNER_CHECK`` when canaries are checked).
        notes: extra sentences for a Notes section.
        outputs: stage name → names of the outputs it released (see :func:`~hf_dpsynth.hub.card_block.dp_block`).
        refuted_audit_override: state in the card that a refuted audit is published anyway (see
            :func:`~hf_dpsynth.hub.card_block.dp_block`).

    Raises CardError when an input is malformed or inconsistent with the ledger.

    Privacy: see the module docstring; the dataset itself is post-processing of the DP stages.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    count = positive_int("num_records", num_records)
    codec = without_secrets(checked_mapping("codec_info", codec_info))
    generation = without_secrets(checked_mapping("generator_info", generator_info))
    block, training, common = _release(
        ledger_report, "dataset", preparation=preparation, training_report=training_report, metrics=metrics,
        audit=audit, include_owner_only=include_owner_only, owner_checks=owner_checks, notes=notes,
        outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    check_consistency(block, training, stage=None)
    modality = str(codec.get("modality", "text"))
    tags = list(DATASET_TAGS) + ([] if block["private"] else [NOT_PRIVATE_TAG])
    card_data = DatasetCardData(
        language=optional_strings("language", language),
        license=nonempty_string("license", license),
        size_categories=[_size_category(count)],
        task_categories=list(checked_strings("task_categories", task_categories)) if task_categories is not None
        else _default_task_categories(modality, codec),
        pretty_name=one_line("pretty_name", pretty_name),
        tags=tags,
        **{DP_BLOCK_KEY: block},
    )
    name = one_line("pretty_name", pretty_name)
    context = {
        **common,
        "title": card_title(name, block),
        "num_records": f"{count:,}",
        "codec_rows": mapping_rows(codec, skip=()),
        "generation_rows": generation_rows(generation),
    }
    return _render("dataset_card.md.j2", DatasetCard, card_data, context)


def render_adapter_card(
    *,
    ledger_report: Any,
    base_model: str | None = None,
    training_report: Any = None,
    metrics: Sequence[Any] = (),
    audit: Any = None,
    license: str = "other",
    model_name: str | None = None,
    repo_id: str | None = None,
    language: str | Sequence[str] | None = None,
    training_stage: str = "training",
    include_owner_only: bool = False,
    preparation: Any = None,
    owner_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> ModelCard:
    """The card of a DP LoRA adapter (``library_name: peft``), rendered from ``templates/adapter_card.md.j2``.

    Args:
        ledger_report: the release ledger's report (see :func:`~hf_dpsynth.hub.card_block.dp_block`); it
            must hold a charge in ``training_stage``.
        base_model: the Hub id of the base model. None (or ``DEFAULT_MODEL_NAME``, or the folder the
            default model was dequantised into) means the embedded default: ``base_model`` is then
            ``HuggingFaceTB/SmolLM2-135M-Instruct`` and the card says the weights are its Q4_1
            quantisation, dequantised. A local path is refused (it would name a private folder).
        training_report: ``trainer.privacy_report()`` (or its ``to_dict()``), checked against the ledger.
        metrics, audit, include_owner_only, preparation, owner_checks, notes, outputs,
            refuted_audit_override: as in :func:`render_dataset_card`.
        license, model_name, language: Hub metadata and the card's title.
        repo_id: the adapter's Hub repository, for the usage snippet.
        training_stage: the ledger stage the trainer charged (``DPSynthTrainer(ledger_stage=...)``).

    Raises CardError when an input is malformed or inconsistent with the ledger.

    Privacy: see the module docstring. The adapter is the DP-SGD output; the base model's own
    training data is outside the guarantee, and the card says so.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base_id, default_base = resolve_base_model(base_model)
    block, training, common = _release(
        ledger_report, "adapter", preparation=preparation, training_report=training_report, metrics=metrics,
        audit=audit, include_owner_only=include_owner_only, owner_checks=owner_checks, notes=notes,
        outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    stage = next((s for s in block["stages"] if s["name"] == training_stage), None)
    if stage is None or not stage["charges"]:
        raise CardError(
            f"The ledger has no charge in stage {training_stage!r}: an adapter card describes a DP-SGD run "
            f"charged to its ledger (stages: {[s['name'] for s in block['stages']]}). Pass training_stage= "
            "if the trainer used another ledger_stage."
        )
    check_consistency(block, training, stage=stage)
    tags = list(ADAPTER_TAGS) + ([] if block["private"] else [NOT_PRIVATE_TAG])
    card_data = ModelCardData(
        base_model=base_id,
        library_name="peft",
        license=nonempty_string("license", license),
        language=optional_strings("language", language),
        pipeline_tag="text-generation",
        tags=tags,
        **{DP_BLOCK_KEY: block},
    )
    base_short = base_id.rsplit("/", 1)[-1]
    name = one_line("model_name", model_name) if model_name is not None else f"LoRA adapter for {base_short}"
    context = {
        **common,
        "title": card_title(name, block),
        "base_model": base_id,
        "default_base": default_base,
        "default_model_name": DEFAULT_MODEL_NAME,
        "default_model_gguf": DEFAULT_MODEL_GGUF,
        "training_stage": training_stage,
        "training_rows": training_rows(stage, training),
        "repo_id": one_line("repo_id", repo_id) if repo_id is not None else "<this repository>",
    }
    return _render("adapter_card.md.j2", ModelCard, card_data, context)


def _release(
    ledger_report: Any,
    what: str,
    *,
    preparation: Any,
    training_report: Any,
    metrics: Sequence[Any],
    audit: Any,
    include_owner_only: bool,
    owner_checks: Sequence[str],
    notes: Sequence[str],
    outputs: Mapping[str, Sequence[str]] | None = None,
    refuted_audit_override: bool = False,
) -> _Release:
    """What both cards share: the block, the training report's facts, and the template context."""
    shared_prep, owner_prep = preparation_facts(preparation)
    check_preparation(ledger_report, shared_prep)
    training = training_facts(training_report)
    shared_metrics, owner_metrics = metric_rows(metrics, audit)
    owner_included = bool(include_owner_only and (owner_metrics or owner_prep))
    block = dp_block(
        ledger_report, audit=audit, max_examples_per_user=shared_prep.get("max_examples_per_user"),
        owner_checks=owner_checks, reproducible_randomness=training.reproducible,
        owner_only_included=owner_included, outputs=outputs, refuted_audit_override=refuted_audit_override,
    )
    context = common_context(
        block, what, shared_metrics, owner_metrics if owner_included else [],
        owner_prep if owner_included else {}, shared_prep, notes,
    )
    return _Release(block, training, context)


def _render(template: str, card_cls: type, card_data: Any, context: Mapping[str, Any]) -> Any:
    """``card_cls`` from the template, rendered as ``RepoCard.from_template`` does, then validated."""
    card = card_cls(render_template(template, card_data, context))
    validate_card(card)
    return card


def _size_category(n: int) -> str:
    """The Hub's size category of a dataset with ``n`` records."""
    labels = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")
    if n < 1000:
        return "n<1K"
    for exponent, (low, high) in enumerate(itertools.pairwise(labels), start=3):
        if n < 10 ** (exponent + 1):
            return f"{low}<n<{high}"
    return "n>1T"


def _default_task_categories(modality: str, codec: Mapping[str, Any]) -> list[str]:
    conditioned = bool(codec.get("conditions"))
    if modality == "tabular":
        return ["tabular-classification"]
    if modality == "image":
        return ["image-classification"] if conditioned else ["unconditional-image-generation"]
    return ["text-generation", "text-classification"] if conditioned else ["text-generation"]
