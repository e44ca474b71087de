"""Turning a dataset into privacy units, and a Poisson draw into padded physical chunks.

Three input formats, as in TRL:

* a text column (``dataset_text_field``, default ``"text"``): the loss covers every token;
* ``prompt`` and ``completion`` columns: the loss covers only the completion (a conditioning
  prefix such as ``"label: spam\\n"`` is the prompt);
* pre-tokenised ``input_ids`` with optional ``labels`` (``-100`` = no loss) or ``completion_mask``.

Every example is tokenised on its own (no packing across privacy units) and truncated to
``max_length``; an end-of-sequence token closes each text so the model learns where records end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hf_dpsynth.data.loading import column_values
from hf_dpsynth.data.units import cap_user_rows, check_user_level, group_rows_by_user
from hf_dpsynth.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExamples:
    """Token ids and loss labels of every (capped) example, in dataset order."""

    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class PrivacyUnits:
    """Which examples belong to which privacy unit (CSR layout: unit u owns
    ``examples[offsets[u]:offsets[u + 1]]``). For example-level DP every unit is one example.

    ``num_units`` (N) is public: it sets the sampling rate and is disclosed in reports.
    """

    offsets: np.ndarray
    examples: np.ndarray

    @property
    def num_units(self) -> int:
        return len(self.offsets) - 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def examples_of(self, unit: int) -> np.ndarray:
        return self.examples[self.offsets[unit] : self.offsets[unit + 1]]

    @classmethod
    def one_per_example(cls, num_examples: int) -> PrivacyUnits:
        return cls(offsets=np.arange(num_examples + 1, dtype=np.int64), examples=np.arange(num_examples, dtype=np.int64))


def _require_columns(dataset: Dataset, columns: Sequence[str], how_to_fix: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"The training dataset has no column {', '.join(map(repr, missing))}; its columns are "
            f"{dataset.column_names}. {how_to_fix}"
        )


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt; an empty prompt is the start token (BOS, or EOS without one).

    Training, sampling and the audit's scorer all use this, so a record without a conditioning
    prefix is learned after the same start token it is later sampled from (and its first token
    is learned at all: with no token before it, it would carry no loss).
    """
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if any(prompts) else [[] for _ in prompts]
    if start is None:
        return ids
    return [row if row else [start] for row in ids]


def tokenize_dataset(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset_text_field: str = "text",
    max_length: int = 512,
    rows: Sequence[int] | None = None,
) -> TokenizedExamples:
    """Tokenise each example on its own; labels are ``-100`` where no loss is taken.

    Privacy: examples are never concatenated or packed, so one sequence never mixes privacy units.
    """
    if len(dataset) == 0:
        raise DatasetError("The training dataset is empty: DP training needs at least one example.")
    columns = set(dataset.column_names)
    if rows is not None:
        dataset = dataset.select(rows)
    eos = tokenizer.eos_token_id
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    if "input_ids" in columns:
        for row in dataset:
            ids = list(row["input_ids"])[:max_length]
            if "labels" in columns:
                lab = list(row["labels"])[:max_length]
            elif "completion_mask" in columns:
                mask = list(row["completion_mask"])[:max_length]
                lab = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
            else:
                lab = list(ids)
            input_ids.append(ids)
            labels.append(lab)
    elif {"prompt", "completion"} <= columns:
        prompts = _texts(dataset, "prompt")
        completions = _texts(dataset, "completion")
        # One batched call per column (the fast tokenizer parallelises it); still one sequence
        # per example, never packed.
        completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
        for prompt, completion in zip(prompt_ids(tokenizer, prompts), completion_ids):
            if eos is not None:
                completion = completion + [eos]
            ids = (prompt + completion)[:max_length]
            lab = ([IGNORE_INDEX] * len(prompt) + completion)[:max_length]
            input_ids.append(ids)
            labels.append(lab)
    else:
        _require_columns(
            dataset,
            [dataset_text_field],
            "Pass dataset_text_field= naming the text column, or give 'prompt' and 'completion' "
            "columns (loss on the completion only), or pre-tokenised 'input_ids'.",
        )
        texts = _texts(dataset, dataset_text_field)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for ids in encoded:
            if eos is not None:
                ids = ids + [eos]
            ids = ids[:max_length]
            input_ids.append(ids)
            labels.append(list(ids))
    return TokenizedExamples(input_ids=input_ids, labels=labels)


def _texts(dataset: Dataset, column: str) -> list[str]:
    texts = column_values(dataset, column)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(
                f"Column {column!r} must hold strings; row {row} holds {type(text).__name__}. "
                "Convert it to text first, or name another column with dataset_text_field=."
            )
    return texts


