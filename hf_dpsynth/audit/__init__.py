"""Empirical privacy audits: canaries, membership scores, the one-run ε lower bound, controls.

An audit can show that a DP claim is false (ε̂ > ε: a bug); it can never show that it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "AuditCeiling": "hf_dpsynth.audit.bound",
    "audit_ceiling": "hf_dpsynth.audit.bound",
    "guess_grid": "hf_dpsynth.audit.bound",
    "one_run_epsilon_lower_bound": "hf_dpsynth.audit.bound",
    "one_run_p_value": "hf_dpsynth.audit.bound",
    "CanarySet": "hf_dpsynth.audit.canaries",
    "make_canaries": "hf_dpsynth.audit.canaries",
    "NGramModel": "hf_dpsynth.audit.scores",
    "model_scores": "hf_dpsynth.audit.scores",
    "ngram_scores": "hf_dpsynth.audit.scores",
    "AuditConfig": "hf_dpsynth.audit.audit",
    "AuditReport": "hf_dpsynth.audit.audit",
    "AuditResult": "hf_dpsynth.audit.audit",
    "evaluate_guesses": "hf_dpsynth.audit.audit",
    "run_audit": "hf_dpsynth.audit.audit",
}
__all__ = [
    "AuditCeiling",
    "AuditConfig",
    "AuditReport",
    "AuditResult",
    "CanarySet",
    "NGramModel",
    "audit_ceiling",
    "evaluate_guesses",
    "guess_grid",
    "make_canaries",
    "model_scores",
    "ngram_scores",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "run_audit",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.audit.audit import AuditConfig, AuditReport, AuditResult, evaluate_guesses, run_audit
    from hf_dpsynth.audit.bound import (
        AuditCeiling,
        audit_ceiling,
        guess_grid,
        one_run_epsilon_lower_bound,
        one_run_p_value,
    )
    from hf_dpsynth.audit.canaries import CanarySet, make_canaries
    from hf_dpsynth.audit.scores import NGramModel, model_scores, ngram_scores

__getattr__, __dir__ = lazy_exports("hf_dpsynth.audit", _LAZY)
