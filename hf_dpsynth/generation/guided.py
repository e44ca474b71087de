"""Schema-guided sampling of tabular rows: the sampler writes the public structure, the model the values.

A tabular row is ``"name is value, name is value, ..."`` over a public schema. A small model that
took a few DP steps often has not learned that format, and free sampling then yields text that does
not parse at all. Here the sampler writes what the schema fixes (each column name, ``" is"``, the
separators, the end of the row) and the model only chooses each value, among the values the schema
allows:

* a column with at most ``max_enumerated`` possible values (categories, the missing-value token of a
  nullable column, integers or floats on their precision grid) is scored value by value — the log
  probability of the value's tokens and of the token that ends it (``","``, or the end of sequence
  after the last column) — and one value is drawn from those scores (divided by ``temperature``);
* a wider, non-negative integer column is written digit by digit, each digit drawn from the model's
  next-token distribution restricted to the digits that can still end within the bounds (and the end
  token once the number is within them).

Every row parses by construction; columns are written in the schema's order. This is decoding, not
selection: no output is looked at, kept or dropped, and no private data is read. Privacy: it is
post-processing of the DP adapter, like free sampling, and costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_dpsynth._compat import cache_kwargs, output_cache
from hf_dpsynth.data.tabular import (
    CategoricalColumn,
    FloatColumn,
    IntegerColumn,
    TabularCodec,
)
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.data.tokenize import prompt_ids

__all__ = ["SchemaGuidedDecoder"]

_IS = " is"
_SEP = ","
_DIGITS = "0123456789"


class SchemaGuidedDecoder:
    """Samples rows of ``codec``'s schema with the model choosing every value (see the module docstring).

    Args:
        model, tokenizer: the (DP-fine-tuned) causal LM and its tokenizer. For digit-by-digit
            columns the tokenizer must write digits one per token (SmolLM2's and Llama's do); this
            is checked.
        codec: the :class:`TabularCodec` the model was trained with.
        temperature: divides each value's log probability (sequence level) or each digit's logit.
        max_enumerated: columns with at most this many values are scored value by value.
        chunk_size: candidate values scored in one forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, codec: TabularCodec, *, temperature: float = 1.0,
                 max_enumerated: int = 256, chunk_size: int = 64) -> None:
        if not isinstance(codec, TabularCodec):
            raise DPConfigError(f"schema-guided decoding needs a TabularCodec; got {type(codec).__name__}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive; got {temperature!r}.")
        self.model, self.tokenizer, self.codec = model, tokenizer, codec
        self.temperature = float(temperature)
        self.max_enumerated = int(max_enumerated)
        self.chunk_size = int(chunk_size)
        self._eos = tokenizer.eos_token_id
        if self._eos is None:
            raise DPConfigError("schema-guided decoding ends a row with the end-of-sequence token; the tokenizer has none.")
        self._digit_ids: tuple[list[int], int] | None = None  # set by _plan when a column is written digit by digit
        self._plans = [self._plan(c) for c in codec.schema.columns]

    # -- the plan of each column: its candidate values, or digit-by-digit --------------------------

    def _plan(self, column: Any) -> tuple[str, Any]:
        values = self._enumerate(column)
        if values is not None:
            return "enumerate", values
        if isinstance(column, IntegerColumn) and column.lower >= 0 and not column.nullable:
            self._digit_ids = self._digit_tokens()  # checks the tokenizer now, not halfway through sampling
            return "digits", (column.lower, column.upper)
        raise DPConfigError(
            f"schema-guided decoding cannot write column {column.name!r}: it has more than max_enumerated = "
            f"{self.max_enumerated} values and is not a non-negative, non-nullable integer. Raise max_enumerated, "
            "declare narrower bounds or a coarser precision, or sample freely (guided=False)."
        )

    def _enumerate(self, column: Any) -> list[str] | None:
        if isinstance(column, CategoricalColumn):
            values = [column.format(v) for v in column.categories]
        elif isinstance(column, IntegerColumn):
            if column.upper - column.lower + 1 > self.max_enumerated:
                return None
            values = [column.format(v) for v in range(column.lower, column.upper + 1)]
        elif isinstance(column, FloatColumn):
            scale = 10**column.precision
            lo, hi = round(column.lower * scale), round(column.upper * scale)
            if hi - lo + 1 > self.max_enumerated:
                return None
            values = [column.format(round(k / scale, column.precision) + 0.0) for k in range(lo, hi + 1)]
        else:  # pragma: no cover - the schema has no other column type
            raise DPConfigError(f"unknown column type {type(column).__name__}.")
        if column.nullable:
            values.append(column.format(None))
        return values

    def _digit_tokens(self) -> tuple[list[int], int]:
        """Each digit's token when it follows another digit, and the comma's token: both must be single
        tokens (SmolLM2, Llama and byte-level BPE tokenizers qualify); anything else is refused."""
        tok = self.tokenizer
        later = [tok(d, add_special_tokens=False)["input_ids"] for d in _DIGITS]
        comma = tok(_SEP, add_special_tokens=False)["input_ids"]
        if not all(len(t) == 1 for t in later) or len(comma) != 1:
            raise DPConfigError(
                "this tokenizer does not write digits one per token, so wide integer columns cannot be written "
                "digit by digit; raise max_enumerated or sample freely (guided=False)."
            )
        return [t[0] for t in later], comma[0]

    # -- sampling -----------------------------------------------------------------------------------

    def sample(self, prompts: Sequence[str], generator: np.random.Generator) -> list[str]:
        """One row body per prompt (the text after the prompt), every one valid for the schema."""
        return [self._sample_row(prompt, generator) for prompt in prompts]

    def _sample_row(self, prompt: str, rng: np.random.Generator) -> str:
        columns = self.codec.schema.columns
        start = prompt_ids(self.tokenizer, [prompt])[0]
        body = ""
        for j, (column, (how, what)) in enumerate(zip(columns, self._plans)):
            last = j == len(columns) - 1
            body += ("" if j == 0 else _SEP + " ") + column.name + _IS
            context = start + self._ids(body)
            if how == "enumerate":
                scores = self.value_logprobs(context, what, last=last)
                value = what[_draw(scores / self.temperature, rng)]
            else:
                value = self._digits(context, *what, last=last, rng=rng)
            body += " " + value
        return body

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def value_logprobs(self, context: Sequence[int], values: Sequence[str], *, last: bool) -> np.ndarray:
        """log p(" value" + end | context) for each value; the end is "," or, after the last column, EOS."""
        end = [self._eos] if last else []
        return self._suffix_logprobs(context, [self._ids(" " + v + ("" if last else _SEP)) + end for v in values])

    def _suffix_logprobs(self, context: Sequence[int], suffixes: Sequence[Sequence[int]]) -> np.ndarray:
        """log p(suffix | context) for each token sequence: the context runs once, its KV cache is shared."""
        import torch

        device = next(self.model.parameters()).device
        out = np.empty(len(suffixes), dtype=np.float64)
        with torch.inference_mode():
            first = self.model(input_ids=torch.tensor([list(context)], device=device), **cache_kwargs(self.model))
            base_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            for start in range(0, len(suffixes), self.chunk_size):
                chunk = suffixes[start : start + self.chunk_size]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), self._eos, dtype=torch.long, device=device)
                for row, seq in enumerate(chunk):
                    ids[row, : len(seq)] = torch.tensor(list(seq))
                cache = _repeat_cache(output_cache(first), len(chunk))
                mask = torch.ones((len(chunk), len(context) + width), dtype=torch.long, device=device)
                positions = torch.arange(len(context), len(context) + width, device=device).expand(len(chunk), -1)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    **cache_kwargs(self.model, cache, last_logits_only=False)).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                for row, seq in enumerate(chunk):
                    total = base_logp[seq[0]]
                    if len(seq) > 1:  # token i+1 is predicted at position i (right padding never read)
                        total = total + logp[row, torch.arange(len(seq) - 1), torch.tensor(list(seq[1:]))].sum()
                    out[start + row] = float(total)
        return out

    def _digits(self, context: list[int], lower: int, upper: int, *, last: bool, rng: np.random.Generator) -> str:
        import torch

        digit_ids, comma = self._digit_ids
        end = self._eos if last else comma
        device = next(self.model.parameters()).device
        # The first digit follows the space: " 5" may be one token or two, so it is scored as a sequence.
        firsts = [d for d in _DIGITS if _feasible(d, lower, upper)]
        leads = [self._ids(" " + d) for d in firsts]
        pick = _draw(self._suffix_logprobs(context, leads) / self.temperature, rng)
        written = firsts[pick]
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([list(context) + leads[pick]], device=device),
                             **cache_kwargs(self.model))
            while True:
                allowed = [(digit_ids[d], _DIGITS[d]) for d in range(10) if _feasible(written + _DIGITS[d], lower, upper)]
                if lower <= int(written) <= upper:
                    allowed.append((end, None))
                logits = out.logits[0, -1].float()
                chosen = torch.tensor([t for t, _ in allowed], device=device)
                pick = _draw(logits[chosen].double().cpu().numpy() / self.temperature, rng)
                token, digit = allowed[pick]
                if digit is None:
                    return written
                written += digit
                out = self.model(input_ids=torch.tensor([[token]], device=device),
                                 **cache_kwargs(self.model, output_cache(out)))


def _feasible(prefix: str, lower: int, upper: int) -> bool:
    """Whether some number written as ``prefix`` followed by zero or more digits lies in [lower, upper]."""
    if len(prefix) > 1 and prefix[0] == "0":
        return False  # no leading zeros
    if prefix == "0":
        return lower <= 0 <= upper
    value = int(prefix)
    for extra in range(len(str(upper)) - len(prefix) + 1):
        lo, hi = value * 10**extra, value * 10**extra + 10**extra - 1
        if lo <= upper and hi >= lower:
            return True
    return False


def _draw(scores: np.ndarray, rng: np.random.Generator) -> int:
    scores = np.asarray(scores, dtype=np.float64)
    p = np.exp(scores - scores.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def _repeat_cache(cache: Any, times: int) -> Any:
    """A copy of a one-row KV cache repeated ``times`` along the batch (the original is left as it is)."""
    import copy

    repeated = copy.deepcopy(cache)
    repeated.batch_repeat_interleave(times)
    return repeated
