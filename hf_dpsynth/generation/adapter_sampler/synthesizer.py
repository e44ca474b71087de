"""The adapter sampler's generator: sampling the DP-fine-tuned model, with conditioning prefixes
drawn only from DP statistics (:class:`AdapterSynthesizer`).

Privacy: post-processing. The model's weights were released by DP-SGD (charged in the training
stage) and the conditioning distribution by a DP histogram (charged in its stage), so sampling
costs nothing more, whatever the decoding settings or the seed. The seed may be published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.data.keywords import DPKeywords
from hf_dpsynth.data.statistics import DPHistogram
from hf_dpsynth.data.tabular import TabularCodec
from hf_dpsynth.data.tokenize import prompt_ids
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.generation.adapter_sampler.conditioning import Conditioning, conditioning_table
from hf_dpsynth.generation.base import (
    GeneratedText,
    Synthesizer,
    build_dataset,
    check_positive_int,
    check_tokenizer_matches,
    condition_label,
)
from hf_dpsynth.generation.guided import SchemaGuidedDecoder

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting
    from datasets import Dataset

__all__ = ["AdapterSynthesizer"]


class AdapterSynthesizer(Synthesizer):
    """Samples records from a (DP-fine-tuned) causal LM prompted with codec prefixes.

    Args:
        model: the model, typically a PeftModel with the DP adapter.
        tokenizer: its tokenizer.
        codec: the codec the model was trained with; prompts are its conditioning prefixes.
        conditioning: for each codec condition, a DP histogram (or a release of several), or
            declared public weights ``{name: {value: weight}}``.
        batch_size: prompts generated together (left-padded, KV cache).
        max_new_tokens, temperature, top_p, top_k, repetition_penalty: decoding settings.
        deduplicate: drop exact repeats of an earlier record (counted in the info).
        guided: schema-guided decoding (:class:`~hf_dpsynth.generation.guided.SchemaGuidedDecoder`):
            the sampler writes a tabular row's column names and separators and the model chooses
            each value among those the schema allows, so every row parses. None (default): on for a
            TabularCodec, which is the only codec it applies to. ``top_p``, ``top_k``,
            ``repetition_penalty`` and ``max_new_tokens`` do not apply to guided rows.
        keywords: DP keywords per label (:func:`~hf_dpsynth.data.keywords.dp_keywords`): each
            prompt carries ``keywords_per_record`` of its label's, drawn in proportion to their
            noisy counts, in the codec template's ``{keywords}`` field. The model works with the
            base model alone (no training) as well as with a DP adapter.
        keyword_bias: the logit added to the first token of each prompt keyword until it is used
            (:class:`~hf_dpsynth.generation.adapter_sampler.keyword_bias.KeywordBias`; 0: none).
        label_adapters: ``(condition, {value: adapter name})`` for a model trained with one adapter
            per label (``DPSynthConfig(adapter_per_label=...)``): each record of a value is sampled with
            that value's adapter (batches never mix them).

    Privacy: post-processing of DP outputs (the adapter, the histograms, the keywords): no budget
    is spent.
    """

    name = "adapter_sampler"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        codec: Codec,
        conditioning: Conditioning = None,
        batch_size: int = 32,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        deduplicate: bool = True,
        guided: bool | None = None,
        keywords: DPKeywords | None = None,
        keywords_per_record: int = 3,
        keyword_bias: float = 3.0,
        keyword_weighting: str = "count",
        label_adapters: tuple[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not isinstance(codec, Codec):
            raise DPConfigError(f"codec must be a TextCodec, TabularCodec or ImageCodec; got {type(codec).__name__}.")
        check_tokenizer_matches(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self._table = conditioning_table(codec, conditioning)
        self._conditioning_note = _conditioning_note(conditioning)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive; got {temperature!r}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {top_p!r}.")
        if top_k < 0 or repetition_penalty <= 0:
            raise ValueError(f"top_k must be >= 0 and repetition_penalty > 0; got {top_k!r}, {repetition_penalty!r}.")
        self.decoding = {
            "temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k),
            "repetition_penalty": float(repetition_penalty), "max_new_tokens": self.max_new_tokens,
        }
        self.deduplicate = deduplicate
        self.keywords, self.keywords_per_record = _checked_keywords(codec, keywords, keywords_per_record)
        if not (isinstance(keyword_bias, (int, float)) and 0 <= keyword_bias < float("inf")):
            raise ValueError(f"keyword_bias must be a non-negative number; got {keyword_bias!r}.")
        self.keyword_bias = float(keyword_bias)
        if keyword_weighting not in ("count", "contrast"):
            raise ValueError(f"keyword_weighting must be 'count' or 'contrast'; got {keyword_weighting!r}.")
        self.keyword_weighting = keyword_weighting
        if self.keywords is not None:
            self.decoding.update({"keywords per prompt": self.keywords_per_record, "keyword bias": self.keyword_bias,
                                  "keyword weighting": keyword_weighting})
        self.label_adapters = _checked_label_adapters(model, codec, label_adapters)
        self.guided = None
        if guided or (guided is None and isinstance(codec, TabularCodec)):
            try:
                self.guided = SchemaGuidedDecoder(model, tokenizer, codec, temperature=temperature)
            except DPConfigError as exc:
                if guided:  # asked for explicitly: say why it cannot be done
                    raise
                self.decoding["guided"] = f"no: free sampling ({exc})"  # the default: recorded, not silent
            else:
                self.decoding = {"guided": "schema (column names and separators written by the sampler; the "
                                           "model chooses each value among the schema's)",
                                 "temperature": float(temperature)}

    def privacy_events(self) -> list[tuple[str, dp_accounting.DpEvent]]:
        return []  # post-processing

    def plan_conditions(self, num_records: int, rng: np.random.Generator) -> list[dict[str, str]]:
        """The conditions of each record: one condition is split by the DP probabilities exactly
        (largest remainder), several are drawn independently from theirs. Post-processing."""
        if not self._table:
            return [{} for _ in range(num_records)]
        if len(self._table) == 1:
            (name, (cats, probs)), = self._table.items()
            hist = DPHistogram(name, cats, tuple(probs), tuple(probs), tuple(probs))
            plan = [{name: cat} for cat, n in hist.allocate(num_records).items() for _ in range(n)]
            return [plan[i] for i in rng.permutation(num_records)]
        draws = {name: rng.choice(len(cats), size=num_records, p=probs) for name, (cats, probs) in self._table.items()}
        return [{name: self._table[name][0][draws[name][i]] for name in self._table} for i in range(num_records)]

    def generate(self, num_records: int | None = None, *, seed: int | None = None, progress: bool = True) -> Dataset:
        """Generate ``num_records`` texts, parse them with the codec, and return the valid records.

        ``seed`` makes the run reproducible (conditions and sampling); it is public.
        """
        total = check_positive_int("num_records", num_records)
        rng = np.random.default_rng(seed)
        conditions = self.plan_conditions(total, rng)
        prefixes = [self.codec.prompt_for(**c) for c in conditions]  # what decode reads back
        words: list[list[str]] = [[] for _ in conditions]
        if self.keywords is not None:
            column = self.keywords.column
            words = [self.keywords.sample(c[column], self.keywords_per_record, rng, weighting=self.keyword_weighting)
                     for c in conditions]
        prompts = [self.codec.prompt_for(**c, keywords=w) for c, w in zip(conditions, words)]
        texts = self.complete(prompts, rng=rng, words=words, progress=progress, groups=self._adapter_groups(conditions))
        outputs = [GeneratedText(prefix=p, text=t, condition=condition_label(c))
                   for p, t, c in zip(prefixes, texts, conditions)]
        return build_dataset(
            outputs, self.codec, generator=self.name, deduplicate=self.deduplicate,
            summary={
                "privacy": "post-processing: the model (a DP adapter, or the public base model), the conditioning "
                           "(DP histograms or declared weights)" + (", the DP keywords" if self.keywords is not None else "")
                           + "; no budget spent",
                "decoding": self.decoding, "seed": seed, "conditioning": self._conditioning_note,
            },
        )

    def complete(
        self,
        prompts: Sequence[str],
        *,
        rng: np.random.Generator,
        words: Sequence[Sequence[str]] | None = None,
        progress: bool = False,
        desc: str = "sampling records",
        groups: Sequence[tuple[str | None, list[int]]] | None = None,
    ) -> list[str]:
        """The model's continuation of each prompt (public prompts only), in the prompts' order.

        Prompts are generated in batches of ``batch_size``, longest first within each group (so a
        batch pads little), with the KV cache; ``words`` are each prompt's keywords for the keyword
        bias; ``groups`` (adapter name, prompt indices) switch adapters between groups. The torch
        seed is drawn from ``rng``, so the same rng gives the same texts. Post-processing."""
        import torch
        from tqdm.auto import tqdm

        words = [[] for _ in prompts] if words is None else words
        groups = [(None, list(range(len(prompts))))] if groups is None else groups
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        lengths = [len(ids) for ids in prompt_ids(self.tokenizer, prompts)] if self.guided is None else [0] * len(prompts)
        texts: list[str] = [""] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(int(rng.integers(2**63 - 1)))
                bar = tqdm(total=len(prompts), desc=desc, unit="rec", disable=not progress)
                for adapter, indices in groups:
                    if adapter is not None:
                        self.model.set_adapter(adapter)
                    indices = sorted(indices, key=lambda i: -lengths[i])  # stable: equal lengths keep their order
                    for start in range(0, len(indices), self.batch_size):
                        batch = indices[start : start + self.batch_size]
                        chunk = [prompts[i] for i in batch]
                        if self.guided is not None:
                            out = self.guided.sample(chunk, rng)
                        else:
                            out = self._generate_batch(chunk, pad, device, [words[i] for i in batch])
                        for i, text in zip(batch, out):
                            texts[i] = text
                        bar.update(len(chunk))
                bar.close()
        finally:
            self.model.train(was_training)
        return texts

    def _adapter_groups(self, conditions: Sequence[Mapping[str, str]]) -> list[tuple[str | None, list[int]]]:
        """The records in generation order: all of them with the model as it is, or grouped by label adapter."""
        if self.label_adapters is None:
            return [(None, list(range(len(conditions))))]
        column, names = self.label_adapters
        return [(name, [i for i, c in enumerate(conditions) if c[column] == value]) for value, name in names.items()]

    def _generate_batch(self, prompts: Sequence[str], pad: int, device: Any, words: Sequence[Sequence[str]]) -> list[str]:
        import torch
        from transformers import LogitsProcessorList

        from hf_dpsynth.generation.adapter_sampler.keyword_bias import KeywordBias

        ids = prompt_ids(self.tokenizer, prompts)
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(seq) :] = torch.tensor(seq)
            attention[row, width - len(seq) :] = 1
        d = self.decoding
        processors = LogitsProcessorList()
        if any(words) and self.keyword_bias:
            processors.append(KeywordBias(self.tokenizer, words, prompt_length=width, bias=self.keyword_bias))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), do_sample=True,
                temperature=d["temperature"], top_p=d["top_p"], top_k=d["top_k"],
                repetition_penalty=d["repetition_penalty"], max_new_tokens=d["max_new_tokens"],
                pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, logits_processor=processors,
            )
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def _checked_label_adapters(model: Any, codec: Codec, label_adapters: Any) -> tuple[str, dict[str, str]] | None:
    if label_adapters is None:
        return None
    column, names = label_adapters
    declared = dict(getattr(codec, "conditions", None) or {}).get(column)
    if not declared:
        raise DPConfigError(f"label_adapters names the condition {column!r}, which the codec does not declare.")
    missing = [v for v in declared if v not in names]
    loaded = set(getattr(model, "peft_config", {}) or {})
    absent = sorted(set(names.values()) - loaded)
    if missing or absent:
        raise DPConfigError(f"label_adapters must give an adapter the model holds to every declared {column!r} value; "
                            f"missing values {missing}, adapters not in the model {absent} (it holds {sorted(loaded)}).")
    return column, {v: names[v] for v in declared}


def _checked_keywords(codec: Codec, keywords: DPKeywords | None, per_record: int) -> tuple[DPKeywords | None, int]:
    if keywords is None:
        return None, check_positive_int("keywords_per_record", per_record)
    if not isinstance(keywords, DPKeywords):
        raise DPConfigError(f"keywords must be a DPKeywords release (dp_keywords(...)); got {type(keywords).__name__}.")
    if not codec.takes_keywords:
        raise DPConfigError("keywords were given but the codec's prompt template has no {keywords} field: put one where "
                            "the keywords go, e.g. 'Write one {label_description}.{keywords}'.")
    if keywords.column not in codec.conditions:
        raise DPConfigError(f"the keywords are per {keywords.column!r}, which is not a condition of the codec "
                            f"({list(codec.conditions)}).")
    unknown = sorted(set(keywords.keywords) - set(codec.conditions[keywords.column]))
    if unknown:
        raise DPConfigError(f"the keywords name value(s) {unknown} that the codec does not declare for "
                            f"{keywords.column!r} ({list(codec.conditions[keywords.column])}).")
    return keywords, check_positive_int("keywords_per_record", per_record)


def _conditioning_note(conditioning: Conditioning) -> str:
    """How the records' conditions were drawn, for the card (the declared weights are public)."""
    if not conditioning:
        return "none"
    if isinstance(conditioning, Mapping) and all(isinstance(v, Mapping) for v in conditioning.values()):
        return "declared public weights " + "; ".join(
            f"{name}: " + ", ".join(f"{value} {float(w):g}" for value, w in weights.items())
            for name, weights in conditioning.items()) + " (not the data's proportions)"
    return "the DP histogram's proportions"
