"""The one-run audit: insert canaries, train once, score, guess, bound — with controls.

The design is pre-registered in :class:`AuditConfig` before anything is trained: the number of
canaries, the score, which tails are guessed, the grid of guess counts and the significance
(Bonferroni-corrected over the grid). The verdict is one of:

* ε̂ > claimed ε: the implementation is broken — stop, do not release;
* otherwise: the audit did not refute the claim (ε̂ is a lower bound, never a guarantee), and when
  the design's ceiling is below the claimed ε, it *could not* have refuted it.

Privacy of the audit itself: it trains on the private data, so its results are owner-only unless
it ran on public/proxy data or its own ε was charged to the release ledger (stage ``audit``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hf_dpsynth.audit.bound import AuditCeiling, audit_ceiling, guess_grid, one_run_epsilon_lower_bound
from hf_dpsynth.audit.canaries import make_canaries
from hf_dpsynth.audit.scores import model_scores, ngram_scores
from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.errors import InvalidPrivacyParameterError

__all__ = ["AuditConfig", "AuditReport", "AuditResult", "evaluate_guesses", "run_audit"]


@dataclass(frozen=True)
class AuditConfig:
    """The pre-registered audit design.

    Args:
        num_canaries: m (≥ 200).
        score: ``"model"`` (log p_adapter − log p_base; needs the adapter) or ``"ngram"``
            (synthetic data only).
        guesses: ``"two_sided"`` (top k "in" and bottom k "out") or ``"in_only"``.
        grid: the guess counts k tried (default m/100, m/50, m/20, m/10, m/5); the significance is
            divided by its size.
        significance: the family-wise level of the test.
        delta: the δ the release claims.
        seed: the audit's seed (canaries and inclusion); the inclusion hash commits to it.
        prefixes: in-distribution openings of text canaries.
        suffix_words: made-up words in each text canary's random suffix.
    """

    delta: float
    num_canaries: int = 1000
    score: Literal["model", "ngram"] = "model"
    guesses: Literal["two_sided", "in_only"] = "two_sided"
    grid: tuple[int, ...] | None = None
    significance: float = 0.05
    seed: int = 0
    prefixes: tuple[str, ...] | None = None
    suffix_words: int = 4

    def __post_init__(self) -> None:
        if self.score not in ("model", "ngram"):
            raise InvalidPrivacyParameterError(f"score must be 'model' or 'ngram'; got {self.score!r}.")
        if self.guesses not in ("two_sided", "in_only"):
            raise InvalidPrivacyParameterError(f"guesses must be 'two_sided' or 'in_only'; got {self.guesses!r}.")
        if not 0 < self.significance < 1:
            raise InvalidPrivacyParameterError(f"significance must be in (0, 1); got {self.significance!r}.")
        grid = self.grid if self.grid is not None else guess_grid(self.num_canaries)
        object.__setattr__(self, "grid", tuple(int(k) for k in grid))
        need = max(self.grid) * (2 if self.guesses == "two_sided" else 1)
        if need > self.num_canaries:
            raise InvalidPrivacyParameterError(
                f"the grid's largest k = {max(self.grid)} needs {need} canaries ({self.guesses}); there are "
                f"{self.num_canaries}. Use at least {need} canaries or a smaller grid."
            )

    def ceiling(self) -> AuditCeiling:
        return audit_ceiling(
            num_canaries=self.num_canaries, grid=self.grid, two_sided=self.guesses == "two_sided",
            delta=self.delta, significance=self.significance,
        )


@dataclass(frozen=True)
class AuditResult:
    """One audited run: ε̂ and the raw counts behind it."""

    label: str
    epsilon_lower_bound: float
    num_canaries: int
    num_guesses: int
    num_correct: int
    k: int
    auc: float
    tpr_at_1pct_fpr: float
    scores_in: tuple[float, ...] = field(repr=False)
    scores_out: tuple[float, ...] = field(repr=False)


def _auc(scores: np.ndarray, included: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos, neg = included.sum(), (~included).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[included].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _tpr_at_fpr(scores: np.ndarray, included: np.ndarray, fpr: float = 0.01) -> float:
    out_scores = np.sort(scores[~included])
    if len(out_scores) == 0 or included.sum() == 0:
        return float("nan")
    allowed = int(np.floor(fpr * len(out_scores)))  # false positives allowed
    threshold = out_scores[len(out_scores) - allowed - 1]  # strictly above this: at most `allowed` OUT
    return float((scores[included] > threshold).mean())


def evaluate_guesses(scores: Sequence[float], included: Sequence[bool], config: AuditConfig, *, label: str = "audit") -> AuditResult:
    """Guess on the pre-registered grid, bound each with the Bonferroni-corrected level, keep the best.

    "In" for the k highest scores, "out" for the k lowest (two-sided); ties broken by a fixed,
    score-independent order (canary index).
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ValueError(f"scores and included must be 1-D of the same length; got {s.shape} and {inc.shape}.")
    if len(s) != config.num_canaries:
        raise ValueError(f"got {len(s)} scores for a design of {config.num_canaries} canaries.")
    order = np.lexsort((np.arange(len(s)), -s))  # descending score, then index
    per_test = config.significance / len(config.grid)
    best = None
    for k in config.grid:
        top, bottom = order[:k], order[len(s) - k :]
        correct = int(inc[top].sum())
        guesses = k
        if config.guesses == "two_sided":
            correct += int((~inc[bottom]).sum())
            guesses = 2 * k
        eps = one_run_epsilon_lower_bound(
            num_canaries=len(s), num_guesses=guesses, num_correct=correct, delta=config.delta, significance=per_test
        )
        if best is None or eps > best[0]:
            best = (eps, guesses, correct, k)
    eps, guesses, correct, k = best  # type: ignore[misc]
    return AuditResult(
        label=label, epsilon_lower_bound=eps, num_canaries=len(s), num_guesses=guesses, num_correct=correct, k=k,
        auc=_auc(s, inc), tpr_at_1pct_fpr=_tpr_at_fpr(s, inc),
        scores_in=tuple(map(float, s[inc])), scores_out=tuple(map(float, s[~inc])),
    )


