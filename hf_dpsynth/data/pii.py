"""PII scrubbing: typed placeholders for emails, phone numbers, URLs, cards, IBANs, IPs, ids.

Defence in depth, **not** the privacy guarantee. Differential privacy protects every record
whether or not a scrubber finds what is in it; scrubbing only lowers the chance that a rare
identifier is memorised and reproduced by a model trained with a weak budget. Detection is
imperfect (names and addresses are not detected at all: no offline NER model ships on PyPI).

Everything runs locally; nothing is ever sent anywhere. Validation uses well-kept libraries:
``phonenumbers`` (Google's libphonenumber) finds phone numbers in free text, ``python-stdnum``
validates IBANs (ISO 13616 checksum), payment cards (Luhn) and US social security numbers.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["PII_TYPES", "PIIScrubber", "PIISpan", "ScrubResult"]

PIIType = Literal["EMAIL", "URL", "IBAN", "CARD", "NATIONAL_ID", "IP", "PHONE"]
#: Detected types, in the order overlaps are resolved (an earlier type wins a shared span).
PII_TYPES: tuple[str, ...] = ("EMAIL", "URL", "IBAN", "CARD", "NATIONAL_ID", "IP", "PHONE")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
# Common top-level domains for URLs written without a scheme or "www." (e.g. "bit.ly/x").
_TLDS = (
    "com|org|net|edu|gov|io|co|uk|us|ly|me|info|biz|tv|app|dev|ai|de|fr|nl|es|it|eu|ca|au|in|ie|"
    "gl|be|ch|at|se|no|dk|fi|pl|ru|jp|cn|br|mx|nz|za|xyz|online|site|shop|store|tk|to|cc|ws|mobi"
)
_URL = re.compile(
    r"(?:(?:https?|ftp)://[^\s<>\"']+"
    r"|\bwww\d{0,3}\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^\s<>\"']*"
    r"|\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:" + _TLDS + r")/[^\s<>\"']*"
    r"|\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:com|org|net|co\.uk|org\.uk|io|ly)\b(?![.@-]\w))"
)
_URL_TRAILING = ".,;:!?)]}'\""
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(\d{3})[- ](\d{2})[- ](\d{4})(?![\d-])")
# UK National Insurance number: two prefix letters (rules from HMRC), six digits, suffix A-D.
_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
_MANY_DIGITS = re.compile(r"\d(?:[\s().+/-]{0,3}\d){6,}")


@dataclass(frozen=True)
class PIISpan:
    """One detected identifier: its type and ``[start, end)`` character span in the input."""

    type: str
    start: int
    end: int


@dataclass(frozen=True)
class ScrubResult:
    """The scrubbed text and what was replaced (types and spans refer to the *input* text)."""

    text: str
    spans: tuple[PIISpan, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


class PIIScrubber:
    """Replaces detected identifiers by typed placeholders such as ``<EMAIL>`` and ``<PHONE>``.

    Args:
        types: the PII types to detect (default: all of :data:`PII_TYPES`).
        phone_regions: ISO country codes whose national formats count as phone numbers (numbers
            written with ``+`` and a country code are found whatever the region).
        placeholder: the replacement, formatted with the type (``"<{type}>"``).

    Privacy: defence in depth only. The DP guarantee comes from the mechanisms, not from this.
    """

    def __init__(
        self,
        types: Iterable[str] | None = None,
        *,
        phone_regions: Sequence[str] = ("GB", "US"),
        placeholder: str = "<{type}>",
    ) -> None:
        chosen = tuple(PII_TYPES if types is None else types)
        unknown = [t for t in chosen if t not in PII_TYPES]
        if unknown:
            raise ValueError(f"unknown PII type(s) {unknown}; choose from {list(PII_TYPES)}.")
        self.types = tuple(t for t in PII_TYPES if t in chosen)
        if "PHONE" in self.types:
            import phonenumbers

            self._phonenumbers = phonenumbers
            regions = tuple(phone_regions)
            supported = phonenumbers.SUPPORTED_REGIONS
            bad = [r for r in regions if r not in supported]
            if bad or not regions:
                raise ValueError(f"phone_regions must be ISO 3166 region codes known to phonenumbers; got {list(regions)}.")
            self.phone_regions = regions
        else:
            self.phone_regions = tuple(phone_regions)
        if "{type}" not in placeholder:
            raise ValueError(f"placeholder must contain '{{type}}'; got {placeholder!r}.")
        self.placeholder = placeholder

    # -- detection -------------------------------------------------------------------------------

    def find(self, text: str) -> list[PIISpan]:
        """The non-overlapping identifiers in ``text``, in text order."""
        taken: list[PIISpan] = []
        for kind in self.types:
            for start, end in getattr(self, f"_find_{kind.lower()}")(text):
                if not any(start < s.end and s.start < end for s in taken):
                    taken.append(PIISpan(kind, start, end))
        return sorted(taken, key=lambda s: s.start)

    def scrub(self, text: str) -> ScrubResult:
        """``text`` with every detected identifier replaced by its placeholder."""
        spans = self.find(text)
        if not spans:
            return ScrubResult(text)
        pieces, last = [], 0
        for span in spans:
            pieces.append(text[last : span.start])
            pieces.append(self.placeholder.format(type=span.type))
            last = span.end
        pieces.append(text[last:])
        counts = collections.Counter(s.type for s in spans)
        return ScrubResult("".join(pieces), tuple(spans), dict(counts))

    def _find_email(self, text: str) -> Iterable[tuple[int, int]]:
        if "@" not in text:
            return
        for m in _EMAIL.finditer(text):
            yield m.span()

    def _find_url(self, text: str) -> Iterable[tuple[int, int]]:
        if "." not in text and ":" not in text:
            return
        for m in _URL.finditer(text):
            start, end = m.span()
            while end > start and text[end - 1] in _URL_TRAILING:
                end -= 1
            if end > start:
                yield start, end

    def _find_iban(self, text: str) -> Iterable[tuple[int, int]]:
        from stdnum import iban

        for m in _IBAN.finditer(text):
            candidate = m.group()
            # The optional last group can swallow a following word; try shorter forms too.
            while candidate:
                if iban.is_valid(candidate):
                    yield m.start(), m.start() + len(candidate)
                    break
                cut = candidate.rfind(" ")
                if cut < 0:
                    break
                candidate = candidate[:cut]

    def _find_card(self, text: str) -> Iterable[tuple[int, int]]:
        from stdnum import luhn

        for m in _CARD.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            # Issuer prefixes of the card networks (Visa 4, Mastercard 2/5, Amex 34/37,
            # Discover/UnionPay 6, Diners/JCB 3): a Luhn-valid run of digits alone is too common.
            if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits):
                yield m.span()

    def _find_national_id(self, text: str) -> Iterable[tuple[int, int]]:
        from stdnum.us import ssn

        for m in _SSN.finditer(text):
            if ssn.is_valid("".join(m.groups())):
                yield m.span()
        for m in _NINO.finditer(text):
            yield m.span()

    def _find_ip(self, text: str) -> Iterable[tuple[int, int]]:
        if "." in text:
            for m in _IPV4.finditer(text):
                try:
                    ipaddress.IPv4Address(m.group())
                except ValueError:
                    continue
                yield m.span()
        if "::" in text or text.count(":") >= 3:
            for m in _IPV6.finditer(text):
                candidate = m.group()
                if candidate.count(":") < 2 or not any(ch.isalnum() for ch in candidate):
                    continue
                try:
                    ipaddress.IPv6Address(candidate)
                except ValueError:
                    continue
                yield m.span()

    def _find_phone(self, text: str) -> Iterable[tuple[int, int]]:
        if not _MANY_DIGITS.search(text):  # fast path: no run of 7+ digits, no phone number
            return
        pn = self._phonenumbers
        seen: set[tuple[int, int]] = set()
        for region in self.phone_regions:
            for match in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID):
                span = (match.start, match.end)
                if span not in seen:
                    seen.add(span)
                    yield span


def scrub_counts(results: Iterable[ScrubResult]) -> dict[str, int]:
    """Total replacements per type over many results (owner-only: counts of private data)."""
    total: collections.Counter[str] = collections.Counter()
    for result in results:
        total.update(result.counts)
    return dict(total)
