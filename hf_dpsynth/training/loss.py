"""The per-example causal-LM loss used by DP training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_dpsynth.data.tokenize import IGNORE_INDEX


def per_example_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean next-token cross-entropy over its *own* target tokens, in fp32.

    ``labels[i, t]`` is the token predicted from position ``t - 1`` (``-100``: no loss there).

    Privacy: nothing batch-wide enters an example's loss (no batch token count, no
    ``num_items_in_batch``), so example i's gradient depends on example i alone; an example with no
    target tokens has loss 0 and gradient 0 (docs/DP_CORRECTNESS.md row 4).
    """
    shifted = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    token_loss = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), targets.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(targets)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
