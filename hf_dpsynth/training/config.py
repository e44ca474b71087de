"""``DPSynthConfig``: ``transformers.TrainingArguments`` plus the DP-SGD settings; with the refusal of
Hub uploads (:func:`refuse_hub_uploads`) and the check of a prepared dataset against it
(:func:`unwrap_prepared`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import TrainingArguments

from hf_dpsynth.errors import DPConfigError, InvalidPrivacyParameterError


_HUB_REFUSAL = (
    "{given} would make the Trainer upload output_dir and its checkpoints, which hold the secret sampling and "
    "noise seeds of the run (private). Leave push_to_hub=False and publish with "
    "hf_dpsynth.hub.push_trainer_adapter(trainer, repo_id=...), which uploads the adapter alone with its DP card, behind the safety gates."
)


def refuse_hub_uploads(args: TrainingArguments) -> None:
    """Refuse the Trainer's own Hub uploads (``push_to_hub=True``, whatever ``hub_strategy``): they
    would publish checkpoints holding the run's secret seeds (docs/DP_CORRECTNESS.md row 27)."""
    if getattr(args, "push_to_hub", False):
        strategy = getattr(args, "hub_strategy", None)
        strategy = getattr(strategy, "value", strategy)
        raise DPConfigError(_HUB_REFUSAL.format(given=f"push_to_hub=True (hub_strategy={strategy!r})"))


