"""Private prediction's mechanism maths: the clipped, averaged score vector, the sparse-vector
statistic, ρ per private token, and sampling one token from the scores.

Privacy: these functions are where the guarantee is made. Softmax sampling of the clipped logits
summed over a batch and divided by the public expected batch size s is an exponential mechanism;
one record moves every coordinate of the score vector by at most c/s (and its spread by at most
2c/s), so a private token costs ½(c/(sτ))² (zCDP) at temperature τ. The optional sparse-vector
gate's statistic moves by at most 1/s and costs 2/(sσ_svt)² per private token. Top-k / top-p
masks are computed from the public prompt's logits only. Nothing here reads a record: callers
pass logits, the public s, c, τ and the gate's public parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hf_dpsynth.errors import InvalidPrivacyParameterError

__all__ = [
    "SparseVectorGate",
    "aggregate_logits",
    "clip_logits",
    "private_prediction_rho",
    "public_mask",
    "sample_token",
    "svt_statistic",
]


def clip_logits(logits: torch.Tensor, clip: float) -> torch.Tensor:
    """``max(−c, z − max z + c)`` per row: every coordinate lands in ``[−c, c]``, the top one at c."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values + clip
    return shifted.clamp(min=-clip)


def aggregate_logits(logits: torch.Tensor, *, clip: float, expected_batch_size: int,
                     public_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The mechanism's score vector: clipped logits summed over the batch, divided by the public s.

    With ``public_logits`` (the public prompt's), each context contributes its log-probabilities'
    difference from the public ones clipped to ±c, added to the public log-probabilities:
    ``log p_pub + (1/s)·Σ_i clip(log p_i − log p_pub, ±c)`` — the public model's distribution,
    moved by what the private prompts agree on (an empty batch samples the public model).

    Privacy: adding or removing one context moves each coordinate by at most c/s (and the spread,
    max − min over coordinates, of that move by at most 2c/s), whatever the realised batch size;
    the public term is the same on both sides. So ρ per token is the same in either form.
    """
    if public_logits is not None:
        # float64: log-probabilities reach −1000, where a float32 rounding (~1e-4) would exceed the c/s bound.
        reference = torch.log_softmax(public_logits.double(), dim=-1)
        if logits.shape[0] == 0:
            return reference.clone()
        moved = (torch.log_softmax(logits.double(), dim=-1) - reference).clamp(-clip, clip)
        return reference + moved.sum(dim=0) / expected_batch_size
    if logits.shape[0] == 0:
        return torch.zeros(logits.shape[-1], dtype=torch.float32, device=logits.device)
    return clip_logits(logits.float(), clip).sum(dim=0) / expected_batch_size


def svt_statistic(logits: torch.Tensor, public_logits: torch.Tensor, *, expected_batch_size: int) -> float:
    """‖(1/s)·Σ_i softmax(z_i) − softmax(z_pub)‖₁ with the public s (one record moves it by ≤ 1/s)."""
    public = torch.softmax(public_logits.float(), dim=-1)
    if logits.shape[0] == 0:
        return float(public.abs().sum())
    private = torch.softmax(logits.float(), dim=-1).sum(dim=0) / expected_batch_size
    return float((private - public).abs().sum())


def private_prediction_rho(
    *,
    max_private_tokens: int,
    clip: float,
    temperature: float,
    expected_batch_size: int,
    svt_noise: float | None = None,
) -> float:
    """ρ (zCDP) of ``max_private_tokens`` private tokens: r·[½(c/(sτ))² + 2/(sσ_svt)²]."""
    per_token = 0.5 * (clip / (expected_batch_size * temperature)) ** 2
    if svt_noise is not None:
        per_token += 2.0 / (expected_batch_size * svt_noise) ** 2
    return max_private_tokens * per_token


@dataclass(frozen=True)
class SparseVectorGate:
    """The sparse-vector option: a token is private only when the private prompts' distribution is
    far (L1 statistic + Lap(2σ) ≥ threshold + Lap(σ)) from the public prompt's; otherwise it is
    sampled from the public prompt for free.

    Args:
        threshold: θ, on the L1 statistic (in [0, 2]).
        noise: σ_svt, the Laplace scale of the threshold noise (the statistic gets 2σ_svt).
    """

    threshold: float = 0.5
    noise: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and math.isfinite(self.noise) and self.noise > 0):
            raise InvalidPrivacyParameterError(
                f"SparseVectorGate needs a finite threshold and a positive noise; got {self.threshold!r}, {self.noise!r}."
            )


def public_mask(public_logits: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor | None:
    """Top-k / top-p allowed tokens, computed from the public prompt's logits only (None: no mask).

    Privacy: a mask computed from private logits would break the exponential mechanism; this one
    reads the public prompt's logits and nothing else.
    """
    if not top_k and top_p >= 1:
        return None
    keep = torch.ones_like(public_logits, dtype=torch.bool)
    if top_k:
        kth = torch.topk(public_logits, min(top_k, public_logits.numel())).values[-1]
        keep &= public_logits >= kth
    if top_p < 1:
        probs = torch.softmax(public_logits.float(), dim=-1)
        sorted_probs, idx = torch.sort(probs, descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly above each token
        allowed = torch.zeros_like(keep)
        allowed[idx[before < top_p]] = True
        keep &= allowed
    return keep


def sample_token(scores: torch.Tensor, mask: torch.Tensor | None, gen: torch.Generator) -> int:
    """One token from softmax(``scores``) over the tokens ``mask`` allows (the exponential mechanism)."""
    scores = (scores.double() if scores.dtype == torch.float64 else scores.float()).cpu()
    if mask is not None:
        scores = scores.masked_fill(~mask.cpu(), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
