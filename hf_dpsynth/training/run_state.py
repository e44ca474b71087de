"""The state of a DP training run on disk: ``dp_state.json`` and the ledger copies beside it.

Every checkpoint keeps the run's id, its secret seeds, the step reached, a digest of the training
data and the plan (``dp_state.json``, written by :func:`write_run_state`), with a copy of the ledger.
:func:`read_run_state` is the one place that reads ``dp_state.json`` back: for a resumed run's
charged σ (before the plan is made) and to check that a resumed run continues its schedule.

Privacy: the seeds are secret, so a checkpoint is private (the Hub gates refuse ``dp_state.json``).
A run resumes only with the same DP settings on the same data, so its draws and noise are never
reused on anything else; and a ledger file that holds charges the trainer's ledger does not is never
overwritten (:func:`refuse_forgetting_earlier_spend`).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import CheckpointError
from hf_dpsynth.privacy import PrivacyLedger
from hf_dpsynth.privacy.charges import holds_run_charge
from hf_dpsynth.privacy.ledger import LEDGER_FILE
from hf_dpsynth.training.sampler import SecretSeeds

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.data.tokenize import TokenizedExamples
    from hf_dpsynth.privacy import Charge
    from hf_dpsynth.training.plan import DPTrainingPlan

__all__ = [
    "DP_STATE_FILE", "RunState", "charged_sigma_of_resumed_run", "checkpoint_charge", "data_fingerprint",
    "holds_run_charge", "new_run_secrets", "read_run_state", "refuse_forgetting_earlier_spend", "resumable_run_state",
    "write_run_state",
]

DP_STATE_FILE = "dp_state.json"


@dataclass(frozen=True)
class RunState:
    """What a checkpoint keeps of its run in ``dp_state.json``. Private: it holds the secret seeds."""

    run_id: str
    seeds: SecretSeeds
    global_step: int
    data_fingerprint: str | None
    plan: dict[str, Any]
    """The run's :class:`~hf_dpsynth.training.plan.DPTrainingPlan`, as saved (a dict)."""


def new_run_secrets(dp_seed: int | None, *, world_size: int) -> tuple[SecretSeeds, str]:
    """A new run's secret seeds (OS entropy unless ``dp_seed``) and its id, the same on every rank."""
    seeds = SecretSeeds.fresh(dp_seed)
    # Every rank must share the secret seeds (same draw everywhere); rank 0's are broadcast.
    if world_size > 1:
        from accelerate.utils import broadcast_object_list

        payload = broadcast_object_list([seeds.sampling, seeds.noise, uuid.uuid4().hex])
        return SecretSeeds(sampling=payload[0], noise=payload[1]), payload[2]
    return seeds, uuid.uuid4().hex


