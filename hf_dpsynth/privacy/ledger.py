"""The privacy ledger: the one (ε, δ) budget of a synthetic-data release, and everything spent.

Every mechanism that touches private data — DP histograms, DP-SGD training, private prediction,
Private Evolution, audits — charges its dp-accounting event here *before* it runs. The ledger
composes all charges with one accountant (PLD, or RDP when a planned stage needs it), refuses a
charge that would exceed the budget or its stage's share while leaving itself unchanged, and
saves to JSON atomically so that a resumed run continues from what was spent.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import dp_accounting

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import (
    BudgetPlanError,
    InvalidPrivacyParameterError,
    LedgerConflictError,
    LedgerFormatError,
    PrivacyBudgetExceededError,
    UnplannedStageError,
)
from hf_dpsynth.privacy import _validation
from hf_dpsynth.privacy.calibration import (
    Constraint,
    SigmaOutOfRange,
    calibrate_dpsgd,
    out_of_range_error,
)
from hf_dpsynth.privacy.events import (
    ACCOUNTANT_KINDS,
    AccountantName,
    accountant_for_kinds,
)
from hf_dpsynth.privacy.charges import (
    ADJACENCY,
    Charge,
    PrivacyUnit,
    StagePlan,
    check_privacy_unit,
    check_stage_name,
    checked_num_units,
    planned_kind,
)
from hf_dpsynth.privacy.composition import commit, propose, refusal
from hf_dpsynth.privacy.ledger_format import ledger_from_dict, ledger_report, ledger_to_dict, stage_kind
from hf_dpsynth.privacy.report import LedgerReport, json_copy

__all__ = ["LEDGER_FILE", "PrivacyLedger"]

LEDGER_FILE = "privacy_ledger.json"
"""The file name of a run's ledger (in a trainer's output_dir, in a pipeline's run folder)."""


_AccountantSource = Literal["given", "plan", "first_charge"]


