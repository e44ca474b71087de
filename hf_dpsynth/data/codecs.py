"""Codecs: one record <-> one text, the same way for training, prompting and parsing back.

Every codec has the same interface:

* ``encode(record) -> str`` — the text a model is trained on (conditioning prefix + body);
* ``encode_prompt(record) -> str`` — the conditioning prefix alone (no loss is taken on it);
* ``decode(text) -> dict`` — the record back, or :class:`~hf_dpsynth.errors.InvalidRecord` with the
  reason; every generator parses its outputs through :meth:`Codec.parse_many`, which counts and
  drops invalid ones.

A conditioning prefix is one ``name: value`` line per condition, e.g. ``"label: spam\\n"``, or a
declared ``prompt_template`` with the conditions as ``{name}`` fields (e.g. an instruction in the
model's chat format). Its values come from a declared, public list and the template is public, so a
prompt built from them never carries private data.
"""

from __future__ import annotations

import abc
import collections
import math
import numbers
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hf_dpsynth.errors import InvalidRecord, SchemaError

__all__ = ["Codec", "ParseResult", "TextCodec"]


@dataclass(frozen=True)
class ParseResult:
    """Generated texts parsed back through a codec: the valid records and why the rest failed.

    ``invalid_kinds`` counts the invalid texts per :attr:`InvalidRecord.kind`. The invalid texts
    themselves are kept only in ``invalid`` (for the data owner's debugging), never in a card.
    """

    records: list[dict[str, Any]]
    num_generated: int
    invalid_kinds: Mapping[str, int] = field(default_factory=dict)
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_valid(self) -> int:
        return len(self.records)

    @property
    def num_invalid(self) -> int:
        return self.num_generated - len(self.records)

    @property
    def valid_fraction(self) -> float:
        return self.num_valid / self.num_generated if self.num_generated else 0.0


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise SchemaError(f"{what} must be a non-empty string without surrounding spaces; got {name!r}.")
    if any(ch in name for ch in ":\n\r"):
        raise SchemaError(f"{what} may not contain ':' or a line break; got {name!r}.")
    return name


def check_categories(what: str, categories: Any, *, forbidden: Sequence[str] = ("\n", "\r")) -> tuple[str, ...]:
    """A declared, public category list: non-empty distinct strings without ``forbidden`` parts."""
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Iterable):
        raise SchemaError(
            f"{what} must be a list of the allowed values (public, declared by you); got {categories!r}."
        )
    values = tuple(categories)
    if not values:
        raise SchemaError(f"{what} is empty: declare at least one allowed value.")
    for value in values:
        if not isinstance(value, str) or not value or value != value.strip():
            raise SchemaError(
                f"{what}: every value must be a non-empty string without surrounding spaces; got {value!r}."
            )
        for part in forbidden:
            if part in value:
                raise SchemaError(f"{what}: value {value!r} contains {part!r}, which the text format reserves.")
    duplicates = [v for v, n in collections.Counter(values).items() if n > 1]
    if duplicates:
        raise SchemaError(f"{what} lists {duplicates} more than once.")
    return values


