"""The text of a DP card: the Jinja environment of ``templates/``, and the context its templates render
(the privacy paragraphs, the facts and stages tables, the audit, utility, preparation and owner-only
rows).

Privacy: the text states only what the ``differential_privacy`` block (from the ledger) and the
shareable inputs say; owner-only rows reach a template only when the card is rendered with
``include_owner_only=True``, under a heading that says the guarantee does not cover them. Values
are escaped for Markdown (JSON values are shown verbatim in code spans).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from hf_dpsynth._markdown import ceil_significant, escape_markdown, format_bound, format_value, ledger_number
from hf_dpsynth.errors import CardError, MissingDependencyError
from hf_dpsynth.hub.card_block import TEMPLATES_DIR, epsilon_text
from hf_dpsynth.hub.card_inputs import TrainingFacts, checked_strings
from hf_dpsynth.privacy.disclosure import OWNER_ONLY_HEADING
from hf_dpsynth.privacy.events import event_parameters

__all__ = [
    "MetricRows",
    "NOT_PRIVATE_TITLE",
    "card_title",
    "common_context",
    "generation_rows",
    "mapping_rows",
    "metric_rows",
    "render_template",
    "training_rows",
]

NOT_PRIVATE_TITLE = "NOT differentially private"

_PARAMETER_LABELS = {
    "noise_multiplier": "σ",
    "sampling_probability": "q",
    "num_steps": "T",
    "per_example_max_grad_norm": "C",
    "logical_batch_size": "expected batch",
    "l2_sensitivity": "Δ₂",
    "expected_batch_size": "s",
    "clip": "c",
    "temperature": "τ",
    "max_private_tokens": "r_max",
    "rho": "ρ",
    "num_batches": "batches",
    "num_bins": "bins",
    "max_examples_per_user": "cap per user",
    "svt": "sparse vector",
}


class MetricRows(NamedTuple):
    """Table rows (section, metric, setting, value, note) of the metrics, escaped for Markdown."""

    shareable: list[tuple[str, ...]]
    owner_only: list[tuple[str, ...]]


class _UnitWords(NamedTuple):
    noun: str
    """The privacy unit as a noun ("user", "record")."""
    description: str
    """What one unit's data is (empty at example level)."""


@functools.cache
def _environment() -> Any:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - a dependency of torch and of card rendering
        raise MissingDependencyError("Rendering cards needs Jinja2. Install it with: pip install 'jinja2>=3.1'") from None
    # Our own environment rather than RepoCard.from_template's bare jinja2.Template: a missing
    # variable must fail (StrictUndefined), and block tags must not leave blank lines behind.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_template(template: str, card_data: Any, context: Mapping[str, Any]) -> str:
    """The text of ``template`` with ``card_data`` as its YAML metadata, as ``RepoCard.from_template`` renders it."""
    return _environment().get_template(template).render(card_data=card_data.to_yaml(), **context)


def common_context(
    block: Mapping[str, Any],
    what: str,
    shared_metrics: list[tuple[str, ...]],
    owner_metrics: list[tuple[str, ...]],
    owner_prep: Mapping[str, Any],
    shared_prep: Mapping[str, Any],
    notes: Sequence[str],
) -> dict[str, Any]:
    noun = "dataset" if what == "dataset" else "adapter"
    versions = block["versions"]
    return {
        "noun": noun,
        "private": block["private"],
        "privacy_paragraphs": _privacy_paragraphs(block, noun),
        "facts": _facts(block),
        "stages": [_stage_row(stage) for stage in block["stages"]],
        "audit": _audit_context(block.get("audit")),
        "utility": shared_metrics,
        "not_covered": [escape_markdown(item) for item in block["not_covered"]],
        "owner_only_heading": OWNER_ONLY_HEADING,
        "owner_metrics": owner_metrics,
        "owner_preparation": [(escape_markdown(key), escape_markdown(_plain_value(value))) for key, value in owner_prep.items()],
        "preparation_rows": _preparation_rows(shared_prep),
        "notes": [escape_markdown(note) for note in checked_strings("notes", notes)],
        "versions": ", ".join(f"`{escape_markdown(name)} {escape_markdown(version)}`" for name, version in
                              (("hf_dpsynth", versions["hf_dpsynth"]), ("dp-accounting", versions["dp-accounting"]),
                               ("Python", versions["python"]))),
    }


