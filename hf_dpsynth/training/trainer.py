"""``DPSynthTrainer``: DP-SGD fine-tuning of LoRA adapters inside ``transformers.Trainer``.

One Trainer step is one logical DP-SGD step:

1. Poisson-sample privacy units with rate q = logical_batch_size / N (the same draw on every rank);
2. each rank takes its share and runs it in as many physical chunks of
   ``per_device_train_batch_size`` examples as it needs (nothing is truncated or dropped);
3. per-example gradients come from hooks on the LoRA layers; each unit's gradient is clipped to
   C = ``per_example_max_grad_norm`` and summed (fp32);
4. N(0, σ²C²) noise is added once (on rank 0), the noisy sum is all-reduced once and divided by the
   expected batch size q·N;
5. the Trainer's own optimizer and scheduler step as usual.

The step count T and σ are fixed before training (:mod:`~hf_dpsynth.training.plan`), and the ledger
is charged for all T steps before the first one runs. This module holds the Trainer overrides; the
run's secrets and checkpoint state are in :mod:`~hf_dpsynth.training.run_state`, the callbacks in
:mod:`~hf_dpsynth.training.callbacks`, the privacy report in :mod:`~hf_dpsynth.training.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from hf_dpsynth.data.tokenize import IGNORE_INDEX, TokenizedExamples, tokenize_dataset
from hf_dpsynth.data.units import build_privacy_units
from hf_dpsynth.errors import CheckpointError, DatasetError, DPConfigError, PrivacyBudgetExceededError
from hf_dpsynth.privacy import PrivacyLedger
from hf_dpsynth.privacy.ledger import LEDGER_FILE
from hf_dpsynth.training.batching import collate, packing_order, plan_chunks, rank_share, unit_lengths
from hf_dpsynth.training.callbacks import (
    DPProgressCallback, FirstStepCheck, check_public_units, check_trainer_arguments, refuse_private_selection,
)
from hf_dpsynth.training.config import DPSynthConfig, refuse_hub_uploads, unwrap_prepared
from hf_dpsynth.training.fast_path import FastPath, checked_fast_path, close_fast_path, fast_path_for
from hf_dpsynth.training.grad_sample import ClippedSum, PerExampleGradients, validate_model, verify_against_autograd
from hf_dpsynth.training.loss import per_example_causal_lm_loss
from hf_dpsynth.training.per_label import LabelAdapters, check_label_counts, make_label_adapters, param_groups, unit_labels
from hf_dpsynth.training.plan import charge_metadata, epsilon_after, make_plan, resolve_ledger, training_event
from hf_dpsynth.training.report import TrainingPrivacyReport, build_privacy_report
from hf_dpsynth.training.run_state import (
    RunState, charged_sigma_of_resumed_run, checkpoint_charge, data_fingerprint, holds_run_charge, new_run_secrets,
    refuse_forgetting_earlier_spend, resumable_run_state, write_run_state,
)
from hf_dpsynth.training.sharing import RefuseTrainerSharing
from hf_dpsynth.training.sampler import PoissonSampler, SecretSeeds, dropout_seed, noise_generator

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset as HFDataset

logger = logging.getLogger(__name__)

STAGE = "training"


class _StepTicks(Dataset):
    """One item per logical step of an epoch; the draw itself is made in ``training_step``."""

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> int:
        return index


def _collate_tick(batch: list[int]) -> dict[str, torch.Tensor]:
    return {"dp_step_tick": torch.tensor(batch[0])}


class DPSynthTrainer(RefuseTrainerSharing, Trainer):
    """A ``transformers.Trainer`` that fine-tunes LoRA adapters with DP-SGD.

    Args:
        model: a base model (with ``peft_config``) or a ``PeftModel``.
        args: a :class:`DPSynthConfig`.
        train_dataset: a :class:`~hf_dpsynth.data.PreparedDataset`, or a ``datasets.Dataset``
            with a text column, ``prompt``/``completion`` columns, or ``input_ids`` (see
            :mod:`hf_dpsynth.data.tokenize`).
        processing_class: the tokenizer.
        peft_config: a peft config applied with ``get_peft_model`` (as in TRL).
        ledger: a shared :class:`~hf_dpsynth.privacy.PrivacyLedger` (then ``target_epsilon`` and
            ``target_delta`` must be unset); by default the trainer makes its own from them.
        ledger_stage: the stage charged: ``"training"``, or ``"audit"`` for an audit run whose ε is
            composed into the release ledger (so its results may be shared).
        public_units: for an audit run, how many of ``train_dataset``'s units are public canaries
            (appended by ``CanarySet.insert_into``): the ledger's N counts the private units only,
            and the charge is the DP-SGD event on all of them (q = batch / (N + canaries)).

    Privacy: protects each privacy unit (example, or user with capped contributions) of
    ``train_dataset`` under add/remove adjacency, with the (ε, δ) in :meth:`privacy_report`. N is
    public. Not covered: logged losses and metrics, the base model's pre-training data, and
    floating-point side channels of the noise.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: DPSynthConfig,
        train_dataset: HFDataset,
        processing_class: Any,
        *,
        peft_config: Any = None,
        ledger: PrivacyLedger | None = None,
        ledger_stage: str = STAGE,
        public_units: int = 0,
        **kwargs: Any,
    ):
        check_trainer_arguments(args, processing_class, train_dataset, kwargs, ledger_stage=ledger_stage)
        self._stage = ledger_stage
        check_public_units(public_units, ledger_stage=ledger_stage, has_ledger=ledger is not None)
        self._public_units = public_units
        train_dataset = unwrap_prepared(train_dataset, args)
        counts = check_label_counts(args.label_counts) if args.adapter_per_label else None
        if counts is not None:
            model = make_label_adapters(model, peft_config, counts, seed=args.seed)
        else:
            model = self._apply_peft(model, peft_config, seed=args.seed)
        self._trainable = validate_model(model)
        self._grads = PerExampleGradients(self._trainable)

        # Privacy units, contribution bounding and tokenisation: all before any budget is touched.
        units, kept_rows = build_privacy_units(
            train_dataset,
            privacy_unit=args.privacy_unit,
            user_id_column=args.user_id_column,
            max_examples_per_user=args.max_examples_per_user,
        )
        self._units = units
        self._labels = None if counts is None else LabelAdapters(
            tuple(counts), tuple(counts.values()), unit_labels(train_dataset, args.adapter_per_label, kept_rows, units, list(counts)))
        self._params_of = param_groups(self._trainable, self._labels)
        self._examples = examples = tokenize_dataset(
            train_dataset,
            processing_class,
            dataset_text_field=args.dataset_text_field,
            max_length=args.max_length,
            rows=kept_rows,  # unit u owns positions offsets[u]:offsets[u+1] of this order
        )
        pad = processing_class.pad_token_id
        self._pad_token_id = pad if pad is not None else processing_class.eos_token_id
        if self._pad_token_id is None:
            raise DPConfigError("The tokenizer has neither a pad nor an end-of-sequence token; set tokenizer.pad_token.")

        n = units.num_units
        if args.logical_batch_size > n:
            raise DPConfigError(
                f"logical_batch_size={args.logical_batch_size} exceeds the number of privacy units N = {n}; "
                f"the sampling probability q = batch / N must be at most 1. Use logical_batch_size <= {n}."
            )
        if public_units >= n:
            raise DPConfigError(f"public_units={public_units} leaves no private unit among the N = {n} training units.")
        self._data_fingerprint = data_fingerprint(examples, units.offsets)
        self._unit_lengths = unit_lengths(examples, units)
        self.ledger = resolve_ledger(args, ledger, n - public_units)
        self.plan = make_plan(args, n, len(self._examples), ledger=self.ledger, stage=self._stage,
                              charged_sigma=charged_sigma_of_resumed_run(args.resume_from_checkpoint, self.ledger, self._stage))

        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs)
        self.remove_callback(ProgressCallback)
        if not args.disable_tqdm:
            self.add_callback(DPProgressCallback)
        self._first_step_check = FirstStepCheck(self, self._trainable)
        self.add_callback(self._first_step_check)

        self._seeds: SecretSeeds | None = None
        self._run_id: str | None = None
        self._verify_pending = self._fast_pending = False
        self._fast: FastPath | None = None
        self._steps_run: set[int] = set()
        self._epsilon_cache: dict[int, float] = {}

    def add_callback(self, callback):
        # Early stopping selects a checkpoint by a metric on (private) evaluation data: not DP.
        refuse_private_selection(callback)
        return super().add_callback(callback)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _apply_peft(model: torch.nn.Module, peft_config: Any, *, seed: int) -> torch.nn.Module:
        if peft_config is None:
            return model
        from peft import PeftModel, get_peft_model

        if isinstance(model, PeftModel):
            raise DPConfigError(
                "model is already a PeftModel and peft_config= was given too; pass one or the other."
            )
        # The adapter's initialisation is public randomness: seed it with the Trainer's seed so that
        # runs are reproducible (the DP sampling and noise never use this seed).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, peft_config)

    # ------------------------------------------------------------------ the Trainer's data path
    def get_train_dataloader(self) -> DataLoader:
        # One tick per logical step; the Poisson draw is made in training_step, identical on every rank.
        # Marked as prepared so accelerate does not re-shard it (which would give each rank its own draw).
        loader = DataLoader(_StepTicks(self.plan.steps_per_epoch), batch_size=1, shuffle=False, collate_fn=_collate_tick)
        loader._is_accelerate_prepared = True
        return loader

    def num_examples(self, dataloader: DataLoader) -> int:
        # The "Num examples" banner line: N privacy units, not the number of ticks.
        return self.plan.num_units

    def get_total_train_batch_size(self, args) -> int:
        # The banner's "Total train batch size": the expected logical batch, not chunk × devices.
        return self.plan.logical_batch_size

    # ------------------------------------------------------------------ training
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """Charge the ledger for the whole schedule (or restore a charged run), then train."""
        refuse_hub_uploads(self.args)  # args.push_to_hub may have been set after construction
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint.")
        self._fast = fast_path_for(self.args, self.accelerator.unwrap_model(self.model), self._trainable, self._examples,
                                   pad_token_id=self._pad_token_id)  # its refusals come before any charge
        try:
            if resume_from_checkpoint:
                self._restore_run(str(resume_from_checkpoint))
            else:
                self._start_run()
            return self._train_charged(resume_from_checkpoint, **kwargs)
        finally:
            self._close_fast_path()

    def _train_charged(self, resume_from_checkpoint: str | bool | None, **kwargs: Any):
        p = self.plan
        logger.info(
            "DP-SGD: N = %d %ss (public); Poisson q = %.4g (expected logical batch %d); physical chunk "
            "per_device_train_batch_size = %d; σ = %.4g, C = %g, T = %d steps; ledger ε = %.4g of %.4g, δ = %.3g (%s).",
            p.num_units, p.privacy_unit, p.sampling_probability, p.logical_batch_size,
            self.args.per_device_train_batch_size, p.noise_multiplier, p.per_example_max_grad_norm, p.num_steps,
            self.ledger.epsilon_spent(), self.ledger.epsilon, p.delta, p.accountant,
        )
        self._first_step_check.arm()  # check the first optimizer step of this call (docs/DP_CORRECTNESS.md row 11)
        self._verify_pending = True  # check per-example gradients against autograd on the first chunk
        self._fast_pending = True  # check the fast path's losses on the first chunk with a target token
        self._grads.attach()
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self._grads.detach()

    def _close_fast_path(self) -> None:
        """Forget the activation cache (private): free the memory, delete an on-disk cache folder."""
        self._fast = close_fast_path(self._fast)

    def _start_run(self) -> None:
        """A new run: fresh secret randomness, and the whole schedule charged before step 1."""
        self._seeds, self._run_id = new_run_secrets(self.args.dp_seed, world_size=self.args.world_size)
        self._steps_run = set()
        self._charge_training()

    def _charge_training(self) -> None:
        """Charge all T steps of this run and fix the accountant the ledger settled on.

        Privacy: runs before the first step; a refused charge raises before anything is trained. The
        ledger is bound to its file before the charge, so the charge is on disk before step 1.
        """
        self._bind_ledger()
        self.ledger.charge(
            self._stage,
            training_event(self.plan),
            privacy_unit=self.plan.privacy_unit,
            num_units=self.plan.num_units - self._public_units,
            metadata={**charge_metadata(self.plan, run_id=self._run_id, public_units=self._public_units),
                      **(self._labels.card_parameters(self.args.adapter_per_label) if self._labels is not None else {})},
        )
        self._adopt_ledger_accountant()

    def _adopt_ledger_accountant(self) -> None:
        if self.ledger.accountant and self.ledger.accountant != self.plan.accountant:
            self.plan = dataclasses.replace(self.plan, accountant=self.ledger.accountant)
            self._epsilon_cache.clear()

    def _bind_ledger(self) -> None:
        """An unbound ledger is bound to ``output_dir/privacy_ledger.json`` (on the main process): it
        then saves itself inside every charge. A ledger bound elsewhere (a run folder's) stays there."""
        if self.ledger.path is not None or not self.args.should_save:
            return
        path = os.path.join(self.args.output_dir, LEDGER_FILE)
        refuse_forgetting_earlier_spend(self.ledger, path, stage=self._stage, run_id=self._run_id)
        os.makedirs(self.args.output_dir, exist_ok=True)
        self.ledger.bind(path)

    def _restore_run(self, checkpoint: str) -> None:
        """Continue a charged run from a checkpoint: same secrets, same schedule, no new charge."""
        state = resumable_run_state(checkpoint, self.plan, self._data_fingerprint)
        self._seeds = state.seeds
        self._run_id = state.run_id
        # Steps after the checkpoint re-run from the checkpoint's state: the same computation, nothing new.
        self._steps_run = set(range(state.global_step))
        if not holds_run_charge(self.ledger, self._stage, self._run_id):
            # A fresh process with a fresh ledger: the interrupted run's charge is re-recorded (not
            # re-spent), with its id, so the ledger shows what this release really spent; refused if the
            # checkpoint's ledger (or output_dir's, checked when the ledger is bound) knew of other charges.
            saved = os.path.join(checkpoint, LEDGER_FILE)
            refuse_forgetting_earlier_spend(self.ledger, saved, stage=self._stage, run_id=self._run_id)
            earlier = checkpoint_charge(checkpoint, self._stage, self._run_id)
            if earlier is not None:
                self.ledger.record(earlier)
                self._adopt_ledger_accountant()
                self._bind_ledger()
            else:
                self._charge_training()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        if self._labels is not None:  # the Trainer reloads every label adapter, trainable only the active one
            self._labels.keep_trainable(self.model if model is None else model)

    def _save_checkpoint(self, model, trial):
        # The run's secrets and the ledger go into every checkpoint, before the Trainer's own files
        # (trainer_state.json, written last, marks the checkpoint complete). Checkpoints are private.
        if self.args.should_save and self._seeds is not None:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            write_run_state(folder, RunState(
                run_id=self._run_id, seeds=self._seeds, global_step=self.state.global_step,
                data_fingerprint=self._data_fingerprint, plan=asdict(self.plan),
            ), self.ledger)
        return super()._save_checkpoint(model, trial)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The sum of per-example losses (training) or their mean (evaluation).

        Privacy: each example's loss is its mean over its *own* target tokens, never normalised by
        anything batch-wide, so its gradient depends on that example alone. An example without
        target tokens has loss 0 and a zero gradient.
        """
        if "labels" not in inputs:
            raise DatasetError(
                "DPSynthTrainer computes losses from 'labels'; an evaluation dataset must be tokenised with "
                "input_ids and labels (-100 where no loss is taken)."
            )
        labels = inputs.pop("labels")
        rows = inputs.pop("dp_rows", None)
        if self._fast is not None and rows is not None and model.training:
            per_example = self._fast.per_example_loss(rows.tolist(), inputs, labels)
            return (per_example.sum(), None) if return_outputs else per_example.sum()
        outputs = model(**inputs)
        per_example = per_example_causal_lm_loss(outputs.logits, labels)
        loss = per_example.sum() if model.training else per_example.mean()
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One logical DP-SGD step over the whole Poisson draw (``inputs`` is only a step tick)."""
        step = self.state.global_step
        self._claim_step(step)
        self._first_step_check.snapshot()
        core = self.accelerator.unwrap_model(model)  # bypasses DDP's gradient averaging
        rank, world = self.args.process_index, self.args.world_size
        draw = PoissonSampler(
            num_units=self.plan.num_units, sampling_probability=self.plan.sampling_probability, seed=self._seeds.sampling
        ).draw(step)
        chunk_size, strategy = self.args.per_device_train_batch_size, self.args.train_sampling_strategy
        share = rank_share(draw, self._units, rank=rank, world_size=world)
        # One group of units per adapter: all of them, or each label's (adapter_per_label).
        groups = self._labels.groups(share) if self._labels is not None else [(None, share)]
        planned = [(g, plan_chunks(packing_order(units, self._unit_lengths, strategy), self._units, chunk_size))
                   for g, units in groups]
        # Every rank runs as many chunks as the busiest one (the draw is known everywhere): the
        # others pad with fully masked chunks, so per-forward collectives could never hang.
        num_chunks = max(
            len(plan_chunks(rank_share(draw, self._units, rank=r, world_size=world), self._units, chunk_size))
            for r in range(world)
        ) if world > 1 else None
        sums = {g: ClippedSum(self._params_of[g], per_example_max_grad_norm=self.plan.per_example_max_grad_norm)
                for g, _ in planned}
        loss_sum = torch.zeros((), device=self.args.device)
        with self._secret_torch_rng(step):  # dropout masks drawn from the run's secret randomness
            for g, chunks in planned:
                if g is not None:
                    self._labels.activate(core, g)
                sums[g].reset()
                for index in range(num_chunks or len(chunks)):
                    if index >= len(chunks):
                        self._padding_chunk(core)
                    else:
                        loss_sum += self._chunk(core, chunks[index], sums[g])
        generator = None
        if rank == 0 and self.plan.noise_multiplier > 0:
            generator = noise_generator(self._seeds.noise, step, device=self._trainable[0].param.device)
        reduce = (lambda t: self.accelerator.reduce(t, reduction="sum")) if world > 1 else None
        for g, clipped in sums.items():  # every adapter gets its noise, drawn for units or not
            clipped.add_noise(noise_multiplier=self.plan.noise_multiplier, generator=generator)
            divisor = self.plan.expected_batch_size if g is None else \
                self._labels.expected_batch_size(g, self.plan.sampling_probability)  # q·ñ_ℓ, the DP count
            for p, grad in zip(clipped.params, clipped.finish(expected_batch_size=divisor, all_reduce=reduce)):
                p.grad = grad.to(p.dtype)  # replaces whatever autograd accumulated
        if self._labels is not None:
            self._labels.keep_trainable(core)
        # Logged loss (not private): the mean per-example loss of this rank's share of the draw.
        return loss_sum / max(1, sum(len(c.examples) for _, chunks in planned for c in chunks))

    def _chunk(self, core: torch.nn.Module, chunk: Any, clipped: ClippedSum) -> torch.Tensor:
        """Forward and backward of one physical chunk; its units' clipped gradients added to ``clipped``."""
        rows = chunk.examples.tolist()
        inputs = collate(self._examples, rows, pad_token_id=self._pad_token_id)
        if self._fast is not None and self._fast_pending and bool((inputs["labels"][:, 1:] != IGNORE_INDEX).any()):
            self._fast_pending = False  # its losses against the model's own, on a chunk that has some
            with self.compute_loss_context_manager():
                self._fast = checked_fast_path(self._fast, core, rows, inputs, self.args)
        if self._fast is not None:
            inputs["dp_rows"] = torch.as_tensor(rows)
        with self._grads.capture(batch_size=len(rows)):
            loss = super().training_step(core, inputs)
        per_example = self._grads.pop()
        if self._verify_pending:
            self._verify_pending = False
            verify_against_autograd(self._trainable, per_example, low_precision=self.args.bf16)
        clipped.accumulate(per_example, unit_slots=torch.as_tensor(chunk.unit_slots), units=chunk.units.tolist(),
                           completes=chunk.completes.tolist())
        return loss

    def _claim_step(self, step: int) -> None:
        """Refuse to take a step beyond the charged schedule, or to take one step of this run twice."""
        if step >= self.plan.num_steps or self.state.max_steps != self.plan.num_steps:
            raise PrivacyBudgetExceededError(
                f"Step {step + 1} of a run charged for {self.plan.num_steps} steps (the Trainer plans "
                f"{self.state.max_steps}): it would spend budget that was never charged. Start a new run, which is "
                "charged again."
            )
        if step in self._steps_run:
            raise CheckpointError(
                f"Step {step} of this run was already taken: running it again from another model state would reuse "
                "its noise. Resume from a checkpoint (which restores the model state), or start a new run."
            )
        self._steps_run.add(step)

    @contextlib.contextmanager
    def _secret_torch_rng(self, step: int):
        on_cuda = self.args.device.type == "cuda"
        devices = [self.args.device.index if self.args.device.index is not None else torch.cuda.current_device()] if on_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(dropout_seed(self._seeds.noise, step))
            yield

    def _padding_chunk(self, core: torch.nn.Module) -> None:
        """A forward/backward on one fully masked example: zero gradient, keeps ranks in lockstep."""
        pad = TokenizedExamples(input_ids=[[self._pad_token_id] * 2], labels=[[IGNORE_INDEX] * 2])
        with self._grads.capture(batch_size=1):
            super().training_step(core, collate(pad, [0], pad_token_id=self._pad_token_id))
        self._grads.pop()

    # ------------------------------------------------------------------ visibility
    def _epsilon_after(self, steps: int) -> float:
        """ε of the training stage had it stopped after ``steps`` steps (cached; off the hot path)."""
        steps = min(steps, self.plan.num_steps)
        if steps not in self._epsilon_cache:
            self._epsilon_cache[steps] = epsilon_after(self.plan, steps)
        return self._epsilon_cache[steps]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # ε spent so far (steps taken out of the charged plan) rides along with the loss logs.
        if "loss" in logs and self.is_world_process_zero():  # an accountant call: main process only
            logs["epsilon"] = self._epsilon_after(self.state.global_step)
            logs["epsilon_charged"] = self.ledger.epsilon_spent(self._stage)
        super().log(logs, start_time)

    def privacy_report(self) -> TrainingPrivacyReport:
        """The training stage's guarantee, read from the ledger."""
        charged = self.ledger.epsilon_spent(self._stage) if self._run_id is not None else self._epsilon_after(self.plan.num_steps)
        return build_privacy_report(self.plan, self.ledger, epsilon=charged, steps_taken=self.state.global_step,
                                    dp_seed_set=self.args.dp_seed is not None)

    # ------------------------------------------------------------------ sharing
    @property
    def ledger_stage(self) -> str:
        """The ledger stage this trainer charges (``"training"``, or ``"audit"`` for a charged audit run)."""
        return self._stage

    @property
    def has_trained(self) -> bool:
        """True once this run's training charge is in the ledger (there is a DP adapter to describe)."""
        return self._run_id is not None
