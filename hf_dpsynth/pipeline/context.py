"""What the stages of one run share: the recipe, the folder and its state, the ledger, and what each
stage produced; and the run's summary.

Privacy: ``labels`` and ``keywords`` are DP releases (paid for by the ``label_histogram`` and
``keywords`` stages); ``prepared`` and
``model`` after training hold private data and never leave the process; everything a stage
writes goes through :class:`~hf_dpsynth.pipeline.folder.RunFolder` with its charge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hf_dpsynth._markdown import format_bound
from hf_dpsynth.pipeline.build import load_recipe_model
from hf_dpsynth.pipeline.folder import RunFolder, RunState
from hf_dpsynth.pipeline.recipe import Recipe

__all__ = ["RunContext", "RunSummary"]


@dataclass
class RunSummary:
    """What a run produced: ε per stage (shareable), records, invalid rate, headline utility."""

    output_dir: str
    epsilon_spent: float
    delta: float
    stages: dict[str, float] = field(default_factory=dict)
    num_generated: int | None = None
    num_valid: int | None = None
    invalid_rate: float | None = None
    headline: dict[str, Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [("stage", "ε spent")] + [(k, format_bound(v)) for k, v in self.stages.items()]
        rows.append(("total", f"{format_bound(self.epsilon_spent)} (δ = {format_bound(self.delta)})"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b}" for a, b in rows]
        if self.num_generated is not None:
            lines.append(f"records: {self.num_valid} valid of {self.num_generated} generated "
                         f"(invalid rate {self.invalid_rate:.1%})")
        for name, value in self.headline.items():
            lines.append(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
        if self.reused:
            lines.append("reused from an earlier run (not re-run, not re-charged): " + ", ".join(self.reused))
        return "\n".join(lines)


@dataclass
class RunContext:
    """One run's shared state, filled in stage by stage."""

    recipe: Recipe
    folder: RunFolder
    log: Callable[[str], None]
    progress: bool
    allow_charges: bool
    include_owner_only: bool = False
    stop_after: str | None = None
    state: RunState | None = None
    sources: dict[str, Any] = field(default_factory=dict)
    codec: Any = None
    prepared: Any = None
    preparation: Any = None  # the PreparationReport, or its saved dict (card/evaluate read no data)
    ledger: Any = None
    labels: Any = None
    keywords: Any = None
    adapter_model: Any = None
    synthetic: Any = None
    audit: Any = None
    references: dict[str, Any] = field(default_factory=dict)
    metrics: list = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    outputs: dict[str, list[str]] = field(default_factory=dict)  # stage → the outputs it released (cards)
    summary: RunSummary | None = None
    _model: Any = None

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The recipe's base model and tokenizer, loaded the first time a stage needs them."""
        if self._model is None:
            self._model = load_recipe_model(self.recipe)
        return self._model

    @property
    def label_stages(self) -> list[str]:
        """The charged stages the generation rests on besides its own (the DP label histogram, if any)."""
        return ["label_histogram"] if self.labels is not None else []

    @property
    def keyword_stages(self) -> list[str]:
        """The keywords stage, when the generation's prompts carry DP keywords."""
        return ["keywords"] if self.keywords is not None else []

    def conditioning(self) -> Any:
        """The label distribution the generators draw from: the DP histogram, or equal public weights
        (``generation.label_distribution: uniform``)."""
        d = self.recipe.data
        if self.recipe.generation.label_distribution == "uniform" and d.label_column and d.labels:
            return {d.label_column: {label: 1.0 for label in d.labels}}
        return self.labels

    def sampler_options(self, *, keywords: bool) -> dict[str, Any]:
        """The AdapterSynthesizer settings of the recipe (with its DP keywords when ``keywords``)."""
        g, kw = self.recipe.generation, self.recipe.keywords
        options = {"conditioning": self.conditioning(), "batch_size": g.batch_size, "max_new_tokens": g.max_new_tokens,
                   "temperature": g.temperature, "top_p": g.top_p}
        if self.recipe.lora.per_label and g.method == "adapter_sampler":
            from hf_dpsynth.training.per_label import adapter_name

            d = self.recipe.data
            options["label_adapters"] = (d.label_column, {label: adapter_name(i) for i, label in enumerate(d.labels)})
        if keywords and self.keywords is not None:
            options.update(keywords=self.keywords, keywords_per_record=kw.per_record, keyword_bias=kw.bias,
                           keyword_weighting=kw.weighting)
        return options

    def reuse(self, path: Any) -> None:
        self.folder.reuse(path, self.ledger)

    def refuse_charge(self, stage: str) -> Exception:
        from hf_dpsynth.errors import DPConfigError

        root = self.folder.root
        return DPConfigError(
            f"stage {stage!r} of the run in {root} has not finished, and this command never charges the privacy "
            f"budget: run `hf-dpsynth run` on the recipe (output folder {root}) first."
        )