class Codec(abc.ABC):
    """Base class: a conditioning prefix from public category lists, then a modality body.

    Args:
        conditions: ordered mapping from a record field to its public list of allowed values
            (e.g. ``{"label": ["ham", "spam"]}``); each becomes a ``name: value`` prefix line.
        prompt_template: optional public prefix written instead of those lines, with every
            condition as a ``{name}`` field, e.g. ``"Write a {label} SMS message.\\n"`` or the same
            instruction in the model's chat format (special tokens such as ``<|im_start|>`` written
            literally). ``decode`` reads the conditions back from it. It is public: write no
            private value into it.
        descriptions: optional public descriptions of condition values, ``{name: {value: text}}``
            (e.g. ``{"label": {"spam": "an unsolicited advertising or scam text message"}}``), which a
            prompt template writes as the field ``{<name>_description}``: a model given "Write an
            unsolicited advertising or scam text message" knows what to write, which "Write one spam
            message" barely says. Every value of a described condition needs a description, and they
            must differ (``decode`` reads the value back from its description).
        keyword_phrase: the public sentence a template's ``{keywords}`` field becomes when a
            prompt is given keywords (``{words}`` is replaced by them, comma-separated; default
            :data:`DEFAULT_KEYWORD_PHRASE`); without keywords the field is empty, so training
            texts, prompts without keywords and ``decode`` all read the template without it. The
            keywords come from a DP release (:func:`~hf_dpsynth.data.keywords.dp_keywords`) or are
            public: a codec never chooses them.
    """

    modality: ClassVar[str]

    def __init__(
        self,
        *,
        conditions: Mapping[str, Sequence[str]] | None = None,
        prompt_template: str | None = None,
        descriptions: Mapping[str, Mapping[str, str]] | None = None,
        keyword_phrase: str | None = None,
    ) -> None:
        conds: dict[str, tuple[str, ...]] = {}
        for name, values in dict(conditions or {}).items():
            conds[_check_name("A condition name", name)] = check_categories(
                f"conditions[{name!r}]", values
            )
        self._conditions = conds
        if KEYWORDS_FIELD in conds:
            raise SchemaError(f"{KEYWORDS_FIELD!r} is the prompt template's keyword field: name the condition differently.")
        self._descriptions = _checked_descriptions(descriptions, conds, prompt_template)
        self.prompt_template = prompt_template
        self._template_re = (None if prompt_template is None
                             else _template_regex(prompt_template, conds, self._descriptions))
        self.takes_keywords = prompt_template is not None and any(
            name == KEYWORDS_FIELD for _, name, _, _ in string.Formatter().parse(prompt_template))
        if keyword_phrase is not None and not self.takes_keywords:
            raise SchemaError("keyword_phrase is written by a prompt template's {keywords} field: put the field in "
                              "prompt_template (where the keywords go), or leave keyword_phrase out.")
        self.keyword_phrase = _checked_keyword_phrase(keyword_phrase) if self.takes_keywords else None

    @property
    def conditions(self) -> Mapping[str, tuple[str, ...]]:
        return dict(self._conditions)

    @property
    def descriptions(self) -> Mapping[str, Mapping[str, str]]:
        """The public descriptions of condition values (``{name: {value: text}}``; empty when none)."""
        return {name: dict(d) for name, d in self._descriptions.items()}

    @property
    def fields(self) -> tuple[str, ...]:
        """The record fields this codec reads: the conditions, then the body's fields."""
        return tuple(self._conditions) + self.body_fields

    @property
    @abc.abstractmethod
    def body_fields(self) -> tuple[str, ...]:
        """The record fields the body encodes."""

    @property
    def rounding(self) -> str | None:
        """A sentence declaring any rounding ``encode`` applies, or None if it is exact."""
        return None

    # -- the public interface ------------------------------------------------------------------

    def encode(self, record: Mapping[str, Any], *, order_seed: int | None = None) -> str:
        """The full training text of ``record``: prefix, then body. Raises InvalidRecord."""
        return self.encode_prompt(record) + self.encode_body(record, order_seed=order_seed)

    def encode_prompt(self, record: Mapping[str, Any], *, keywords: Sequence[str] = ()) -> str:
        """The conditioning prefix of ``record`` (empty without conditions or template); ``keywords``
        fill the template's ``{keywords}`` field (see ``keyword_phrase``)."""
        values = {}
        for name, allowed in self._conditions.items():
            value = _field(record, name)
            if value not in allowed:
                raise InvalidRecord(
                    f"condition {name!r} is {value!r}, which is not one of the declared values {list(allowed)}.",
                    kind="unknown_category",
                )
            values[name] = value
        if self.prompt_template is not None:
            described = {f"{name}{_DESCRIPTION}": d[values[name]] for name, d in self._descriptions.items()}
            if self.takes_keywords:
                described[KEYWORDS_FIELD] = self._keyword_text(keywords)
            elif keywords:
                raise SchemaError("keywords were given but the prompt template has no {keywords} field to write them.")
            return self.prompt_template.format(**values, **described)
        if keywords:
            raise SchemaError("keywords need a prompt_template with a {keywords} field (where they go in the prompt).")
        return "".join(f"{name}: {value}\n" for name, value in values.items())

    def prompt_for(self, *, keywords: Sequence[str] = (), **conditions: str) -> str:
        """The prefix for the given condition values (e.g. to prompt the model for ``label=spam``),
        with ``keywords`` in the template's ``{keywords}`` field."""
        return self.encode_prompt(conditions, keywords=keywords)

    def _keyword_text(self, keywords: Sequence[str]) -> str:
        words = [str(w) for w in keywords]
        if any(not w.strip() or any(ch in w for ch in ",\n\r{}") for w in words):
            raise SchemaError(f"a keyword must be a non-empty word without commas, braces or line breaks; got {words!r}.")
        return self.keyword_phrase.format(words=", ".join(words)) if words else ""

    @abc.abstractmethod
    def encode_body(self, record: Mapping[str, Any], *, order_seed: int | None = None) -> str:
        """The modality-specific text of ``record`` (``order_seed`` shuffles where that applies)."""

    def decode(self, text: str) -> dict[str, Any]:
        """The record encoded in ``text`` (prefix and body), or InvalidRecord with the reason."""
        if not isinstance(text, str):
            raise InvalidRecord(f"expected a string, got {type(text).__name__}", kind="malformed")
        record: dict[str, Any] = {}
        rest = text
        if self._template_re is not None:
            match = self._template_re.match(text)
            if match is None:
                raise InvalidRecord(
                    f"expected the prompt template {self.prompt_template[:60]!r} first; got {text[:60]!r}.",
                    kind="missing_condition",
                )
            record.update(self._template_conditions(match))
            record.update(self.decode_body(text[match.end():]))
            return record
        for name, allowed in self._conditions.items():
            line, sep, after = rest.partition("\n")
            key, colon, value = line.partition(": ")
            if not sep or not colon or key != name:
                raise InvalidRecord(
                    f"expected the condition line '{name}: <value>' first; got {line[:60]!r}.",
                    kind="missing_condition",
                )
            if value not in allowed:
                raise InvalidRecord(
                    f"condition {name!r} is {value[:60]!r}, not one of {list(allowed)}.",
                    kind="unknown_category",
                )
            record[name] = value
            rest = after
        record.update(self.decode_body(rest))
        return record

    def _template_conditions(self, match: re.Match[str]) -> dict[str, str]:
        """Each condition's value from a matched template: its field, or its value's description."""
        found = {}
        for i, name in enumerate(self._conditions):
            value = match.groupdict().get(f"c{i}")
            described = match.groupdict().get(f"d{i}")
            if described is not None:
                by_text = {text: v for v, text in self._descriptions[name].items()}
                if value is not None and by_text[described] != value:
                    raise InvalidRecord(
                        f"condition {name!r} is {value!r} but the prompt describes {by_text[described]!r}.",
                        kind="missing_condition",
                    )
                value = by_text[described]
            found[name] = value
        return found

    @abc.abstractmethod
    def decode_body(self, text: str) -> dict[str, Any]:
        """The body's fields parsed from ``text``, or InvalidRecord."""

    def validate(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` normalised as ``decode(encode(record))`` would give it; InvalidRecord if unfit."""
        return self.decode(self.encode(record))

    def parse_many(self, texts: Iterable[str], *, prompts: Iterable[str] | None = None) -> ParseResult:
        """Parse generated texts (each optionally after its prompt); count and drop invalid ones."""
        records: list[dict[str, Any]] = []
        kinds: collections.Counter[str] = collections.Counter()
        invalid: list[tuple[str, str]] = []
        texts = list(texts)
        prefixes = [""] * len(texts) if prompts is None else list(prompts)
        if len(prefixes) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(prefixes)} prompts.")
        for prefix, text in zip(prefixes, texts):
            try:
                records.append(self.decode(prefix + text))
            except InvalidRecord as exc:
                kinds[exc.kind] += 1
                invalid.append((prefix + text, exc.reason))
        return ParseResult(records=records, num_generated=len(texts), invalid_kinds=dict(kinds), invalid=invalid)

    def to_dict(self) -> dict[str, Any]:
        """The codec's public configuration (JSON-able; no data)."""
        info = {"modality": self.modality, "conditions": {k: list(v) for k, v in self._conditions.items()}}
        if self.prompt_template is not None:
            info["prompt_template"] = self.prompt_template
        if self._descriptions:
            info["descriptions"] = self.descriptions
        if self.keyword_phrase is not None:
            info["keyword_phrase"] = self.keyword_phrase
        return info


_DESCRIPTION = "_description"  # a template field {<name>_description} writes that condition's description
#: The prompt template field that DP (or public) keywords fill; empty in training texts and in ``decode``.
KEYWORDS_FIELD = "keywords"
#: What ``{keywords}`` becomes for a prompt given keywords (``{words}``: the keywords, comma-separated).
DEFAULT_KEYWORD_PHRASE = " Use the words: {words}."


def _checked_keyword_phrase(phrase: Any) -> str:
    phrase = DEFAULT_KEYWORD_PHRASE if phrase is None else phrase
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(phrase) if name is not None] if isinstance(phrase, str) else None
    except ValueError:
        fields = None
    if fields != ["words"]:
        raise SchemaError(f"keyword_phrase must be a string with one {{words}} field (where the keywords go), e.g. "
                          f"{DEFAULT_KEYWORD_PHRASE!r}; got {phrase!r}.")
    return phrase


def _checked_descriptions(descriptions: Any, conditions: Mapping[str, tuple[str, ...]],
                          template: str | None) -> dict[str, dict[str, str]]:
    if descriptions is None:
        return {}
    if not isinstance(descriptions, Mapping):
        raise SchemaError(f"descriptions must map a condition to {{value: description}}; got {descriptions!r}.")
    checked: dict[str, dict[str, str]] = {}
    for name, described in descriptions.items():
        if name not in conditions:
            raise SchemaError(f"descriptions names {name!r}, which is not a condition ({list(conditions)}).")
        if f"{name}{_DESCRIPTION}" in conditions:
            raise SchemaError(f"condition {name!r}{_DESCRIPTION} would clash with the description field of {name!r}.")
        if not isinstance(described, Mapping) or set(described) != set(conditions[name]):
            got = sorted(described) if isinstance(described, Mapping) else described
            raise SchemaError(f"descriptions[{name!r}] must describe exactly the values {list(conditions[name])}; "
                              f"got {got!r}.")
        texts = {value: described[value] for value in conditions[name]}
        if not all(isinstance(t, str) and t.strip() for t in texts.values()) or len(set(texts.values())) < len(texts):
            raise SchemaError(f"descriptions[{name!r}] must be distinct, non-empty texts (the value is read back from "
                              f"its description); got {texts!r}.")
        checked[name] = texts
    if checked and template is None:
        raise SchemaError("descriptions are written by a prompt template's {<condition>_description} field: give "
                          "prompt_template too.")
    return checked


def _template_regex(template: Any, conditions: Mapping[str, tuple[str, ...]],
                    descriptions: Mapping[str, Mapping[str, str]] | None = None) -> re.Pattern[str]:
    """A regex matching ``template`` filled with allowed condition values (and their descriptions);
    condition i is group ``c<i>``, its description ``d<i>`` (condition names need not be identifiers)."""
    descriptions = descriptions or {}
    described_fields = {f"{name}{_DESCRIPTION}": name for name in descriptions}
    if not isinstance(template, str) or not template:
        raise SchemaError(f"prompt_template must be a non-empty string; got {template!r}.")
    parts: list[str] = []
    seen: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SchemaError(f"prompt_template {template!r} is not a valid format string ({exc}); write a literal "
                          "brace as '{{' or '}}'.") from None
    for literal, name, spec, conversion in parsed:
        parts.append(re.escape(literal))
        if name is None or name == KEYWORDS_FIELD and not spec and not conversion:
            continue  # {keywords} is empty in what decode reads (the prefix without keywords)
        if name in described_fields and not spec and not conversion:
            group = f"d{list(conditions).index(described_fields[name])}"
            if name in seen:
                parts.append(f"(?P={group})")
            else:
                texts = sorted(descriptions[described_fields[name]].values(), key=len, reverse=True)
                parts.append(f"(?P<{group}>" + "|".join(map(re.escape, texts)) + ")")
                seen.add(name)
            continue
        if name not in conditions or spec or conversion:
            raise SchemaError(
                f"prompt_template field {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                f"is not a condition name; its fields must be plain {{name}} for a condition in {list(conditions)}"
                + (f", or {{name{_DESCRIPTION}}} for a described one ({list(descriptions)})." if descriptions else ".")
            )
        group = f"c{list(conditions).index(name)}"
        if name in seen:
            parts.append(f"(?P={group})")
        else:
            alternatives = sorted(conditions[name], key=len, reverse=True)  # longest first
            parts.append(f"(?P<{group}>" + "|".join(map(re.escape, alternatives)) + ")")
            seen.add(name)
    missing = [n for n in conditions if n not in seen and f"{n}{_DESCRIPTION}" not in seen]
    if missing:
        raise SchemaError(
            f"prompt_template {template!r} has no field for condition(s) {missing}: write each as {{name}}, so the "
            "prompt says which value the record is generated for."
        )
    return re.compile("".join(parts), re.DOTALL)


def _field(record: Mapping[str, Any], name: str) -> Any:
    try:
        return record[name]
    except KeyError:
        raise InvalidRecord(
            f"the record has no field {name!r}; its fields are {sorted(record)}.", kind="missing_column"
        ) from None
    except (TypeError, IndexError):
        raise InvalidRecord(
            f"a record must be a mapping of field -> value; got {type(record).__name__}.", kind="malformed"
        ) from None


def check_finite(name: str, value: Any) -> None:
    """InvalidRecord when a numeric value is NaN or infinite."""
    if type(value) is int:  # fast path: Python ints are always finite
        return
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(float(value)):
        raise InvalidRecord(f"{name!r} is {value!r}; NaN and infinite values cannot be encoded.", kind="not_finite")


class TextCodec(Codec):
    """Free text, optionally after a conditioning prefix such as ``label: spam``.

    Args:
        text_field: the record field holding the text.
        conditions: see :class:`Codec`; the loss covers only the text, never the prefix.
        max_chars: optional upper bound on a decoded text's length (longer is invalid).
        prompt_template, descriptions, keyword_phrase: see :class:`Codec`.

    The body is the text itself, unchanged: ``decode(encode(r)) == r`` for every valid record.
    A text must be a non-empty string (after stripping surrounding whitespace) without NUL bytes.
    """

    modality = "text"

    def __init__(
        self,
        text_field: str = "text",
        *,
        conditions: Mapping[str, Sequence[str]] | None = None,
        max_chars: int | None = None,
        prompt_template: str | None = None,
        descriptions: Mapping[str, Mapping[str, str]] | None = None,
        keyword_phrase: str | None = None,
    ) -> None:
        super().__init__(conditions=conditions, prompt_template=prompt_template, descriptions=descriptions,
                         keyword_phrase=keyword_phrase)
        self.text_field = _check_name("text_field", text_field)
        if text_field in self._conditions:
            raise SchemaError(f"text_field {text_field!r} is also a condition; give them different names.")
        if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
            raise SchemaError(f"max_chars must be a positive integer or None; got {max_chars!r}.")
        self.max_chars = max_chars

    @property
    def body_fields(self) -> tuple[str, ...]:
        return (self.text_field,)

    def encode_body(self, record: Mapping[str, Any], *, order_seed: int | None = None) -> str:
        text = _field(record, self.text_field)
        if not isinstance(text, str):
            raise InvalidRecord(
                f"{self.text_field!r} must be a string; got {type(text).__name__} ({text!r:.40}).",
                kind="not_text",
            )
        self._check_text(text)
        return text

    def decode_body(self, text: str) -> dict[str, Any]:
        self._check_text(text)
        if "\ufffd" in text:  # a model's byte tokens that do not form valid UTF-8
            raise InvalidRecord("the text has broken characters (U+FFFD).", kind="malformed")
        return {self.text_field: text}

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InvalidRecord("the text is empty.", kind="empty")
        if "\x00" in text:
            raise InvalidRecord("the text contains a NUL character.", kind="malformed")
        if self.max_chars is not None and len(text) > self.max_chars:
            raise InvalidRecord(f"the text has {len(text)} characters, above max_chars={self.max_chars}.", kind="too_long")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "text_field": self.text_field, "max_chars": self.max_chars}