@dataclass(frozen=True)
class AuditReport:
    """The audit of a claimed (ε, δ), its ceiling, controls and verdict."""

    claimed_epsilon: float
    delta: float
    config: AuditConfig
    inclusion_hash: str
    main: AuditResult
    ceiling: AuditCeiling
    positive_control: AuditResult | None = None
    negative_control: AuditResult | None = None
    charged: bool = False
    public_data: bool = False

    @property
    def refuted(self) -> bool:
        """ε̂ > claimed ε: the claim is false (a bug)."""
        return self.main.epsilon_lower_bound > self.claimed_epsilon

    @property
    def attack_too_weak(self) -> bool | None:
        """The positive control's ε̂ did not exceed the claim: the attack would not have caught a bug."""
        if self.positive_control is None:
            return None
        return self.positive_control.epsilon_lower_bound <= self.claimed_epsilon

    @property
    def main_verdict(self) -> str:
        """The verdict from the main run and the design alone: what a card may show of a charged audit
        (the controls are further runs on the private data, one without DP, and stay owner-only)."""
        eps_hat, claim = self.main.epsilon_lower_bound, self.claimed_epsilon
        if self.refuted:
            return (f"BUG: the audit's lower bound ε̂ = {eps_hat:.3g} exceeds the claimed ε = {claim:g}. The "
                    "implementation does not deliver its guarantee: stop, do not release.")
        parts = [f"The audit did not refute the claim (ε̂ = {eps_hat:.3g} ≤ ε = {claim:g}); ε̂ is a lower bound, "
                 "not a guarantee."]
        if self.ceiling.epsilon < claim:
            parts.append(f"This design cannot certify more than ε̂ = {self.ceiling.epsilon:.3g} even if every guess "
                         f"is right, so it could not refute ε = {claim:g} at all.")
        return " ".join(parts)

    @property
    def verdict(self) -> str:
        """The whole verdict, the controls included (owner-only when there are controls on private data)."""
        if self.refuted:
            return self.main_verdict
        parts = [self.main_verdict]
        if self.attack_too_weak:
            parts.append("The positive control (no DP) did not exceed the claim either: the attack is too weak "
                         "to catch a bug at this ε.")
        if self.negative_control is not None and self.negative_control.epsilon_lower_bound > 0.5:
            parts.append(f"Warning: the negative control (canaries never inserted) gave ε̂ = "
                         f"{self.negative_control.epsilon_lower_bound:.3g}, not ≈ 0: check the audit itself.")
        return " ".join(parts)

    @property
    def shareable(self) -> bool:
        """Results may be published only when the audit ran on public data or its ε was charged."""
        return self.charged or self.public_data

    def to_metrics(self) -> list:
        from hf_dpsynth.evaluation.metric import Metric

        note = "" if self.shareable else (
            "the audit trained on private data and its ε was not charged to the release ledger: owner-only")
        rows = [
            Metric("claimed ε", self.claimed_epsilon, True, "audit"),
            Metric("ε̂ (one-run lower bound)", self.main.epsilon_lower_bound, self.shareable, "audit", note=note),
            Metric("canaries m / guesses r / correct v",
                   f"{self.main.num_canaries} / {self.main.num_guesses} / {self.main.num_correct}", self.shareable, "audit", note=note),
            Metric("ceiling of the design", self.ceiling.epsilon, True, "audit"),
            Metric("AUC", self.main.auc, self.shareable, "audit", note=note),
            Metric("TPR at 1% FPR", self.main.tpr_at_1pct_fpr, self.shareable, "audit", note=note),
            Metric("verdict", self.main_verdict, self.shareable, "audit", note=note),
        ]
        if self.verdict != self.main_verdict:  # what the controls add: runs on private data, uncharged
            rows.append(Metric("verdict with the controls", self.verdict, self.public_data, "audit",
                               note="" if self.public_data else "the controls ran on private data: owner-only"))
        for control in (self.positive_control, self.negative_control):
            if control is not None:
                rows.append(Metric(f"ε̂, {control.label}", control.epsilon_lower_bound, False, "audit",
                                   note="a control run on private data: owner-only"))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (NaN and ±inf as strings); :meth:`from_dict` reads it back."""
        return _json_floats(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> AuditReport:
        d = _python_floats(data)

        def result(r: Any) -> AuditResult | None:
            if r is None:
                return None
            return AuditResult(**{**r, "scores_in": tuple(r["scores_in"]), "scores_out": tuple(r["scores_out"])})

        c = d["config"]
        config = AuditConfig(**{**c, "grid": tuple(c["grid"]),
                                "prefixes": None if c["prefixes"] is None else tuple(c["prefixes"])})
        return cls(
            claimed_epsilon=d["claimed_epsilon"], delta=d["delta"], config=config, inclusion_hash=d["inclusion_hash"],
            main=result(d["main"]), ceiling=AuditCeiling(**d["ceiling"]),
            positive_control=result(d["positive_control"]), negative_control=result(d["negative_control"]),
            charged=bool(d["charged"]), public_data=bool(d["public_data"]),
        )

    def add_to(self, report: Any) -> None:
        """Add the audit's metrics and its canary-score histogram (IN vs OUT) to a ``Report``."""
        report.extend(self.to_metrics())
        score = "log p_adapter − log p_base" if self.config.score == "model" else "mean log-prob under the n-gram model"
        report.add_plot(
            "canary scores", "score_histogram",
            {"in": list(self.main.scores_in), "out": list(self.main.scores_out), "xlabel": score},
            shareable=self.shareable,
            caption=f"Scores of inserted (IN) and held-out (OUT) canaries; ε̂ = {self.main.epsilon_lower_bound:.3g}.",
        )


