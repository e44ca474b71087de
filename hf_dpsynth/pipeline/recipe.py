"""Recipes: a whole run as one YAML file, checked when loaded (unknown keys list the valid ones).

```yaml
name: sms-spam-text
data:        {source: sms_spam, split: train, modality: text, text_column: text,
              label_column: label, labels: [ham, spam], max_records: 512}
privacy:     {epsilon: 4.0, unit: example, shares: {label_histogram: 0.05, training: 0.95}}
model:       {name: default}                 # default | tiny | a Hub id or local path
lora:        {r: 8, alpha: 16, top_layers: 4}
training:    {logical_batch_size: 64, per_device_train_batch_size: 16, max_steps: 8}
generation:  {method: adapter_sampler, num_records: 64}
evaluation:  {enabled: true, test_split: test}
output:      {dir: runs/sms-spam-text}
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_dpsynth.errors import DPConfigError

__all__ = ["PACKAGED_SOURCES", "Recipe", "load_recipe", "parse_override"]

#: ``data.source`` values that name data the package reads itself (anything else is a path).
PACKAGED_SOURCES = ("sms_spam", "digits")


@dataclass(frozen=True)
class DataSection:
    source: str = "sms_spam"  # "sms_spam" (carried by the package), "digits" (scikit-learn), or a path
    split: str | None = None  # for sms_spam: train | test | all; for uci adult folders: train | test
    modality: Literal["text", "tabular", "image"] = "text"
    text_column: str = "text"
    label_column: str | None = None
    labels: tuple[str, ...] | None = None  # public list of label values
    prompt_template: str | None = None  # public prefix with {label_column} as a field (default "label: spam\n")
    # public descriptions of the labels, written by the template's {<label_column>_description} field
    label_descriptions: dict[str, str] | None = None
    user_id_column: str | None = None
    schema: Any = None  # tabular: "adult" or {"columns": [...]} (public)
    drop_columns: tuple[str, ...] = ()
    image_shape: tuple[int, int] | None = None
    image_levels: int | None = None
    max_records: int | None = None
    scrub_pii: bool = True
    drop_invalid: bool = False  # drop rows that do not fit the codec (counted, owner-only) instead of stopping
    synthetic_user_ids: int | None = None  # a demo: each record gets one of N made-up users by a keyed hash of the record (1-stable)


@dataclass(frozen=True)
class PrivacySection:
    epsilon: float = 4.0
    delta: float | None = None  # default 1/(N·ln N)
    unit: Literal["example", "user"] = "example"
    max_examples_per_user: int | None = None
    accountant: Literal["pld", "rdp"] | None = None
    shares: Mapping[str, float] = field(default_factory=lambda: {"label_histogram": 0.05, "training": 0.95})
    # Declared selection (public): how many configurations (prompts, hyper-parameters) were scored before
    # this one was chosen, and on what data. Only this run is accounted; the cards say so (row 29).
    configurations_tried: int = 1
    chosen_on: str | None = None  # e.g. "a dev split of the training data", "public data"


@dataclass(frozen=True)
class ModelSection:
    name: str = "default"  # default | tiny | a Hub id or a local path


@dataclass(frozen=True)
class LoraSection:
    r: int = 8
    alpha: int = 16
    top_layers: int | None = 4
    target_modules: Any = "all-linear"
    # one adapter per declared label, each trained on its label's records in one DP-SGD run (example level;
    # needs a label_histogram share: each adapter's update is divided by q·ñ_ℓ with the DP count)
    per_label: bool = False


@dataclass(frozen=True)
class TrainingSection:
    logical_batch_size: int = 64
    per_device_train_batch_size: int = 16
    max_steps: int = 8
    learning_rate: float = 2e-3
    max_length: int = 64
    per_example_max_grad_norm: float = 1.0
    save_steps: int | None = None
    # the frozen layers below the lowest LoRA layer run once per example (DPSynthConfig.activation_cache)
    activation_cache: Literal["auto", "memory", "disk", "off"] = "auto"


@dataclass(frozen=True)
class KeywordsSection:
    """DP keywords per label (stage ``keywords``, when privacy.shares has it; docs/ALGORITHMS.md §8)."""

    k: int = 8  # distinct terms one privacy unit contributes (L2 sensitivity √k)
    vocabulary: str = "tokenizer"  # the model's whole-word tokens, or a public word list file (most common first)
    # a local model folder's tokenizer may have been trained on the private data: declare it public to use it
    public_tokenizer: bool = False
    min_length: int = 3  # tokenizer vocabulary: words of at least this many letters
    skip_most_common: int = 100  # tokenizer vocabulary: the commonest words by public rank, skipped
    threshold_sigmas: float | None = None  # None: one expected false positive over all cells
    per_record: int = 5  # keywords written into each prompt
    bias: float = 4.0  # logit bias on each prompt keyword's first token until it is used (0: none)
    weighting: Literal["count", "contrast"] = "contrast"  # how keywords are drawn from a label's release


@dataclass(frozen=True)
class GenerationSection:
    # adapter_sampler: the DP-fine-tuned model; prompted: the base model with DP keywords (no training);
    # private_prediction: the base model's next tokens aggregated over private prompts
    method: Literal["adapter_sampler", "prompted", "private_prediction"] = "adapter_sampler"
    label_distribution: Literal["dp", "uniform"] = "dp"  # records per label: the DP histogram's, or equal
    num_records: int | None = 64
    batch_size: int = 16
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    guided: bool | None = None  # schema-guided decoding (None: on for tabular rows, see AdapterSynthesizer)
    # private prediction
    expected_batch_size: int = 31
    clip: float = 10.0
    pp_temperature: float = 2.0
    max_private_tokens: int | None = None
    svt_threshold: float | None = None
    svt_noise: float = 0.2
    public_prompt: str | None = None
    pp_clip_against_public: bool = False  # clip each private context's log-probs against the public prompt's
    pp_top_k: int = 0  # sample among the public prompt's top-k tokens only (0: all)


@dataclass(frozen=True)
class EvaluationSection:
    enabled: bool = False
    test_split: str = "test"  # packaged data and UCI Adult folders only
    test_source: str | None = None  # a file of held-out records (never the training file)
    holdout: float | None = None  # a public rule keeps this fraction of the units out of every private stage
    max_test_records: int | None = 500
    public_only_baseline: bool = False  # also generate with the base model and no private data (ε = 0)
    embeddings: bool = False  # text: also MiniLM Fréchet distance, k-NN precision/recall and TSTR (offline model)


@dataclass(frozen=True)
class AuditSection:
    """The audit's pre-registered design (its own training run at the release's hyper-parameters)."""

    num_canaries: int = 1000
    guesses: Literal["two_sided", "in_only"] = "two_sided"
    significance: float = 0.05
    controls: bool = True
    suffix_words: int = 4
    seed: int = 0
    publish_if_refuted: bool = False  # write cards although the charged audit refuted ε (the cards say ε̂ > ε)


@dataclass(frozen=True)
class OutputSection:
    dir: str = "hf_dpsynth_run"


@dataclass(frozen=True)
class HubSection:
    repo_id: str | None = None
    private: bool = True


_SECTIONS = {
    "data": DataSection, "privacy": PrivacySection, "model": ModelSection, "lora": LoraSection,
    "training": TrainingSection, "keywords": KeywordsSection, "generation": GenerationSection, "evaluation": EvaluationSection, "audit": AuditSection,
    "output": OutputSection, "hub": HubSection,
}


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe (see the module docstring)."""

    name: str
    data: DataSection
    privacy: PrivacySection
    model: ModelSection
    lora: LoraSection
    training: TrainingSection
    keywords: KeywordsSection
    generation: GenerationSection
    evaluation: EvaluationSection
    audit: AuditSection
    output: OutputSection
    hub: HubSection
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return json.loads(json.dumps(data, default=list))

    def fingerprint(self) -> str:
        """A hash of everything that defines the release (not where it writes, where it is published
        or how it is evaluated): an output folder holding another fingerprint holds a different run."""
        data = self.to_dict()
        if self.data.source not in PACKAGED_SOURCES:  # one file however it is spelt (its content: run_state.json)
            data["data"]["source"] = os.path.abspath(self.data.source)
        data["output"] = {}
        data["hub"] = {}
        # evaluating or auditing a release does not change it; a holdout decides the training units, so it does
        data["evaluation"] = {"holdout": self.evaluation.holdout} if self.evaluation.holdout else {}
        data["audit"] = {}
        data["training"].pop("activation_cache")  # how fast training runs, not what it computes
        for key in ("configurations_tried", "chosen_on"):  # what the cards declare, not what the run computes
            data["privacy"].pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, **sections: Mapping[str, Any]) -> Recipe:
        """A copy with some fields of some sections replaced (e.g. ``model={"name": "tiny"}``)."""
        changes = {}
        for name, values in sections.items():
            current = getattr(self, name)
            changes[name] = _section(name, {**dataclasses.asdict(current), **dict(values)})
        recipe = dataclasses.replace(self, **changes)
        _validate(recipe)  # overrides (e.g. from the command line) are checked as a recipe file is
        return recipe


