"""The Trainer's own sharing paths, refused: ``DPSynthTrainer`` does not publish.

The inherited model card lists hyper-parameters and losses on private data; the inherited push uploads
``output_dir`` (owner-only reports, checkpoints holding the run's secret seeds). The Hub paths with the
release gates and the DP adapter card are in :mod:`hf_dpsynth.hub` (docs/DP_CORRECTNESS.md row 27).
"""

from __future__ import annotations

from typing import Any

from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.training.config import refuse_hub_uploads

__all__ = ["RefuseTrainerSharing"]


class RefuseTrainerSharing:
    """Mixed into ``DPSynthTrainer`` before ``transformers.Trainer``: its card and push methods refuse."""

    args: Any

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        # The Trainer's card lists hyper-parameters and losses on private data, not the DP guarantee.
        raise DPConfigError(_SHARING_REFUSAL.format(
            what="create_model_card()", use="hf_dpsynth.hub.write_trainer_adapter_card(trainer, finetuned_from=...)",
            why="its card lists hyper-parameters and losses on private data, not the DP guarantee"))

    def push_to_hub(self, *args: Any, **kwargs: Any) -> None:
        # The inherited push uploads output_dir (owner-only reports, checkpoints with secret seeds).
        raise DPConfigError(_SHARING_REFUSAL.format(
            what="push_to_hub()", use="hf_dpsynth.hub.push_trainer_adapter(trainer, repo_id=..., finetuned_from=...)",
            why="the inherited push uploads output_dir (owner-only reports, checkpoints holding the run's secret seeds)"))

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # The Trainer's checkpoint push (args.push_to_hub set during training) would upload secret seeds.
        refuse_hub_uploads(self.args)


_SHARING_REFUSAL = (
    "DPSynthTrainer.{what} is not available: {why}. The trainer does not publish; the Hub paths with the "
    "release gates and the DP adapter card are in hf_dpsynth.hub: use {use}."
)

