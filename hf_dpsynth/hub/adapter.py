"""Sharing a ``DPSynthTrainer``'s adapter: its DP adapter card, and the gated push of the adapter alone.

The trainer does not publish (``DPSynthTrainer.push_to_hub`` and ``create_model_card`` refuse and
point here): the inherited ``Trainer.push_to_hub`` would upload ``output_dir`` (owner-only reports,
checkpoints holding the run's secret seeds) with a card of hyper-parameters and losses on private data.
Here only the adapter is saved, into a fresh temporary folder, and it goes through
:func:`~hf_dpsynth.hub.publish.push_adapter`'s gates with the DP card rendered from the trainer's ledger.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from hf_dpsynth._io import atomic_write_text
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.hub.cards import render_adapter_card
from hf_dpsynth.hub.publish import PushResult, push_adapter

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.training import DPSynthTrainer

__all__ = ["push_trainer_adapter", "trainer_adapter_card", "write_trainer_adapter_card"]

CARD_OPTIONS = ("language", "license", "model_name", "finetuned_from")
"""The DP adapter card's options among the Trainer's model-card arguments; the others are refused."""


def trainer_adapter_card(trainer: DPSynthTrainer, *, finetuned_from: str | None = None, repo_id: str | None = None,
                         **card: Any) -> Any:
    """The DP adapter card of ``trainer``'s run (:func:`~hf_dpsynth.hub.cards.render_adapter_card`), from its ledger."""
    card = _card_options(card)
    if not trainer.has_trained:
        raise DPConfigError(
            "This trainer has not trained yet: its ledger holds no charge of this run, so there is no DP adapter "
            "to describe. Call train() first."
        )
    model = trainer.model
    peft_config = (getattr(model, "peft_config", None) or {}).get(getattr(model, "active_adapter", None))
    base = finetuned_from or getattr(peft_config, "base_model_name_or_path", None)
    if not base:
        raise DPConfigError(
            "The base model has no name (the model was not loaded from a Hub id), so the card cannot say which "
            "weights the adapter applies to; got finetuned_from=None. Pass finetuned_from='<Hub id of the base "
            "model>'."
        )
    return render_adapter_card(
        ledger_report=trainer.ledger, base_model=base, training_report=trainer.privacy_report(),
        training_stage=trainer.ledger_stage, repo_id=repo_id, **card,
    )


def write_trainer_adapter_card(trainer: DPSynthTrainer, folder: str | os.PathLike[str] | None = None,
                               **card: Any) -> str | None:
    """Write ``trainer``'s DP adapter card as ``README.md`` in ``folder`` (default ``args.output_dir``),
    atomically, on the main process; returns the path (None on the other processes).

    ``card`` takes language, license, model_name and finetuned_from (the base model's Hub id)."""
    if not trainer.is_world_process_zero():
        return None
    folder = os.fspath(folder if folder is not None else trainer.args.output_dir)
    text = str(trainer_adapter_card(trainer, **card))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "README.md")
    atomic_write_text(path, text)
    return path


def push_trainer_adapter(trainer: DPSynthTrainer, repo_id: str | None = None, *, private: bool | None = None,
                         token: str | None = None, revision: str | None = None, allow_non_private: bool = False,
                         **card: Any) -> PushResult | None:
    """Publish ``trainer``'s adapter alone with its DP card, through :func:`push_adapter`'s gates.

    ``repo_id`` defaults to ``args.hub_model_id``; the repo is private unless ``private=False`` (or
    ``args.hub_private_repo`` is False). ``card`` takes language, license, model_name and
    finetuned_from. Returns a ``PushResult`` (None on processes other than the main one).
    """
    args = trainer.args
    repo_id = repo_id or args.hub_model_id
    if not repo_id:
        raise DPConfigError("push_trainer_adapter needs repo_id= (or args.hub_model_id): the Hub repo to publish the "
                            "adapter to.")
    if revision is not None or args.hub_revision is not None:
        raise DPConfigError(
            f"revision={revision or args.hub_revision!r}: the gated push publishes to the main branch only; "
            "leave revision and hub_revision unset."
        )
    if not trainer.is_world_process_zero():
        return None
    card_text = str(trainer_adapter_card(trainer, repo_id=repo_id, **card))
    if private is None:
        private = args.hub_private_repo is not False
    with tempfile.TemporaryDirectory(prefix="hf_dpsynth_adapter_") as folder:
        trainer.model.save_pretrained(folder)
        return push_adapter(folder, repo_id, card=card_text, ledger_report=trainer.ledger.report().to_dict(),
                            private=private, token=token if token is not None else args.hub_token,
                            allow_non_private=allow_non_private)


def _card_options(given: dict[str, Any]) -> dict[str, Any]:
    unsupported = sorted(k for k, v in given.items() if v is not None and k not in CARD_OPTIONS)
    if unsupported:
        raise DPConfigError(
            f"The DP adapter card takes {', '.join(CARD_OPTIONS)}; got {unsupported} too. Render the card with "
            "hf_dpsynth.hub.cards.render_adapter_card and publish with hf_dpsynth.hub.push_adapter for more."
        )
    return {k: given[k] for k in CARD_OPTIONS if given.get(k) is not None}
