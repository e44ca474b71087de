"""What a ledger reports: each stage's spend and the release's guarantee, as JSON-able records.

``LedgerReport.to_dict()`` is what cards, gates and reports read; infinite ε are written ``"inf"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from hf_dpsynth.errors import LedgerFormatError

__all__ = ["LedgerReport", "StageReport", "json_copy", "json_number"]


@dataclasses.dataclass(frozen=True)
class StageReport:
    """What one stage spent (its own ε, composed alone) and the metadata of its charges."""

    name: str
    kind: str
    share: float | None
    epsilon_budget: float | None
    epsilon_spent: float
    charges: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "share": self.share,
            "epsilon_budget": json_number(self.epsilon_budget),
            "epsilon_spent": json_number(self.epsilon_spent),
            "charges": [json_copy(m) for m in self.charges],
        }


@dataclasses.dataclass(frozen=True)
class LedgerReport:
    """The privacy guarantee of a release: composed ε, the budget, the unit and every stage.

    ``private`` is False when any charge was non-private (σ = 0) or the budget is infinite (DP
    disabled); such a release carries no DP guarantee and must be labelled so.
    """

    stages: tuple[StageReport, ...]
    epsilon_spent: float
    epsilon_budget: float
    delta: float
    accountant: str | None
    adjacency: str
    privacy_unit: str
    num_units: int | None
    private: bool
    versions: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict for cards; infinite ε are written as the string ``"inf"``."""
        return {
            "epsilon_spent": json_number(self.epsilon_spent),
            "epsilon_budget": json_number(self.epsilon_budget),
            "delta": self.delta,
            "accountant": self.accountant,
            "adjacency": self.adjacency,
            "privacy_unit": self.privacy_unit,
            "num_units": self.num_units,
            "private": self.private,
            "stages": [stage.to_dict() for stage in self.stages],
            "versions": dict(self.versions),
        }

    def __str__(self) -> str:
        unit = f"{self.privacy_unit}-level DP, add/remove-one adjacency"
        units = f", N = {self.num_units}" if self.num_units is not None else ""
        accountant = self.accountant.upper() if self.accountant else "no accountant fixed yet"
        lines = [
            f"Privacy ledger: ε = {_fmt(self.epsilon_spent)} spent of {_fmt(self.epsilon_budget)}"
            f", δ = {self.delta:.3g} ({unit}{units}; {accountant})",
        ]
        header = ("stage", "kind", "share", "ε budget", "ε spent", "charges")
        rows = [
            (
                s.name,
                s.kind,
                "-" if s.share is None else f"{s.share:.3g}",
                "-" if s.epsilon_budget is None else _fmt(s.epsilon_budget),
                _fmt(s.epsilon_spent),
                str(len(s.charges)),
            )
            for s in self.stages
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(cells).rstrip())
        if not self.private:
            lines.append(
                "NOT PRIVATE: a non-private mechanism was charged or DP is disabled (ε = inf)."
            )
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


def json_copy(value: Any, *, what: str = "value") -> Any:
    """A deep copy of a JSON-able value (strict JSON: no NaN or infinities)."""
    if what == "metadata" and not isinstance(value, Mapping):
        raise LedgerFormatError(f"metadata must be a dict; got {value!r}.")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise LedgerFormatError(
            f"{what} must be JSON-serialisable (str keys; numbers, strings, lists, dicts; no NaN "
            f"or infinity); got {value!r}: {exc}."
        ) from exc


def json_number(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"