def _section(name: str, values: Any) -> Any:
    cls = _SECTIONS[name]
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise DPConfigError(f"recipe section {name!r} must be a mapping; got {type(values).__name__}.")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise DPConfigError(f"recipe section {name!r} has unknown key(s) {unknown}; valid keys: {valid}.")
    kwargs = {k: tuple(v) if isinstance(v, list) and k not in ("target_modules",) else v for k, v in values.items()}
    for key, value in kwargs.items():
        choices = _choices(cls, key)
        if choices and value not in choices:
            raise DPConfigError(f"{name}.{key} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return cls(**kwargs)


def _choices(cls: type, key: str) -> tuple[Any, ...]:
    """The values a ``Literal`` field of a recipe section allows (empty for other fields)."""
    hint = typing.get_type_hints(cls).get(key)
    options = [hint, *typing.get_args(hint)] if typing.get_origin(hint) is not Literal else [hint]
    allowed = tuple(v for h in options if typing.get_origin(h) is Literal for v in typing.get_args(h))
    return allowed + (None,) if allowed and type(None) in typing.get_args(hint) else allowed


def _validate(recipe: Recipe) -> None:
    shares = dict(recipe.privacy.shares)
    total = sum(shares.values())
    if any(not isinstance(v, (int, float)) or v <= 0 for v in shares.values()) or total > 1 + 1e-9:
        raise DPConfigError(f"privacy.shares must be positive and sum to at most 1; got {shares} (sum {total:g}).")
    if recipe.generation.method == "private_prediction" and "private_prediction" not in shares:
        raise DPConfigError("generation.method private_prediction needs a privacy.shares entry 'private_prediction'.")
    if recipe.generation.method == "adapter_sampler" and "training" not in shares:
        raise DPConfigError("generation.method adapter_sampler needs a privacy.shares entry 'training'.")
    if recipe.generation.method == "prompted":
        if "keywords" not in shares:
            raise DPConfigError("generation.method prompted needs a privacy.shares entry 'keywords': without DP keywords "
                                "the base model sees nothing private (that is the public baseline, "
                                "evaluation.public_only_baseline).")
        if "training" in shares:
            raise DPConfigError("generation.method prompted samples the base model (no training): remove the "
                                "privacy.shares entry 'training', or use generation.method adapter_sampler.")
    if recipe.lora.per_label is not False:
        if recipe.lora.per_label is not True:
            raise DPConfigError(f"lora.per_label must be true or false; got {recipe.lora.per_label!r}.")
        d = recipe.data
        if recipe.generation.method != "adapter_sampler" or not (d.label_column and d.labels):
            raise DPConfigError("lora.per_label trains one adapter per label for generation.method adapter_sampler: "
                                "declare data.label_column and data.labels.")
        if "label_histogram" not in shares:
            raise DPConfigError("lora.per_label divides each label adapter's noisy gradient by q times the label's DP "
                                "count: give privacy.shares a 'label_histogram' entry.")
        if recipe.privacy.unit != "example":
            raise DPConfigError("lora.per_label is example-level only: a user may hold records of several labels.")
        if "audit" in shares:
            raise DPConfigError("the audit does not yet repeat a training with one adapter per label: remove the "
                                "privacy.shares entry 'audit', or set lora.per_label: false.")
    p = recipe.privacy
    if isinstance(p.configurations_tried, bool) or not isinstance(p.configurations_tried, int) or p.configurations_tried < 1:
        raise DPConfigError(f"privacy.configurations_tried must be a positive integer (1: this configuration only); "
                            f"got {p.configurations_tried!r}.")
    if p.configurations_tried > 1 and not (isinstance(p.chosen_on, str) and p.chosen_on.strip()):
        raise DPConfigError(f"privacy.configurations_tried is {p.configurations_tried}: say on what data they were "
                            "compared in privacy.chosen_on (e.g. \"a dev split of the training data\", \"public data\").")
    g = recipe.generation
    if g.label_distribution == "uniform" and "label_histogram" in shares:
        raise DPConfigError("generation.label_distribution uniform draws every label equally often and never reads the "
                            "DP label histogram: remove its privacy.shares entry (it would spend budget for nothing).")
    if g.method == "private_prediction" and (g.pp_clip_against_public or g.pp_top_k) and g.public_prompt is None \
            and g.svt_threshold is None:
        raise DPConfigError("generation.pp_clip_against_public and pp_top_k read the public prompt's logits: set "
                            "generation.public_prompt (the instruction without any private record).")
    d = recipe.data
    if (g.method in ("adapter_sampler", "prompted") and g.label_distribution == "dp" and d.label_column and d.labels
            and d.modality != "tabular" and "label_histogram" not in shares):
        raise DPConfigError("the generator draws each record's label from the DP label histogram "
                            "(generation.label_distribution: dp), but privacy.shares has no 'label_histogram': add "
                            "one, or set generation.label_distribution: uniform (equal records per label).")
    _validate_keywords(recipe)
    if "audit" in shares and recipe.generation.method != "adapter_sampler":
        raise DPConfigError("privacy.shares has an 'audit' entry, but the audit repeats DP training and this recipe "
                            "has none (private prediction); remove the entry.")
    if "audit" in shares and shares["audit"] < shares["training"]:
        raise DPConfigError(
            f"privacy.shares.audit = {shares['audit']:g} is below shares.training = {shares['training']:g}: the charged "
            "audit repeats the training at the release's σ, q and steps, so it costs what training costs. Give it at "
            "least the training share (or drop it: `hf-dpsynth audit` then runs an owner-only audit).")
    _validate_label_descriptions(recipe.data)
    if recipe.data.modality == "tabular" and recipe.data.schema is None:
        raise DPConfigError("a tabular recipe needs data.schema ('adult' or the public {columns: [...]}).")
    if recipe.data.modality == "image" and (recipe.data.image_shape is None or recipe.data.image_levels is None):
        raise DPConfigError("an image recipe needs data.image_shape and data.image_levels.")
    if recipe.privacy.unit == "user" and not (recipe.data.user_id_column and recipe.privacy.max_examples_per_user):
        raise DPConfigError("a user-level recipe needs data.user_id_column and privacy.max_examples_per_user.")
    e = recipe.evaluation
    if e.holdout is not None and not (isinstance(e.holdout, (int, float)) and 0 < e.holdout < 1):
        raise DPConfigError(f"evaluation.holdout must be a fraction in (0, 1), e.g. 0.1; got {e.holdout!r}.")
    if e.holdout and e.test_source:
        raise DPConfigError("set evaluation.test_source or evaluation.holdout, not both: the test records come from one place.")
    if e.enabled and not (e.holdout or e.test_source):
        if not has_own_test_split(recipe):
            raise DPConfigError(test_split_refusal(recipe))
    if recipe.hub.repo_id is not None:
        from hf_dpsynth.hub.repo import check_repo_id

        check_repo_id(recipe.hub.repo_id)


def _validate_keywords(recipe: Recipe) -> None:
    d, kw = recipe.data, recipe.keywords
    if "keywords" not in recipe.privacy.shares:
        return
    if recipe.generation.method == "private_prediction":
        raise DPConfigError("DP keywords condition the prompts of a sampled model (prompted or adapter_sampler); "
                            "private prediction does not take them: remove the privacy.shares entry 'keywords'.")
    if d.modality != "text" or not (d.label_column and d.labels):
        raise DPConfigError("DP keywords are per label of a text recipe: declare data.label_column and data.labels.")
    if not d.prompt_template or "{keywords}" not in d.prompt_template:
        raise DPConfigError("DP keywords are written into the prompt by the field {keywords}: put it in "
                            "data.prompt_template, e.g. \"Write {label_description}.{keywords}\".")
    for name in ("k", "per_record", "min_length"):
        value = getattr(kw, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DPConfigError(f"keywords.{name} must be a positive integer; got {value!r}.")
    if isinstance(kw.skip_most_common, bool) or not isinstance(kw.skip_most_common, int) or kw.skip_most_common < 0:
        raise DPConfigError(f"keywords.skip_most_common must be a non-negative integer; got {kw.skip_most_common!r}.")
    if not isinstance(kw.bias, (int, float)) or kw.bias < 0:
        raise DPConfigError(f"keywords.bias must be a non-negative number; got {kw.bias!r}.")
    if kw.vocabulary != "tokenizer":
        if not Path(kw.vocabulary).is_file():
            raise DPConfigError(f"keywords.vocabulary must be 'tokenizer' or a public word list file (one word per "
                                f"line, most common first); {kw.vocabulary!r} is not a file.")
        private = [p for p in (d.source, recipe.evaluation.test_source) if p and Path(p).exists()
                   and Path(p).resolve() == Path(kw.vocabulary).resolve()]
        if private:
            raise DPConfigError(f"keywords.vocabulary is {private[0]!r}, a file of private records: the vocabulary must "
                                "be public (a word list that was not derived from the data), or 'tokenizer'.")
    elif Path(recipe.model.name).is_dir() and not kw.public_tokenizer:
        raise DPConfigError(
            f"keywords.vocabulary: tokenizer reads the tokenizer of the local folder {recipe.model.name!r}, which may "
            "have been trained or extended on private data (its words would then reveal the data). If it is the "
            "unchanged tokenizer of a public model, declare keywords.public_tokenizer: true; otherwise give a public "
            "word list as keywords.vocabulary.")


def _validate_label_descriptions(d: DataSection) -> None:
    if d.label_descriptions is None:
        return
    if d.modality == "tabular" or not (d.label_column and d.labels):
        raise DPConfigError("data.label_descriptions describes the labels of a text or image recipe: declare "
                            "data.label_column and data.labels too.")
    described = d.label_descriptions
    if not isinstance(described, dict) or set(described) != set(d.labels):
        got = sorted(described) if isinstance(described, dict) else described
        raise DPConfigError(f"data.label_descriptions must describe exactly the labels {list(d.labels)}; got {got!r}.")
    field = "{" + f"{d.label_column}_description" + "}"
    if not d.prompt_template or field not in d.prompt_template:
        raise DPConfigError(f"data.label_descriptions are written into the prompt by the field {field}: put it in "
                            f"data.prompt_template (e.g. \"Write {field}.\").")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"privacy.epsilon=1"`` → ``("privacy", "epsilon", 1.0)``; the value is read as YAML (numbers,
    booleans, lists, null), so ``--set`` writes what a recipe file would."""
    import yaml

    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise DPConfigError(f"--set takes SECTION.KEY=VALUE (e.g. privacy.epsilon=1); got {text!r}.")
    if section not in _SECTIONS:
        raise DPConfigError(f"--set {text!r}: unknown recipe section {section!r}; valid sections: {list(_SECTIONS)}.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise DPConfigError(f"--set {text!r}: the value is not valid YAML ({exc}).") from exc
    if section == "privacy" and name == "shares" and not isinstance(value, Mapping):
        raise DPConfigError(f"--set privacy.shares takes a mapping, e.g. privacy.shares={{training: 1.0}}; got {raw!r}.")
    return section, name, value


def load_recipe(path_or_mapping: str | os.PathLike[str] | Mapping[str, Any]) -> Recipe:
    """Parse and check a recipe (a YAML path or a dict). Unknown keys are errors listing valid ones."""
    import yaml

    source = None
    if isinstance(path_or_mapping, Mapping):
        raw = dict(path_or_mapping)
    else:
        path = Path(path_or_mapping)
        if not path.is_file():
            raise DPConfigError(f"recipe {path} does not exist.")
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DPConfigError(f"recipe {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise DPConfigError(f"recipe {path} must be a mapping of sections.")
    valid = ["name", *_SECTIONS]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise DPConfigError(f"the recipe has unknown top-level key(s) {unknown}; valid keys: {valid}.")
    try:
        sections = {name: _section(name, raw.get(name)) for name in _SECTIONS}
    except TypeError as exc:
        raise DPConfigError(f"recipe: {exc}") from exc
    recipe = Recipe(name=str(raw.get("name", "recipe")), source=source, **sections)
    _validate(recipe)
    return recipe


def has_own_test_split(recipe: Recipe) -> bool:
    """Whether ``data.source`` has a test split apart from its training records (packaged data, UCI Adult)."""
    d = recipe.data
    return d.source in PACKAGED_SOURCES or (d.modality == "tabular" and d.schema == "adult")


def test_split_refusal(recipe: Recipe) -> str:
    return (f"data.source {recipe.data.source!r} is a file with no test split apart from the training records: "
            "evaluating on it would test on the very records the model trained on. Set evaluation.test_source "
            "(a held-out file) or evaluation.holdout (e.g. 0.1: a public rule keeps 10% of the units out of "
            "training).")
