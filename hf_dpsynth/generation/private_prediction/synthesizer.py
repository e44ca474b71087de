"""Private prediction's generator (:class:`PrivatePredictionSynthesizer`): a base model prompted
with private records, no fine-tuning (Amin et al., Findings of EMNLP 2024; docs/ALGORITHMS.md §3).

Each synthetic record is decoded from a *batch* of private records (:mod:`.batching`): every record
of the batch is put in its own prompt, and each next token is sampled from the softmax of the
clipped logits summed over the batch and divided by the public expected batch size s
(:mod:`.mechanism`). An optional sparse-vector gate spends budget only on tokens where the private
prompts disagree with a public prompt; the others come from the public prompt for free.

Privacy (zCDP, then (ε, δ) through the ledger's RDP accountant): per batch and per private
token ½(c/(sτ))², plus 2/(sσ_svt)² with the gate; batches are disjoint (parallel composition),
so a run costs ρ = r_max·[½(c/(sτ))² + 2/(sσ_svt)²], charged once, before anything runs, for the
planned maximum r_max private tokens per record — never for the tokens actually used. The number
of batches per label comes from public numbers or an already charged DP histogram, and every batch
emits exactly one record, so the number and order of outputs never depend on the private data.
The mechanism's randomness comes from OS entropy and is never written anywhere (a known seed
would reveal which side of each sampling threshold the private distribution fell). The private
records come only as a :class:`~hf_dpsynth.data.PreparedDataset` (checked, scrubbed, bounded by
:func:`~hf_dpsynth.data.prepare_dataset`): there is no second way in.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.data.prepare import PreparedDataset
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.errors import (
    DPConfigError,
    InvalidPrivacyParameterError,
    PrivacyBudgetExceededError,
    PrivacyUnitMismatchError,
)
from hf_dpsynth.generation.base import (
    GeneratedText,
    Synthesizer,
    build_dataset,
    check_positive_int,
    check_tokenizer_matches,
)
from hf_dpsynth.generation.contexts import LockstepContexts
from hf_dpsynth.generation.private_prediction.batching import (
    BatchKey,
    assign_batches,
    batch_order,
    expected_sizes,
    load_examples,
    plan_batches,
)
from hf_dpsynth.generation.private_prediction.mechanism import (
    SparseVectorGate,
    aggregate_logits,
    private_prediction_rho,
    public_mask,
    sample_token,
    svt_statistic,
)
from hf_dpsynth.privacy.calibration import default_delta
from hf_dpsynth.privacy.events import zcdp_event

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting
    from datasets import Dataset

    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["DEFAULT_INSTRUCTION", "DEFAULT_PUBLIC_INSTRUCTION", "STAGE", "PrivatePredictionSynthesizer"]

STAGE = "private_prediction"
DEFAULT_INSTRUCTION = (
    "Here is an example record:\n\n{example}\n\nWrite one new, different record in exactly the same format, "
    "on a similar topic and in a similar style. Reply with the record only."
)
DEFAULT_PUBLIC_INSTRUCTION = "Write one new record in the format shown. Reply with the record only."


class PrivatePredictionSynthesizer(Synthesizer):
    """Synthetic records from a base model prompted with private records, by private prediction.

    Args:
        model, tokenizer: any causal LM (e.g. the embedded default) and its tokenizer.
        private_dataset: a :class:`~hf_dpsynth.data.PreparedDataset` (checked, scrubbed, bounded:
            prepare the records first with :func:`~hf_dpsynth.data.prepare_dataset`). Prepared at
            user level, each user contributes one record (chosen by a public hash) and batches
            are keyed by the user id.
        codec: the records' codec; at most one condition (the label), whose value sets the
            batch's public condition.
        ledger: planned with a ``"private_prediction"`` stage (zCDP: the ledger uses RDP); charged
            ρ(max_private_tokens) once per :meth:`generate`, before anything runs. Its privacy unit
            must be the one this generator protects (``"user"`` only when batching by user id)
            and its δ below 1/N, N the number of units (records, or users at user level): both
            are checked here, before any work, and again by the charge.
        expected_batch_size: the public s (an int, or per label a mapping).
        label_counts: DP label counts already charged in this ledger (a :class:`DPHistogram`),
            or declared public counts ``{label: count}``; batches per label = ⌊count / s⌋.
        batches_per_label: public batch counts instead (``{label: B}``, or an int without
            conditions); checked against ``label_counts`` when both are given.
        clip: c, the logit clipping bound. temperature: τ.
        max_private_tokens: r_max per record (None: the most that the stage's budget allows).
        max_new_tokens: total tokens per record (private + public ones under the gate); default
            ``max_private_tokens`` without the gate.
        public_prompt: the instruction of the public prompt (no private records), used by the
            gate and by top-k / top-p masks.
        svt: a :class:`SparseVectorGate`, or None.
        top_k, top_p: masks computed from the public prompt's logits only (never private ones).
        clip_against_public: clip each private context's difference from the public prompt's
            log-probabilities (``pub + clip(priv − pub, ±c)``, see
            :func:`~hf_dpsynth.generation.private_prediction.mechanism.aggregate_logits`) instead
            of its own logits; needs ``public_prompt``. The accounting is the same.
        instruction: the private prompt, with ``{example}`` where the record goes.

    Privacy: see the module docstring. The expected batch size, batch counts, clip, temperature,
    r_max, prompts and the DP label counts are public; the records are not.
    """

    name = "private_prediction"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        private_dataset: PreparedDataset,
        *,
        codec: Codec,
        ledger: PrivacyLedger,
        expected_batch_size: int | Mapping[str, int],
        label_counts: DPHistogram | Mapping[str, float] | None = None,
        batches_per_label: int | Mapping[str, int] | None = None,
        clip: float = 10.0,
        temperature: float = 2.0,
        max_private_tokens: int | None = 64,
        max_new_tokens: int | None = None,
        public_prompt: str | None = None,
        svt: SparseVectorGate | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        clip_against_public: bool = False,
        instruction: str = DEFAULT_INSTRUCTION,
        stage: str = STAGE,
    ) -> None:
        if not isinstance(codec, Codec):
            raise DPConfigError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
        if len(codec.conditions) > 1:
            raise DPConfigError(
                f"private prediction batches by at most one condition (the label); the codec has {list(codec.conditions)}."
            )
        if not isinstance(private_dataset, PreparedDataset):
            raise DPConfigError(
                f"private_dataset must be a PreparedDataset; got {type(private_dataset).__name__}. Prepare the records "
                "first with hf_dpsynth.data.prepare_dataset(records, codec) (privacy_unit='user', user_id_column=... "
                "at user level): it checks, scrubs and bounds them before private prediction batches them."
            )
        check_tokenizer_matches(model, tokenizer)
        if "{example}" not in instruction:
            raise DPConfigError("instruction must contain '{example}', where each private record goes.")
        if not (math.isfinite(clip) and clip > 0 and math.isfinite(temperature) and temperature > 0):
            raise InvalidPrivacyParameterError(f"clip and temperature must be positive; got {clip!r}, {temperature!r}.")
        if (top_k or top_p < 1) and public_prompt is None and svt is None:
            raise DPConfigError(
                "top_k / top_p masks must come from public logits only: give public_prompt= (masks computed from "
                "private logits would break the exponential mechanism)."
            )
        if clip_against_public and public_prompt is None and svt is None:
            raise DPConfigError("clip_against_public clips each private context against the public prompt's logits: "
                                "give public_prompt= (the instruction without any private record).")
        if top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1]; got {top_k!r}, {top_p!r}.")
        self.model, self.tokenizer, self.codec, self.ledger = model, tokenizer, codec, ledger
        self.clip, self.temperature = float(clip), float(temperature)
        self.svt, self.top_k, self.top_p = svt, int(top_k), float(top_p)
        self.clip_against_public = bool(clip_against_public)
        self.instruction = instruction
        self.public_prompt = public_prompt if public_prompt is not None else (DEFAULT_PUBLIC_INSTRUCTION if svt else None)
        self.stage = stage
        self._condition = next(iter(codec.conditions), None)
        self._labels: tuple[str | None, ...] = codec.conditions[self._condition] if self._condition else (None,)
        self.user_id_column = private_dataset.user_id_column
        #: The unit this generator protects: one user when batching by user id, else one record.
        self.privacy_unit = "user" if self.user_id_column else "example"
        self._check_privacy_unit()

        self._sizes = expected_sizes(expected_batch_size, self._labels)
        self.expected_batch_size = min(self._sizes.values())  # ρ uses the smallest s
        self._batches = plan_batches(
            label_counts, batches_per_label, condition=self._condition, labels=self._labels, sizes=self._sizes,
            ledger=ledger,
        )
        examples = load_examples(private_dataset, codec=codec, condition=self._condition, labels=self._labels)
        #: N, the number of privacy units (records, or users at user level): public.
        self.num_units = len(examples)
        self._check_num_units()
        self._members = assign_batches(examples, self._batches, self._labels)

        if max_private_tokens is None:
            max_private_tokens = self._largest_affordable()
        self.max_private_tokens = check_positive_int("max_private_tokens", max_private_tokens)
        self.max_new_tokens = check_positive_int(
            "max_new_tokens", max_new_tokens if max_new_tokens is not None else
            (self.max_private_tokens if svt is None else 4 * self.max_private_tokens)
        )
        if self.max_new_tokens < self.max_private_tokens and svt is None:
            raise DPConfigError("max_new_tokens below max_private_tokens would plan for tokens that are never drawn.")
        self._check_affordable(1, "even one private token")

    # -- set-up ----------------------------------------------------------------------------------

    def _check_privacy_unit(self) -> None:
        unit = self.ledger.privacy_unit
        if unit == self.privacy_unit:
            return
        if unit == "user":
            fix = (
                "Prepare the data at user level (prepare_dataset(..., privacy_unit='user', user_id_column=...)), so "
                "that each user contributes one record and batches are keyed by user, or charge an example-level ledger."
            )
            what = "one record (the data was prepared at example level, so records are batched by their content)"
        else:
            fix = "Use a user-level ledger (privacy_unit='user'), or prepare the data at example level."
            what = f"one user (records are batched by the user id in {self.user_id_column!r})"
        raise PrivacyUnitMismatchError(
            f"The ledger protects one {unit!r}, but this private prediction protects {what}: the card would "
            f"claim {unit}-level DP for a run that gives {self.privacy_unit}-level DP. {fix}"
        )

    def _check_num_units(self) -> None:
        n, ledger, unit = self.num_units, self.ledger, self.privacy_unit
        if ledger.num_units is not None and ledger.num_units != n:
            raise PrivacyUnitMismatchError(
                f"The ledger is for N = {ledger.num_units} {unit}s, but the private data has N = {n} {unit}s"
                f"{' (one record per user)' if unit == 'user' else ''}. δ and the accounting depend on N: run every "
                "stage of a release on the same prepared data."
            )
        if not ledger.delta < 1 / n:
            raise InvalidPrivacyParameterError(
                f"The ledger's delta = {ledger.delta:g} is not below 1/N = {1 / n:.3g} for the N = {n} {unit}s of the "
                "private data; with δ ≥ 1/N, releasing one unit's record verbatim would satisfy the guarantee. Use a "
                f"ledger with a smaller δ, e.g. 1/(N·ln N) = {default_delta(n):.3g}."
            )

    # -- accounting ------------------------------------------------------------------------------

    def rho(self, max_private_tokens: int | None = None) -> float:
        """ρ of one :meth:`generate` call (with r_max = ``max_private_tokens``)."""
        r = self.max_private_tokens if max_private_tokens is None else max_private_tokens
        return private_prediction_rho(
            max_private_tokens=r, clip=self.clip, temperature=self.temperature,
            expected_batch_size=self.expected_batch_size, svt_noise=self.svt.noise if self.svt else None,
        )

    def privacy_events(self) -> list[tuple[str, dp_accounting.DpEvent]]:
        return [(self.stage, zcdp_event(rho=self.rho()))]

    def _check_affordable(self, tokens: int, what: str) -> None:
        if self.ledger.would_exceed(self.stage, zcdp_event(rho=self.rho(tokens))):
            raise PrivacyBudgetExceededError(
                f"The budget left for stage {self.stage!r} is too small for {what} (ρ = {self.rho(tokens):.3g} at "
                f"s = {self.expected_batch_size}, c = {self.clip:g}, τ = {self.temperature:g}). Raise its share, the "
                "expected batch size or the temperature, or lower clip."
            )

    def _largest_affordable(self) -> int:
        self.max_private_tokens = 1
        self._check_affordable(1, "even one private token")
        low, high = 1, 2
        while high <= 1_000_000 and not self.ledger.would_exceed(self.stage, zcdp_event(rho=self.rho(high))):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            if self.ledger.would_exceed(self.stage, zcdp_event(rho=self.rho(mid))):
                high = mid
            else:
                low = mid
        return low

    # -- generation ------------------------------------------------------------------------------

    @property
    def num_batches(self) -> int:
        return len(self._members)

    def _batch_order(self) -> list[BatchKey]:
        """The public order in which batches emit their records (round-robin over labels)."""
        return batch_order(self._batches, self._labels)

    def _prompt(self, body: str, prefix: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = body + "\n\n"
        ids = self.tokenizer(text + prefix, add_special_tokens=False)["input_ids"]
        return ids or [self.tokenizer.eos_token_id]

    def generate(
        self, num_records: int | None = None, *, seed: int | None = None, progress: bool = True,
    ) -> Dataset:
        """One record per batch (all batches, or the first ``num_records`` in a public order).

        Charges ρ(max_private_tokens) to the ledger before anything runs. ``seed`` fixes the
        mechanism's randomness for tests only: it is never written anywhere, and without it the
        randomness comes from OS entropy. A bound ledger has saved the charge before any private
        token is drawn.
        """
        from tqdm.auto import tqdm

        order = self._batch_order()
        if num_records is not None:
            num_records = check_positive_int("num_records", num_records)
            if num_records > len(order):
                raise DPConfigError(
                    f"num_records={num_records} exceeds the {len(order)} batches (one record per batch)."
                )
            order = order[:num_records]
        event = zcdp_event(rho=self.rho())
        self._check_affordable(self.max_private_tokens, f"{self.max_private_tokens} private tokens per record")
        self.ledger.charge(
            self.stage, event, privacy_unit=self.privacy_unit, num_units=self.num_units,
            metadata={
                "mechanism": "private_prediction", "privacy_unit": self.privacy_unit, "num_units": self.num_units,
                "expected_batch_size": self.expected_batch_size,
                "clip": self.clip, "temperature": self.temperature, "max_private_tokens": self.max_private_tokens,
                "svt": None if self.svt is None else {"threshold": self.svt.threshold, "noise": self.svt.noise},
                "clipped": "against the public prompt" if self.clip_against_public else "own logits",
                "top_k": self.top_k, "top_p": self.top_p, "num_batches": len(order),
            },
        )
        entropy = seed if seed is not None else secrets.randbits(63)
        gen = torch.Generator().manual_seed(int(entropy))
        lap = np.random.default_rng(int(entropy) ^ 0x5EED5EED)
        del entropy
        outputs: list[GeneratedText] = []
        private_tokens: list[int] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for label, b in tqdm(order, desc="private prediction", unit="rec", disable=not progress):
                prefix = self.codec.prompt_for(**({self._condition: label} if self._condition else {}))
                text, used = self._decode_batch(self._members[(label, b)], label, prefix, gen, lap)
                outputs.append(GeneratedText(prefix=prefix, text=text, condition=f"{self._condition}={label}" if self._condition else ""))
                private_tokens.append(used)
        finally:
            self.model.train(was_training)
        return build_dataset(
            outputs, self.codec, generator=self.name,
            summary={
                "privacy": {
                    "stage": self.stage, "zcdp_rho": self.rho(), "expected_batch_size": self.expected_batch_size,
                    "clip": self.clip, "temperature": self.temperature, "max_private_tokens": self.max_private_tokens,
                    "sparse_vector": None if self.svt is None else {"threshold": self.svt.threshold, "noise": self.svt.noise},
                    "clipped": "against the public prompt" if self.clip_against_public else "own logits",
                    "public_top_k": self.top_k, "public_top_p": self.top_p,
                },
                "batches_per_label": {str(k): v for k, v in self._batches.items()},
                "max_new_tokens": self.max_new_tokens,
                "private_tokens_max_used": max(private_tokens, default=0),
            },
        )

    def _decode_batch(
        self, members: Sequence[str], label: str | None, prefix: str, gen: torch.Generator, lap: np.random.Generator
    ) -> tuple[str, int]:
        """One record from one batch; returns its text and the private tokens it used (≤ r_max)."""
        s = self._sizes[label]
        prompts = [self._prompt(self.instruction.format(example=text), prefix) for text in members]
        has_public = self.public_prompt is not None
        if has_public:
            prompts.append(self._prompt(self.public_prompt, prefix))
        eos = {self.tokenizer.eos_token_id}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        contexts = LockstepContexts(self.model, prompts, pad_token_id=pad) if prompts else None
        generated: list[int] = []
        used = 0
        threshold_noise = lap.laplace(0.0, self.svt.noise) if self.svt else 0.0
        vocab = len(self.tokenizer)
        while len(generated) < self.max_new_tokens and used < self.max_private_tokens:
            logits = contexts.logits[:, :vocab] if contexts is not None else torch.zeros((0, vocab))
            private = logits[: len(members)]
            public = logits[len(members)] if has_public else None
            mask = public_mask(public, top_k=self.top_k, top_p=self.top_p) if public is not None else None
            if self.svt is not None:
                d = svt_statistic(private, public, expected_batch_size=s)
                if d + lap.laplace(0.0, 2 * self.svt.noise) < self.svt.threshold + threshold_noise:
                    token = self._sample(public.float() / self.temperature, mask, gen)  # public: free
                    generated.append(token)
                    if token in eos:
                        break
                    contexts.step(token)
                    continue
                threshold_noise = lap.laplace(0.0, self.svt.noise)  # redrawn after each private token
            reference = public if self.clip_against_public else None
            scores = aggregate_logits(private, clip=self.clip, expected_batch_size=s, public_logits=reference) / self.temperature
            token = self._sample(scores, mask, gen)
            used += 1
            generated.append(token)
            if token in eos or len(generated) >= self.max_new_tokens or used >= self.max_private_tokens:
                break
            if contexts is not None:
                contexts.step(token)
            else:  # an empty batch without a public prompt: the scores stay 0 (uniform)
                pass
        return self.tokenizer.decode(generated, skip_special_tokens=True), used

    #: One token from the scores (the exponential mechanism); an attribute, so tests can watch it.
    _sample = staticmethod(sample_token)
