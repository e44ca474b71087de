"""Private Evolution's generator (:class:`PrivateEvolutionSynthesizer`): DP synthetic text from
model access alone (Lin et al., ICLR 2024; Aug-PE, Xie et al., ICML 2024; docs/ALGORITHMS.md §4).

Per label, an initial population comes from the public prompt (the codec's template with the
label's public description and, where charged, DP keywords). Each of the T rounds then embeds the
population, lets every privacy unit vote for its k nearest candidates of its own label
(:mod:`.votes`: L2 norm ≤ 1 per unit), adds Gaussian noise from OS entropy, keeps the best
candidates by noisy votes and fills the population with their variations (:mod:`.variation`).
The last round fills each label to its output count, which comes from the DP label histogram or a
public choice, never from the real counts.

Privacy: T sensitivity-1 Gaussian votes, ``private_evolution_event(σ, T)``, charged once before the
first histogram (σ calibrated to the stage's share for T up front); a histogram charged but lost
in a crash is charged again (one Gaussian of σ) before it is redrawn, and refused once the share
is spent. Everything else is post-processing of public inputs: the prompts and the candidates
(model outputs from public prompts) never carry a private text. The private records come only as
a :class:`~hf_dpsynth.data.PreparedDataset`; their embeddings stay in memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_dpsynth.data.codecs import Codec, TextCodec
from hf_dpsynth.data.keywords import DPKeywords
from hf_dpsynth.data.loading import column_values
from hf_dpsynth.data.prepare import PreparedDataset
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.errors import (
    CheckpointError,
    DatasetError,
    DPConfigError,
    InvalidPrivacyParameterError,
    InvalidRecord,
    PrivacyBudgetExceededError,
    PrivacyUnitMismatchError,
)
from hf_dpsynth.generation.adapter_sampler import AdapterSynthesizer
from hf_dpsynth.generation.base import GeneratedText, Synthesizer, build_dataset, check_positive_int
from hf_dpsynth.generation.private_evolution.state import EvolutionState, Population, Round, charged_sigma
from hf_dpsynth.generation.private_evolution.variation import VariationPrompts, select_and_allocate
from hf_dpsynth.generation.private_evolution.votes import (
    dp_vote_histogram,
    nearest_candidates,
    pe_noise_multiplier,
    vote_histogram,
)
from hf_dpsynth.generation.private_prediction.batching import prepared_conditions
from hf_dpsynth.privacy.charges import holds_run_charge
from hf_dpsynth.privacy.events import gaussian_event, private_evolution_event

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting
    from datasets import Dataset

    from hf_dpsynth.privacy.ledger import PrivacyLedger

__all__ = ["STAGE", "PrivateEvolutionSynthesizer"]

STAGE = "private_evolution"
#: The fewest candidates a label's population holds (whatever the signal-to-noise rule gives).
MIN_POPULATION = 8
#: The default population rule: about this many noise standard deviations of votes per candidate.
VOTES_PER_SIGMA = 2.0

Embed = Callable[[Sequence[str]], np.ndarray]


class PrivateEvolutionSynthesizer(Synthesizer):
    """Synthetic texts by Private Evolution: public candidates, DP votes of the private records.

    Args:
        model, tokenizer: any causal LM (e.g. the embedded default) and its tokenizer; never trained.
        private_dataset: a :class:`~hf_dpsynth.data.PreparedDataset` (checked, scrubbed, bounded).
            Prepared at user level, a user's records share one vote.
        codec: a :class:`~hf_dpsynth.data.TextCodec` with at most one condition (the label); its
            prompt template (with ``{label_description}`` and ``{keywords}`` where declared) is the
            public prompt of the initial population.
        ledger: planned with a ``"private_evolution"`` stage; its unit must be the one this run
            protects (``"user"`` when the data was prepared at user level). None only with
            ``noise_multiplier=0`` (the non-private reference, ε = ∞, nothing charged).
        embed: texts → a 2-D array of embeddings (e.g. ``hf_dpsynth.evaluation.embed_texts``);
            the same function embeds the private records and the candidates.
        embedding_model: the embedding's public name, for the card.
        num_records: the output count (split across labels by ``label_counts``).
        label_counts: a DP label histogram charged in this ledger, declared public weights
            ``{label: weight}``, or None / ``"uniform"`` (equal counts per label).
        num_rounds: T. population: candidates per label in every round but the last (an int, per
            label a mapping, or None: about ``VOTES_PER_SIGMA``·σ expected votes per candidate from
            the DP counts, or N / labels without them, between ``MIN_POPULATION`` and the output count).
        keep_fraction: the share of a population kept each round (the rest are its variations).
        k: the nearest candidates each vote is shared among (1/√k each).
        noise_multiplier: σ per round (None: calibrated to the stage's share for T rounds).
        threshold_sigmas: votes below ``threshold_sigmas``·σ count 0 when sharing variations.
        variations: the public variation prompts (:class:`VariationPrompts`; default: paraphrase
            and fill-in-the-blanks, alternating, with the codec's label descriptions).
        keywords, keywords_per_record, keyword_bias, keyword_weighting: DP keywords for the
            initial prompts (as :class:`~hf_dpsynth.generation.AdapterSynthesizer`).
        batch_size, max_new_tokens, temperature, top_p: decoding of every candidate.
        state_dir: a folder for the resumable state (None: in memory, not resumable).
    """

    name = "private_evolution"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        private_dataset: PreparedDataset,
        *,
        codec: Codec,
        ledger: PrivacyLedger | None,
        embed: Embed,
        embedding_model: str = "custom",
        num_records: int,
        label_counts: DPHistogram | Mapping[str, float] | str | None = None,
        num_rounds: int = 4,
        population: int | Mapping[str, int] | None = None,
        keep_fraction: float = 0.5,
        k: int = 1,
        noise_multiplier: float | None = None,
        threshold_sigmas: float = 0.0,
        variations: VariationPrompts | None = None,
        keywords: DPKeywords | None = None,
        keywords_per_record: int = 3,
        keyword_bias: float = 3.0,
        keyword_weighting: str = "count",
        batch_size: int = 64,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        state_dir: str | Path | None = None,
        stage: str = STAGE,
    ) -> None:
        if not isinstance(codec, TextCodec):
            raise DPConfigError(f"Private Evolution runs on text for now: the codec must be a TextCodec; got "
                                f"{type(codec).__name__}. Use generation.method: adapter_sampler for tables and images.")
        if len(codec.conditions) > 1:
            raise DPConfigError(f"Private Evolution votes within at most one condition (the label); the codec has "
                                f"{list(codec.conditions)}.")
        if not isinstance(private_dataset, PreparedDataset):
            raise DPConfigError(
                f"private_dataset must be a PreparedDataset; got {type(private_dataset).__name__}. Prepare the records "
                "first with hf_dpsynth.data.prepare_dataset(records, codec): it checks, scrubs and bounds them."
            )
        if not callable(embed):
            raise DPConfigError("embed must be a function from a list of texts to a 2-D array of embeddings.")
        self.codec, self.ledger, self.embed, self.embedding_model, self.stage = codec, ledger, embed, embedding_model, stage
        self.model, self.tokenizer = model, tokenizer
        self.num_rounds = _positive("num_rounds", num_rounds)
        self.k = _positive("k", k)
        if not (isinstance(keep_fraction, (int, float)) and 0 < keep_fraction <= 1):
            raise DPConfigError(f"keep_fraction must be in (0, 1]; got {keep_fraction!r}.")
        self.keep_fraction = float(keep_fraction)
        if not (isinstance(threshold_sigmas, (int, float)) and 0 <= threshold_sigmas < math.inf):
            raise DPConfigError(f"threshold_sigmas must be a non-negative number; got {threshold_sigmas!r}.")
        self.threshold_sigmas = float(threshold_sigmas)
        self._condition = next(iter(codec.conditions), None)
        self.labels: tuple[str, ...] = tuple(codec.conditions[self._condition]) if self._condition else ("",)
        descriptions = tuple(dict(codec.descriptions.get(self._condition, {})).items()) if self._condition else ()
        self.variations = variations if variations is not None else VariationPrompts(descriptions=descriptions)
        if not isinstance(self.variations, VariationPrompts):
            raise DPConfigError(f"variations must be VariationPrompts; got {type(variations).__name__}.")
        self.non_private = noise_multiplier is not None and not isinstance(noise_multiplier, bool) and noise_multiplier == 0
        self.user_id_column = private_dataset.user_id_column
        self.privacy_unit = "user" if self.user_id_column else "example"
        self._prepared = private_dataset
        self.num_units = private_dataset.num_units
        self._check_ledger(ledger, label_counts)
        resumed = None if self.non_private else charged_sigma(state_dir, ledger, stage)
        self.sigma = (0.0 if self.non_private else resumed if resumed is not None and noise_multiplier is None
                      else pe_noise_multiplier(ledger, stage, self.num_rounds, noise_multiplier))
        conditioning = None
        if self._condition:
            weights = ({lab: 1.0 for lab in self.labels} if label_counts in (None, "uniform") else label_counts)
            conditioning = {self._condition: weights}
        self.sampler = AdapterSynthesizer(
            model, tokenizer, codec=codec, conditioning=conditioning, batch_size=batch_size,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, guided=False, keywords=keywords,
            keywords_per_record=keywords_per_record, keyword_bias=keyword_bias, keyword_weighting=keyword_weighting,
        )
        self.num_records = check_positive_int("num_records", num_records)
        self._expected_votes: dict[str, float] = {}
        self._last_state: EvolutionState | None = None  # the latest run's (public) state, for inspection
        self.outputs = self._output_counts()
        self.population = self._populations(population, label_counts)
        self.state_dir = state_dir
        if not self.non_private and resumed is None and ledger.would_exceed(stage, self._event()):
            raise PrivacyBudgetExceededError(f"The budget left for stage {stage!r} cannot pay for {self.num_rounds} "
                                             f"rounds at σ = {self.sigma:.4g}: raise its share or σ, or lower T.")

    # -- set-up ----------------------------------------------------------------------------------

    def _check_ledger(self, ledger: PrivacyLedger | None, label_counts: Any) -> None:
        if ledger is None or self.non_private:
            if ledger is not None or not self.non_private:
                raise DPConfigError("Private Evolution charges its votes to a ledger: pass ledger= (and ledger=None "
                                    "only with noise_multiplier=0, the non-private reference, which charges nothing).")
        elif ledger.privacy_unit != self.privacy_unit:
            raise PrivacyUnitMismatchError(
                f"The ledger protects one {ledger.privacy_unit!r}, but this run's votes are one per "
                f"{self.privacy_unit} (the data was prepared at {'user' if self.user_id_column else 'example'} "
                "level): prepare the data and plan the ledger at the same privacy unit."
            )
        elif ledger.num_units is not None and ledger.num_units != self.num_units:
            raise PrivacyUnitMismatchError(f"The ledger is for N = {ledger.num_units} {self.privacy_unit}s, but the "
                                           f"private data has N = {self.num_units}: run every stage on the same data.")
        if isinstance(label_counts, DPHistogram):
            if label_counts.column != self._condition:
                raise DPConfigError(f"label_counts is the DP histogram of {label_counts.column!r}, but the codec "
                                    f"conditions on {self._condition!r}.")
            if ledger is not None and not any(c.stage == "label_histogram" for c in ledger.charges):
                raise DPConfigError("label_counts is a DP histogram, but this ledger has no label_histogram charge: "
                                    "release it with dp_label_histogram(..., ledger=ledger) on the same ledger.")
        elif isinstance(label_counts, str) and label_counts != "uniform":
            raise DPConfigError(f"label_counts must be a DP histogram, public weights or 'uniform'; got {label_counts!r}.")

    def _output_counts(self) -> dict[str, int]:
        if not self._condition:
            return {"": self.num_records}
        plan = self.sampler.plan_conditions(self.num_records, np.random.default_rng(0))  # exact split: order only
        return {lab: sum(1 for c in plan if c[self._condition] == lab) for lab in self.labels}

    def _populations(self, population: Any, label_counts: Any) -> dict[str, int]:
        if population is not None:
            given = population if isinstance(population, Mapping) else {lab: population for lab in self.labels}
            missing = [lab for lab in self.labels if lab not in given]
            if missing:
                raise DPConfigError(f"population has no size for label(s) {missing}.")
            sizes = {lab: _positive(f"population[{lab!r}]", given[lab]) for lab in self.labels}
            small = {lab: n for lab, n in sizes.items() if n < max(self.k, 2)}
            if small:
                raise DPConfigError(f"Each label's population needs at least max(k, 2) = {max(self.k, 2)} candidates; "
                                    f"got {small}.")
            self._expected_votes = {lab: self.num_units / len(self.labels) for lab in self.labels}
            return sizes
        # Public numbers only: the DP counts (or N / labels) and σ.
        if isinstance(label_counts, DPHistogram):
            expected = {lab: max(0.0, float(c)) for lab, c in zip(label_counts.categories, label_counts.noisy_counts)}
        else:
            expected = {lab: self.num_units / len(self.labels) for lab in self.labels}
        self._expected_votes = expected
        sizes = {}
        for lab in self.labels:
            rule = expected[lab] / (VOTES_PER_SIGMA * self.sigma) if self.sigma > 0 else math.inf
            sizes[lab] = int(max(MIN_POPULATION, self.k, min(self.outputs[lab], rule)))
        return sizes

    def _event(self) -> dp_accounting.DpEvent:
        return private_evolution_event(noise_multiplier=self.sigma, num_rounds=self.num_rounds)

    def privacy_events(self) -> list[tuple[str, dp_accounting.DpEvent]]:
        return [] if self.non_private else [(self.stage, self._event())]

    def settings(self, seed: int | None) -> dict[str, Any]:
        """Everything public that fixes a run (a resumed run must have the same)."""
        v = self.variations
        return {
            "method": "private_evolution/v1", "num_rounds": self.num_rounds, "sigma": self.sigma, "k": self.k,
            "population": self.population, "outputs": self.outputs, "keep_fraction": self.keep_fraction,
            "threshold_sigmas": self.threshold_sigmas, "embedding_model": self.embedding_model, "seed": seed,
            "variations": {"paraphrase": v.paraphrase, "fill_in": v.fill_in, "mask_fraction": v.mask_fraction},
            "decoding": self.sampler.decoding, "codec": self.codec.to_dict(), "privacy_unit": self.privacy_unit,
            "keywords": self.sampler.keywords is not None, "num_units": self.num_units,
        }

    # -- the run ---------------------------------------------------------------------------------

    def generate(self, num_records: int | None = None, *, seed: int | None = None, progress: bool = True) -> Dataset:
        """Run (or resume) the T rounds and return the last population's valid, deduplicated records.

        ``seed`` makes the public sampling reproducible (prompts, candidates, variations); the vote
        noise always comes from OS entropy. ``num_records`` must be None or the constructor's."""
        if num_records is not None and num_records != self.num_records:
            raise DPConfigError(f"num_records is fixed when the run is set up ({self.num_records}); got {num_records}.")
        state = self._last_state = EvolutionState.open(self.state_dir, self.settings(seed))
        public_seed = int(state.run_id[:15], 16) if seed is None else int(seed)  # the run's own, when not given
        self.check_signal()
        if state.initial is None:
            state.initial = self._initial_population(np.random.default_rng([public_seed, 0]), progress)
            state.save()
        for label in self.labels:
            valid = sum(self._body(label, t) is not None for t in state.initial[label])
            if valid < self.k:
                raise DatasetError(
                    f"The initial population of label {label or '(none)'!r} has {valid} valid candidate(s), fewer "
                    f"than k = {self.k}: nothing was charged. Check the prompt template (and max_new_tokens).")
        private, record_labels, users = self._private_embeddings()
        self._charge(state)
        for t in range(1, self.num_rounds + 1):
            self._round(state, t, private, record_labels, users, np.random.default_rng([public_seed, t]), progress)
        final = state.rounds[self.num_rounds - 1].population
        outputs = [GeneratedText(prefix=self._prefix(label), text=text,
                                 condition=f"{self._condition}={label}" if self._condition else "")
                   for label in self.labels for text in final[label]]
        return build_dataset(outputs, self.codec, generator=self.name, deduplicate=True, summary=self._summary(state))

    def _prefix(self, label: str) -> str:
        return self.codec.prompt_for(**({self._condition: label} if self._condition else {}))

    def _body(self, label: str, text: str) -> str | None:
        """The candidate's body as the private records are encoded (None: the codec rejects it)."""
        try:
            return self.codec.encode_body(self.codec.decode(self._prefix(label) + text.strip()))
        except InvalidRecord:
            return None

    def _initial_population(self, rng: np.random.Generator, progress: bool) -> Population:
        labels = [lab for lab in self.labels for _ in range(self.population[lab])]
        words: list[list[str]] = [[] for _ in labels]
        if self.sampler.keywords is not None:
            s = self.sampler
            words = [s.keywords.sample(lab, s.keywords_per_record, rng, weighting=s.keyword_weighting) for lab in labels]
        cond = self._condition
        prompts = [self.codec.prompt_for(**({cond: lab} if cond else {}), keywords=w) for lab, w in zip(labels, words)]
        texts = self.sampler.complete(prompts, rng=rng, words=words, progress=progress, desc="PE initial population")
        population: Population = {lab: [] for lab in self.labels}
        for lab, text in zip(labels, texts):
            population[lab].append(text)
        return population

    def _private_embeddings(self) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
        data = self._prepared.dataset
        prompts = column_values(data, "prompt")
        bodies = column_values(data, "completion")
        if not bodies:
            raise DatasetError("The private dataset is empty.")
        if self._condition:
            conditions = prepared_conditions(data, prompts, codec=self.codec, condition=self._condition,
                                             labels=self.labels)
            index = {lab: i for i, lab in enumerate(self.labels)}
            labels = np.asarray([index[c] for c in conditions], dtype=np.int64)
        else:
            labels = np.zeros(len(bodies), dtype=np.int64)
        users = column_values(data, self.user_id_column) if self.user_id_column else None
        return np.asarray(self.embed(list(bodies)), dtype=np.float64), labels, users

    def _charge(self, state: EvolutionState) -> None:
        """The whole stage, once, before the first histogram (a resumed run finds its own charge)."""
        if self.non_private:
            state.charged, state.sigma = True, 0.0
            state.save()
            return
        held = holds_run_charge(self.ledger, self.stage, state.run_id)
        if state.charged and not held:
            raise CheckpointError(
                f"The Private Evolution state in {self.state_dir} was charged to another ledger: this one holds no "
                f"charge of run {state.run_id}. Resume with the run's own ledger, or start in a new folder.")
        if not held:
            self.ledger.charge(self.stage, self._event(), privacy_unit=self.privacy_unit, num_units=self.num_units,
                               metadata={"mechanism": "private_evolution", "run_id": state.run_id,
                                         "num_rounds": self.num_rounds, "noise_multiplier": self.sigma, "k": self.k,
                                         "embedding_model": self.embedding_model})
        state.charged, state.sigma = True, self.sigma
        state.save()

    def _redraws_paid(self, state: EvolutionState, t: int) -> int:
        return sum(1 for c in self.ledger.charges if c.stage == self.stage
                   and (c.metadata or {}).get("run_id") == state.run_id and (c.metadata or {}).get("redraw_round") == t)

    def _round(self, state: EvolutionState, t: int, private: np.ndarray, record_labels: np.ndarray,
               users: list[Any] | None, rng: np.random.Generator, progress: bool) -> None:
        if t > self.num_rounds:
            raise CheckpointError(f"round {t} is past the T = {self.num_rounds} rounds that were charged.")
        if len(state.rounds) < t:
            state.rounds.append(Round())
        current = state.rounds[t - 1]
        if current.status == "varied":
            return
        population = state.population_before(t)
        flat = [(lab, text) for lab in self.labels for text in population[lab]]
        bodies = [self._body(lab, text) for lab, text in flat]
        if current.status == "drawing":
            current.histogram = self._draw(state, current, t, flat, bodies, private, record_labels, users)
            current.status = "drawn"
            state.save()
        self._vary(state, current, t, flat, bodies, rng, progress)

    def _draw(self, state: EvolutionState, current: Round, t: int, flat: list[tuple[str, str]],
              bodies: list[str | None], private: np.ndarray, record_labels: np.ndarray,
              users: list[Any] | None) -> list[float | None]:
        """Round t's noisy vote histogram (aligned to ``flat``; None for invalid candidates)."""
        if not self.non_private and current.attempts >= 1 + self._redraws_paid(state, t):
            # A draw was started and its histogram lost: it was released as far as we know, so the
            # redraw is a new Gaussian mechanism and is paid for before it runs.
            self.ledger.charge(self.stage, gaussian_event(noise_multiplier=self.sigma), privacy_unit=self.privacy_unit,
                               num_units=self.num_units,
                               metadata={"mechanism": "private_evolution redraw", "run_id": state.run_id,
                                         "redraw_round": t, "noise_multiplier": self.sigma})
        valid = [i for i, b in enumerate(bodies) if b is not None]
        index = {lab: i for i, lab in enumerate(self.labels)}
        candidates = np.asarray(self.embed([bodies[i] for i in valid]), dtype=np.float64)
        neighbours = nearest_candidates(private, record_labels, candidates, [index[flat[i][0]] for i in valid],
                                        self.k, len(self.labels))
        histogram = vote_histogram(neighbours, len(valid), users)
        current.attempts += 1
        state.save()  # the attempt is on disk before the noise is drawn
        noisy = dp_vote_histogram(histogram, self.sigma, non_private=self.non_private)
        del histogram, neighbours
        out: list[float | None] = [None] * len(flat)
        for i, value in zip(valid, noisy):
            out[i] = float(value)
        return out

    def _vary(self, state: EvolutionState, current: Round, t: int, flat: list[tuple[str, str]],
              bodies: list[str | None], rng: np.random.Generator, progress: bool) -> None:
        """Selection by the noisy votes and the variations (post-processing), saved as the next population."""
        kept: Population = {}
        parents: list[tuple[str, str]] = []
        last = t == self.num_rounds
        for lab in self.labels:
            rows = [i for i, (label, _) in enumerate(flat) if label == lab]
            votes = [current.histogram[i] if current.histogram[i] is not None else -math.inf for i in rows]
            size = self.outputs[lab] if last else self.population[lab]
            keep = min(size, max(self.k, round(self.keep_fraction * self.population[lab])))
            if size == 0:
                kept[lab] = []
                continue
            best, shares = select_and_allocate(votes, [bodies[i] is not None for i in rows], keep=keep, size=size,
                                               threshold=self.threshold_sigmas * self.sigma)
            kept[lab] = [flat[rows[j]][1] for j in best]
            parents.extend((lab, flat[rows[j]][1]) for j, n in zip(best, shares) for _ in range(n))
        prompts = self.variations.prompts([p for _, p in parents], [lab for lab, _ in parents], self.tokenizer, rng)
        texts = self.sampler.complete(prompts, rng=rng, progress=progress, desc=f"PE round {t}/{self.num_rounds}")
        population = {lab: list(kept[lab]) for lab in self.labels}
        for (lab, _), text in zip(parents, texts):
            population[lab].append(text)
        current.population, current.status = population, "varied"
        state.save()

    def _summary(self, state: EvolutionState) -> dict[str, Any]:
        redraws = sum(max(0, r.attempts - 1) for r in state.rounds)
        return {
            "privacy": "non-private reference (σ = 0, ε = ∞): nothing was charged" if self.non_private else {
                "stage": self.stage, "mechanism": "Private Evolution: T Gaussian votes of L2 sensitivity 1",
                "num_rounds": self.num_rounds, "noise_multiplier": self.sigma, "redraws": redraws,
                "privacy_unit": self.privacy_unit,
            },
            "method": "private_evolution", "num_rounds": self.num_rounds, "k": self.k,
            "embedding_model": self.embedding_model, "population": self.population, "outputs": self.outputs,
            "keep_fraction": self.keep_fraction, "threshold": self.threshold_sigmas * self.sigma,
            "variation_kinds": list(self.variations.kinds), "decoding": self.sampler.decoding,
            "initial_prompts": "the codec's public template" + (" with DP keywords" if self.sampler.keywords else ""),
        }

    def check_signal(self) -> list[str]:
        """Warnings (also emitted) where a label's expected votes per candidate fall below σ."""
        notes = []
        for lab in self.labels:
            expected = self._expected_votes[lab] / self.population[lab]
            if 0 < self.sigma and expected < self.sigma:
                notes.append(f"label {lab or '(none)'!r}: about {expected:.2g} votes per candidate against noise "
                             f"σ = {self.sigma:.3g}; the vote carries little signal (fewer candidates, fewer rounds "
                             "or more budget help)")
        for note in notes:
            warnings.warn(note, stacklevel=2)
        return notes


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidPrivacyParameterError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)

