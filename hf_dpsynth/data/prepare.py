"""One preparation step from private records to training examples, every decision public or DP.

:func:`prepare_dataset` reads the records, checks them against the codec (clear error on the first
bad row, nothing written), collapses exact duplicates within a user, caps each user's records,
scrubs PII from free text (defence in depth), and encodes each record as a ``prompt`` (the
conditioning prefix, no loss) and a ``completion`` (the record's text). The result trains with
:class:`~hf_dpsynth.training.DPSynthTrainer` as is.

Privacy: N (units, and users at user level) is public and reported. The counts of what each rule
dropped or changed are computed on private data without DP: they are in the owner-only part of
:class:`PreparationReport` and never go into a card.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hf_dpsynth.data.codecs import Codec, TextCodec
from hf_dpsynth.data.loading import column_values, load_records
from hf_dpsynth.data.pii import PIIScrubber
from hf_dpsynth.data.tabular import TabularCodec
from hf_dpsynth.data.units import bound_contributions, check_user_level
from hf_dpsynth.errors import DatasetError, InvalidRecord

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from hf_dpsynth.training.data import TokenizedExamples

__all__ = ["PreparationReport", "PreparedDataset", "prepare_dataset"]


@dataclass(frozen=True)
class PreparationReport:
    """What preparation did. Shareable fields are public; owner-only fields are not DP.

    Shareable: privacy unit, N, the user cap, the codec's public configuration and rounding,
    whether and which PII types were scrubbed. Owner-only: how many records were read, dropped
    as duplicates, dropped by the cap, clipped to bounds, and PII replacements per type.
    """

    privacy_unit: str
    num_units: int
    num_users: int | None
    max_examples_per_user: int | None
    codec: Mapping[str, Any]
    rounding: str | None
    pii_scrubbing: Mapping[str, Any]
    # owner-only
    num_records_read: int = field(metadata={"owner_only": True})
    num_records_kept: int = field(metadata={"owner_only": True})
    duplicates_removed: int = field(metadata={"owner_only": True})
    capped_removed: int = field(metadata={"owner_only": True})
    rows_clipped_to_bounds: int = field(metadata={"owner_only": True})
    pii_replacements: Mapping[str, int] = field(metadata={"owner_only": True})
    records_with_pii: int = field(metadata={"owner_only": True})

    OWNER_ONLY = (
        "num_records_read", "num_records_kept", "duplicates_removed", "capped_removed",
        "rows_clipped_to_bounds", "pii_replacements", "records_with_pii",
    )

    def to_dict(self, *, include_owner_only: bool = False) -> dict[str, Any]:
        """The shareable fields; with ``include_owner_only=True`` also the non-DP counts (owner use)."""
        shareable = {
            "privacy_unit": self.privacy_unit,
            "num_units": self.num_units,
            "num_users": self.num_users,
            "max_examples_per_user": self.max_examples_per_user,
            "codec": dict(self.codec),
            "rounding": self.rounding,
            "pii_scrubbing": dict(self.pii_scrubbing),
        }
        if not include_owner_only:
            return shareable
        owner = {name: getattr(self, name) for name in self.OWNER_ONLY}
        owner["pii_replacements"] = dict(self.pii_replacements)
        return {**shareable, "owner_only": owner}

    def __str__(self) -> str:
        unit = f"{self.num_units:,} {self.privacy_unit}s"
        lines = [f"Prepared {self.num_records_kept:,} of {self.num_records_read:,} records into {unit} (N, public)."]
        if self.duplicates_removed:
            lines.append(f"  exact duplicates within a user collapsed: {self.duplicates_removed:,}")
        if self.capped_removed:
            lines.append(f"  dropped by the cap of {self.max_examples_per_user} per user: {self.capped_removed:,}")
        if self.rows_clipped_to_bounds:
            lines.append(f"  rows with values clipped to declared bounds: {self.rows_clipped_to_bounds:,}")
        if self.pii_scrubbing.get("enabled"):
            found = ", ".join(f"{k} {v:,}" for k, v in sorted(self.pii_replacements.items())) or "none"
            lines.append(f"  PII placeholders inserted in {self.records_with_pii:,} records: {found}")
        lines.append("  (counts above are not differentially private: for the data owner only)")
        return "\n".join(lines)


@dataclass(frozen=True)
class PreparedDataset:
    """Training-ready examples (``prompt``, ``completion`` and, at user level, the user id column).

    Rows are grouped by privacy unit. ``num_units`` / ``num_users`` are public.
    """

    dataset: Dataset
    codec: Codec
    privacy_unit: str
    user_id_column: str | None
    max_examples_per_user: int | None
    report: PreparationReport

    @property
    def num_units(self) -> int:
        return self.report.num_units

    @property
    def num_users(self) -> int | None:
        return self.report.num_users

    def __len__(self) -> int:
        return len(self.dataset)

    def training_kwargs(self) -> dict[str, Any]:
        """The :class:`~hf_dpsynth.training.DPSynthConfig` fields that must match this preparation."""
        return {
            "privacy_unit": self.privacy_unit,
            "user_id_column": self.user_id_column,
            "max_examples_per_user": self.max_examples_per_user,
        }

    def tokenize(self, tokenizer: PreTrainedTokenizerBase, *, max_length: int = 512) -> TokenizedExamples:
        """Token ids and labels per example (loss on the completion only; never packed)."""
        from hf_dpsynth.training.data import tokenize_dataset

        return tokenize_dataset(self.dataset, tokenizer, max_length=max_length)


def _row_error(row: int, exc: InvalidRecord) -> DatasetError:
    return DatasetError(f"Row {row} does not fit the codec ({exc.kind}): {exc.reason}")


def prepare_dataset(
    source: Any,
    codec: Codec,
    *,
    split: str | None = None,
    privacy_unit: Literal["example", "user"] = "example",
    user_id_column: str | None = None,
    max_examples_per_user: int | None = None,
    deduplicate: bool = True,
    scrub_pii: bool | PIIScrubber = True,
    on_out_of_bounds: Literal["error", "clip"] = "error",
    shuffle_seed: int = 0,
) -> PreparedDataset:
    """Prepare private records for DP training with ``codec``.

    Args:
        source: a ``datasets.Dataset``, a ``DatasetDict`` (with ``split``) or a path (CSV, JSONL,
            Parquet, or a folder of .txt files).
        codec: a :class:`TextCodec`, :class:`TabularCodec` or :class:`ImageCodec`; its fields name
            the columns read.
        privacy_unit: ``"example"`` or ``"user"`` (then ``user_id_column`` and
            ``max_examples_per_user`` are required).
        user_id_column: the column identifying each record's user (also used, when given at
            example level, to collapse a user's exact duplicates).
        max_examples_per_user: the cap on each user's records (seeded by a public hash, so the
            kept records depend only on that user's own data).
        deduplicate: collapse exact duplicate records within a user.
        scrub_pii: replace emails, phone numbers, URLs, cards, IBANs, IPs and national ids in free
            text by placeholders (True), not at all (False), or with a configured PIIScrubber.
        on_out_of_bounds: a tabular value outside its declared bounds is an error (default) or is
            clipped to the bound (counted in the owner-only report).
        shuffle_seed: seeds the per-example column order of tabular rows (not a privacy seed).

    Privacy: nothing is read from the data except through the codec's public schema; N is public.
    Scrubbing is defence in depth, not the guarantee.
    """
    if not isinstance(codec, Codec):
        raise DatasetError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
    check_user_level(privacy_unit, user_id_column, max_examples_per_user)
    if on_out_of_bounds not in ("error", "clip"):
        raise DatasetError(f"on_out_of_bounds must be 'error' or 'clip'; got {on_out_of_bounds!r}.")
    if on_out_of_bounds == "clip" and not isinstance(codec, TabularCodec):
        raise DatasetError("on_out_of_bounds='clip' applies to tabular data only; this codec has no numeric bounds.")
    scrubber = _scrubber(scrub_pii)
    fields = list(codec.fields)
    if user_id_column and user_id_column in fields:
        raise DatasetError(
            f"user_id_column {user_id_column!r} is also a field the codec encodes: a user id must never be "
            "part of the training text. Remove it from the codec's fields."
        )
    dataset = load_records(source, split=split, columns=fields + ([user_id_column] if user_id_column else []))
    if isinstance(codec, TabularCodec):
        codec.schema.check_columns(dataset.column_names)
    columns = {name: column_values(dataset, name) for name in fields}
    num_rows = len(dataset)

    # 1. Check every record against the codec; a canonical encoding is the duplicate key.
    records: list[dict[str, Any]] = []
    canonical: list[str] = []
    clipped_rows = 0
    for row in range(num_rows):
        record = {name: columns[name][row] for name in fields}
        try:
            if isinstance(codec, TabularCodec):
                try:
                    values = codec.schema.normalise(record)
                except InvalidRecord as exc:
                    if exc.kind != "out_of_bounds" or on_out_of_bounds != "clip":
                        raise
                    values = codec.schema.normalise(record, clip=True)
                    clipped_rows += 1
                record.update(values)
                canonical.append(codec.encode_prompt(record) + codec.encode_body(record, normalised=True))
            else:
                canonical.append(codec.encode(record))
        except InvalidRecord as exc:
            raise _row_error(row, exc) from exc
        records.append(record)

    # 2. Privacy units: duplicates within a user collapsed, each user capped.
    user_ids = column_values(dataset, user_id_column) if user_id_column else None
    bounded = bound_contributions(
        num_rows,
        privacy_unit=privacy_unit,
        user_ids=user_ids,
        max_examples_per_user=max_examples_per_user,
        dedupe_key=canonical.__getitem__ if deduplicate else None,
        user_id_column=user_id_column or "user id",
    )

    # 3. Scrub free text, then encode: prompt = conditioning prefix, completion = the record.
    order = random.Random(shuffle_seed)
    prompts: list[str] = []
    completions: list[str] = []
    replacements: dict[str, int] = {}
    records_with_pii = 0
    for row in bounded.rows:
        record = records[row]
        if scrubber is not None and isinstance(codec, TextCodec):
            result = scrubber.scrub(record[codec.text_field])
            if result.counts:
                records_with_pii += 1
                for kind, n in result.counts.items():
                    replacements[kind] = replacements.get(kind, 0) + n
                record = {**record, codec.text_field: result.text}
        try:
            prompts.append(codec.encode_prompt(record))
            seed = order.getrandbits(64)
            if isinstance(codec, TabularCodec):
                completions.append(codec.encode_body(record, order_seed=seed, normalised=True))
            else:
                completions.append(codec.encode_body(record, order_seed=seed))
        except InvalidRecord as exc:  # e.g. a text that was only PII and is now a placeholder
            raise _row_error(row, exc) from exc

    from datasets import Dataset

    out: dict[str, list[Any]] = {"prompt": prompts, "completion": completions}
    if privacy_unit == "user":
        out[user_id_column] = [user_ids[row] for row in bounded.rows]  # type: ignore[index]
    report = PreparationReport(
        privacy_unit=privacy_unit,
        num_units=bounded.num_units,
        num_users=bounded.num_users if privacy_unit == "user" else None,
        max_examples_per_user=max_examples_per_user if privacy_unit == "user" else None,
        codec=codec.to_dict(),
        rounding=codec.rounding,
        pii_scrubbing={
            "enabled": scrubber is not None and isinstance(codec, TextCodec),
            "types": list(scrubber.types) if scrubber is not None else [],
            "note": "defence in depth only; the DP guarantee does not depend on it",
        },
        num_records_read=num_rows,
        num_records_kept=len(bounded.rows),
        duplicates_removed=bounded.duplicates_removed,
        capped_removed=bounded.capped_removed,
        rows_clipped_to_bounds=clipped_rows,
        pii_replacements=replacements,
        records_with_pii=records_with_pii,
    )
    return PreparedDataset(
        dataset=Dataset.from_dict(out),
        codec=codec,
        privacy_unit=privacy_unit,
        user_id_column=user_id_column if privacy_unit == "user" else None,
        max_examples_per_user=max_examples_per_user if privacy_unit == "user" else None,
        report=report,
    )


def _scrubber(scrub_pii: bool | PIIScrubber) -> PIIScrubber | None:
    if isinstance(scrub_pii, PIIScrubber):
        return scrub_pii
    if scrub_pii is True:
        return PIIScrubber()
    if scrub_pii is False:
        return None
    raise DatasetError(f"scrub_pii must be True, False or a PIIScrubber; got {scrub_pii!r}.")