def build_privacy_units(
    dataset: Dataset,
    *,
    privacy_unit: str,
    user_id_column: str | None = None,
    max_examples_per_user: int | None = None,
) -> tuple[PrivacyUnits, list[int]]:
    """Group the rows into privacy units and bound each user's contribution.

    Returns the units and the dataset rows kept. Unit u owns positions ``offsets[u]:offsets[u+1]``
    of the kept-rows list, so the examples must be tokenised in exactly that order (grouped by
    user). For user-level DP each user keeps at most ``max_examples_per_user`` rows, chosen by a
    fixed public hash of (user id, the row's position among that user's rows) — deterministic and
    independent of any other user's data.

    Privacy: the cap bounds how much one user can move the training signal; the user count N is
    public (it sets the sampling rate) and is reported.
    """
    if len(dataset) == 0:
        raise DatasetError("The training dataset is empty: DP training needs at least one example.")
    check_user_level(privacy_unit, user_id_column, max_examples_per_user)
    if privacy_unit == "example":
        return PrivacyUnits.one_per_example(len(dataset)), list(range(len(dataset)))
    _require_columns(
        dataset, [user_id_column], "user_id_column= must name the column that identifies each user."
    )
    by_user = group_rows_by_user(column_values(dataset, user_id_column), column=user_id_column)
    kept_rows: list[int] = []
    offsets = [0]
    for user, user_rows in by_user.items():
        kept_rows.extend(cap_user_rows(user, user_rows, max_examples_per_user))
        offsets.append(len(kept_rows))
    examples = np.arange(len(kept_rows), dtype=np.int64)
    return PrivacyUnits(offsets=np.asarray(offsets, dtype=np.int64), examples=examples), kept_rows


@dataclass(frozen=True)
class Chunk:
    """One physical micro-batch: examples and, for each, its position among the step's units."""

    examples: np.ndarray
    unit_slots: np.ndarray
    """For each example, the index of its unit within ``units`` (for per-unit gradient sums)."""
    units: np.ndarray
    """The units that have examples in this chunk, in order."""
    completes: np.ndarray
    """For each unit in ``units``: True when this chunk holds its last example (clip it now)."""


def rank_share(draw: np.ndarray, units: PrivacyUnits, *, rank: int, world_size: int) -> np.ndarray:
    """The contiguous share of a step's draw (unit ids) that ``rank`` processes, balanced by example count."""
    if world_size == 1:
        return draw
    sizes = units.sizes()[draw]
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(1, world_size) * sizes.sum() / world_size, side="left")
    return np.split(draw, bounds)[rank] if len(draw) else draw


def plan_chunks(share: np.ndarray, units: PrivacyUnits, chunk_size: int) -> list[Chunk]:
    """Pack a rank's units into chunks of at most ``chunk_size`` examples.

    A unit whose examples fit in one chunk is never split; a larger unit spans consecutive chunks
    and its gradient is accumulated across them before it is clipped. Nothing is ever dropped.
    """
    chunks: list[Chunk] = []
    cur_examples: list[int] = []
    cur_units: list[int] = []
    cur_slots: list[int] = []
    cur_completes: list[bool] = []

    def flush() -> None:
        if cur_examples:
            chunks.append(
                Chunk(
                    examples=np.asarray(cur_examples, dtype=np.int64),
                    unit_slots=np.asarray(cur_slots, dtype=np.int64),
                    units=np.asarray(cur_units, dtype=np.int64),
                    completes=np.asarray(cur_completes, dtype=bool),
                )
            )
            cur_examples.clear(), cur_units.clear(), cur_slots.clear(), cur_completes.clear()

    for unit in share.tolist():
        members = units.examples_of(unit).tolist()
        if len(cur_examples) + len(members) > chunk_size and len(members) <= chunk_size:
            flush()
        while members:
            room = chunk_size - len(cur_examples)
            if room == 0:
                flush()
                room = chunk_size
            take, members = members[:room], members[room:]
            cur_slots.extend([len(cur_units)] * len(take))
            cur_units.append(unit)
            cur_completes.append(not members)
            cur_examples.extend(take)
    flush()
    return chunks


def collate(examples: TokenizedExamples, rows: Sequence[int], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors with per-example ``position_ids`` (never a broadcast [1, T] row)."""
    import torch

    length = max((len(examples.input_ids[r]) for r in rows), default=1) or 1
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids, lab = examples.input_ids[r], examples.labels[r]
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(lab, dtype=torch.long)
        attention_mask[i, :n] = 1
        position_ids[i, :n] = torch.arange(n)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "labels": labels}
