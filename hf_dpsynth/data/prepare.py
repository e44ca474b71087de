"""One preparation step from private records to training examples, every decision public or DP.

:func:`prepare_dataset` reads the records, scrubs PII from free text (defence in depth), checks
them against the codec (clear error on the first bad row naming its row and column, nothing
written; or, with ``drop_invalid=True``, drops the rows that do not fit), collapses exact duplicates
within a user, caps each user's records, and encodes each record as a ``prompt`` (the conditioning
prefix, no loss) and a ``completion`` (the record's text). The result trains with
:class:`~hf_dpsynth.training.DPSynthTrainer` as is.

Privacy: preparation is 1-stable (docs/DP_CORRECTNESS.md row 30): every per-record choice, such as a
tabular row's column order, is a keyed hash of that record's own content (and its user id at user
level), so removing one record changes how no other record is written.

Privacy: N (units, and users at user level) is public and reported. The counts of what each rule
dropped or changed are computed on private data without DP: they are in the owner-only part of
:class:`PreparationReport` and never go into a card.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hf_dpsynth.data.codecs import Codec, TextCodec
from hf_dpsynth.data.loading import column_values, load_records
from hf_dpsynth.data.pii import PIIScrubber
from hf_dpsynth.data.tabular import TabularCodec
from hf_dpsynth.data.tokenize import TokenizedExamples, tokenize_dataset
from hf_dpsynth.data.units import bound_contributions, check_user_level
from hf_dpsynth.errors import DatasetError, InvalidRecord

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


__all__ = ["PreparationReport", "PreparedDataset", "prepare_dataset", "row_error"]

_ORDER_SALT = b"hf_dpsynth/prepare/column-order/v2"
#: The prepared data's own columns; a codec condition may not take one of these names.
_OUTPUT_COLUMNS = ("prompt", "completion")


@dataclass(frozen=True)
class PreparationReport:
    """What preparation did. Shareable fields are public; owner-only fields are not DP.

    Shareable: privacy unit, N, the user cap, the codec's public configuration and rounding,
    whether and which PII types were scrubbed, whether rows that do not fit the codec were dropped
    (``drop_invalid``), a cap to the source's first rows (``first_rows``). Owner-only: how many records were read, dropped as invalid (per reason),
    dropped as duplicates, dropped by the cap, clipped to bounds, and PII replacements per type.
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
    drop_invalid: bool = False
    invalid_dropped: Mapping[str, int] = field(default_factory=dict, metadata={"owner_only": True})
    first_rows: int | None = None
    """Public: the data were the first ``first_rows`` rows of the source (a cap by position, set by the
    caller), so the guarantee protects one record of those rows, not of the whole source."""

    OWNER_ONLY = (
        "num_records_read", "num_records_kept", "duplicates_removed", "capped_removed",
        "rows_clipped_to_bounds", "pii_replacements", "records_with_pii", "invalid_dropped",
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
            "drop_invalid": self.drop_invalid,
            "first_rows": self.first_rows,
        }
        if not include_owner_only:
            return shareable
        owner = {name: getattr(self, name) for name in self.OWNER_ONLY}
        owner["pii_replacements"] = dict(self.pii_replacements)
        owner["invalid_dropped"] = dict(self.invalid_dropped)
        return {**shareable, "owner_only": owner}

    def __str__(self) -> str:
        unit = f"{self.num_units:,} {self.privacy_unit}s"
        lines = [f"Prepared {self.num_records_kept:,} of {self.num_records_read:,} records into {unit} (N, public)."]
        if self.invalid_dropped:
            found = ", ".join(f"{k} {v:,}" for k, v in sorted(self.invalid_dropped.items()))
            lines.append(f"  rows that did not fit the codec, dropped (drop_invalid=True): {found}")
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
    """Training-ready examples: ``prompt``, ``completion``, one column per codec condition (its
    declared value, e.g. ``label``) and, at user level, the user id column.

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
        return tokenize_dataset(self.dataset, tokenizer, max_length=max_length)


def _invalid_column(codec: Codec, record: Mapping[str, Any], *, clip: bool) -> str | None:
    """The first field of ``record`` that does not fit ``codec`` (conditions first), if one can be told."""
    for name, allowed in codec.conditions.items():
        try:
            fits = record.get(name) in allowed
        except Exception:  # e.g. an array, whose comparison has no single truth value
            fits = False
        if not fits:
            return name
    if isinstance(codec, TabularCodec):
        for column in codec.schema.columns:
            try:
                column.normalise(record.get(column.name), clip=clip)
            except InvalidRecord:
                return column.name
        return None
    body = codec.body_fields
    return body[0] if len(body) == 1 else None


def _public_hint(codec: Codec, column: str | None, kind: str) -> str:
    """Why a value of ``column`` is refused, from the public schema only (never the value itself)."""
    schema_column = None
    if isinstance(codec, TabularCodec) and column is not None and column in codec.schema:
        schema_column = codec.schema[column]
    if kind == "unknown_category":
        declared = codec.conditions.get(column) if column in codec.conditions else getattr(schema_column, "categories", None)
        listed = f" ({', '.join(map(repr, declared[:8]))}{', ...' if len(declared) > 8 else ''})" if declared else ""
        return f"its value is not one of the declared categories{listed}; declare it, or map the value to one of them"
    if kind == "out_of_bounds":
        if schema_column is not None and hasattr(schema_column, "lower"):
            return (f"its value is outside the declared bounds [{schema_column.lower}, {schema_column.upper}]; widen "
                    "the bounds in the schema, or prepare with on_out_of_bounds='clip'")
        if hasattr(codec, "input_max"):
            return f"its grey values are outside [0, {codec.input_max:g}]; set input_max= to the inputs' scale"
        return "its value is outside the declared bounds"
    hints = {
        "empty": "the text is empty (or only whitespace)",
        "not_text": "its value is not a string",
        "too_long": f"the text is longer than max_chars={getattr(codec, 'max_chars', None)}",
        "malformed": "its value is malformed (e.g. a NUL character or a line break where none may be)",
        "not_finite": "its value is NaN or infinite, which cannot be encoded",
        "not_a_number": "its value is not a number of the declared type",
        "null_not_allowed": "its value is missing, but the column is not declared nullable=True",
        "missing_column": "the field is missing",
        "shape": f"the image does not have the declared shape {getattr(codec, 'shape', None)}",
        "dtype": "the image must hold integer or float grey values",
    }
    return hints.get(kind, "its value does not fit the codec's declared format")


def row_error(row: int, codec: Codec, record: Mapping[str, Any], exc: InvalidRecord, *, clip: bool = False,
              when: str = "", of: str = "", fix: str | None = None) -> DatasetError:
    """The error for ``row`` not fitting ``codec``: the row, the column and the reason, never the value.

    ``exc.reason`` is not used: it may quote the private value (a record's text or a number).
    """
    column = _invalid_column(codec, record, clip=clip)
    where = f" (column {column!r})" if column is not None else ""
    if fix is None:
        fix = ("Fix or remove that row, or prepare with drop_invalid=True to drop the rows that do not fit (counted "
               "per reason in the owner-only report).")
    return DatasetError(
        f"Row {row}{of}{where} does not fit the codec{when} ({exc.kind}): {_public_hint(codec, column, exc.kind)}. {fix}"
    )


def _order_seed(key: bytes, canonical: str, user: Any, user_level: bool) -> int:
    # A keyed hash of the record's own canonical content (and, at user level, its user's id): never
    # its position, so removing one record changes how no other record is written (1-stability).
    digest = hashlib.sha256(
        key + (b"user:" + repr(user).encode("utf-8", "surrogatepass") if user_level else b"example")
        + b"\x00" + canonical.encode("utf-8", "surrogatepass")
    ).digest()
    return int.from_bytes(digest[:8], "big")


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
    drop_invalid: bool = False,
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
        drop_invalid: False (default): the first row that does not fit the codec (an empty text,
            an undeclared category, a value out of bounds when not clipping, NaN, ...; also a
            text that no longer fits once scrubbed) stops preparation with an error naming the
            row and column. True: such rows are dropped before deduplication and capping, and
            counted per reason (:attr:`InvalidRecord.kind`) in the owner-only
            ``report.invalid_dropped``; N counts the rows kept.
        shuffle_seed: a public key mixed into the hash that gives each tabular row its column
            order (not a privacy seed).

    Returns:
        a :class:`PreparedDataset` whose dataset has ``prompt`` and ``completion`` columns, one
        column per codec condition holding its declared value (e.g. ``label``), and at user level
        the user id column.

    Privacy: nothing is read from the data except through the codec's public schema; N is public.
    Every per-record choice (a row's column order) is a keyed hash of that record's own content
    (and its user id at user level), never of its position, so preparation is 1-stable: removing
    one record changes no other record's text.
    Privacy: ``drop_invalid`` decides from each row alone and the public codec, before any other
    rule, so it is 1-stable too: the guarantee then holds for the original data, invalid rows
    included (a neighbouring dataset prepares to the same dataset or to a neighbour of it).
    Scrubbing is defence in depth, not the guarantee.
    """
    if not isinstance(codec, Codec):
        raise DatasetError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
    check_user_level(privacy_unit, user_id_column, max_examples_per_user)
    if on_out_of_bounds not in ("error", "clip"):
        raise DatasetError(f"on_out_of_bounds must be 'error' or 'clip'; got {on_out_of_bounds!r}.")
    if on_out_of_bounds == "clip" and not isinstance(codec, TabularCodec):
        raise DatasetError("on_out_of_bounds='clip' applies to tabular data only; this codec has no numeric bounds.")
    if not isinstance(drop_invalid, bool):
        raise DatasetError(f"drop_invalid must be True or False; got {drop_invalid!r}.")
    scrubber = _scrubber(scrub_pii)
    fields = list(codec.fields)
    if user_id_column and user_id_column in fields:
        raise DatasetError(
            f"user_id_column {user_id_column!r} is also a field the codec encodes: a user id must never be "
            "part of the training text. Remove it from the codec's fields."
        )
    reserved = [name for name in codec.conditions if name in _OUTPUT_COLUMNS]
    if reserved:
        raise DatasetError(
            f"condition(s) {reserved} have the name of a column of the prepared data ({list(_OUTPUT_COLUMNS)}); "
            "rename them in the codec and the data."
        )
    dataset = load_records(source, split=split, columns=fields + ([user_id_column] if user_id_column else []))
    if isinstance(codec, TabularCodec):
        codec.schema.check_columns(dataset.column_names)
    columns = {name: column_values(dataset, name) for name in fields}
    num_rows = len(dataset)
    clip = on_out_of_bounds == "clip"
    scrub_text = scrubber is not None and isinstance(codec, TextCodec)

    # 1. Check every record against the codec, after scrubbing its free text: a row that does not
    #    fit stops preparation, or with drop_invalid is dropped (a rule on the row alone, before any
    #    other). The canonical (unscrubbed) encoding is the duplicate key.
    valid_rows: list[int] = []
    records: list[dict[str, Any] | None] = [None] * num_rows
    canonical: list[str | None] = [None] * num_rows
    pii_counts: dict[int, Mapping[str, int]] = {}
    invalid: collections.Counter[str] = collections.Counter()
    clipped_rows = 0
    for row in range(num_rows):
        record = {name: columns[name][row] for name in fields}
        clipped = False
        stage = ""
        try:
            if isinstance(codec, TabularCodec):
                try:
                    values = codec.schema.normalise(record)
                except InvalidRecord as exc:
                    if exc.kind != "out_of_bounds" or not clip:
                        raise
                    values = codec.schema.normalise(record, clip=True)
                    clipped = True
                record.update(values)
                key = codec.encode_prompt(record) + codec.encode_body(record, normalised=True)
            else:
                key = codec.encode(record)
            if scrub_text:
                stage = " after PII scrubbing"
                result = scrubber.scrub(record[codec.text_field])  # type: ignore[union-attr]
                if result.counts:
                    record = {**record, codec.text_field: result.text}
                    codec.encode_body(record)  # e.g. placeholders that pass max_chars
                    pii_counts[row] = result.counts
        except InvalidRecord as exc:
            if not drop_invalid:
                raise row_error(row, codec, record, exc, clip=clip, when=stage) from None
            invalid[exc.kind] += 1
            continue
        clipped_rows += clipped
        records[row] = record
        canonical[row] = key
        valid_rows.append(row)
    if num_rows and not valid_rows:
        raise DatasetError(
            f"Every one of the {num_rows:,} rows was dropped as invalid (drop_invalid=True; reasons: "
            + ", ".join(f"{kind} {n:,}" for kind, n in sorted(invalid.items()))
            + "). Check that the codec's fields, categories and bounds describe this data (e.g. the right "
            "text column), and that the source is the one you meant."
        )

    # 2. Privacy units: duplicates within a user collapsed, each user capped.
    user_ids = column_values(dataset, user_id_column) if user_id_column else None
    bounded = bound_contributions(
        num_rows,
        privacy_unit=privacy_unit,
        user_ids=user_ids,
        max_examples_per_user=max_examples_per_user,
        dedupe_key=canonical.__getitem__ if deduplicate else None,
        user_id_column=user_id_column or "user id",
        rows=valid_rows,
    )

    # 3. Encode: prompt = conditioning prefix, completion = the record (its column order a keyed
    #    hash of its own content and user, never of its position).
    order_key = _ORDER_SALT + repr(shuffle_seed).encode() + b"\x00"
    user_level = privacy_unit == "user"
    prompts: list[str] = []
    completions: list[str] = []
    condition_values: dict[str, list[Any]] = {name: [] for name in codec.conditions}
    replacements: dict[str, int] = {}
    records_with_pii = 0
    for row in bounded.rows:
        record = records[row]
        assert record is not None
        counts = pii_counts.get(row)
        if counts:
            records_with_pii += 1
            for kind, n in counts.items():
                replacements[kind] = replacements.get(kind, 0) + n
        seed = _order_seed(order_key, canonical[row], user_ids[row] if user_level else None, user_level)  # type: ignore[arg-type,index]
        prompts.append(codec.encode_prompt(record))
        if isinstance(codec, TabularCodec):
            completions.append(codec.encode_body(record, order_seed=seed, normalised=True))
        else:
            completions.append(codec.encode_body(record, order_seed=seed))
        for name in condition_values:
            condition_values[name].append(record[name])

    from datasets import Dataset

    out: dict[str, list[Any]] = {"prompt": prompts, "completion": completions, **condition_values}
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
            "enabled": scrub_text,
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
        drop_invalid=drop_invalid,
        invalid_dropped=dict(sorted(invalid.items())),
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
