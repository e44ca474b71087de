"""A run folder: every path a run writes, its state (``run_state.json``) and the check that lets an
output be reused only with its charge.

```
run_state.json          the recipe's fingerprint, the files it read (path, SHA-256), each stage's status
privacy_ledger.json     every charge of the release; the bound ledger saves it inside each charge
preparation.json        what preparation did (OWNER-ONLY counts beside the shareable rules)
label_histogram.json    the DP label distribution (reused on rerun; lost → charged again)
keywords.json           the DP keywords per label (recipes with a keywords share; reused like the histogram)
adapter/                the DP LoRA adapter (adapter_sampler recipes)
checkpoint-*/           training checkpoints (PRIVATE: secret seeds; never uploaded)
synthetic/              the synthetic dataset (data.parquet + generation_info.json)
audit/                  a charged audit's results (audit.json holds owner-only control results too)
public_only/            the public baseline (base model, no private record; evaluation option)
metrics.json            the evaluation's metrics (OWNER-ONLY ones among them), for `hf-dpsynth card`
report/                 the shareable report (Markdown, JSON, plots)
report_owner/           the owner-only report (metrics on private data; do not publish)
summary.json            ε per stage, records, invalid rate, headline utility
README.md               the DP dataset card (adapter/README.md: the DP adapter card)
*.charge.json           each charged output's sidecar: the ids of the charges that paid for it, its digest
```

Privacy: a folder holds one run (one fingerprint); an output is reused only when its sidecar's
charges are in the loaded ledger and its digest matches (:mod:`hf_dpsynth.pipeline.outputs`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.pipeline.data import check_sources
from hf_dpsynth.pipeline.outputs import LOCK_FILE, check_reused_output
from hf_dpsynth.pipeline.recipe import Recipe
from hf_dpsynth.privacy.ledger import LEDGER_FILE

__all__ = ["AUDIT_DIR", "OWNER_CARDS", "STATE_FILE", "RunFolder", "RunState", "load_run_recipe"]

STATE_FILE = "run_state.json"
AUDIT_DIR = "audit"
#: Where owner-only renders of the cards go (never README.md, never inside adapter/: nothing uploads them).
OWNER_CARDS = {"dataset": "README.owner.md", "adapter": "adapter.README.owner.md"}


class RunState:
    """``run_state.json``: the recipe's fingerprint, the files it read (path and content digest) and
    each stage's status. Written once the data is prepared, so a data error claims no folder."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def load(cls, root: Path, recipe: Recipe) -> tuple[RunState | None, Recipe]:
        """The folder's state (None for a new run) and the recipe reading the files the run recorded."""
        path = root / STATE_FILE
        if not path.is_file():
            return None, recipe
        data = json.loads(path.read_text(encoding="utf-8"))
        fingerprint = recipe.fingerprint()
        if data.get("fingerprint") != fingerprint:
            raise DPConfigError(
                f"{root} holds a different run (recipe {data.get('name')!r}, fingerprint {data.get('fingerprint')}); "
                f"this recipe's fingerprint is {fingerprint}. Use another output folder rather than mix two runs."
            )
        return cls(path, data), check_sources(recipe, data.get("sources", {}), where=f"the run in {root}")

    @classmethod
    def create(cls, root: Path, recipe: Recipe, sources: dict[str, Any]) -> RunState:
        root.mkdir(parents=True, exist_ok=True)
        state = cls(root / STATE_FILE, {"name": recipe.name, "fingerprint": recipe.fingerprint(),
                                        "recipe": recipe.to_dict(), "sources": sources, "stages": {}})
        state.save()
        return state

    @property
    def started(self) -> list[str]:
        return sorted(self.data["stages"])

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage) == "done"

    def mark(self, stage: str, status: str) -> None:
        self.data["stages"][stage] = status
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (see the module docstring)."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def ledger_file(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def preparation(self) -> Path:
        return self.root / "preparation.json"

    @property
    def label_histogram(self) -> Path:
        return self.root / "label_histogram.json"

    @property
    def keywords(self) -> Path:
        return self.root / "keywords.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def audit(self) -> Path:
        return self.root / AUDIT_DIR

    @property
    def public_only(self) -> Path:
        return self.root / "public_only"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_owner(self) -> Path:
        return self.root / "report_owner"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def dataset_card(self) -> Path:
        return self.root / "README.md"

    @property
    def adapter_card(self) -> Path:
        return self.adapter / "README.md"

    def owner_card(self, kind: str) -> Path:
        return self.root / OWNER_CARDS[kind]

    @property
    def cards(self) -> tuple[Path, ...]:
        """Every card file a run may hold (shareable and owner-only)."""
        return (self.dataset_card, self.adapter_card, *(self.owner_card(k) for k in OWNER_CARDS))

    def check_new(self) -> None:
        """Refuse a folder that holds files but no run: it is not ours to write into."""
        if self.state_file.is_file() or not self.root.exists():
            return
        if any(p.name != LOCK_FILE for p in self.root.iterdir()):
            raise DPConfigError(f"{self.root} is not empty and holds no run state: choose an empty or new output folder.")

    def reuse(self, path: Path, ledger: Any) -> None:
        """Refuse to reuse ``path`` unless the charges that paid for it are in ``ledger`` and it is unchanged."""
        check_reused_output(path, ledger, ledger_path=self.ledger_file)


def load_run_recipe(folder: str | os.PathLike[str]) -> Recipe:
    """The recipe a run folder was produced with (from its run_state.json), reading the very files the
    run read (absolute paths), wherever the command runs from; refused when one of them changed."""
    from hf_dpsynth.pipeline.recipe import load_recipe

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise DPConfigError(f"{folder} holds no run (no {STATE_FILE}); give the output folder of `hf-dpsynth run`.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if "recipe" not in data:
        raise DPConfigError(f"{path} predates recipe recording; rerun the recipe into a new folder.")
    return check_sources(load_recipe(data["recipe"]), data.get("sources", {}), where=f"the run in {folder}")