def _json_floats(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_floats(v) for v in value]
    return value


def _python_floats(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _python_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python_floats(v) for v in value]
    return value


Trainer = Callable[[Any, bool], Any]


def run_audit(
    train: Trainer,
    dataset: Any,
    *,
    codec: Codec,
    claimed_epsilon: float,
    config: AuditConfig,
    tokenizer: Any = None,
    controls: bool = True,
    canary_repeat: int = 1,
    ledger: Any = None,
    public_data: bool = False,
) -> AuditReport:
    """Run the audit (and, with ``controls``, the positive and negative controls).

    Args:
        train: ``train(dataset, private)`` runs the release pipeline on ``dataset`` (prompt /
            completion columns) with DP (``private=True``) or without (the positive control) and
            returns the fine-tuned PeftModel (``score="model"``) or the synthetic texts
            (``score="ngram"``).
        dataset: the prepared training data (a PreparedDataset or a Dataset with prompt/completion).
        codec: the release's codec (canaries are made for it).
        claimed_epsilon: the ε the release claims.
        config: the pre-registered design.
        tokenizer: needed for ``score="model"``.
        canary_repeat: > 1 only for non-DP or planted-bug runs (see CanarySet.insert_into).
        ledger: the release ledger, when ``train`` charges the audit run to its ``"audit"`` stage
            (``DPSynthTrainer(..., ledger=ledger, ledger_stage="audit")``): the results are then
            shareable, as they are when the audit ran on public data (``public_data=True``).
    """
    canaries = make_canaries(
        codec, config.num_canaries, seed=config.seed, prefixes=config.prefixes, suffix_words=config.suffix_words
    )
    inclusion_hash = canaries.inclusion_hash  # the commitment, fixed before any training
    with_canaries = canaries.insert_into(dataset, repeat=canary_repeat)

    def score(trained: Any) -> np.ndarray:
        prompts, completions = canaries.prompts_and_completions()
        if config.score == "model":
            if tokenizer is None:
                raise ValueError("score='model' needs tokenizer=.")
            return model_scores(trained, tokenizer, prompts, completions)
        if hasattr(trained, "column_names"):  # a Dataset of synthetic records
            texts = trained["completion" if "completion" in trained.column_names else "text"][:]
        else:
            texts = list(trained)
        return ngram_scores(texts, completions)

    main = evaluate_guesses(score(train(with_canaries, True)), canaries.included, config, label="DP run")
    positive = negative = None
    if controls:
        positive = evaluate_guesses(score(train(with_canaries, False)), canaries.included, config,
                                    label="positive control (same pipeline without DP)")
        without = dataset.dataset if hasattr(dataset, "training_kwargs") else dataset
        negative = evaluate_guesses(score(train(without, True)), canaries.included, config,
                                    label="negative control (canaries never inserted)")
    return AuditReport(
        claimed_epsilon=claimed_epsilon, delta=config.delta, config=config, inclusion_hash=inclusion_hash, main=main,
        ceiling=config.ceiling(), positive_control=positive, negative_control=negative,
        charged=ledger is not None and any(c.stage == "audit" for c in ledger.charges), public_data=public_data,
    )

