"""The conditioning distribution of the adapter sampler: for each codec condition, its declared
categories and the probabilities to draw them with, from a DP histogram or declared public weights.

Privacy: post-processing. The probabilities come from DP histograms already charged in their own
stage, or from public weights; nothing here reads a private record. The categories are the codec's
public list, never the histogram's: a mismatch is an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hf_dpsynth.data.codecs import Codec
from hf_dpsynth.data.statistics import DPHistogram, DPHistogramRelease
from hf_dpsynth.errors import DPConfigError

__all__ = ["Conditioning", "conditioning_table"]

Conditioning = DPHistogram | DPHistogramRelease | Mapping[str, Mapping[str, float]] | None


def conditioning_table(codec: Codec, conditioning: Conditioning) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Per codec condition: its categories and the (DP or public) probabilities to draw them with."""
    conditions = codec.conditions
    if not conditions:
        if conditioning:
            raise DPConfigError("conditioning= was given but the codec has no conditions to fill in.")
        return {}
    if isinstance(conditioning, DPHistogram):
        conditioning = {conditioning.column: conditioning}
    elif isinstance(conditioning, DPHistogramRelease):
        conditioning = dict(conditioning.histograms)
    if not conditioning:
        raise DPConfigError(
            f"The codec conditions on {list(conditions)}: pass conditioning= with a DP histogram for each "
            "(e.g. dp_label_histogram(...)), or declared public weights {name: {value: weight}}."
        )
    table = {}
    for name, categories in conditions.items():
        source = conditioning.get(name)
        if source is None:
            raise DPConfigError(f"conditioning has no distribution for the codec's condition {name!r}; it has {list(conditioning)}.")
        if isinstance(source, DPHistogram):
            cats, weights = source.categories, np.asarray(source.counts, dtype=np.float64)
        elif isinstance(source, Mapping):
            cats, weights = tuple(source), np.asarray([float(v) for v in source.values()], dtype=np.float64)
            if (weights < 0).any() or not np.isfinite(weights).all():
                raise DPConfigError(f"the weights for {name!r} must be finite and non-negative; got {dict(source)}.")
        else:
            raise DPConfigError(f"conditioning[{name!r}] must be a DPHistogram or a mapping value -> weight; got {type(source).__name__}.")
        if set(cats) != set(categories):
            raise DPConfigError(
                f"The conditioning for {name!r} covers {sorted(cats)} but the codec declares {sorted(categories)}: "
                "they must be the same public list."
            )
        if weights.sum() <= 0:
            raise DPConfigError(
                f"The conditioning histogram for {name!r} is empty (every count is 0 after noise): there is "
                "nothing to condition on. Spend more budget on the histogram, or declare public weights."
            )
        table[name] = (tuple(cats), weights / weights.sum())
    return table
