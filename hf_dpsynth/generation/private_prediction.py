"""Private prediction without fine-tuning (Amin et al., Findings of EMNLP 2024; ALGORITHMS.md §3).

Each synthetic record is decoded from a *batch* of private records: every record of the batch is
put in its own prompt, and each next token is sampled from the softmax of the clipped logits
summed over the batch and divided by the public expected batch size s. Softmax sampling of that
average is an exponential mechanism; one record moves every coordinate of it by at most c/s.
An optional sparse-vector gate spends budget only on tokens where the private prompts disagree
with a public prompt; the others come from the public prompt for free.

Privacy (zCDP, then (ε, δ) through the ledger's RDP accountant): per batch and per private
token ½(c/(sτ))², plus 2/(sσ_svt)² with the gate; batches are disjoint (parallel composition),
so a run costs ρ = r_max·[½(c/(sτ))² + 2/(sσ_svt)²], charged once, before anything runs, for the
planned maximum r_max private tokens per record — never for the tokens actually used. The number
of batches per label comes from public numbers or an already charged DP histogram, and every batch
emits exactly one record, so the number and order of outputs never depend on the private data.
The mechanism's randomness comes from OS entropy and is never written anywhere (a known seed
would reveal which side of each sampling threshold the private distribution fell).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.data.loading import column_values, load_records
from hf_dpsynth.data.prepare import PreparedDataset, row_error
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.data.units import cap_user_rows, group_rows_by_user
from hf_dpsynth.errors import (
    DatasetError,
    DPConfigError,
    InvalidPrivacyParameterError,
    InvalidRecord,
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
from hf_dpsynth.privacy.calibration import default_delta
from hf_dpsynth.privacy.events import zcdp_event

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting
    from datasets import Dataset

    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = [
    "PrivatePredictionGenerator",
    "SparseVectorGate",
    "aggregate_logits",
    "clip_logits",
    "private_prediction_rho",
    "svt_statistic",
]

STAGE = "private_prediction"
_BATCH_SALT = b"hf_dpsynth/private-prediction/batch/v1"
DEFAULT_INSTRUCTION = (
    "Here is an example record:\n\n{example}\n\nWrite one new, different record in exactly the same format, "
    "on a similar topic and in a similar style. Reply with the record only."
)
DEFAULT_PUBLIC_INSTRUCTION = "Write one new record in the format shown. Reply with the record only."


# ------------------------------------------------------------------------------------ the mechanism


def clip_logits(logits: torch.Tensor, clip: float) -> torch.Tensor:
    """``max(−c, z − max z + c)`` per row: every coordinate lands in ``[−c, c]``, the top one at c."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values + clip
    return shifted.clamp(min=-clip)


def aggregate_logits(logits: torch.Tensor, *, clip: float, expected_batch_size: int) -> torch.Tensor:
    """The mechanism's score vector: clipped logits summed over the batch, divided by the public s.

    Privacy: adding or removing one context moves each coordinate by at most c/s (and the spread,
    max − min over coordinates, of that move by at most 2c/s), whatever the realised batch size.
    """
    if logits.shape[0] == 0:
        return torch.zeros(logits.shape[-1], dtype=torch.float32, device=logits.device)
    return clip_logits(logits.float(), clip).sum(dim=0) / expected_batch_size


def svt_statistic(logits: torch.Tensor, public_logits: torch.Tensor, *, expected_batch_size: int) -> float:
    """‖(1/s)·Σ_i softmax(z_i) − softmax(z_pub)‖₁ with the public s (one record moves it by ≤ 1/s)."""
    public = torch.softmax(public_logits.float(), dim=-1)
    if logits.shape[0] == 0:
        return float(public.abs().sum())
    private = torch.softmax(logits.float(), dim=-1).sum(dim=0) / expected_batch_size
    return float((private - public).abs().sum())


def private_prediction_rho(
    *,
    max_private_tokens: int,
    clip: float,
    temperature: float,
    expected_batch_size: int,
    svt_noise: float | None = None,
) -> float:
    """ρ (zCDP) of ``max_private_tokens`` private tokens: r·[½(c/(sτ))² + 2/(sσ_svt)²]."""
    per_token = 0.5 * (clip / (expected_batch_size * temperature)) ** 2
    if svt_noise is not None:
        per_token += 2.0 / (expected_batch_size * svt_noise) ** 2
    return max_private_tokens * per_token


