"""Tokenising prepared records, one privacy unit's example at a time.

Three input formats, as in TRL:

* a text column (``dataset_text_field``, default ``"text"``): the loss covers every token;
* ``prompt`` and ``completion`` columns: the loss covers only the completion (a conditioning
  prefix such as ``"label: spam\\n"`` is the prompt);
* pre-tokenised ``input_ids`` with optional ``labels`` (``-100`` = no loss) or ``completion_mask``.

Every example is tokenised on its own (no packing across privacy units) and truncated to
``max_length``; an end-of-sequence token closes each text so the model learns where records end.
Training, sampling and the audit's scorer all start a record from :func:`prompt_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hf_dpsynth.data.loading import column_values
from hf_dpsynth.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "TokenizedExamples", "prompt_ids", "require_columns", "tokenize_dataset"]


IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExamples:
    """Token ids and loss labels of every (capped) example, in dataset order."""

    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


def require_columns(dataset: Dataset, columns: Sequence[str], how_to_fix: str) -> None:
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
        require_columns(
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
