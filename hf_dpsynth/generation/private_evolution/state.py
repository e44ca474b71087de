"""Private Evolution's resumable state: one JSON file, rewritten atomically after every step.

What it holds is public: the settings, the run id that ties the stage's charge in the ledger to
this run, the candidate populations (model outputs from public prompts, post-processing) and each
round's noisy vote histogram (a DP release, saved right after it is drawn). A round is marked
``drawing`` before its noise is drawn and ``drawn`` once its histogram is saved: a rerun reuses a
drawn histogram (never redraws it), and a round left ``drawing`` (its histogram lost after the
charge) is charged once more before it is redrawn: every draw started is counted (``attempts``,
saved before the noise is drawn) and must have been paid for, by the stage's charge or a redraw.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import CheckpointError

__all__ = ["STATE_FILE", "EvolutionState", "Round", "charged_sigma"]

STATE_FILE = "private_evolution_state.json"
_FORMAT = 1

Population = dict[str, list[str]]  # label → candidate texts (the label "" when the codec has none)


@dataclass
class Round:
    """Round t (1-based): the histogram of the votes on the population before it, then the next one."""

    status: str = "drawing"  # drawing → drawn (histogram saved) → varied (next population saved)
    attempts: int = 0  # noise draws started (saved before each draw): each must have been paid for
    histogram: list[float | None] | None = None  # per candidate of the population voted on; None: invalid
    population: Population | None = None  # after selection and variation


@dataclass
class EvolutionState:
    """The state of one Private Evolution run (see the module docstring)."""

    settings: dict[str, Any]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    initial: Population | None = None
    charged: bool = False
    sigma: float | None = None
    rounds: list[Round] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def open(cls, folder: str | Path | None, settings: dict[str, Any]) -> EvolutionState:
        """The saved state in ``folder`` (refused when its settings differ), or a new one (in memory
        without a folder)."""
        if folder is None:
            return cls(settings=settings)
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            state = cls(settings=settings, path=path)
            state.save()
            return state
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                raise ValueError("unknown format")
            saved = data["settings"]
            rounds = [Round(**r) for r in data["rounds"]]
            state = cls(settings=saved, run_id=data["run_id"], initial=data["initial"], charged=bool(data["charged"]),
                        sigma=data["sigma"], rounds=rounds, path=path)
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{path} is not a readable Private Evolution state; restore it, or start the run "
                                  "in a new folder (its charges stay in the ledger).") from None
        differing = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differing:
            raise CheckpointError(
                f"{path} belongs to a Private Evolution run with other settings ({', '.join(differing)}: saved "
                f"{[saved.get(k) for k in differing]}, now {[settings.get(k) for k in differing]}). Continue it with "
                "the same settings, or start in a new folder."
            )
        return state

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {
            "format": _FORMAT, "settings": self.settings, "run_id": self.run_id, "initial": self.initial,
            "charged": self.charged, "sigma": self.sigma,
            "rounds": [vars(r) for r in self.rounds],
        })

    def population_before(self, t: int) -> Population:
        """The population round t votes on: the initial one, or round t − 1's."""
        population = self.initial if t == 1 else self.rounds[t - 2].population
        if population is None:
            raise CheckpointError(f"round {t} has no population to vote on yet.")
        return population


def charged_sigma(folder: str | Path | None, ledger: Any, stage: str) -> float | None:
    """σ of the run saved in ``folder`` when ``ledger`` already holds its charge (a resumed run keeps
    the σ it paid for, whatever the share has left), else None."""
    from hf_dpsynth.privacy.charges import holds_run_charge

    path = None if folder is None else Path(folder) / STATE_FILE
    if path is None or ledger is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        run_id, sigma = data["run_id"], data["sigma"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # EvolutionState.open says what is wrong with it
    if not data.get("charged") or not isinstance(sigma, (int, float)) or not holds_run_charge(ledger, stage, run_id):
        return None
    return float(sigma)
