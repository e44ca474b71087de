"""Callbacks of ``DPSynthTrainer``: the progress bar with ε, the first-step check, the refusal of
callbacks that select by private metrics, and the checks of the trainer's own arguments.

Privacy: :func:`refuse_private_selection` keeps early stopping out (choosing when to stop by a
metric on private evaluation data is not DP, and the whole schedule is charged anyway);
:class:`FirstStepCheck` makes sure the first optimizer step moved the adapter and nothing else, so
the budget is not spent on a model that DP-SGD does not train. The ε shown in the bar is public
(a function of the plan and the steps taken).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from hf_dpsynth.errors import DatasetError, DPConfigError, UnsupportedModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Trainer

    from hf_dpsynth.training.grad_sample import TrainableParameter

__all__ = ["DPProgressCallback", "FirstStepCheck", "refuse_private_selection"]


class DPProgressCallback(ProgressCallback):
    """The usual progress bar, with ε spent so far shown at logging steps."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "epsilon" in logs:
            self.training_bar.set_postfix(epsilon=f"{logs['epsilon']:.3g}")
        return super().on_log(args, state, control, logs=logs, **kwargs)


class FirstStepCheck(TrainerCallback):
    """After the first optimizer step: trainable weights changed, frozen ones did not (docs/DP_CORRECTNESS.md row 11).

    :meth:`arm` at the start of each ``train()`` call; :meth:`snapshot` as the first step begins
    (it records the weights only when armed); the check runs once, at the end of that step.
    """

    def __init__(self, trainer: Trainer, trainable: list[TrainableParameter]):
        self.trainer = trainer
        self.trainable = trainable
        self._pending = False
        self._snapshot: tuple[list[torch.Tensor], Any, float] | None = None

    def arm(self) -> None:
        self._pending = True

    def snapshot(self) -> None:
        if not self._pending:
            return
        self._pending = False
        self._snapshot = (
            [t.param.detach().clone() for t in self.trainable],
            _frozen_checksum(self.trainer.model),
            max(group["lr"] for group in self.trainer.optimizer.param_groups),
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.check()

    def check(self) -> None:
        if self._snapshot is None:
            return
        before, frozen_before, lr = self._snapshot
        self._snapshot = None
        if lr > 0 and all(torch.equal(b, t.param) for b, t in zip(before, self.trainable)):
            raise UnsupportedModelError(
                f"No trainable weight changed in the first optimizer step although the learning rate was {lr:g}: "
                "the optimizer does not see the adapter's parameters (device or peft ordering). Training would "
                "spend the budget for nothing."
            )
        if _frozen_checksum(self.trainer.model) != frozen_before:
            raise UnsupportedModelError(
                "A frozen (non-trainable) weight changed in the first optimizer step: something other than DP-SGD "
                "updates the model (weight decay on frozen weights, a callback, a tied parameter)."
            )


def refuse_private_selection(callback: Any) -> None:
    """Refuse early stopping (a callback instance or class): it selects by a metric on private data."""
    if isinstance(callback, EarlyStoppingCallback) or callback is EarlyStoppingCallback:
        raise DPConfigError(
            "EarlyStoppingCallback stops training by a metric on evaluation data; on private data that choice is "
            "not differentially private (and the full schedule is charged anyway). Train for a fixed schedule."
        )


def _frozen_checksum(model: torch.nn.Module) -> tuple[list[tuple[int, int]], list[float]]:
    # Storage and version counter of every frozen weight (an in-place update bumps the version), and its
    # fp64 sum: writes through `.data` bypass the version counter. No copy of the weights is kept.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    return [(p.data_ptr(), p._version) for p in frozen], [float(torch.sum(p.detach(), dtype=torch.float64)) for p in frozen]


def check_trainer_arguments(args: Any, processing_class: Any, train_dataset: Any, kwargs: dict, *, ledger_stage: str) -> None:
    """Refuse the ``DPSynthTrainer`` arguments that would break DP or that it does not support, before anything runs."""
    from hf_dpsynth.training.config import DPSynthConfig, refuse_hub_uploads

    if not isinstance(args, DPSynthConfig):
        raise DPConfigError(
            f"args must be a DPSynthConfig (it turns off the Trainer settings that break DP); got {type(args).__name__}."
        )
    if processing_class is None:
        raise DPConfigError("processing_class= (the tokenizer) is required to tokenise the training data.")
    if kwargs.get("model_init") is not None:
        raise DPConfigError("model_init= is not supported: pass the model itself.")
    if kwargs.get("compute_loss_func") is not None:
        raise DPConfigError(
            "compute_loss_func= is not supported: DP training needs each example's loss normalised by its "
            "own tokens only, which DPSynthTrainer computes itself."
        )
    for callback in kwargs.get("callbacks") or ():
        refuse_private_selection(callback)
    if train_dataset is None:
        raise DatasetError("train_dataset= is required.")
    if ledger_stage not in ("training", "audit"):
        raise DPConfigError(
            f"ledger_stage must be 'training' or 'audit' (an audit run charged to the release ledger); got {ledger_stage!r}."
        )
    refuse_hub_uploads(args)  # set on the config after it was built: Trainer.__init__ would create the repo
    if args.n_gpu > 1:
        raise DPConfigError(
            f"{args.n_gpu} GPUs in one process (DataParallel) would average per-device losses; launch one "
            "process per device with `accelerate launch` or `torchrun` instead."
        )
    if args.adapter_per_label and args.privacy_unit != "example":  # set after the config was built
        raise DPConfigError("adapter_per_label is example-level only: a user may hold examples of several labels.")
    if args.adapter_per_label and args.world_size > 1:
        raise DPConfigError("adapter_per_label runs in one process for now: launch it without torchrun/accelerate.")


def check_public_units(public_units: Any, *, ledger_stage: str, has_ledger: bool) -> None:
    """``public_units`` (canaries among the training units) is for an audit run charged to a release ledger."""
    if isinstance(public_units, bool) or not isinstance(public_units, int) or public_units < 0:
        raise DPConfigError(f"public_units must be a non-negative integer; got {public_units!r}.")
    if public_units and (ledger_stage != "audit" or not has_ledger):
        raise DPConfigError(
            "public_units= (canaries among the training units) is for an audit run charged to a release ledger: "
            "pass ledger= and ledger_stage='audit'."
        )
