"""A Poisson draw of privacy units, split among ranks and packed into padded physical chunks.

A unit's examples are never split across ranks; a unit too large for one chunk spans consecutive
chunks and is clipped once its last example is in (see :func:`plan_chunks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hf_dpsynth.data.tokenize import IGNORE_INDEX, TokenizedExamples
from hf_dpsynth.data.units import PrivacyUnits

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Chunk", "collate", "packing_order", "plan_chunks", "rank_share", "unit_lengths"]


@dataclass(frozen=True)
class Chunk:
    """One physical micro-batch: examples and, for each, its position among the step's units."""

    examples: np.ndarray
    unit_slots: np.ndarray
    """For each example, the index of its unit within ``units`` (for per-unit gradient sums)."""
    units: np.ndarray
    """The units that have examples in this chunk, in order."""
    completes: np.ndarray
    """For each unit in ``units``: True when this chunk holds its last example (clip it now)."""


def rank_share(draw: np.ndarray, units: PrivacyUnits, *, rank: int, world_size: int) -> np.ndarray:
    """The contiguous share of a step's draw (unit ids) that ``rank`` processes, balanced by example count."""
    if world_size == 1:
        return draw
    sizes = units.sizes()[draw]
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(1, world_size) * sizes.sum() / world_size, side="left")
    return np.split(draw, bounds)[rank] if len(draw) else draw


def unit_lengths(examples: TokenizedExamples, units: PrivacyUnits) -> np.ndarray:
    """Each unit's longest example, in tokens."""
    lengths = np.fromiter((len(ids) for ids in examples.input_ids), dtype=np.int64, count=len(examples))
    return np.maximum.reduceat(lengths[units.examples], units.offsets[:-1]) if len(lengths) else lengths


def packing_order(share: np.ndarray, lengths: np.ndarray, strategy: str) -> np.ndarray:
    """A rank's units in the order they are packed into chunks: longest first under
    ``strategy='group_by_length'`` (chunks of similar lengths, least padding), else as drawn.

    Only the packing changes: each unit's gradient is its own whatever chunk it lands in.
    """
    if strategy != "group_by_length" or len(share) < 2:
        return share
    return share[np.argsort(-lengths[share], kind="stable")]


def plan_chunks(share: np.ndarray, units: PrivacyUnits, chunk_size: int) -> list[Chunk]:
    """Pack a rank's units into chunks of at most ``chunk_size`` examples.

    A unit whose examples fit in one chunk is never split; a larger unit spans consecutive chunks
    and its gradient is accumulated across them before it is clipped. Nothing is ever dropped.
    """
    chunks: list[Chunk] = []
    cur_examples: list[int] = []
    cur_units: list[int] = []
    cur_slots: list[int] = []
    cur_completes: list[bool] = []

    def flush() -> None:
        if cur_examples:
            chunks.append(
                Chunk(
                    examples=np.asarray(cur_examples, dtype=np.int64),
                    unit_slots=np.asarray(cur_slots, dtype=np.int64),
                    units=np.asarray(cur_units, dtype=np.int64),
                    completes=np.asarray(cur_completes, dtype=bool),
                )
            )
            cur_examples.clear(), cur_units.clear(), cur_slots.clear(), cur_completes.clear()

    for unit in share.tolist():
        members = units.examples_of(unit).tolist()
        if len(cur_examples) + len(members) > chunk_size and len(members) <= chunk_size:
            flush()
        while members:
            room = chunk_size - len(cur_examples)
            if room == 0:
                flush()
                room = chunk_size
            take, members = members[:room], members[room:]
            cur_slots.extend([len(cur_units)] * len(take))
            cur_units.append(unit)
            cur_completes.append(not members)
            cur_examples.extend(take)
    flush()
    return chunks


def collate(examples: TokenizedExamples, rows: Sequence[int], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors with per-example ``position_ids`` (never a broadcast [1, T] row)."""
    import torch

    length = max((len(examples.input_ids[r]) for r in rows), default=1) or 1
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids, lab = examples.input_ids[r], examples.labels[r]
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(lab, dtype=torch.long)
        attention_mask[i, :n] = 1
        position_ids[i, :n] = torch.arange(n)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "labels": labels}