def card_title(name: str, block: Mapping[str, Any]) -> str:
    if not block["private"]:
        return f"{escape_markdown(name)} — {NOT_PRIVATE_TITLE}"
    return (f"{escape_markdown(name)} — differentially private: ε = {epsilon_text(block['epsilon'])}, "
            f"δ = {format_bound(block['delta'])}, {block['privacy_unit']}-level")


def _unit_words(block: Mapping[str, Any]) -> _UnitWords:
    """The privacy unit as a noun, and what one unit's data is (empty at example level)."""
    if block["privacy_unit"] == "user":
        cap = block["max_examples_per_user"]
        kept = f"; at most {cap} were kept per user" if cap is not None else ""
        return _UnitWords("user", f"all records of one user together{kept}")
    return _UnitWords("record", "")


def _privacy_paragraphs(block: Mapping[str, Any], noun: str) -> list[str]:
    if not block["private"]:
        return [(
            f"**This {noun} is {NOT_PRIVATE_TITLE}.** At least one stage ran without noise, or the privacy budget "
            "was infinite (ε = ∞): no (ε, δ) guarantee holds for anyone whose data was used. The stages and their "
            "parameters below are listed for transparency only."
        )]
    unit, desc = _unit_words(block)
    eps = epsilon_text(block["epsilon"])
    factor = format_bound(math.exp(ceil_significant(ledger_number(block["epsilon"]), 4)))  # bounds: rounded up, never to nearest
    delta = format_bound(block["delta"])
    accountant = str(block["accountant"]).upper()
    who = f"{unit} ({desc})" if desc else unit
    paragraphs = [
        (f"This {noun} was produced with **{block['privacy_unit']}-level differential privacy** under add/remove "
         f"adjacency: **ε = {eps}, δ = {delta}** for the whole release, composed over every stage below by the "
         f"{accountant} accountant of dp-accounting (ε is an upper bound)."),
        (f"In plain words: take any one {who}. Whether or not that {unit}'s data was used, every outcome "
         f"of this release is almost equally likely: its probability changes by at most a factor e^ε ≈ {factor}, "
         f"except with probability at most δ = {delta}. This holds whatever else an observer knows, and for "
         f"anything later computed from this {noun}."),
    ]
    if block["randomness"] != "os_entropy":
        paragraphs.append(
            "**Caveat:** the mechanisms' randomness was fixed by a reproducibility setting meant for tests; the "
            "guarantee holds only while that value stays secret."
        )
    return paragraphs


