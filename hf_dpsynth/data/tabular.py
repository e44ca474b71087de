"""Tabular rows as text: ``"age is 39, workclass is State-gov, ..."`` against a public schema.

The schema (columns, types, allowed categories, numeric bounds and precision) is declared by the
user and is public: nothing in it is read from the private data. Each training example gets its
own column order (GReaT / DP-LLMTGen), so the model does not learn one fixed conditional chain;
parsing back is strict — every column exactly once, every value valid and within its bounds.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hf_dpsynth.data.codecs import Codec, _check_name, _field, check_categories, check_finite
from hf_dpsynth.data.loading import is_missing
from hf_dpsynth.errors import InvalidRecord, SchemaError

__all__ = [
    "CategoricalColumn",
    "FloatColumn",
    "IntegerColumn",
    "NULL_TOKEN",
    "TabularCodec",
    "TabularSchema",
]

#: How a missing value (None) of a nullable column is written.
NULL_TOKEN = "missing"
_PAIR_SEP = ", "
_IS = " is "
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class CategoricalColumn:
    """A column whose values come from a declared, public list of categories."""

    name: str
    categories: tuple[str, ...]
    nullable: bool = False
    kind: Literal["categorical"] = "categorical"

    def __post_init__(self) -> None:
        _check_name("A column name", self.name)
        cats = check_categories(
            f"column {self.name!r} categories", self.categories, forbidden=(_PAIR_SEP, "\n", "\r")
        )
        if self.nullable and NULL_TOKEN in cats:
            raise SchemaError(f"column {self.name!r}: {NULL_TOKEN!r} is reserved for missing values; rename that category.")
        object.__setattr__(self, "categories", cats)

    def normalise(self, value: Any, *, clip: bool = False) -> Any:
        if value is None:
            return _null(self)
        if not isinstance(value, str) or value not in self.categories:
            raise InvalidRecord(
                f"column {self.name!r}: {value!r} is not one of the declared categories "
                f"({_preview(self.categories)}). Declare every allowed value in the schema, or map "
                "this value to one of them before preparing.",
                kind="unknown_category",
            )
        return value

    def format(self, value: Any) -> str:
        return NULL_TOKEN if value is None else value

    def parse(self, text: str) -> Any:
        if text == NULL_TOKEN and self.nullable:
            return None
        return self.normalise(text)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": "categorical", "categories": list(self.categories), "nullable": self.nullable}


@dataclass(frozen=True)
class IntegerColumn:
    """An integer column with declared (public) inclusive bounds."""

    name: str
    lower: int
    upper: int
    nullable: bool = False
    kind: Literal["integer"] = "integer"

    def __post_init__(self) -> None:
        _check_name("A column name", self.name)
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, bound, int(value))
                    continue
                raise SchemaError(f"column {self.name!r}: {bound} must be an integer; got {value!r}.")
        if self.lower > self.upper:
            raise SchemaError(f"column {self.name!r}: lower {self.lower} is above upper {self.upper}.")

    def normalise(self, value: Any, *, clip: bool = False) -> Any:
        if _is_missing(value, self):
            return _null(self)
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__index__"):
            raise InvalidRecord(f"column {self.name!r}: expected an integer, got {value!r}.", kind="not_a_number")
        check_finite(self.name, value)
        if isinstance(value, float) and not value.is_integer():
            raise InvalidRecord(f"column {self.name!r}: {value!r} is not a whole number.", kind="not_a_number")
        number = int(value)
        return _bounded(self, number, clip)

    def format(self, value: Any) -> str:
        return NULL_TOKEN if value is None else str(value)

    def parse(self, text: str) -> Any:
        if text == NULL_TOKEN and self.nullable:
            return None
        if not _INT_RE.fullmatch(text):
            raise InvalidRecord(f"column {self.name!r}: {text[:40]!r} is not an integer.", kind="not_a_number")
        return _bounded(self, int(text), False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": "integer", "lower": self.lower, "upper": self.upper, "nullable": self.nullable}


@dataclass(frozen=True)
class FloatColumn:
    """A real-valued column with declared bounds, written with ``precision`` decimals.

    Encoding rounds to ``precision`` decimals (declared as the codec's rounding).
    """

    name: str
    lower: float
    upper: float
    precision: int = 2
    nullable: bool = False
    kind: Literal["float"] = "float"

    def __post_init__(self) -> None:
        _check_name("A column name", self.name)
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SchemaError(f"column {self.name!r}: {bound} must be a finite number; got {value!r}.")
        if self.lower > self.upper:
            raise SchemaError(f"column {self.name!r}: lower {self.lower} is above upper {self.upper}.")
        if isinstance(self.precision, bool) or not isinstance(self.precision, int) or not 0 <= self.precision <= 12:
            raise SchemaError(f"column {self.name!r}: precision must be an integer in [0, 12]; got {self.precision!r}.")
        # Bounds on the written grid, so rounding an in-bounds value never steps outside them.
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if round(value, self.precision) != value:
                raise SchemaError(
                    f"column {self.name!r}: {bound} {value!r} has more decimals than precision={self.precision}; "
                    f"declare bounds written with at most {self.precision} decimals."
                )

    def normalise(self, value: Any, *, clip: bool = False) -> Any:
        if _is_missing(value, self):
            return _null(self)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise InvalidRecord(f"column {self.name!r}: expected a number, got {value!r}.", kind="not_a_number") from None
        check_finite(self.name, value)
        number = _bounded(self, float(value), clip)
        return round(number, self.precision) + 0.0  # + 0.0: no "-0.0" in the text

    def format(self, value: Any) -> str:
        return NULL_TOKEN if value is None else f"{value:.{self.precision}f}"

    def parse(self, text: str) -> Any:
        if text == NULL_TOKEN and self.nullable:
            return None
        if not _FLOAT_RE.fullmatch(text):
            raise InvalidRecord(f"column {self.name!r}: {text[:40]!r} is not a number.", kind="not_a_number")
        number = float(text)
        check_finite(self.name, number)
        return _bounded(self, round(number, self.precision), False) + 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": "float", "lower": self.lower, "upper": self.upper,
            "precision": self.precision, "nullable": self.nullable,
        }


Column = CategoricalColumn | IntegerColumn | FloatColumn
_COLUMN_TYPES = {"categorical": CategoricalColumn, "integer": IntegerColumn, "float": FloatColumn}


def _null(column: Column) -> None:
    if not column.nullable:
        raise InvalidRecord(
            f"column {column.name!r} is missing a value but is not declared nullable=True.", kind="null_not_allowed"
        )
    return None


def _is_missing(value: Any, column: Column) -> bool:
    # None, or NaN in a nullable column (pandas' and Arrow's missing value in numeric columns);
    # NaN in a non-nullable column is an error, never silently a value.
    return value is None or (column.nullable and is_missing(value))


def _bounded(column: IntegerColumn | FloatColumn, number: float, clip: bool) -> Any:
    if column.lower <= number <= column.upper:
        return number
    if clip:
        return type(number)(min(max(number, column.lower), column.upper))
    raise InvalidRecord(
        f"column {column.name!r}: {number!r} is outside the declared bounds [{column.lower}, {column.upper}]. "
        "Widen the bounds in the schema, or prepare with on_out_of_bounds='clip'.",
        kind="out_of_bounds",
    )


def _preview(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


class TabularSchema:
    """The public description of a table: its columns in a canonical order.

    Build it in code (``TabularSchema([CategoricalColumn("sex", ("Female", "Male")), ...])``) or
    from a dict / YAML (:meth:`from_dict`). Every categorical column lists its allowed values and
    every numeric column its bounds: a schema may not be derived from the private data.
    """

    def __init__(self, columns: Iterable[Column]) -> None:
        cols = tuple(columns)
        if not cols:
            raise SchemaError("A tabular schema needs at least one column.")
        for col in cols:
            if not isinstance(col, (CategoricalColumn, IntegerColumn, FloatColumn)):
                raise SchemaError(
                    f"schema columns must be CategoricalColumn, IntegerColumn or FloatColumn; got {col!r}."
                )
            if _IS in col.name or _PAIR_SEP in col.name:
                raise SchemaError(f"column name {col.name!r} may not contain {_IS!r} or {_PAIR_SEP!r}.")
        names = [c.name for c in cols]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"the schema lists column(s) {dupes} more than once.")
        self.columns = cols
        self._by_name = {c.name: c for c in cols}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __getitem__(self, name: str) -> Column:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.columns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TabularSchema) and self.columns == other.columns

    def __repr__(self) -> str:
        return f"TabularSchema({', '.join(f'{c.name}:{c.kind}' for c in self.columns)})"

    @property
    def categorical(self) -> dict[str, tuple[str, ...]]:
        """The categorical columns and their declared categories."""
        return {c.name: c.categories for c in self.columns if isinstance(c, CategoricalColumn)}

    def select(self, names: Sequence[str]) -> TabularSchema:
        """A schema with only ``names`` (in that order)."""
        missing = [n for n in names if n not in self._by_name]
        if missing:
            raise SchemaError(f"the schema has no column(s) {missing}; it has {list(self.names)}.")
        return TabularSchema(self._by_name[n] for n in names)

    def check_columns(self, available: Sequence[str]) -> None:
        """SchemaError when the data lacks a schema column (naming what the data has)."""
        missing = [n for n in self.names if n not in available]
        if missing:
            raise SchemaError(
                f"The schema does not match the data: column(s) {missing} are declared but the data "
                f"has only {list(available)}. Fix the schema or select the data's columns."
            )

    def normalise(self, record: Mapping[str, Any], *, clip: bool = False) -> dict[str, Any]:
        """``record`` restricted to the schema's columns, each value validated (InvalidRecord)."""
        return {c.name: c.normalise(_field(record, c.name), clip=clip) for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularSchema:
        """The schema from ``{"columns": [{"name": ..., "type": "categorical"|"integer"|"float", ...}]}``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("columns"), list):
            raise SchemaError("A schema dict needs a 'columns' list of column declarations.")
        columns = []
        for i, spec in enumerate(data["columns"]):
            if not isinstance(spec, Mapping):
                raise SchemaError(f"schema column #{i} must be a mapping; got {spec!r}.")
            spec = dict(spec)
            kind = spec.pop("type", None)
            if kind not in _COLUMN_TYPES:
                raise SchemaError(
                    f"schema column #{i} ({spec.get('name')!r}) has type {kind!r}; use one of {sorted(_COLUMN_TYPES)}."
                )
            if kind == "categorical" and "categories" in spec:
                spec["categories"] = tuple(spec["categories"]) if isinstance(spec["categories"], list) else spec["categories"]
            try:
                columns.append(_COLUMN_TYPES[kind](**spec))
            except TypeError as exc:
                raise SchemaError(f"schema column #{i} ({spec.get('name')!r}): {exc}.") from exc
        return cls(columns)


class TabularCodec(Codec):
    """Rows as ``"column is value"`` pairs joined by ``", "``, parsed back strictly.

    Args:
        schema: the public :class:`TabularSchema`.
        shuffle_columns: give each encoded example its own column order (from ``order_seed``);
            without a seed, or with ``False``, the schema's order is used.
        conditions: optional prefix conditions (see :class:`Codec`); a conditioned column is
            still encoded in the body.
        prompt_template, descriptions: see :class:`Codec`.

    ``decode(encode(row)) == schema.normalise(row)``: exact for categories and integers, floats
    rounded to their declared precision.
    """

    modality = "tabular"

    def __init__(
        self,
        schema: TabularSchema,
        *,
        shuffle_columns: bool = True,
        conditions: Mapping[str, Sequence[str]] | None = None,
        prompt_template: str | None = None,
        descriptions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(conditions=conditions, prompt_template=prompt_template, descriptions=descriptions)
        if not isinstance(schema, TabularSchema):
            raise SchemaError(f"schema must be a TabularSchema; got {type(schema).__name__}.")
        self.schema = schema
        self.shuffle_columns = bool(shuffle_columns)

    @property
    def body_fields(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def rounding(self) -> str | None:
        floats = [c for c in self.schema.columns if isinstance(c, FloatColumn)]
        if not floats:
            return None
        return "Real-valued columns are rounded to their declared precision: " + ", ".join(
            f"{c.name} to {c.precision} decimals" for c in floats
        ) + "."

    def encode_body(
        self, record: Mapping[str, Any], *, order_seed: int | None = None, clip: bool = False, normalised: bool = False
    ) -> str:
        """The row's pairs (``normalised=True``: ``record`` already passed ``schema.normalise``)."""
        values = record if normalised else self.schema.normalise(record, clip=clip)
        columns = list(self.schema.columns)
        if self.shuffle_columns and order_seed is not None:
            random.Random(order_seed).shuffle(columns)
        return _PAIR_SEP.join(f"{c.name}{_IS}{c.format(values[c.name])}" for c in columns)

    def decode_body(self, text: str) -> dict[str, Any]:
        body = text.strip()
        if not body:
            raise InvalidRecord("the row is empty.", kind="empty")
        if "\n" in body:
            raise InvalidRecord("a row must be one line; found a line break.", kind="malformed")
        found: dict[str, Any] = {}
        for pair in body.split(_PAIR_SEP):
            name, is_, value = pair.partition(_IS)
            if not is_:
                raise InvalidRecord(f"{pair[:40]!r} is not a 'column is value' pair.", kind="malformed")
            if name not in self.schema:
                raise InvalidRecord(f"unknown column {name[:40]!r}.", kind="unknown_column")
            if name in found:
                raise InvalidRecord(f"column {name!r} appears more than once.", kind="duplicate_column")
            found[name] = self.schema[name].parse(value)
        missing = [n for n in self.schema.names if n not in found]
        if missing:
            raise InvalidRecord(f"column(s) {missing} are missing.", kind="missing_column")
        return {n: found[n] for n in self.schema.names}

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "schema": self.schema.to_dict(), "shuffle_columns": self.shuffle_columns}
