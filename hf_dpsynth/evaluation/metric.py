"""One measured value with its sharing status: the unit every audit and evaluation result is made of.

A metric computed on private data without a DP mechanism (TSTR on a private held-out split, the
ε = ∞ reference, preparation counts, an uncharged audit's ε̂) is **owner-only**: it never goes into
a shareable export or a card unless the owner explicitly asks, and then it is labelled as such.
Metrics on public data, DP-released values and invalid rates of generated data are shareable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Metric"]


@dataclass(frozen=True)
class Metric:
    """A named value in a report section.

    Args:
        name: what was measured (``"TSTR accuracy (TF-IDF + logistic regression)"``).
        value: a number, a string, or None when not available.
        shareable: True only when publishing the value reveals nothing beyond the DP release.
        section: the report section (``"audit"``, ``"text fidelity"``, ``"downstream utility"``...).
        setting: which run it belongs to (``"ε = 4"``, ``"ε = ∞ (non-private)"``, ``"real data"``,
            ``"public-only (ε = 0)"``); empty for run-independent values.
        note: why it is owner-only, or how to read it.
    """

    name: str
    value: float | int | str | None
    shareable: bool
    section: str
    setting: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.value, float) and not math.isfinite(self.value) and not math.isinf(self.value):
            object.__setattr__(self, "value", None)  # NaN: not available

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        """The metric :meth:`to_dict` wrote (infinities written as ``"inf"`` / ``"-inf"`` read back)."""
        value = data["value"]
        if value in ("inf", "-inf"):
            value = math.inf if value == "inf" else -math.inf
        return cls(name=data["name"], value=value, shareable=bool(data["shareable"]), section=data["section"],
                   setting=data.get("setting", ""), note=data.get("note", ""))

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float) and math.isinf(value):
            value = "inf" if value > 0 else "-inf"
        return {"name": self.name, "value": value, "shareable": self.shareable, "section": self.section,
                "setting": self.setting, "note": self.note}
