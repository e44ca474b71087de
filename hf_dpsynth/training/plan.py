"""The DP-SGD plan of a training run, fixed before step 1: the ledger, q, T and σ.

Pure functions of the config, the number of privacy units N and the ledger (no model, no torch
state), so the plan can be read, tested and charged before anything is trained.

Privacy: the step count T and σ are decided here, before training, and never from the data
beyond its public N; the whole schedule (:func:`training_event`) is what the ledger is charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_dpsynth.errors import DPConfigError, InvalidPrivacyParameterError, PrivacyUnitMismatchError
from hf_dpsynth.privacy import PrivacyLedger, compute_epsilon, default_delta, dpsgd_event

if TYPE_CHECKING:  # pragma: no cover
    import dp_accounting

    from hf_dpsynth.training.config import DPSynthConfig

__all__ = ["DPTrainingPlan", "charge_metadata", "epsilon_after", "make_plan", "resolve_ledger", "training_event"]


@dataclass(frozen=True)
class DPTrainingPlan:
    """Everything derived before training (never written back into the user's config)."""

    num_units: int
    num_examples: int
    logical_batch_size: int
    sampling_probability: float
    num_steps: int
    steps_per_epoch: int
    noise_multiplier: float
    per_example_max_grad_norm: float
    delta: float
    privacy_unit: str
    accountant: str

    @property
    def expected_batch_size(self) -> float:
        return self.sampling_probability * self.num_units


def resolve_ledger(args: DPSynthConfig, ledger: PrivacyLedger | None, n: int) -> PrivacyLedger:
    """The ledger training charges: ``ledger`` once it agrees with the config and N, or a new one
    made from ``target_epsilon``/``target_delta`` (or, σ given, with exactly this schedule's ε)."""
    if ledger is not None:
        if args.target_epsilon is not None or args.target_delta is not None:
            raise DPConfigError(
                "target_epsilon/target_delta must be unset when a ledger is given: the ledger holds the "
                "budget and δ of the whole release (its 'training' share is what training may spend)."
            )
        if ledger.privacy_unit != args.privacy_unit:
            raise PrivacyUnitMismatchError(
                f"The ledger protects privacy_unit={ledger.privacy_unit!r} but training is configured with "
                f"privacy_unit={args.privacy_unit!r}; one release composes at one unit only."
            )
        if ledger.num_units is None:
            raise PrivacyUnitMismatchError(
                f"The ledger has no num_units; create it with num_units={n} (the number of "
                f"{args.privacy_unit}s in the training data) so that δ < 1/N can be checked and N reported."
            )
        if ledger.num_units != n:
            raise PrivacyUnitMismatchError(
                f"The ledger was created for N = {ledger.num_units} {args.privacy_unit}s but the training data "
                f"has N = {n} after contribution bounding; create the ledger with num_units={n}."
            )
        return ledger
    delta = args.target_delta if args.target_delta is not None else default_delta(n)
    if not delta < 1.0 / n:
        raise InvalidPrivacyParameterError(
            f"target_delta must be below 1/N = {1 / n:.3g} for N = {n} {args.privacy_unit}s; got {delta:g}. "
            f"A common choice is 1/(N·ln N) = {default_delta(n):.3g} (the default)."
        )
    if args.target_epsilon is not None:
        epsilon = args.target_epsilon
    elif args.noise_multiplier is None:
        raise DPConfigError(
            "Give target_epsilon= (σ is then calibrated), noise_multiplier= (ε follows from it), a shared "
            "ledger=, or noise_multiplier=0 to train without DP (reported as non-private)."
        )
    elif args.noise_multiplier == 0:
        epsilon = math.inf
    else:  # σ given: the budget is exactly what this schedule spends
        q = args.logical_batch_size / n
        event = dpsgd_event(
            noise_multiplier=args.noise_multiplier, sampling_probability=q, num_steps=_num_steps(args, n)
        )
        epsilon = compute_epsilon(event, delta=delta, accountant=args.accountant)
    return PrivacyLedger(
        epsilon=epsilon, delta=delta, privacy_unit=args.privacy_unit, num_units=n, accountant=args.accountant
    )


def make_plan(
    args: DPSynthConfig,
    n: int,
    num_examples: int,
    *,
    ledger: PrivacyLedger,
    stage: str,
    charged_sigma: float | None = None,
) -> DPTrainingPlan:
    """The plan for N = ``n`` units: q, T and σ (calibrated on ``ledger``'s ``stage`` share unless
    ``args`` gives it). ``charged_sigma`` is the σ of a resumed run ``ledger`` already charged: it is
    kept as it is, and the budget is not checked again for a spend that is already recorded."""
    q = args.logical_batch_size / n
    steps_per_epoch = _steps_per_epoch(args, n)
    num_steps = _num_steps(args, n)
    if charged_sigma is not None:
        # Resuming a run this ledger already charged: its σ is fixed, and its spend is recorded.
        sigma = charged_sigma
    elif args.noise_multiplier is not None:
        sigma = float(args.noise_multiplier)
    else:
        sigma = ledger.calibrate(stage, sampling_probability=q, num_steps=num_steps)
    event = dpsgd_event(noise_multiplier=sigma, sampling_probability=q, num_steps=num_steps)
    if charged_sigma is None and sigma > 0 and ledger.would_exceed(stage, event):
        raise InvalidPrivacyParameterError(
            f"noise_multiplier={sigma:g} for {num_steps} steps at q = {q:.4g} would exceed the ledger's "
            f"budget for stage '{stage}' (remaining ε = {ledger.remaining(stage):.4g}). Raise σ, take "
            "fewer steps, or leave noise_multiplier unset to calibrate it."
        )
    if sigma == 0 and math.isfinite(ledger.epsilon):
        raise InvalidPrivacyParameterError(
            "noise_multiplier=0 disables DP (ε = ∞), but the ledger has a finite budget "
            f"(ε = {ledger.epsilon:g}); a non-private run needs a ledger with epsilon=math.inf."
        )
    return DPTrainingPlan(
        num_units=n,
        num_examples=num_examples,
        logical_batch_size=args.logical_batch_size,
        sampling_probability=q,
        num_steps=num_steps,
        steps_per_epoch=steps_per_epoch,
        noise_multiplier=sigma,
        per_example_max_grad_norm=args.per_example_max_grad_norm,
        delta=ledger.delta,
        privacy_unit=args.privacy_unit,
        accountant=ledger.accountant or args.accountant,
    )


def training_event(plan: DPTrainingPlan, num_steps: int | None = None) -> dp_accounting.DpEvent:
    """The DP-SGD event of ``num_steps`` steps of ``plan`` (all T steps by default): what is charged."""
    return dpsgd_event(
        noise_multiplier=plan.noise_multiplier,
        sampling_probability=plan.sampling_probability,
        num_steps=plan.num_steps if num_steps is None else num_steps,
    )


def epsilon_after(plan: DPTrainingPlan, steps: int) -> float:
    """ε of the training stage had it stopped after ``steps`` steps (at most T) of ``plan``."""
    steps = min(steps, plan.num_steps)
    if steps == 0:
        return 0.0
    return compute_epsilon(training_event(plan, steps), delta=plan.delta, accountant=plan.accountant)


def charge_metadata(plan: DPTrainingPlan, *, run_id: str | None, public_units: int = 0) -> dict[str, Any]:
    """The mechanism parameters kept with the training charge (``run_id`` is bookkeeping, never carded)."""
    return {
        "mechanism": "DP-SGD (Poisson-subsampled Gaussian)",
        "noise_multiplier": plan.noise_multiplier,
        "sampling_probability": plan.sampling_probability,
        "num_steps": plan.num_steps,
        "per_example_max_grad_norm": plan.per_example_max_grad_norm,
        "logical_batch_size": plan.logical_batch_size,
        "run_id": run_id,
        **({"public_units": public_units} if public_units else {}),
    }


def _steps_per_epoch(args: DPSynthConfig, n: int) -> int:
    """Logical steps per epoch: an epoch is N / logical_batch_size Poisson draws (at least one)."""
    return max(1, round(n / args.logical_batch_size))


def _num_steps(args: DPSynthConfig, n: int) -> int:
    """T, by the Trainer's own formula for the number of optimizer steps (checked again at step 1)."""
    num_steps = args.max_steps if args.max_steps >= 0 else math.ceil(args.num_train_epochs * _steps_per_epoch(args, n))
    if num_steps < 1:
        raise DPConfigError(f"The schedule has no steps (num_train_epochs={args.num_train_epochs}, max_steps={args.max_steps}).")
    return num_steps
