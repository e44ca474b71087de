"""The one interface every generator implements, and how generated texts become a Dataset.

A :class:`Synthesizer` turns texts produced by a model into validated records: every output is
parsed by the codec, invalid ones are counted (per kind) and dropped, and the rest come back as a
``datasets.Dataset`` with the codec's fields as proper columns (numbers, categories, image arrays)
plus provenance columns (``generator``, ``condition``). A summary (counts, decoding settings, the
privacy events) travels in the dataset's ``info.description`` as JSON: read it with
:func:`generation_info`.
"""

from __future__ import annotations

import abc
import collections
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.errors import DPConfigError, InvalidRecord

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting
    from datasets import Dataset

__all__ = ["GeneratedText", "Synthesizer", "build_dataset", "generation_info"]

PROVENANCE_COLUMNS = ("generator", "condition")
_INFO_KEY = "hf_dpsynth.generation"


@dataclass(frozen=True)
class GeneratedText:
    """One raw output: the prompt prefix the codec expects (e.g. ``"label: spam\\n"``) and the text."""

    prefix: str
    text: str
    condition: str = ""


@dataclass
class _Counts:
    generated: int = 0
    valid: int = 0
    duplicates: int = 0
    invalid: collections.Counter = field(default_factory=collections.Counter)


class Synthesizer(abc.ABC):
    """A generator of synthetic records.

    Implementations set :attr:`name` and :attr:`codec`, implement :meth:`generate` and
    :meth:`privacy_events`. ``generate`` returns a ``datasets.Dataset`` of decoded, validated
    records with provenance columns; ``privacy_events`` lists the ``(stage, DpEvent)`` pairs the
    generator charges (empty for pure post-processing).
    """

    name: ClassVar[str]
    codec: Codec

    @abc.abstractmethod
    def generate(self, num_records: int | None = None, *, seed: int | None = None, progress: bool = True) -> Dataset:
        """Generate, parse and validate records."""

    @abc.abstractmethod
    def privacy_events(self) -> list[tuple[str, dp_accounting.DpEvent]]:
        """The (stage, event) pairs this generator charges to the ledger (empty: post-processing)."""


def _column_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_dataset(
    outputs: Iterable[GeneratedText],
    codec: Codec,
    *,
    generator: str,
    deduplicate: bool = False,
    summary: Mapping[str, Any] | None = None,
) -> Dataset:
    """Parse ``outputs`` with ``codec`` into a Dataset (fields + provenance), counting what failed.

    Invalid outputs are dropped and counted per :attr:`InvalidRecord.kind`; with ``deduplicate``,
    exact repeats of an earlier valid record are dropped and counted too. The counts and
    ``summary`` go to ``info.description`` (see :func:`generation_info`).
    """
    from datasets import Dataset, DatasetInfo

    counts = _Counts()
    columns: dict[str, list[Any]] = {name: [] for name in (*codec.fields, *PROVENANCE_COLUMNS)}
    seen: set[str] = set()
    for out in outputs:
        counts.generated += 1
        try:
            record = codec.decode(out.prefix + out.text.strip())
        except InvalidRecord as exc:
            counts.invalid[exc.kind] += 1
            continue
        if deduplicate:
            key = codec.encode(record)
            if key in seen:
                counts.duplicates += 1
                continue
            seen.add(key)
        counts.valid += 1
        for name in codec.fields:
            columns[name].append(_column_value(record[name]))
        columns["generator"].append(generator)
        columns["condition"].append(out.condition)
    info = {
        "generator": generator,
        "num_generated": counts.generated,
        "num_valid": counts.valid,
        "num_invalid": sum(counts.invalid.values()),
        "invalid_kinds": dict(counts.invalid),
        "num_duplicates_dropped": counts.duplicates,
        "codec": codec.to_dict(),
        **dict(summary or {}),
    }
    return Dataset.from_dict(columns, info=DatasetInfo(description=json.dumps({_INFO_KEY: info})))


def generation_info(dataset: Dataset) -> dict[str, Any]:
    """The generation summary stored in a generated dataset's ``info.description``."""
    try:
        return json.loads(dataset.info.description)[_INFO_KEY]
    except (TypeError, ValueError, KeyError):
        raise ValueError("this dataset was not produced by an hf_dpsynth generator (no generation summary).") from None


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as a positive int, or a ValueError that names it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def condition_label(conditions: Mapping[str, str]) -> str:
    """The provenance string of a condition, e.g. ``"label=spam"`` (empty without conditions)."""
    return ",".join(f"{k}={v}" for k, v in conditions.items())


def check_tokenizer_matches(model: Any, tokenizer: Any) -> None:
    """A clear error when the tokenizer's ids do not fit the model's embedding table."""
    embeddings = model.get_input_embeddings()
    size = getattr(embeddings, "num_embeddings", None)
    if size is not None and len(tokenizer) > size:
        raise DPConfigError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding table only {size}: they do "
            "not belong together. Load the tokenizer that was saved with the model."
        )
