"""Safety gates that run before anything leaves the machine.

Every gate refuses loudly (``PublishRefusedError``, listing every failed gate); none filters
silently. The gates:

* **canaries**: a synthetic record equals an audit canary (canaries must never ship);
* **verbatim**: a synthetic record copies a *long and rare* training record — the whole record, or a
  run of ``min_words`` consecutive words that occurs in at most ``max_private_occurrences`` private
  records. Short or common messages ("Sorry, I'll call later" occurs dozens of times in real SMS
  data) are not evidence of copying and pass. The matches are reported to the owner only;
* **ledger / card**: no privacy ledger, or no card with a valid DP block: nothing is published;
* **non-private**: DP was off somewhere (ε = ∞ or σ = 0) — refused unless ``allow_non_private``;
* **folder contents**: checkpoints, optimizer/scheduler/RNG state, ``training_args.bin`` (it pickles
  the trainer's arguments, secret seeds included), ``dp_state.json``, saved canaries, or any file
  that holds a privacy mechanism's seed.

Privacy: the verbatim gate is an owner-side check on private data. Re-generating until it passes
is selection on private data, not post-processing: fix the cause (more noise, fewer epochs)
instead, and the card says that a non-DP owner check was applied.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_dpsynth.errors import PublishRefusedError

__all__ = ["GateReport", "VerbatimMatch", "check_folder", "check_release", "find_verbatim", "record_texts"]

#: A whole record at least this long (characters, after normalising whitespace) counts as "long".
MIN_CHARS = 40
#: A run of this many consecutive words counts as a long copy inside a record.
MIN_WORDS = 12
#: A text occurring in more private records than this is "common", not evidence of copying.
MAX_PRIVATE_OCCURRENCES = 2

_SECRET_KEYS = re.compile(r'"(dp_seed|sampling_seed|noise_seed|rng_state|secret_seed)"\s*:')
_FORBIDDEN_NAMES = (
    re.compile(r"^checkpoint-\d+$"),
    re.compile(r"^(optimizer|scheduler|scaler)\.(pt|bin|safetensors)$"),
    re.compile(r"^rng_state.*\.pth$"),
    re.compile(r"^training_args\.bin$"),
    re.compile(r"^dp_state\.json$"),
    re.compile(r"^canaries.*\.json$"),
    re.compile(r"^trainer_state\.json$"),
)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class VerbatimMatch:
    """A synthetic record that copies private text (owner-only: it quotes private data)."""

    synthetic_index: int
    kind: str  # "record" (the whole record) or "run" (a long run of words inside it)
    text: str
    private_occurrences: int


@dataclass
class GateReport:
    """What each gate found. ``failures`` lists the refusals; ``verbatim`` quotes private text and
    is for the data owner only."""

    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    verbatim: list[VerbatimMatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_if_failed(self) -> None:
        if self.failures:
            exc = PublishRefusedError(
                "Publishing refused before anything left the machine:\n- " + "\n- ".join(self.failures)
            )
            exc.report = self  # type: ignore[attr-defined]
            raise exc


def record_texts(dataset: Any, codec: Any | None = None) -> list[str]:
    """Each record of ``dataset`` as the gates read it: the codec's body, or its columns joined.

    The body only: the prompt prefix is public (a template and declared condition values), and
    counting its words would make every record "long" and every run of words look copied. Synthetic
    and private records go through this one function, so both sides are compared alike.
    """
    if codec is not None:
        return [codec.encode_body({f: row[f] for f in codec.body_fields}) for row in dataset]
    columns = [c for c in dataset.column_names if c not in ("generator", "condition")]
    return [" ".join(str(row[c]) for c in columns) for row in dataset]


def _contains_canary(text: str, canaries: set[str], min_chars: int) -> bool:
    if text in canaries:
        return True
    return any((len(c) >= min_chars and c in text) or (len(text) >= min_chars and text in c) for c in canaries)


def find_verbatim(
    synthetic: Sequence[str],
    private: Iterable[str],
    *,
    min_chars: int = MIN_CHARS,
    min_words: int = MIN_WORDS,
    max_private_occurrences: int = MAX_PRIVATE_OCCURRENCES,
) -> list[VerbatimMatch]:
    """Synthetic records that copy a long, rare private record or a long, rare run of its words."""
    record_counts: collections.Counter[str] = collections.Counter()
    run_counts: collections.Counter[tuple[str, ...]] = collections.Counter()
    for text in private:
        norm = _normalise(text)
        record_counts[norm] += 1
        words = norm.split()
        # each private record counts a run once, however often it repeats inside that record
        run_counts.update({tuple(words[i : i + min_words]) for i in range(len(words) - min_words + 1)})
    matches = []
    for index, text in enumerate(synthetic):
        norm = _normalise(text)
        n = record_counts.get(norm, 0)
        if n and len(norm) >= min_chars and n <= max_private_occurrences:
            matches.append(VerbatimMatch(index, "record", text, n))
            continue
        words = norm.split()
        for i in range(len(words) - min_words + 1):
            run = tuple(words[i : i + min_words])
            n = run_counts.get(run, 0)
            if n and n <= max_private_occurrences:
                matches.append(VerbatimMatch(index, "run", " ".join(run), n))
                break
    return matches


def _ledger_gate(report: GateReport, ledger_report: Mapping[str, Any] | None, allow_non_private: bool) -> None:
    if not ledger_report:
        report.failures.append("no privacy ledger: every release needs the ledger of what it spent.")
        return
    report.passed.append("ledger present")
    epsilon = ledger_report.get("epsilon_spent")
    non_private = ledger_report.get("private") is False or (isinstance(epsilon, (int, float)) and epsilon == float("inf"))
    if non_private and not allow_non_private:
        report.failures.append(
            "DP was off in this release (a stage ran without noise, ε = ∞): pass allow_non_private=True to "
            "publish it anyway, labelled as not private."
        )
    elif non_private:
        report.passed.append("non-private release allowed explicitly (the card says so)")
    else:
        report.passed.append("differentially private")


def check_release(
    synthetic_texts: Sequence[str],
    *,
    ledger_report: Mapping[str, Any] | None,
    card_text: str | None,
    private_texts: Iterable[str] | None = None,
    canaries: Iterable[str] = (),
    allow_non_private: bool = False,
    min_chars: int = MIN_CHARS,
    min_words: int = MIN_WORDS,
    max_private_occurrences: int = MAX_PRIVATE_OCCURRENCES,
) -> GateReport:
    """Run every content gate on a synthetic dataset (its records as texts); raises
    ``PublishRefusedError`` listing all failures, with the :class:`GateReport` attached as ``.report``.

    ``private_texts`` (the training records) is needed for the verbatim gate; without it the
    release is refused — the gate must run, not be skipped.
    """
    report = GateReport()
    _ledger_gate(report, ledger_report, allow_non_private)
    if not card_text or not card_text.strip():
        report.failures.append("no card: a synthetic dataset is published only with its DP card.")
    else:
        from hf_dpsynth.errors import CardError
        from hf_dpsynth.hub.cards import validate_card

        try:
            validate_card(card_text)
        except CardError as exc:
            report.failures.append(f"the card does not validate: {exc}")
        else:
            report.passed.append("card present, with a valid DP block")
    canary_set = {_normalise(c) for c in canaries}
    if canary_set:
        # Either side may carry the public prompt prefix (saved canaries do, record bodies do not):
        # a long text of one side inside the other counts.
        hits = [i for i, t in enumerate(synthetic_texts) if _contains_canary(_normalise(t), canary_set, min_chars)]
        if hits:
            report.failures.append(f"{len(hits)} synthetic record(s) contain an audit canary (first at index {hits[0]}).")
        else:
            report.passed.append("no canary")
    if private_texts is None:
        report.failures.append(
            "the verbatim gate needs the private training texts (private_texts=) to check for copied records."
        )
    else:
        matches = find_verbatim(
            synthetic_texts, private_texts, min_chars=min_chars, min_words=min_words,
            max_private_occurrences=max_private_occurrences,
        )
        report.verbatim = matches
        if matches:
            report.failures.append(
                f"{len(matches)} synthetic record(s) copy long, rare training text (≥ {min_chars} characters, or "
                f"≥ {min_words} consecutive words, occurring in ≤ {max_private_occurrences} private records); the "
                "matches are in the exception's .report.verbatim (owner-only). Do not re-generate until this passes "
                "(that is selection on private data): add noise or train less."
            )
        else:
            report.passed.append("no long, rare verbatim training record")
    report.raise_if_failed()
    return report


def check_folder(folder: str | os.PathLike[str]) -> GateReport:
    """Refuse a folder to upload that holds checkpoints, optimizer/RNG state, saved canaries or a
    privacy mechanism's seed (in any JSON file)."""
    root = Path(folder)
    report = GateReport()
    if not root.is_dir():
        report.failures.append(f"{root} is not a folder.")
        report.raise_if_failed()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(p.match(path.name) for p in _FORBIDDEN_NAMES):
            report.failures.append(f"{rel}: checkpoints, optimizer/RNG state and saved canaries never leave the machine.")
        elif path.is_file() and path.suffix == ".json" and path.stat().st_size < 50_000_000:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if _SECRET_KEYS.search(text):
                report.failures.append(f"{rel}: holds the seed or RNG state of a privacy mechanism.")
    if not report.failures:
        report.passed.append("no checkpoint, optimizer/RNG state, canary file or secret seed")
    report.raise_if_failed()
    return report