def data_fingerprint(examples: TokenizedExamples, offsets: np.ndarray) -> str:
    """A digest of the tokenised training data and its units (kept in private checkpoints only)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(offsets, dtype=np.int64).tobytes())
    for ids, labels in zip(examples.input_ids, examples.labels):
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def write_run_state(folder: str, state: RunState, ledger: PrivacyLedger) -> None:
    """Write ``state`` and a copy of ``ledger`` into the checkpoint ``folder`` (which exists)."""
    atomic_write_json(os.path.join(folder, DP_STATE_FILE), {
        "format": 1,
        "warning": "PRIVATE: the secret seeds of a DP training run. Never publish this folder.",
        "run_id": state.run_id,
        "sampling_seed": str(state.seeds.sampling),
        "noise_seed": str(state.seeds.noise),
        "global_step": state.global_step,
        "data_fingerprint": state.data_fingerprint,
        "plan": state.plan,
    })
    ledger.save(os.path.join(folder, LEDGER_FILE))


def read_run_state(checkpoint: str) -> RunState | None:
    """The run state kept in ``checkpoint``, or None when it holds no ``dp_state.json``."""
    path = os.path.join(str(checkpoint), DP_STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    return RunState(
        run_id=state["run_id"],
        seeds=SecretSeeds(sampling=int(state["sampling_seed"]), noise=int(state["noise_seed"])),
        global_step=int(state["global_step"]),
        data_fingerprint=state.get("data_fingerprint"),
        plan=state["plan"],
    )


def charged_sigma_of_resumed_run(checkpoint: Any, ledger: PrivacyLedger, stage: str) -> float | None:
    """σ of the run in ``checkpoint`` (``resume_from_checkpoint``) when ``ledger`` already holds its charge.

    The checkpoint's settings and data are still checked against this run when training resumes
    (:func:`resumable_run_state`); here only σ is taken, instead of calibrating again on a ledger
    whose stage budget that very run already spent.
    """
    if not checkpoint:
        return None
    state = read_run_state(checkpoint)
    if state is None:
        return None
    return float(state.plan["noise_multiplier"]) if holds_run_charge(ledger, stage, state.run_id) else None


def resumable_run_state(checkpoint: str, plan: DPTrainingPlan, fingerprint: str) -> RunState:
    """The run state of ``checkpoint``, once it continues ``plan`` exactly, on the data of ``fingerprint``."""
    state = read_run_state(checkpoint)
    if state is None:
        raise CheckpointError(
            f"{checkpoint} has no {DP_STATE_FILE}: without the run's sampling and noise state, resuming would "
            "replay or redraw noise that was already charged. Start a new run (it is charged again), or resume "
            "from a checkpoint written by DPSynthTrainer."
        )
    saved = state.plan
    mine = asdict(plan)
    differing = sorted(k for k in saved if k != "accountant" and saved[k] != mine.get(k))
    if differing:
        raise CheckpointError(
            f"The checkpoint {checkpoint} was written by a run with different DP settings "
            f"({', '.join(f'{k}: {saved[k]} -> {mine.get(k)}' for k in differing)}); a resumed run must "
            "continue the charged schedule exactly. Use the original configuration, or start a new run."
        )
    if state.data_fingerprint != fingerprint:
        raise CheckpointError(
            f"The checkpoint {checkpoint} was written while training on different data (after tokenisation and "
            "contribution bounding). Resuming would reuse the run's draws and noise on other data, and two such "
            "models together cancel the noise. Resume with the original data, or start a new run."
        )
    return state


def checkpoint_charge(checkpoint: str, stage: str, run_id: str) -> Charge | None:
    """The last ``stage`` charge of the run ``run_id`` in the ledger copy ``checkpoint`` holds (None without)."""
    saved = os.path.join(checkpoint, LEDGER_FILE)
    earlier = [c for c in (PrivacyLedger.load(saved).charges if os.path.isfile(saved) else ())
               if c.stage == stage and (c.metadata or {}).get("run_id") == run_id]
    return earlier[-1] if earlier else None


def refuse_forgetting_earlier_spend(ledger: PrivacyLedger, path: str, *, stage: str, run_id: str | None) -> None:
    """Refuse to charge when the ledger at ``path`` holds charges ``ledger`` does not.

    Called before every charge (a new run, or a resumed run re-recorded into a fresh ledger), so
    neither the in-memory ledger nor the file is touched when it refuses. This run's own ``stage``
    charge (``run_id``) counts as held: re-recording it is what a resume with a fresh ledger does.
    """
    if not os.path.isfile(path):
        return
    earlier = PrivacyLedger.load(path)
    mine = {_charge_key(c) for c in ledger.charges} | {(stage, run_id)}
    missing = [c for c in earlier.charges if _charge_key(c) not in mine]
    if missing:
        stages = sorted({c.stage for c in missing})
        raise CheckpointError(
            f"{path} records an earlier run whose ledger spent ε = {earlier.epsilon_spent():.4g} on the same "
            f"data, with {len(missing)} charge(s) (stages {stages}) that this trainer's ledger does not hold. "
            "Writing this trainer's ledger in its place would forget that spend. Pass "
            "ledger=PrivacyLedger.open(path) (to resume that run, or to charge a new run on top of it), or "
            "use another output_dir for unrelated data."
        )


def _charge_key(charge: Any) -> tuple:
    run_id = (charge.metadata or {}).get("run_id")
    return (charge.stage, run_id) if run_id else (charge.stage, charge.timestamp)
