"""Secret randomness of DP-SGD: Poisson sampling of privacy units and the Gaussian noise.

Both are pure functions of a secret seed and the step index, so a resumed run reproduces exactly
the draws and the noise that the interrupted run would have used, and never replays earlier noise
(docs/DP_CORRECTNESS.md rows 9, 27). The seeds come from OS entropy unless an explicit test seed is given;
they are private and live only in (private) checkpoints.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SecretSeeds:
    """The two secrets of one training run. Never logged, never put in a card."""

    sampling: int
    noise: int

    @classmethod
    def fresh(cls, dp_seed: int | None = None) -> SecretSeeds:
        """From OS entropy, or derived from an explicit reproducibility seed (tests only)."""
        if dp_seed is None:
            return cls(sampling=secrets.randbits(128), noise=secrets.randbits(128))
        words = np.random.SeedSequence([0x68666470, int(dp_seed)]).generate_state(8, np.uint32)
        as_int = [int.from_bytes(words[i : i + 4].astype("<u4").tobytes(), "little") for i in (0, 4)]
        return cls(sampling=as_int[0], noise=as_int[1])


def _entropy(seed: int, step: int, stream: int) -> list[int]:
    # SeedSequence takes arbitrarily large non-negative ints: split into 32-bit words explicitly.
    words = [(seed >> (32 * i)) & 0xFFFFFFFF for i in range(4)]
    return [*words, stream, int(step)]


class PoissonSampler:
    """One Bernoulli(q) draw over all N privacy units per logical step.

    The draw is identical on every rank (same seed, same step), so the ranks can split it among
    themselves without accelerate's batch-sampler sharding, which would give each rank its own draw.
    """

    def __init__(self, *, num_units: int, sampling_probability: float, seed: int):
        self.num_units = num_units
        self.sampling_probability = sampling_probability
        self._seed = seed

    def draw(self, step: int) -> np.ndarray:
        """The sorted unit ids drawn at ``step`` (possibly none: an empty draw is still a step)."""
        rng = np.random.default_rng(_entropy(self._seed, step, 1))
        return np.flatnonzero(rng.random(self.num_units) < self.sampling_probability)


def noise_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of step ``step``'s Gaussian noise (one per step: nothing is ever replayed)."""
    state = np.random.SeedSequence(_entropy(seed, step, 2)).generate_state(2, np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return generator


def dropout_seed(seed: int, step: int) -> int:
    """Seed of the torch RNG during step ``step``'s forward passes, so dropout masks are secret too.

    Privacy: with public dropout masks, removing one example would shift the masks of the others
    (they are drawn by position in the chunk), which the sensitivity analysis does not allow for.
    """
    state = np.random.SeedSequence(_entropy(seed, step, 3)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