class PrivacyLedger:
    """The total (ε, δ) budget of one synthetic-data release, and every charge against it.

    Args:
        epsilon: the total ε budget; ``math.inf`` disables DP (every charge is accepted and the
            report says the release is not private).
        delta: the δ of the guarantee, in (0, 1) and below 1/N when N is known.
        privacy_unit: ``"example"`` or ``"user"`` — what one neighbouring dataset adds or removes.
        num_units: N, the number of privacy units (public, disclosed in the card), or None until a
            charge states it.
        accountant: ``"pld"`` or ``"rdp"``, or None to let :meth:`plan` (or the first charge)
            choose: PLD when every stage's mechanism kind allows it, RDP otherwise.

    Privacy: protects one privacy unit under add/remove adjacency, with the ledger's
    (ε, δ), provided every mechanism that touches private data charges here before it runs.
    Charges at another privacy unit are refused: a mixed ledger guarantees only the weaker unit.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        delta: float,
        privacy_unit: PrivacyUnit = "example",
        num_units: int | None = None,
        accountant: AccountantName | None = None,
    ) -> None:
        self._epsilon = _validation.epsilon("epsilon", epsilon, allow_inf=True)
        self._delta = _validation.delta("delta", delta)
        self._privacy_unit = check_privacy_unit("privacy_unit", privacy_unit)
        self._num_units: int | None = None
        if num_units is not None:
            self._num_units = checked_num_units(num_units, self._delta)
        if accountant is not None and accountant not in ACCOUNTANT_KINDS:
            raise InvalidPrivacyParameterError(
                f"accountant must be 'pld', 'rdp' or None; got {accountant!r}. Leave it None to "
                "let the ledger choose from the planned stages."
            )
        self._accountant: AccountantName | None = accountant
        self._accountant_source: _AccountantSource | None = "given" if accountant else None
        self._plan: dict[str, StagePlan] | None = None
        self._charges: list[Charge] = []
        # Cached composition state: the trainer never calls an accountant on its hot path.
        self._total_accountant: dp_accounting.PrivacyAccountant | None = None
        self._stage_accountants: dict[str, dp_accounting.PrivacyAccountant] = {}
        self._total_epsilon = 0.0
        self._stage_epsilons: dict[str, float] = {}
        self._non_private_stages: set[str] = set()
        self._path: Path | None = None

    # ----------------------------------------------------------------------------------------
    # Properties
    # ----------------------------------------------------------------------------------------

    @property
    def epsilon(self) -> float:
        """The total ε budget (``math.inf`` when DP is disabled)."""
        return self._epsilon

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def privacy_unit(self) -> str:
        return self._privacy_unit

    @property
    def num_units(self) -> int | None:
        return self._num_units

    @property
    def adjacency(self) -> str:
        return ADJACENCY

    @property
    def accountant(self) -> AccountantName | None:
        """The ledger's accountant once fixed (given, planned, or chosen at the first charge)."""
        return self._accountant

    @property
    def stage_plan(self) -> Mapping[str, StagePlan] | None:
        """The planned stages (read-only), or None when no plan was made."""
        return None if self._plan is None else MappingProxyType(self._plan)

    @property
    def charges(self) -> tuple[Charge, ...]:
        return tuple(self._charges)

    @property
    def private(self) -> bool:
        """False once a non-private event was charged, or when the budget is infinite."""
        return math.isfinite(self._epsilon) and not self._non_private_stages

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(epsilon={self._epsilon!r}, delta={self._delta!r}, "
            f"privacy_unit={self._privacy_unit!r}, num_units={self._num_units!r}, "
            f"accountant={self._accountant!r}, spent={self._total_epsilon!r}, "
            f"charges={len(self._charges)})"
        )

    # ----------------------------------------------------------------------------------------
    # Planning
    # ----------------------------------------------------------------------------------------

    def plan(self, shares: Mapping[str, float], *, kinds: Mapping[str, str] | None = None) -> None:
        """Plans the stages: each may spend ``share × ε`` on its own; the shares sum to ≤ 1.

        Vocabulary stages (:data:`~hf_dpsynth.privacy.STAGE_KINDS`) have a known mechanism kind;
        any other stage needs one in ``kinds``. Unless the ledger was given an accountant, this
        fixes it: PLD when every planned kind allows it, RDP otherwise. Must be called before
        the first charge; afterwards, charging an unplanned stage is refused.

        Privacy: shares bound what each stage can spend even if an earlier stage spent less
        than its share; the total ε still bounds all stages together.
        """
        if self._charges:
            raise BudgetPlanError(
                f"plan() must be called before the first charge; {len(self._charges)} charge(s) "
                "are already recorded. Plan every stage up front, when the ledger is created."
            )
        if not isinstance(shares, Mapping) or not shares:
            raise BudgetPlanError(
                f"shares must be a non-empty dict of stage name → share of ε; got {shares!r}. "
                'Example: {"label_histogram": 0.1, "training": 0.9}.'
            )
        kinds = {} if kinds is None else dict(kinds)
        unknown = sorted(set(kinds) - set(shares))
        if unknown:
            raise BudgetPlanError(
                f"kinds names stages that have no share: {unknown}. Give every stage in kinds a "
                "share too."
            )
        planned: dict[str, StagePlan] = {}
        for stage, share in shares.items():
            check_stage_name(stage, error=BudgetPlanError)
            if isinstance(share, bool) or not isinstance(share, numbers.Real) or not (
                math.isfinite(share) and 0 < share <= 1
            ):
                raise BudgetPlanError(
                    f"The share of stage {stage!r} must be a number in (0, 1]; got {share!r}. "
                    "A share is the fraction of the total ε the stage may spend."
                )
            planned[stage] = StagePlan(float(share), planned_kind(stage, kinds.get(stage)))
        total = math.fsum(p.share for p in planned.values())
        if total > 1 + 1e-9:
            raise BudgetPlanError(
                f"The shares sum to {total:.6g}, above 1: the stages could together spend more "
                f"than ε. Got {dict(shares)!r}; scale them so that they sum to at most 1."
            )
        needed = accountant_for_kinds(p.kind for p in planned.values())
        if self._accountant is not None and self._accountant_source == "given":
            unsupported = sorted(
                stage
                for stage, p in planned.items()
                if p.kind not in ACCOUNTANT_KINDS[self._accountant]
            )
            if unsupported:
                raise BudgetPlanError(
                    f"The ledger was created with accountant={self._accountant!r}, which cannot "
                    f"compose the mechanisms of stages {unsupported}. Create it with "
                    "accountant='rdp' (or accountant=None to let the plan choose)."
                )
        else:
            self._accountant, self._accountant_source = needed, "plan"
        self._plan = planned
        self._persist()

    # ----------------------------------------------------------------------------------------
    # Charging
    # ----------------------------------------------------------------------------------------

    def charge(
        self,
        stage: str,
        event: dp_accounting.DpEvent,
        *,
        privacy_unit: PrivacyUnit | None = None,
        num_units: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Charge:
        """Records ``event`` against ``stage`` — or refuses it before anything is spent.

        Refused (PrivacyBudgetExceededError, ledger unchanged) when the composed ε of all charges
        would exceed the budget, or the stage's own composed ε its planned share. Also refused:
        an unplanned stage once a plan exists, an event the ledger's accountant cannot compose,
        another privacy unit or N than the ledger's (a ledger without N adopts the first one
        given). ``metadata`` is a small JSON-able dict of mechanism parameters kept with the
        charge and in the report.

        Privacy: call this before the mechanism runs; a bound ledger (:meth:`bind`) is saved before
        this returns, so a crash never re-runs a mechanism uncharged.
        """
        meta = json_copy({} if metadata is None else metadata, what="metadata")
        proposal = self._propose(stage, event, privacy_unit=privacy_unit, num_units=num_units)
        if proposal.refusal is not None:
            raise PrivacyBudgetExceededError(proposal.refusal)
        timestamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        charge = self._commit(proposal, Charge(proposal.stage, event, meta, timestamp))
        self._persist()
        return charge

    def record(self, charge: Charge) -> Charge:
        """Records a charge made earlier (same id, event and metadata), e.g. a resumed run's, re-recorded
        into a fresh ledger: checked and refused exactly as :meth:`charge` (nothing new is spent by
        the mechanism, but this ledger now accounts for it). A charge already held is refused."""
        if charge.id in self.charge_ids():
            raise LedgerFormatError(f"charge {charge.id} is already in this ledger.")
        proposal = self._propose(charge.stage, charge.event, privacy_unit=None, num_units=None)
        if proposal.refusal is not None:
            raise PrivacyBudgetExceededError(proposal.refusal)
        committed = self._commit(proposal, charge)
        self._persist()
        return committed

    def charge_ids(self, stage: str | None = None) -> tuple[str, ...]:
        """The ids of every charge (or of one stage's charges), in the order they were made."""
        return tuple(c.id for c in self._charges if stage is None or c.stage == stage)

    def would_exceed(self, stage: str, event: dp_accounting.DpEvent) -> bool:
        """Whether :meth:`charge` would refuse ``event`` for budget reasons (nothing is spent).

        Other problems (unplanned stage, unsupported event) raise as :meth:`charge` would.
        """
        return self._propose(stage, event, privacy_unit=None, num_units=None).refusal is not None

    _propose = propose  # privacy/composition.py: what a charge would do, computed before committing

    _refusal = refusal

    _commit = commit

    def _check_planned(self, stage: str) -> None:
        if self._plan is not None and stage not in self._plan:
            raise UnplannedStageError(
                f"Stage {stage!r} is not in this ledger's plan (planned: {sorted(self._plan)}). "
                "Every stage that spends budget must be planned before the first charge; add "
                "it to the plan when the ledger is created."
            )

    def _accountant_name(self) -> str:
        return (self._accountant or "pld").upper() + " accountant"

    # ----------------------------------------------------------------------------------------
    # Queries
    # ----------------------------------------------------------------------------------------

    def epsilon_spent(self, stage: str | None = None) -> float:
        """The composed ε of all charges, or of one stage's charges alone.

        Cached at charge time: no accountant is called here.

        ``math.inf`` once a non-private event was charged.
        """
        if stage is None:
            return self._total_epsilon
        check_stage_name(stage, error=UnplannedStageError)
        self._check_planned(stage)
        return self._stage_epsilons.get(stage, 0.0)

    def remaining(self, stage: str | None = None) -> float:
        """The ε still available: ε − spent; for a planned stage also at most share × ε − its spend."""
        if math.isinf(self._epsilon):
            return math.inf
        left = max(0.0, self._epsilon - self._total_epsilon)
        if stage is None or self._plan is None:
            if stage is not None:
                check_stage_name(stage, error=UnplannedStageError)
            return left
        spent = self.epsilon_spent(stage)
        return min(left, max(0.0, self._plan[stage].share * self._epsilon - spent))

    def calibrate(self, stage: str, *, sampling_probability: float, num_steps: int) -> float:
        """The smallest DP-SGD noise multiplier σ that ``stage`` can be charged with now.

        σ is such that ``charge(stage, dpsgd_event(σ, q, T))`` fits the total budget and the
        stage's share given everything already charged (ledger accountant and δ), and is at most
        0.5 % above the smallest such σ (the same search as
        :func:`~hf_dpsynth.privacy.calibrate_noise_multiplier`). Returns 0.0 when DP is disabled
        (ε = inf). Raises PrivacyBudgetExceededError when no σ fits (budget exhausted).

        Privacy: the σ is computed from public quantities (budget, q, T) only.
        """
        check_stage_name(stage, error=UnplannedStageError)
        self._check_planned(stage)
        q = _validation.sampling_probability("sampling_probability", sampling_probability)
        steps = _validation.count("num_steps", num_steps, minimum=1)
        if math.isinf(self._epsilon):
            return 0.0
        accountant = self._accountant or "pld"  # DP-SGD events are PLD-compatible
        stage_events = tuple(c.event for c in self._charges if c.stage == stage)
        constraints = [
            Constraint(
                events=tuple(c.event for c in self._charges),
                budget=self._epsilon,
                exact_base=self._total_accountant,
            )
        ]
        if self._plan is not None:
            constraints.append(
                Constraint(
                    events=stage_events,
                    budget=self._plan[stage].share * self._epsilon,
                    exact_base=self._stage_accountants.get(stage),
                )
            )
        try:
            return calibrate_dpsgd(
                constraints,
                accountant=accountant,
                delta=self._delta,
                sampling_probability=q,
                num_steps=steps,
            )
        except SigmaOutOfRange as exc:
            if exc.side == "above":
                raise PrivacyBudgetExceededError(
                    f"No noise multiplier up to {exc.sigma:g} lets {steps} DP-SGD steps at "
                    f"sampling probability {q:g} fit stage {stage!r}: ε left is "
                    f"{self.remaining(stage):.4g} for the stage and {self.remaining():.4g} in "
                    f"total (budget ε = {self._epsilon:g}). Take fewer steps or a lower "
                    "sampling probability; the budget is (nearly) spent."
                ) from None
            raise out_of_range_error(
                exc, accountant, what=f"the remaining budget of stage {stage!r}"
            ) from None

    # ----------------------------------------------------------------------------------------
    # Report
    # ----------------------------------------------------------------------------------------

    def report(self) -> LedgerReport:
        """The guarantee so far: composed ε, budget, unit, accountant, and each stage's spend."""
        return ledger_report(self)

    _stage_kind = stage_kind

    # ----------------------------------------------------------------------------------------
    # Persistence
    # ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to resume: budget, unit, N, accountant, plan and every charge."""
        return ledger_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        """The ledger :meth:`to_dict` describes, with every charge replayed in order (the same accountant,
        so a resumed run continues exactly where the saved one stopped)."""
        return ledger_from_dict(cls, data)

    @property
    def path(self) -> Path | None:
        """The file this ledger is bound to (:meth:`bind`), or None."""
        return self._path

    def bind(self, path: str | os.PathLike[str]) -> PrivacyLedger:
        """Binds the ledger to ``path`` and saves it there now; from then on :meth:`plan`,
        :meth:`charge` and :meth:`record` save it there (atomically) before they return, so before
        the mechanism runs, and nothing else needs to write it. Returns the ledger.

        Refused (LedgerConflictError, nothing written) when ``path`` holds a ledger with a charge
        this one does not hold: writing this ledger there would forget that spend.

        Privacy: a charge is on disk before its mechanism runs, so a crash never re-runs a
        mechanism uncharged.
        """
        self._refuse_forgetting(Path(path))
        self._path = Path(path)
        self._persist()
        return self

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """The ledger saved at ``path``, bound to it (see :meth:`bind`)."""
        ledger = cls.load(path)
        ledger._path = Path(path)
        return ledger

    def _persist(self) -> None:
        if self._path is not None:
            # Another ledger bound to the same file (a second process or script) may have charged since:
            # never write over spend this one does not hold.
            self._refuse_forgetting(self._path)
            self.save(self._path)

    def _refuse_forgetting(self, path: Path) -> None:
        """LedgerConflictError (nothing written) when ``path`` holds a charge this ledger does not hold."""
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8")).get("charges") or []
        except (ValueError, AttributeError) as exc:
            raise LedgerFormatError(f"{path} is not a privacy ledger ({exc}); refusing to write over it.") from exc
        mine = set(self.charge_ids())
        missing = [c for c in saved if isinstance(c, dict) and c.get("id") not in mine]
        if missing:
            raise LedgerConflictError(
                f"{path} records {len(missing)} charge(s) (stages {sorted({str(c.get('stage')) for c in missing})}) "
                "that this ledger does not hold: writing it there would forget that spend. Load that ledger "
                f"(PrivacyLedger.open({str(path)!r})) to charge on top of it, or use another file."
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the ledger to ``path`` as JSON, atomically (temp file, fsync, rename): the one
        function that writes a ledger file. A bound ledger (:meth:`bind`) calls it inside every
        charge; call it yourself only for a copy (a checkpoint's) or an unbound ledger.
        """
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """The ledger saved at ``path`` (see :meth:`save`)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LedgerFormatError(f"{path} is not valid JSON: {exc}.") from exc
        return cls.from_dict(data)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