def _facts(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    unit, desc = _unit_words(block)
    poisson = [s["name"] for s in block["stages"] if s["sampling"] == "poisson"]
    sampling = (
        f"Poisson: each {unit} is drawn independently with probability q at every step, and every step is taken "
        f"(stages: {', '.join(poisson)})" if poisson else "no subsampling: every stage uses every unit's data"
    )
    n = block["num_units"]
    rows = [
        ("ε (spent / budget)", f"{epsilon_text(block['epsilon'])} / {epsilon_text(block['epsilon_budget'])}"),
        ("δ", format_bound(block["delta"])),
        ("privacy unit", f"one {unit}: {desc}" if desc else f"one {unit} ({block['privacy_unit']}-level)"),
        ("adjacency", f"add or remove one {unit}"),
        ("N (public, disclosed)", f"{n:,} {'users' if block['privacy_unit'] == 'user' else 'records'}"),
        ("accountant", f"{str(block['accountant']).upper()} (dp-accounting)" if block["accountant"] else "none"),
        ("sampling", sampling),
        ("randomness", "OS entropy" if block["randomness"] == "os_entropy"
         else "fixed for reproducibility (a test setting; see the caveat)"),
    ]
    return [(label, escape_markdown(value)) for label, value in rows]


def _stage_row(stage: Mapping[str, Any]) -> tuple[str, ...]:
    charges = stage["charges"]
    texts = [_parameters_text(c["parameters"], c.get("event")) for c in charges]
    if not texts:
        parameters = "no charge"
    elif len(texts) == 1:
        parameters = texts[0]
    else:
        parameters = "; ".join(f"charge {i}: {t}" for i, t in enumerate(texts, 1))
    share = stage["share"]
    budget = stage["epsilon_budget"]
    return tuple(escape_markdown(cell) for cell in (
        stage["name"],
        stage["mechanism"],
        stage["sampling"],
        "-" if share is None else format_value(share),
        "-" if budget is None else epsilon_text(budget),
        epsilon_text(stage["epsilon_spent"]),
        parameters,
        ", ".join(stage["outputs"]) or "-",
    ))


def _parameters_text(parameters: Mapping[str, Any], event: Mapping[str, Any] | None) -> str:
    merged = {**parameters, **{k: v for k, v in event_parameters(event).items() if k not in parameters}}
    parts = [
        f"{_PARAMETER_LABELS.get(key, key)} = {_plain_value(value)}"
        for key, value in merged.items()
        if key != "mechanism" and value is not None
    ]
    return ", ".join(parts) or "no parameters recorded"


def _audit_context(audit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if audit is None:
        return None
    basis = (
        "It was charged to this release's ledger (stage `audit`), so its results are covered by the guarantee above."
        if audit["basis"] == "charged" else
        "It ran on public data, so its results reveal nothing about the private data."
    )
    rows = [
        ("claimed ε", epsilon_text(audit["claimed_epsilon"])),
        ("ε̂ (one-run lower bound)", format_value(audit["epsilon_lower_bound"])),
        ("canaries m / guesses r / correct v", f"{audit['num_canaries']} / {audit['num_guesses']} / {audit['num_correct']}"),
        ("ceiling of the design", format_value(audit["ceiling_epsilon"])),
        ("score / guesses / level", f"{audit['score']} / {audit['guesses'].replace('_', '-')} / {format_value(audit['significance'])}"),
        ("AUC", format_value(audit["auc"])),
        ("TPR at 1% FPR", format_value(audit["tpr_at_1pct_fpr"])),
        ("verdict", audit["verdict"]),
        ("inclusion commitment (SHA-256)", f"`{audit['inclusion_hash']}`"),
    ]
    return {"method": audit["method"], "basis": basis, "rows": [(escape_markdown(k), escape_markdown(v)) for k, v in rows],
            "refuted": bool(audit["refuted"]), "override": escape_markdown(audit["override"]) if "override" in audit else None}


def training_rows(stage: Mapping[str, Any], training: TrainingFacts) -> list[tuple[str, str]]:
    charge = stage["charges"][-1]  # the run that produced this adapter (a stage may hold earlier runs)
    params = {**event_parameters(charge.get("event")), **charge["parameters"]}
    rows = [
        ("noise multiplier σ", params.get("noise_multiplier")),
        ("sampling probability q (Poisson)", params.get("sampling_probability")),
        ("steps T (charged)", params.get("num_steps")),
        ("steps taken", training.steps_taken),
        ("clip C (per privacy unit, L2)", params.get("per_example_max_grad_norm")),
        ("expected batch q·N", params.get("logical_batch_size")),
        ("ε of this stage alone", epsilon_text(stage["epsilon_spent"])),
    ]
    return [(label, escape_markdown(_plain_value(value))) for label, value in rows if value is not None]


def generation_rows(generation: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "generator" in generation:
        rows.append(("generator", _plain_value(generation["generator"])))
    if "num_generated" in generation:
        invalid = generation.get("invalid_kinds") or {}
        kinds = f" ({_plain_value(invalid)})" if invalid else ""
        outputs = (f"{_plain_value(generation['num_generated'])} generated, "
                   f"{_plain_value(generation.get('num_valid'))} valid, "
                   f"{_plain_value(generation.get('num_invalid'))} invalid{kinds}, "
                   f"{_plain_value(generation.get('num_duplicates_dropped', 0))} duplicates dropped")
        rows.append(("outputs", outputs))
    skip = {"generator", "num_generated", "num_valid", "num_invalid", "invalid_kinds", "num_duplicates_dropped", "codec"}
    rows += mapping_rows(generation, skip=skip)
    return [(escape_markdown(k), escape_markdown(v)) for k, v in rows]


def mapping_rows(mapping: Mapping[str, Any], *, skip: Sequence[str] | set[str]) -> list[tuple[str, str]]:
    rows = []
    for key, value in mapping.items():
        if key in skip:
            continue
        if key == "conditions" and isinstance(value, Mapping):
            text = "; ".join(f"{name} ∈ {{{', '.join(map(str, values))}}}" for name, values in value.items()) or "none"
        elif isinstance(value, (Mapping, list)) or (isinstance(value, str) and "\n" in value):
            # JSON in a code span (one line; e.g. a prompt template in chat format): shown verbatim.
            rows.append((escape_markdown(key), _code_span(json.dumps(value, ensure_ascii=False))))
            continue
        else:
            text = _plain_value(value)
        rows.append((escape_markdown(key), escape_markdown(text)))
    return rows


def _code_span(text: str) -> str:
    """``text`` (one line) as a Markdown code span, fenced by more backticks than it contains in a row."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _preparation_rows(prep: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    pii = prep.get("pii_scrubbing")
    if isinstance(pii, Mapping):
        if pii.get("enabled"):
            types = ", ".join(map(str, pii.get("types") or [])) or "default types"
            rows.append(("PII scrubbing", f"on ({types}); defence in depth only, the DP guarantee does not depend on it"))
        else:
            rows.append(("PII scrubbing", "off"))
    if prep.get("max_examples_per_user") is not None:
        rows.append(("records kept per user", f"at most {prep['max_examples_per_user']} (chosen by a fixed public hash)"))
    if prep.get("rounding"):
        rows.append(("rounding", str(prep["rounding"])))
    if prep.get("first_rows") is not None:
        rows.append(("rows of the source used", f"the first {prep['first_rows']:,} (data.max_records, a cap by position): "
                     "the guarantee protects one record among them; for the whole source, removing one of those "
                     "rows brings in the next row, so two records change (about 2ε)"))
    if prep.get("drop_invalid"):
        rows.append(("rows that do not fit the schema", "dropped before any private stage, each decided from the row "
                     "alone (1-stable: the guarantee holds for the data as given); how many is not released"))
    return [(escape_markdown(k), escape_markdown(v)) for k, v in rows]


def metric_rows(metrics: Sequence[Any], audit: Any) -> MetricRows:
    """Table rows (section, metric, setting, value, note) of the shareable and the owner-only metrics.

    An audit adds its owner-only values (controls; everything when it was neither charged nor run on
    public data); its shareable summary has its own section.
    """
    if isinstance(metrics, (str, bytes, Mapping)) or not isinstance(metrics, Sequence):
        raise CardError(f"metrics must be a sequence of Metric; got {type(metrics).__name__}.")
    extra = []
    if audit is not None:
        try:
            extra = [m for m in audit.to_metrics() if not m.shareable]
        except AttributeError as exc:
            raise CardError(f"audit must be an hf_dpsynth.audit.AuditReport; got {type(audit).__name__}.") from exc
    shared, owner = [], []
    for metric in [*metrics, *extra]:
        fields = _metric_fields(metric)
        row = tuple(escape_markdown(cell) for cell in (
            fields["section"], fields["name"], fields["setting"], format_value(fields["value"]), fields["note"],
        ))
        (shared if fields["shareable"] else owner).append(row)
    return MetricRows(shared, owner)


def _metric_fields(metric: Any) -> dict[str, Any]:
    keys = ("name", "value", "shareable", "section", "setting", "note")
    if isinstance(metric, Mapping):
        fields = {key: metric.get(key, "") for key in keys}
        fields["shareable"] = metric.get("shareable")
    else:
        fields = {key: getattr(metric, key, "") for key in keys}
        fields["shareable"] = getattr(metric, "shareable", None)
    if not isinstance(fields["shareable"], bool):
        raise CardError(
            f"Metric {fields['name']!r} has shareable = {fields['shareable']!r}; every metric must say True or "
            "False (owner-only values never enter a card by default)."
        )
    if not isinstance(fields["name"], str) or not fields["name"]:
        raise CardError(f"A metric needs a non-empty name; got {metric!r}.")
    value = fields["value"]
    if value is not None and not isinstance(value, (numbers.Real, str)):
        raise CardError(f"Metric {fields['name']!r} has value {value!r}; a card takes numbers, strings or None.")
    if fields["value"] == "inf":
        fields["value"] = math.inf
    return fields


def _plain_value(value: Any) -> str:
    """A parameter or count as card text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format_value(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain_value(v) for v in value) or "none"
    return "n/a" if value is None else str(value)
