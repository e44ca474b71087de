"""Many prompts decoded in lockstep with one KV cache: prefill once, then one batched step per token.

Private prediction appends the *same* token to every context of a batch, so after a single
prefill of the (left-padded) prompts each new token costs one forward pass of length 1 over all
contexts, reusing their caches — instead of re-reading every prompt per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hf_dpsynth._compat import cache_kwargs, output_cache

__all__ = ["LockstepContexts", "recompute_last_logits"]


class LockstepContexts:
    """The next-token logits of ``len(prompts)`` contexts that all receive the same tokens.

    Args:
        model: a causal LM (transformers or peft) that accepts ``past_key_values`` and
            ``position_ids``.
        prompts: token ids of each context (non-empty).
        pad_token_id: the id used for left padding (masked out).
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], *, pad_token_id: int) -> None:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every context needs at least one prompt token.")
        self.model = model
        self.device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        n = len(prompts)
        ids = torch.full((n, width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, seq in enumerate(prompts):
            ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        self._mask = mask.to(self.device)
        self._next_pos = mask.sum(dim=1).to(self.device)  # the position of the next token per row
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = model(
                input_ids=ids.to(self.device), attention_mask=self._mask, position_ids=positions.to(self.device),
                **cache_kwargs(model),
            )
        self._cache = output_cache(out)
        self.logits = out.logits[:, -1, :].float()

    def __len__(self) -> int:
        return self._mask.shape[0]

    def step(self, token: int) -> torch.Tensor:
        """Append ``token`` to every context; returns the new next-token logits (fp32, [n, vocab])."""
        n = len(self)
        self._mask = torch.cat([self._mask, torch.ones((n, 1), dtype=self._mask.dtype, device=self.device)], dim=1)
        ids = torch.full((n, 1), int(token), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=self._mask, position_ids=self._next_pos.unsqueeze(1),
                **cache_kwargs(self.model, self._cache),
            )
        self._cache = output_cache(out)
        self._next_pos = self._next_pos + 1
        self.logits = out.logits[:, -1, :].float()
        return self.logits


def recompute_last_logits(model: Any, prompts: Sequence[Sequence[int]], generated: Sequence[int]) -> torch.Tensor:
    """Reference without any cache or padding: each context's full sequence run on its own."""
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.as_tensor([list(prompt) + list(generated)], dtype=torch.long, device=device)
            rows.append(model(input_ids=ids).logits[0, -1, :].float())
    return torch.stack(rows)
