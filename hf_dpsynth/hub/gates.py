"""Safety gates that run before anything leaves the machine.

Every gate refuses loudly (``PublishRefusedError``, listing every failed gate); none filters
silently. The gates:

* **canaries**: a synthetic record equals or contains an audit canary (canaries must never ship); with
  the codec, canaries (saved with their public prompt) are compared by their bodies, so a short canary
  inside a record is caught;
* **verbatim**: a synthetic record copies a *long and rare* training record — the whole record, or a
  run of ``min_words`` consecutive words that occurs in at most ``max_private_occurrences`` private
  records. Short or common messages ("Sorry, I'll call later" occurs dozens of times in real SMS
  data) are not evidence of copying and pass. The matches are reported to the owner only;
* **ledger / card**: no privacy ledger, or no card with a valid DP block: nothing is published;
* **card = ledger**: the card's DP block differs from the block the ledger gives (a stale card, e.g. a
  crash after a new charge and before the card was re-rendered, would understate ε);
* **refuted audit**: the card's audit says ε̂ > ε — refused unless ``allow_refuted_audit`` *and* the
  card states the override (``refuted_audit_override=True`` when rendering);
* **owner-only card**: a card with owner-only values (``owner_only_included: true``) is never published;
* **owner checks stated**: the card's ``owner_checks`` lists every owner-side check the push applies
  (:data:`VERBATIM_OWNER_CHECK`, and :data:`CANARY_OWNER_CHECK` when canaries are checked);
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
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_dpsynth.errors import PublishRefusedError

__all__ = [
    "CANARY_OWNER_CHECK",
    "VERBATIM_OWNER_CHECK",
    "GateReport",
    "VerbatimMatch",
    "check_card",
    "check_folder",
    "check_release",
    "find_verbatim",
    "record_texts",
]

VERBATIM_OWNER_CHECK = (
    "verbatim gate: before upload, the synthetic records were compared with the private training records, and the "
    "release would have been refused, never filtered or re-generated, had a synthetic record copied a long, rare "
    "training record."
)
"""The owner check (docs/DP_CORRECTNESS.md row 29) a dataset card must list: the push applies the verbatim gate.
Render the card with ``owner_checks=[VERBATIM_OWNER_CHECK, ...]``."""

CANARY_OWNER_CHECK = (
    "canary gate: before upload, the synthetic records were compared with the privacy audit's canaries, and the "
    "release would have been refused, never filtered or re-generated, had a synthetic record contained a canary."
)
"""The owner check a dataset card must also list when the push checks canaries (``canaries=`` given)."""

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
    re.compile(r"^activation-cache-"),  # DPSynthTrainer's on-disk frozen-prefix cache (private hidden states)
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


def _canary_forms(canaries: Iterable[str], codec: Any | None) -> set[str]:
    """Each canary as saved (normalised) and, through the codec, its body without the public prompt."""
    from hf_dpsynth.errors import InvalidRecord

    forms = set()
    for canary in canaries:
        forms.add(_normalise(canary))
        if codec is not None:
            try:
                forms.add(_normalise(codec.encode_body(codec.decode(canary))))
            except (InvalidRecord, TypeError, ValueError):
                pass  # saved without its prompt, or not of this codec: compared as saved
    forms.discard("")
    return forms


def _contains_canary(text: str, canaries: set[str], min_chars: int) -> bool:
    """A canary (any length) equal to or inside the record; or a long record inside a canary (a short
    record inside a canary, e.g. its in-distribution opening, is not evidence of a canary)."""
    return any(c in text or (len(text) >= min_chars and text in c) for c in canaries)


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


def _report_dict(ledger_report: Any) -> Any:
    """``PrivacyLedger.report().to_dict()`` from the ledger, its report, or that dict."""
    if ledger_report is None or isinstance(ledger_report, Mapping):
        return ledger_report
    if hasattr(ledger_report, "report"):
        ledger_report = ledger_report.report()
    return ledger_report.to_dict() if hasattr(ledger_report, "to_dict") else ledger_report


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


_RERENDER = "re-render the card (hf-dpsynth card RUN_DIR)"
# The DP block's fields that restate the ledger, compared between the card and the ledger.
_LEDGER_FIELDS = ("private", "epsilon", "epsilon_budget", "delta", "privacy_unit", "adjacency", "num_units",
                  "num_users", "accountant")
_STAGE_FIELDS = ("kind", "share", "epsilon_budget", "epsilon_spent")


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)  # YAML round trip and reloads: nothing coarser
    return a == b


def _ledger_differences(card: Mapping[str, Any], ledger: Mapping[str, Any]) -> list[str]:
    """The ledger-derived fields of the card's DP block that differ from the block the ledger gives."""
    diffs = [f"{key} (card {card.get(key)!r}, ledger {ledger.get(key)!r})"
             for key in _LEDGER_FIELDS if not _same(card.get(key), ledger.get(key))]
    if ledger.get("max_examples_per_user") is not None and card.get("max_examples_per_user") != ledger["max_examples_per_user"]:
        diffs.append(f"max_examples_per_user (card {card.get('max_examples_per_user')!r}, ledger "
                     f"{ledger['max_examples_per_user']!r})")
    card_stages, ledger_stages = card.get("stages") or [], ledger.get("stages") or []
    names = ([s.get("name") for s in card_stages], [s.get("name") for s in ledger_stages])
    if names[0] != names[1]:
        diffs.append(f"stages (card {names[0]}, ledger {names[1]})")
    ledger_by_name = {s["name"]: s for s in ledger_stages}
    for stage in card_stages:
        other = ledger_by_name.get(stage.get("name"))
        if other is None:
            continue
        where = f"stages[{stage['name']}]"
        diffs += [f"{where}.{key} (card {stage.get(key)!r}, ledger {other.get(key)!r})"
                  for key in _STAGE_FIELDS if not _same(stage.get(key), other.get(key))]
        mine, theirs = stage.get("charges") or [], other.get("charges") or []
        if len(mine) != len(theirs):
            diffs.append(f"{where} number of charges (card {len(mine)}, ledger {len(theirs)})")
        else:
            diffs += [f"{where}.charges[{i}].parameters" for i, (a, b) in enumerate(zip(mine, theirs))
                      if not _same_tree(a.get("parameters"), b.get("parameters"))]
    return diffs