@dataclass(frozen=True)
class SparseVectorGate:
    """The sparse-vector option: a token is private only when the private prompts' distribution is
    far (L1 statistic + Lap(2σ) ≥ threshold + Lap(σ)) from the public prompt's; otherwise it is
    sampled from the public prompt for free.

    Args:
        threshold: θ, on the L1 statistic (in [0, 2]).
        noise: σ_svt, the Laplace scale of the threshold noise (the statistic gets 2σ_svt).
    """

    threshold: float = 0.5
    noise: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and math.isfinite(self.noise) and self.noise > 0):
            raise InvalidPrivacyParameterError(
                f"SparseVectorGate needs a finite threshold and a positive noise; got {self.threshold!r}, {self.noise!r}."
            )


def batch_of(key: str, num_batches: int) -> int:
    """A record's batch: a stable keyed hash of its key (content, or user id) modulo the batch count.

    Not Python's per-process ``hash()``: the assignment must not change between runs, and adding
    one record must never move any other record.
    """
    digest = hashlib.sha256(_BATCH_SALT + key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % num_batches


# ------------------------------------------------------------------------------------ the generator


@dataclass(frozen=True)
class _Example:
    key: str  # what the batch hash reads: the record's content, or its user's id
    condition: str | None
    text: str


class PrivatePredictionGenerator(Synthesizer):
    """Synthetic records from a base model prompted with private records, by private prediction.

    Args:
        model, tokenizer: any causal LM (e.g. the embedded default) and its tokenizer.
        private_dataset: a :class:`~hf_dpsynth.data.PreparedDataset` (scrubbed, bounded), or
            records with the codec's fields (Dataset, DatasetDict split or path).
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
        instruction: the private prompt, with ``{example}`` where the record goes.
        user_id_column: at user level, one record per user (chosen by a public hash), batched by
            the user id (a user-level PreparedDataset gives its own).

    Privacy: see the module docstring. The expected batch size, batch counts, clip, temperature,
    r_max, prompts and the DP label counts are public; the records are not.
    """

    name = "private_prediction"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        private_dataset: Any,
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
        instruction: str = DEFAULT_INSTRUCTION,
        user_id_column: str | None = None,
        stage: str = STAGE,
    ) -> None:
        if not isinstance(codec, Codec):
            raise DPConfigError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
        if len(codec.conditions) > 1:
            raise DPConfigError(
                f"private prediction batches by at most one condition (the label); the codec has {list(codec.conditions)}."
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
        if top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1]; got {top_k!r}, {top_p!r}.")
        self.model, self.tokenizer, self.codec, self.ledger = model, tokenizer, codec, ledger
        self.clip, self.temperature = float(clip), float(temperature)
        self.svt, self.top_k, self.top_p = svt, int(top_k), float(top_p)
        self.instruction = instruction
        self.public_prompt = public_prompt if public_prompt is not None else (DEFAULT_PUBLIC_INSTRUCTION if svt else None)
        self.stage = stage
        self._condition = next(iter(codec.conditions), None)
        self._labels: tuple[str | None, ...] = codec.conditions[self._condition] if self._condition else (None,)
        if isinstance(private_dataset, PreparedDataset):
            user_id_column = user_id_column or private_dataset.user_id_column
        self.user_id_column = user_id_column
        #: The unit this generator protects: one user when batching by user id, else one record.
        self.privacy_unit = "user" if user_id_column else "example"
        self._check_privacy_unit()

        self._sizes = self._expected_sizes(expected_batch_size)
        self.expected_batch_size = min(self._sizes.values())  # ρ uses the smallest s
        self._batches = self._plan_batches(label_counts, batches_per_label)
        examples = self._load_examples(private_dataset, user_id_column)
        #: N, the number of privacy units (records, or users at user level): public.
        self.num_units = len(examples)
        self._check_num_units()
        self._members = self._assign(examples)

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
                "Give user_id_column= (or a PreparedDataset prepared with privacy_unit='user'), so that each user "
                "contributes one record and batches are keyed by user, or charge an example-level ledger."
            )
            what = "one record (no user id column was given, so records are batched by their content)"
        else:
            fix = "Use a user-level ledger (privacy_unit='user'), or drop user_id_column= to run at example level."
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

    def _expected_sizes(self, expected: int | Mapping[str, int]) -> dict[str | None, int]:
        if isinstance(expected, Mapping):
            missing = [lab for lab in self._labels if lab not in expected]
            if missing:
                raise DPConfigError(f"expected_batch_size has no entry for label(s) {missing}.")
            return {lab: check_positive_int(f"expected_batch_size[{lab!r}]", expected[lab]) for lab in self._labels}
        size = check_positive_int("expected_batch_size", expected)
        return {lab: size for lab in self._labels}

    def _plan_batches(self, label_counts: Any, batches_per_label: Any) -> dict[str | None, int]:
        supported: dict[str | None, int] | None = None
        if label_counts is not None:
            if isinstance(label_counts, DPHistogram):
                if self._condition is None or label_counts.column != self._condition:
                    raise DPConfigError(
                        f"label_counts is the DP histogram of {label_counts.column!r}, but the codec conditions on "
                        f"{self._condition!r}."
                    )
                if not any(c.stage == "label_histogram" for c in self.ledger.charges):
                    raise DPConfigError(
                        "label_counts is a DP histogram, but this ledger has no label_histogram charge: release it "
                        "with dp_label_histogram(..., ledger=ledger) on the same ledger, so its cost is counted."
                    )
                counts = dict(zip(label_counts.categories, label_counts.counts))
            else:
                counts = dict(label_counts)
            unknown = [lab for lab in counts if lab not in self._labels]
            if unknown:
                raise DPConfigError(f"label_counts has label(s) {unknown} that the codec does not declare ({list(self._labels)}).")
            supported = {}
            for lab in self._labels:
                value = float(counts.get(lab, 0.0))
                if not math.isfinite(value) or value < 0:
                    raise DPConfigError(f"label count for {lab!r} must be finite and >= 0; got {value!r}.")
                supported[lab] = int(value // self._sizes[lab])
        if batches_per_label is not None:
            if isinstance(batches_per_label, Mapping):
                planned = {lab: int(batches_per_label.get(lab, 0)) for lab in self._labels}
                extra = [lab for lab in batches_per_label if lab not in self._labels]
                if extra:
                    raise DPConfigError(f"batches_per_label has label(s) {extra} the codec does not declare.")
            elif self._condition is None:
                planned = {None: int(batches_per_label)}
            else:
                raise DPConfigError("with a label condition, batches_per_label must map each label to its batch count.")
            if any(b < 0 for b in planned.values()):
                raise DPConfigError(f"batch counts must be >= 0; got {planned}.")
            if supported is not None:
                over = {lab: (planned[lab], supported[lab]) for lab in self._labels if planned[lab] > supported[lab]}
                if over:
                    raise DPConfigError(
                        "More batches than the DP label counts support (⌊count / s⌋): "
                        + ", ".join(f"{lab!r}: {b} asked, {s} supported" for lab, (b, s) in over.items())
                        + ". Lower batches_per_label or expected_batch_size."
                    )
            batches = planned
        elif supported is not None:
            batches = supported
        else:
            raise DPConfigError(
                "Say how many batches each label gets: label_counts= (a DP label histogram charged in this ledger, "
                "or public counts) or batches_per_label= (public). Never the real per-label counts."
            )
        if sum(batches.values()) < 1:
            raise DPConfigError(
                f"No batch to generate: the counts give {batches} batches for expected batch size "
                f"{self._sizes}. Lower expected_batch_size or use more data."
            )
        return batches

    def _load_examples(self, source: Any, user_id_column: str | None) -> list[_Example]:
        codec = self.codec
        if isinstance(source, PreparedDataset):
            user_id_column = user_id_column or source.user_id_column
            data = source.dataset
            prompts = column_values(data, "prompt")
            texts = [p + c for p, c in zip(prompts, column_values(data, "completion"))]
            conditions = self._prepared_conditions(data, prompts)
        else:
            data = load_records(source, columns=list(codec.fields) + ([user_id_column] if user_id_column else []))
            cols = {f: column_values(data, f) for f in codec.fields}
            texts, conditions = [], []
            for row in range(len(data)):
                record = {f: cols[f][row] for f in codec.fields}
                try:
                    texts.append(codec.encode(record))
                except InvalidRecord as exc:  # the row and column only: the reason may quote the value
                    raise row_error(
                        row, codec, record, exc, of=" of the private data",
                        fix="Fix or remove that row, or pass a PreparedDataset (prepare_dataset(..., drop_invalid=True) "
                            "drops the rows that do not fit).",
                    ) from None
                conditions.append(record[self._condition] if self._condition else None)
        if not texts:
            raise DatasetError("The private dataset is empty.")
        if user_id_column is None:
            return [_Example(key=t, condition=c, text=t) for t, c in zip(texts, conditions)]
        users = column_values(data, user_id_column)
        examples = []
        for user, rows in group_rows_by_user(users, column=user_id_column).items():
            (row,) = cap_user_rows(user, rows, 1)  # one contribution per user
            examples.append(_Example(key=f"user:{user!r}", condition=conditions[row], text=texts[row]))
        return examples

    def _prepared_conditions(self, data: Any, prompts: Sequence[str]) -> list[str | None]:
        """Each prepared row's label: from the condition column that prepare_dataset keeps, or else the
        declared label whose prefix (``codec.prompt_for``) is exactly the row's prompt — never parsed."""
        name = self._condition
        if name is None:
            return [None] * len(prompts)
        if name in data.column_names:
            values = column_values(data, name)
            for row, value in enumerate(values):
                if value not in self._labels:
                    raise DatasetError(
                        f"Row {row} of the prepared data has a {name!r} value that the codec does not declare "
                        f"({list(self._labels)}); prepare the data with this codec."
                    )
            return list(values)
        by_prompt = {self.codec.prompt_for(**{name: label}): label for label in self._labels}
        conditions = []
        for row, prompt in enumerate(prompts):
            if prompt not in by_prompt:
                raise DatasetError(
                    f"Row {row} of the prepared data has neither a {name!r} column nor a prompt that is this codec's "
                    f"prefix for one of {list(self._labels)}; prepare the data with this codec (prepare_dataset keeps "
                    "each condition in its own column)."
                )
            conditions.append(by_prompt[prompt])
        return conditions

    def _assign(self, examples: Sequence[_Example]) -> dict[tuple[str | None, int], list[str]]:
        members: dict[tuple[str | None, int], list[str]] = {
            (lab, b): [] for lab in self._labels for b in range(self._batches[lab])
        }
        for ex in examples:
            count = self._batches[ex.condition]
            if count:  # a label without batches contributes nothing
                members[(ex.condition, batch_of(ex.key, count))].append(ex.text)
        return members

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

    def _batch_order(self) -> list[tuple[str | None, int]]:
        # Round-robin over labels: a public order, so a prefix of it is a public choice too.
        per_label = [[(lab, b) for b in range(self._batches[lab])] for lab in self._labels]
        order = []
        for i in range(max(len(x) for x in per_label)):
            order.extend(x[i] for x in per_label if i < len(x))
        return order

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
                "num_batches": len(order),
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
            mask = self._public_mask(public) if public is not None else None
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
            scores = aggregate_logits(private, clip=self.clip, expected_batch_size=s) / self.temperature
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

    def _public_mask(self, public_logits: torch.Tensor) -> torch.Tensor | None:
        """Top-k / top-p allowed tokens, computed from the public prompt's logits only."""
        if not self.top_k and self.top_p >= 1:
            return None
        keep = torch.ones_like(public_logits, dtype=torch.bool)
        if self.top_k:
            kth = torch.topk(public_logits, min(self.top_k, public_logits.numel())).values[-1]
            keep &= public_logits >= kth
        if self.top_p < 1:
            probs = torch.softmax(public_logits.float(), dim=-1)
            sorted_probs, idx = torch.sort(probs, descending=True)
            before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly above each token
            allowed = torch.zeros_like(keep)
            allowed[idx[before < self.top_p]] = True
            keep &= allowed
        return keep

    @staticmethod
    def _sample(scores: torch.Tensor, mask: torch.Tensor | None, gen: torch.Generator) -> int:
        scores = scores.float().cpu()
        if mask is not None:
            scores = scores.masked_fill(~mask.cpu(), float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))
