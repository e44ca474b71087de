"""Private prediction's batching: how many batches each label gets, which record goes in which
batch, and the order in which batches emit their records.

Privacy: every record belongs to exactly one batch (disjoint batches: parallel composition), chosen
by a stable keyed hash of its own key (its prepared text, or its user's id at user level), so adding
or removing one record moves no other record. The number of batches per label comes from public
numbers or a DP histogram already charged in the ledger, never from the real counts; the batch
order is public (round-robin over labels), so the number and order of outputs never depend on the
private data. At user level each user contributes one record, chosen by a public hash.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.data.loading import column_values
from hf_dpsynth.data.prepare import PreparedDataset
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.data.units import cap_user_rows, group_rows_by_user
from hf_dpsynth.errors import DatasetError, DPConfigError
from hf_dpsynth.generation.base import check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = [
    "BatchKey",
    "Example",
    "assign_batches",
    "batch_of",
    "batch_order",
    "expected_sizes",
    "load_examples",
    "plan_batches",
    "prepared_conditions",
]

BATCH_SALT = b"hf_dpsynth/private-prediction/batch/v1"

#: A batch: its label (None without a condition) and its index among that label's batches.
BatchKey = tuple[str | None, int]


@dataclass(frozen=True)
class Example:
    """One private record as private prediction batches it."""

    key: str  # what the batch hash reads: the record's content, or its user's id
    condition: str | None
    text: str


def batch_of(key: str, num_batches: int) -> int:
    """A record's batch: a stable keyed hash of its key (content, or user id) modulo the batch count.

    Not Python's per-process ``hash()``: the assignment must not change between runs, and adding
    one record must never move any other record.
    """
    digest = hashlib.sha256(BATCH_SALT + key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % num_batches


def expected_sizes(expected: int | Mapping[str, int], labels: Sequence[str | None]) -> dict[str | None, int]:
    """The public expected batch size s of each label (one int for all, or a mapping per label)."""
    if isinstance(expected, Mapping):
        missing = [lab for lab in labels if lab not in expected]
        if missing:
            raise DPConfigError(f"expected_batch_size has no entry for label(s) {missing}.")
        return {lab: check_positive_int(f"expected_batch_size[{lab!r}]", expected[lab]) for lab in labels}
    size = check_positive_int("expected_batch_size", expected)
    return {lab: size for lab in labels}


def plan_batches(
    label_counts: DPHistogram | Mapping[str, float] | None,
    batches_per_label: int | Mapping[str, int] | None,
    *,
    condition: str | None,
    labels: Sequence[str | None],
    sizes: Mapping[str | None, int],
    ledger: PrivacyLedger,
) -> dict[str | None, int]:
    """Batches per label: ⌊count / s⌋ from DP label counts charged in ``ledger`` (or declared public
    counts), or public ``batches_per_label`` (checked against the counts when both are given)."""
    supported: dict[str | None, int] | None = None
    if label_counts is not None:
        if isinstance(label_counts, DPHistogram):
            if condition is None or label_counts.column != condition:
                raise DPConfigError(
                    f"label_counts is the DP histogram of {label_counts.column!r}, but the codec conditions on "
                    f"{condition!r}."
                )
            if not any(c.stage == "label_histogram" for c in ledger.charges):
                raise DPConfigError(
                    "label_counts is a DP histogram, but this ledger has no label_histogram charge: release it "
                    "with dp_label_histogram(..., ledger=ledger) on the same ledger, so its cost is counted."
                )
            counts = dict(zip(label_counts.categories, label_counts.counts))
        else:
            counts = dict(label_counts)
        unknown = [lab for lab in counts if lab not in labels]
        if unknown:
            raise DPConfigError(f"label_counts has label(s) {unknown} that the codec does not declare ({list(labels)}).")
        supported = {}
        for lab in labels:
            value = float(counts.get(lab, 0.0))
            if not math.isfinite(value) or value < 0:
                raise DPConfigError(f"label count for {lab!r} must be finite and >= 0; got {value!r}.")
            supported[lab] = int(value // sizes[lab])
    if batches_per_label is not None:
        if isinstance(batches_per_label, Mapping):
            planned = {lab: int(batches_per_label.get(lab, 0)) for lab in labels}
            extra = [lab for lab in batches_per_label if lab not in labels]
            if extra:
                raise DPConfigError(f"batches_per_label has label(s) {extra} the codec does not declare.")
        elif condition is None:
            planned = {None: int(batches_per_label)}
        else:
            raise DPConfigError("with a label condition, batches_per_label must map each label to its batch count.")
        if any(b < 0 for b in planned.values()):
            raise DPConfigError(f"batch counts must be >= 0; got {planned}.")
        if supported is not None:
            over = {lab: (planned[lab], supported[lab]) for lab in labels if planned[lab] > supported[lab]}
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
            f"{sizes}. Lower expected_batch_size or use more data."
        )
    return batches


def load_examples(
    prepared: PreparedDataset, *, codec: Codec, condition: str | None, labels: Sequence[str | None]
) -> list[Example]:
    """The records of ``prepared`` as examples: each prepared row's text (prompt + completion) and
    label; at user level one row per user (chosen by a public hash), keyed by the user id."""
    user_id_column = prepared.user_id_column
    data = prepared.dataset
    prompts = column_values(data, "prompt")
    texts = [p + c for p, c in zip(prompts, column_values(data, "completion"))]
    conditions = prepared_conditions(data, prompts, codec=codec, condition=condition, labels=labels)
    if not texts:
        raise DatasetError("The private dataset is empty.")
    if user_id_column is None:
        return [Example(key=t, condition=c, text=t) for t, c in zip(texts, conditions)]
    users = column_values(data, user_id_column)
    examples = []
    for user, rows in group_rows_by_user(users, column=user_id_column).items():
        (row,) = cap_user_rows(user, rows, 1)  # one contribution per user
        examples.append(Example(key=f"user:{user!r}", condition=conditions[row], text=texts[row]))
    return examples


def prepared_conditions(
    data: Any, prompts: Sequence[str], *, codec: Codec, condition: str | None, labels: Sequence[str | None]
) -> list[str | None]:
    """Each prepared row's label: from the condition column that prepare_dataset keeps, or else the
    declared label whose prefix (``codec.prompt_for``) is exactly the row's prompt — never parsed."""
    name = condition
    if name is None:
        return [None] * len(prompts)
    if name in data.column_names:
        values = column_values(data, name)
        for row, value in enumerate(values):
            if value not in labels:
                raise DatasetError(
                    f"Row {row} of the prepared data has a {name!r} value that the codec does not declare "
                    f"({list(labels)}); prepare the data with this codec."
                )
        return list(values)
    by_prompt = {codec.prompt_for(**{name: label}): label for label in labels}
    conditions = []
    for row, prompt in enumerate(prompts):
        if prompt not in by_prompt:
            raise DatasetError(
                f"Row {row} of the prepared data has neither a {name!r} column nor a prompt that is this codec's "
                f"prefix for one of {list(labels)}; prepare the data with this codec (prepare_dataset keeps "
                "each condition in its own column)."
            )
        conditions.append(by_prompt[prompt])
    return conditions


def assign_batches(
    examples: Sequence[Example], batches: Mapping[str | None, int], labels: Sequence[str | None]
) -> dict[BatchKey, list[str]]:
    """Each batch's member texts: every example in the batch its key hashes to, within its label."""
    members: dict[BatchKey, list[str]] = {
        (lab, b): [] for lab in labels for b in range(batches[lab])
    }
    for ex in examples:
        count = batches[ex.condition]
        if count:  # a label without batches contributes nothing
            members[(ex.condition, batch_of(ex.key, count))].append(ex.text)
    return members


def batch_order(batches: Mapping[str | None, int], labels: Sequence[str | None]) -> list[BatchKey]:
    """The batches in the order they emit their records."""
    # Round-robin over labels: a public order, so a prefix of it is a public choice too.
    per_label = [[(lab, b) for b in range(batches[lab])] for lab in labels]
    order = []
    for i in range(max(len(x) for x in per_label)):
        order.extend(x[i] for x in per_label if i < len(x))
    return order