def _same_tree(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return _same(a, b)


def _check_name(check: str) -> str:
    return check.split(":", 1)[0]


def _card_gates(
    report: GateReport,
    card_text: Any,
    ledger_report: Any,
    *,
    allow_non_private: bool,
    allow_refuted_audit: bool,
    owner_checks_applied: Sequence[str],
) -> None:
    """The ledger and card gates (both pushes): appends to ``report``, raises nothing."""
    from hf_dpsynth.errors import CardError
    from hf_dpsynth.hub.card_block import dp_block, refuted_audit_statement
    from hf_dpsynth.hub.card_reading import read_dp_block, validate_card

    ledger_report = _report_dict(ledger_report)
    _ledger_gate(report, ledger_report, allow_non_private)
    if card_text is not None and not isinstance(card_text, str):
        card_text = str(card_text)
    if not card_text or not card_text.strip():
        report.failures.append("no card: a release is published only with its DP card (README.md).")
        return
    try:
        validate_card(card_text)
        block = read_dp_block(card_text)
    except CardError as exc:
        report.failures.append(f"the card does not validate: {exc} ({_RERENDER}).")
        return
    report.passed.append("card present, with a valid DP block")

    if block["owner_only_included"]:
        report.failures.append(
            "the card shows owner-only values (owner_only_included: true; computed on the private data without DP): "
            "such a card is for the data owner and is never published. Push the shareable card (hf-dpsynth card "
            "RUN_DIR writes it to README.md; --include-owner-only writes a separate file)."
        )
    else:
        report.passed.append("shareable card (no owner-only values)")

    audit = block.get("audit")
    audited = any(s.get("name") == "audit" and s.get("charges") for s in ledger_report.get("stages") or ())
    if audited and not isinstance(audit, Mapping):
        report.failures.append(
            "the ledger holds a charged privacy audit but the card shows none: its verdict belongs in the card "
            f"(a card rendered without it hides a refuted audit); {_RERENDER}."
        )
    if isinstance(audit, Mapping) and audit.get("refuted"):
        claim = f"ε̂ = {audit['epsilon_lower_bound']:.6g} > claimed ε = {audit['claimed_epsilon']}"
        if not allow_refuted_audit:
            report.failures.append(
                f"the card's audit refuted the claimed guarantee ({claim}): the implementation does not deliver its ε. "
                "Do not release; find the bug. To publish anyway, labelled, render the card with "
                "refuted_audit_override=True and push with allow_refuted_audit=True."
            )
        elif audit.get("override") != refuted_audit_statement(audit["epsilon_lower_bound"], audit["claimed_epsilon"]):
            report.failures.append(
                f"allow_refuted_audit=True, but the card does not state that the refuted audit ({claim}) is published "
                "anyway: render the card with refuted_audit_override=True, so that readers are told."
            )
        else:
            report.passed.append("refuted audit published by explicit override (the card says ε̂ > ε)")

    missing = [check for check in owner_checks_applied if check not in block["owner_checks"]]
    if missing:
        names = ", ".join(_check_name(check) for check in missing)
        constants = ", ".join("hf_dpsynth.hub.gates." + ("VERBATIM_OWNER_CHECK" if c == VERBATIM_OWNER_CHECK else
                                                        "CANARY_OWNER_CHECK" if c == CANARY_OWNER_CHECK else repr(c))
                              for c in missing)
        report.failures.append(
            f"the card's owner_checks does not state the non-DP owner-side check(s) this push applies ({names}; "
            f"docs/DP_CORRECTNESS.md row 29); the card must list {constants} in owner_checks: {_RERENDER}."
        )
    elif owner_checks_applied:
        report.passed.append("the card states the owner-side checks applied")

    if ledger_report:
        try:
            expected = dp_block(ledger_report)
        except CardError as exc:
            report.failures.append(f"the ledger gives no valid DP block to compare the card with: {exc}")
            return
        diffs = _ledger_differences(block, expected)
        if diffs:
            report.failures.append(
                "the card does not match the ledger (a stale card, or another release's); fields that differ: "
                + "; ".join(diffs) + f". Nothing was uploaded: {_RERENDER} and push again."
            )
        else:
            report.passed.append("card matches the ledger")


def check_card(
    card_text: Any,
    *,
    ledger_report: Any,
    allow_non_private: bool = False,
    allow_refuted_audit: bool = False,
    owner_checks_applied: Sequence[str] = (),
) -> GateReport:
    """The ledger and card gates alone (what an adapter push runs): a ledger; a valid card that matches
    it; no owner-only values; no refuted audit unless allowed *and* stated; DP on unless allowed; every
    check in ``owner_checks_applied`` listed in the card's ``owner_checks``. Raises
    ``PublishRefusedError`` listing every failure (the :class:`GateReport` as ``.report``)."""
    report = GateReport()
    _card_gates(report, card_text, ledger_report, allow_non_private=allow_non_private,
                allow_refuted_audit=allow_refuted_audit, owner_checks_applied=owner_checks_applied)
    report.raise_if_failed()
    return report


def check_release(
    synthetic_texts: Sequence[str],
    *,
    ledger_report: Mapping[str, Any] | None,
    card_text: str | None,
    private_texts: Iterable[str] | None = None,
    canaries: Iterable[str] = (),
    codec: Any | None = None,
    allow_non_private: bool = False,
    allow_refuted_audit: bool = False,
    min_chars: int = MIN_CHARS,
    min_words: int = MIN_WORDS,
    max_private_occurrences: int = MAX_PRIVATE_OCCURRENCES,
) -> GateReport:
    """Run every gate on a synthetic dataset (its records as texts, see :func:`record_texts`) and its
    card; raises ``PublishRefusedError`` listing all failures, with the :class:`GateReport` attached
    as ``.report``.

    ``private_texts`` (the training records) is needed for the verbatim gate; without it the
    release is refused — the gate must run, not be skipped. ``canaries`` are the audit's saved
    canary texts; with ``codec`` their public prompt is stripped, so their bodies are compared with
    the record bodies. The card must list :data:`VERBATIM_OWNER_CHECK` (and :data:`CANARY_OWNER_CHECK`
    when canaries are given) in its ``owner_checks``; see :func:`check_card` for the card gates.
    """
    report = GateReport()
    canaries = list(canaries)
    applied = [VERBATIM_OWNER_CHECK] + ([CANARY_OWNER_CHECK] if canaries else [])
    _card_gates(report, card_text, ledger_report, allow_non_private=allow_non_private,
                allow_refuted_audit=allow_refuted_audit, owner_checks_applied=applied)
    canary_set = _canary_forms(canaries, codec)
    if canary_set:
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
            report.failures.append(f"{rel}: checkpoints, optimizer/RNG state, activation caches and saved canaries never leave the machine.")
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

