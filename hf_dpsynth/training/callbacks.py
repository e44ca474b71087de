"""Callbacks of ``DPSynthTrainer``: the progress bar with ε, the first-step check, and the refusal of
callbacks that select by private metrics.

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

from hf_dpsynth.errors import DPConfigError, UnsupportedModelError

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