@dataclass
class DPSynthConfig(TrainingArguments):
    """Training arguments for :class:`~hf_dpsynth.DPSynthTrainer`.

    ``per_device_train_batch_size`` is the *physical chunk size*: how many examples go through
    the model at once. The privacy-relevant batch is ``logical_batch_size``: the expected number of
    privacy units in one Poisson draw (one optimizer step). A step processes its whole draw in as
    many chunks as it needs, so the Trainer's "total train batch size" does not describe it.
    """

    # --- the privacy budget (or give a shared PrivacyLedger to the trainer instead) ---
    target_epsilon: float | None = field(
        default=None,
        metadata={"help": "ε of the training stage when the trainer makes its own ledger (> 0). "
                          "Leave unset when passing a ledger."},
    )
    target_delta: float | None = field(
        default=None,
        metadata={"help": "δ of the training stage when the trainer makes its own ledger; must be < 1/N. "
                          "Default 1/(N·ln N). Leave unset when passing a ledger."},
    )
    noise_multiplier: float | None = field(
        default=None,
        metadata={"help": "σ: noise std divided by per_example_max_grad_norm. Default: calibrated to the "
                          "budget. 0 disables DP (ε = ∞, reported as non-private)."},
    )
    per_example_max_grad_norm: float = field(
        default=1.0, metadata={"help": "L2 bound C on each privacy unit's gradient (> 0)."}
    )
    logical_batch_size: int = field(
        default=256,
        metadata={"help": "Expected privacy units per optimizer step; the Poisson rate is q = this / N."},
    )
    privacy_unit: Literal["example", "user"] = field(
        default="example",
        metadata={"help": "What one unit of privacy protects: one example, or all of one user's examples.",
                  "choices": ["example", "user"]},
    )
    user_id_column: str | None = field(
        default=None, metadata={"help": "Column identifying users (privacy_unit='user')."}
    )
    max_examples_per_user: int | None = field(
        default=None,
        metadata={"help": "Cap on each user's examples (privacy_unit='user'); extra ones are left out by a "
                          "fixed public hash."},
    )
    accountant: Literal["pld", "rdp"] = field(
        default="pld",
        metadata={"help": "Accountant of a ledger the trainer makes itself (PLD is tighter).",
                  "choices": ["pld", "rdp"]},
    )
    dp_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the sampling and noise randomness, for tests only: a known seed voids the "
                          "guarantee. Default: OS entropy. Never the Trainer's `seed`."},
    )
    dataset_text_field: str = field(default="text", metadata={"help": "The text column to train on."})
    activation_cache: Literal["auto", "memory", "disk", "off"] = field(
        default="auto",
        metadata={"help": "Run the frozen layers below the lowest LoRA layer once per example and keep their output "
                          "(private: in memory, or an owner-only folder in output_dir deleted after training), and "
                          "take logits only where a loss is; 'auto': in memory when it fits activation_cache_max_gib, "
                          "'off': the plain forward pass. Changes no gradient (checked on the first chunk).",
                  "choices": ["auto", "memory", "disk", "off"]},
    )
    activation_cache_max_gib: float = field(
        default=2.0, metadata={"help": "Largest in-memory activation cache (every training token × hidden size)."}
    )
    adapter_per_label: str | None = field(
        default=None,
        metadata={"help": "A label column: train one LoRA adapter per label on that label's examples, in one DP-SGD "
                          "run charged once (example level only). Needs label_counts."},
    )
    label_counts: dict | None = field(
        default=None,
        metadata={"help": "With adapter_per_label: each declared label's DP count (from a DP label histogram on the "
                          "same ledger), never the real one; adapter ℓ's noisy sum is divided by q·count."},
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "Order of a Poisson draw's units in its physical chunks: 'group_by_length' (least padding) "
                          "or 'random' (draw order). The draw itself is always Poisson.",
                  "choices": ["group_by_length", "random"]},
    )
    max_length: int = field(default=512, metadata={"help": "Tokens kept per example (longer ones are truncated)."})

    # --- Trainer settings whose defaults would break the guarantee ---
    max_grad_norm: float = field(
        default=0.0,
        metadata={"help": "Must stay 0: the Trainer's global clip would rescale the noisy gradient; the "
                          "privacy clip is per_example_max_grad_norm."},
    )
    average_tokens_across_devices: bool = field(
        default=False,
        metadata={"help": "Must stay False: each example's loss is normalised by its own tokens only."},
    )

    def set_push_to_hub(self, *args, **kwargs):
        # The Trainer's own push uploads output_dir and checkpoints (secret seeds): refused like push_to_hub=True.
        raise DPConfigError(_HUB_REFUSAL.format(given="set_push_to_hub() (push_to_hub=True)"))

    def to_dict(self) -> dict:
        # What the Trainer sends to trackers and logs: a reproducibility seed of the DP randomness
        # must never be published (it reveals the draws and the noise).
        data = super().to_dict()
        if data.get("dp_seed") is not None:
            data["dp_seed"] = "<redacted>"
        return data

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_grad_norm and self.max_grad_norm > 0:
            raise DPConfigError(
                f"max_grad_norm={self.max_grad_norm} would clip the noisy, aggregated gradient again (the "
                "Trainer's global clip), which does not bound one example's influence. Leave max_grad_norm=0 "
                "and set per_example_max_grad_norm= for the privacy clip."
            )
        if self.average_tokens_across_devices:
            raise DPConfigError(
                "average_tokens_across_devices=True normalises each example's loss by a batch-wide token "
                "count, so one example's gradient depends on the others and the sensitivity exceeds the clip. "
                "Leave it False."
            )
        if self.gradient_accumulation_steps != 1:
            raise DPConfigError(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}: with DP-SGD one optimizer "
                "step is one Poisson draw, already processed in as many physical chunks as it needs. Set "
                "logical_batch_size= for a larger batch and keep gradient_accumulation_steps=1."
            )
        refuse_hub_uploads(self)
        if self.load_best_model_at_end:
            raise DPConfigError(
                "load_best_model_at_end=True selects a checkpoint by its score on evaluation data; on private "
                "data that selection is not differentially private. Train for a fixed schedule instead."
            )
        if self.fp16:
            raise DPConfigError(
                "fp16=True scales the loss dynamically, which would scale every per-example gradient before "
                "clipping. Use bf16=True or fp32."
            )
        if self.auto_find_batch_size:
            raise DPConfigError(
                "auto_find_batch_size=True restarts the training loop from step 0 after an out-of-memory error "
                "while keeping the updated weights: charged steps would run again with the same noise. Lower "
                "per_device_train_batch_size (the physical chunk size) instead; it never changes the DP batch."
            )
        if self.deepspeed or self.fsdp or getattr(self, "parallelism_config", None) is not None:
            raise DPConfigError(
                "DeepSpeed, FSDP and other sharded back-ends apply or average each backward pass's raw gradient "
                "themselves, before per-example clipping and noise. Use plain data parallelism (torchrun / "
                "`accelerate launch` without DeepSpeed or FSDP); LoRA adapters are small enough for it."
            )
        optim = str(getattr(self.optim, "value", self.optim))
        if "lomo" in optim or "layerwise" in optim:
            raise DPConfigError(
                f"optim={optim!r} updates the weights inside the backward pass, with the raw (unclipped, "
                "noiseless) gradient. Use an optimizer that steps on the final gradient, e.g. adamw_torch."
            )
        if self.neftune_noise_alpha:
            raise DPConfigError(
                "neftune_noise_alpha scales embedding noise by the padded batch length, so one example's "
                "gradient would depend on the other examples of its chunk. Leave it unset for DP training."
            )
        if self.label_smoothing_factor:
            raise DPConfigError(
                "label_smoothing_factor is not applied by DP training's per-example loss; leave it at 0."
            )
        if self.max_steps == 0:
            raise DPConfigError("max_steps=0 gives a schedule without steps; use max_steps=-1 (epochs) or a positive count.")
        if not self.per_example_max_grad_norm or self.per_example_max_grad_norm <= 0 or not math.isfinite(
            self.per_example_max_grad_norm
        ):
            raise InvalidPrivacyParameterError(
                f"per_example_max_grad_norm must be a positive finite number; got {self.per_example_max_grad_norm}."
            )
        if self.logical_batch_size < 1:
            raise DPConfigError(f"logical_batch_size must be at least 1; got {self.logical_batch_size}.")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise InvalidPrivacyParameterError(
                f"target_epsilon must be > 0; got {self.target_epsilon}. Use noise_multiplier=0 to train "
                "without DP (reported as non-private)."
            )
        if self.target_delta is not None and not 0 < self.target_delta < 1:
            raise InvalidPrivacyParameterError(f"target_delta must be in (0, 1); got {self.target_delta}.")
        if self.noise_multiplier is not None and (self.noise_multiplier < 0 or not math.isfinite(self.noise_multiplier)):
            raise InvalidPrivacyParameterError(f"noise_multiplier must be ≥ 0 and finite; got {self.noise_multiplier}.")
        if self.privacy_unit not in ("example", "user"):
            raise DPConfigError(f"privacy_unit must be 'example' or 'user'; got {self.privacy_unit!r}.")
        if self.privacy_unit == "user":
            if not self.user_id_column:
                raise DPConfigError("privacy_unit='user' needs user_id_column= naming the column identifying users.")
            if not self.max_examples_per_user or self.max_examples_per_user < 1:
                raise DPConfigError(
                    "privacy_unit='user' needs max_examples_per_user= (a positive integer) to bound each user's "
                    f"contribution; got {self.max_examples_per_user!r}."
                )
        if self.train_sampling_strategy not in ("group_by_length", "random"):
            raise DPConfigError(
                f"train_sampling_strategy={self.train_sampling_strategy!r}: DP-SGD's batches are Poisson draws of "
                "privacy units (the guarantee assumes it); only their packing into chunks can be chosen: "
                "'group_by_length' (the default, least padding) or 'random' (draw order)."
            )
        if hasattr(self.label_counts, "categories") and hasattr(self.label_counts, "noisy_counts"):  # a DPHistogram
            self.label_counts = dict(zip(self.label_counts.categories, map(float, self.label_counts.noisy_counts)))
        if self.adapter_per_label and self.privacy_unit != "example":
            raise DPConfigError(
                "adapter_per_label is example-level only: a user may hold examples of several labels, whose adapters "
                "would then all move with that one user (the sensitivity would be C times the labels). Use "
                "privacy_unit='example', or one adapter for all labels."
            )
        if self.adapter_per_label and self.label_counts is None:
            raise DPConfigError("adapter_per_label needs label_counts= (each label's DP count, from a DP histogram).")
        if self.label_counts is not None and not self.adapter_per_label:
            raise DPConfigError("label_counts= is read only with adapter_per_label= (the label column).")
        if self.activation_cache not in ("auto", "memory", "disk", "off"):
            raise DPConfigError(
                f"activation_cache must be 'auto', 'memory', 'disk' or 'off'; got {self.activation_cache!r}."
            )
        if not self.activation_cache_max_gib > 0:
            raise DPConfigError(f"activation_cache_max_gib must be > 0; got {self.activation_cache_max_gib!r}.")
        if self.max_length < 2:
            raise DPConfigError(f"max_length must be at least 2 tokens; got {self.max_length}.")


def unwrap_prepared(train_dataset: Any, args: DPSynthConfig) -> Any:
    """The dataset inside a :class:`~hf_dpsynth.data.PreparedDataset`, once its privacy unit,
    user column and cap agree with the config (a mismatch would train at another unit than the
    one the data was bounded for)."""
    from hf_dpsynth.data.prepare import PreparedDataset

    if not isinstance(train_dataset, PreparedDataset):
        return train_dataset
    given = {"privacy_unit": args.privacy_unit, "user_id_column": args.user_id_column,
             "max_examples_per_user": args.max_examples_per_user}
    if args.privacy_unit == "example":
        given.update(user_id_column=None, max_examples_per_user=None)
    expected = train_dataset.training_kwargs()
    if given != expected:
        differ = {k: (given[k], expected[k]) for k in given if given[k] != expected[k]}
        raise DPConfigError(
            "The DPSynthConfig does not match how the data was prepared: "
            + "; ".join(f"{k} is {g!r} in the config but {e!r} in the preparation" for k, (g, e) in differ.items())
            + ". Pass **prepared.training_kwargs() to DPSynthConfig."
        )
    return train_dataset.dataset
