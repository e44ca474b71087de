"""``TrainingPrivacyReport``: the training stage's guarantee, as ``trainer.privacy_report()`` returns it.

Built from the plan and the ledger only (:func:`build_privacy_report`): every number in it is public
(N, q, σ, C, T) or the ledger's own accounting of ε.

Privacy: the report states what is covered and what is not: logged losses and metrics are computed
on private data without DP (the note every report carries), and a reproducibility seed or σ = 0
is said out loud.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.privacy import PrivacyLedger
    from hf_dpsynth.training.plan import DPTrainingPlan

__all__ = ["TrainingPrivacyReport", "build_privacy_report"]

_NOT_PRIVATE_NOTE = (
    "Logged training losses, gradient norms and evaluation metrics are computed on private data "
    "without DP: they are for the data owner and are not covered by the guarantee."
)


@dataclass(frozen=True)
class TrainingPrivacyReport:
    """What ``trainer.privacy_report()`` returns: the training stage's guarantee, from the ledger."""

    epsilon: float
    """ε of the training stage alone (all T charged steps)."""
    epsilon_total: float
    """ε composed over everything charged to the ledger (histograms, training, ...)."""
    epsilon_budget: float
    delta: float
    noise_multiplier: float
    sampling_probability: float
    num_steps: int
    steps_taken: int
    num_units: int
    logical_batch_size: int
    per_example_max_grad_norm: float
    accountant: str
    privacy_unit: str
    adjacency: str
    private: bool
    reproducibility_seed_set: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        rows = [
            ("ε (training stage)", f"{self.epsilon:.4g}"),
            ("ε (ledger, composed)", f"{self.epsilon_total:.4g} of {self.epsilon_budget:.4g}"),
            ("δ", f"{self.delta:.3g}"),
            ("noise multiplier σ", f"{self.noise_multiplier:.4g}"),
            ("sampling probability q", f"{self.sampling_probability:.4g}"),
            ("steps (taken / charged)", f"{self.steps_taken} / {self.num_steps}"),
            ("privacy units N", f"{self.num_units} ({self.privacy_unit}s, public)"),
            ("expected batch", f"{self.logical_batch_size} {self.privacy_unit}s"),
            ("clip C", f"{self.per_example_max_grad_norm:g}"),
            ("accountant", self.accountant),
            ("adjacency", self.adjacency),
            ("private", "yes" if self.private else "NO (DP disabled)"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["DP training privacy report"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def build_privacy_report(
    plan: DPTrainingPlan, ledger: PrivacyLedger, *, epsilon: float, steps_taken: int, dp_seed_set: bool
) -> TrainingPrivacyReport:
    """The report of a run of ``plan`` charged to ``ledger``: ``epsilon`` is the training stage's ε
    (the ledger's charge once the run is charged, else what the plan would spend)."""
    p = plan
    report = ledger.report()
    notes = [_NOT_PRIVATE_NOTE]
    if dp_seed_set:
        notes.append("dp_seed was set: the sampling and noise are reproducible, which is for tests only.")
    if p.noise_multiplier == 0:
        notes.append("noise_multiplier=0: DP is disabled; this model carries no privacy guarantee.")
    return TrainingPrivacyReport(
        epsilon=epsilon,
        epsilon_total=ledger.epsilon_spent(),
        epsilon_budget=ledger.epsilon,
        delta=p.delta,
        noise_multiplier=p.noise_multiplier,
        sampling_probability=p.sampling_probability,
        num_steps=p.num_steps,
        steps_taken=steps_taken,
        num_units=p.num_units,
        logical_batch_size=p.logical_batch_size,
        per_example_max_grad_norm=p.per_example_max_grad_norm,
        accountant=report.accountant or p.accountant,
        privacy_unit=p.privacy_unit,
        adjacency=report.adjacency,
        private=report.private and p.noise_multiplier > 0,
        reproducibility_seed_set=dp_seed_set,
        notes=tuple(notes),
    )
