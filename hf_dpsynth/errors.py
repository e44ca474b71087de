"""Every exception hf_dpsynth raises on purpose.

Each subclasses a built-in (so ``except ValueError`` keeps working) and :class:`DPSynthError`
(so ``except DPSynthError`` catches everything this package raises on purpose). Messages say what
was wrong, what was given, and how to fix it; where privacy is at stake they say why.
"""

from __future__ import annotations


class DPSynthError(Exception):
    """Base class of every error hf_dpsynth raises on purpose."""


class InvalidPrivacyParameterError(DPSynthError, ValueError):
    """A privacy parameter (ε, δ, sampling probability, steps, noise) is out of its range."""


class PrivacyBudgetExceededError(DPSynthError, RuntimeError):
    """A charge would push the composed ε above the budget, or a stage above its share.

    Raised *before* anything is spent: the ledger is left unchanged.
    """


class BudgetPlanError(DPSynthError, ValueError):
    """A budget plan is malformed (negative shares, shares summing above 1, unknown kinds)."""


class UnplannedStageError(DPSynthError, ValueError):
    """A charge names a stage that the ledger's plan does not contain."""


class UnsupportedEventError(DPSynthError, TypeError):
    """The ledger's accountant cannot compose this dp-accounting event."""


class PrivacyUnitMismatchError(DPSynthError, ValueError):
    """A component works at a different privacy unit (or N) than the ledger it charges."""


class LedgerFormatError(DPSynthError, ValueError):
    """A saved privacy ledger (or a serialised event or charge record) is malformed.

    Raised instead of guessing: a ledger that cannot be read back exactly cannot say what was spent.
    """


class MissingDependencyError(DPSynthError, ImportError):
    """An optional dependency or the embedded default model is not installed."""


class DPConfigError(DPSynthError, ValueError):
    """A training configuration would silently weaken the DP guarantee, or is inconsistent."""


class UnsupportedModelError(DPSynthError, TypeError):
    """The model has a layer or parameter that per-example DP-SGD cannot handle correctly."""


class DatasetError(DPSynthError, ValueError):
    """The training data is empty, lacks a required column, or is otherwise unusable."""


class SchemaError(DPSynthError, ValueError):
    """A codec's public schema is malformed, incomplete, or does not match the data.

    Categories and numeric bounds must be declared (public): reading them from the private data
    would release them without DP.
    """


class InvalidRecord(DPSynthError, ValueError):
    """A record (or a generated text) does not fit its codec: wrong shape, value or format.

    ``kind`` is a short machine-readable category (``"missing_column"``, ``"out_of_bounds"``,
    ``"unknown_category"``, ``"shape"``, ...) used to count invalid generations; ``reason`` is the
    human-readable explanation.
    """

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # keep kind when pickled across processes
        return (_rebuild_invalid_record, (self.reason, self.kind))


def _rebuild_invalid_record(reason: str, kind: str) -> InvalidRecord:
    return InvalidRecord(reason, kind=kind)


class PublishRefusedError(DPSynthError, RuntimeError):
    """A safety gate refused to publish: something in the release is not covered by the DP guarantee
    (canaries, verbatim training records, no ledger or card, DP off, secret seeds or checkpoints)."""


class CardError(DPSynthError, ValueError):
    """A DP dataset or model card is malformed or its privacy block does not validate."""


class ReusedOutputError(DPSynthError, RuntimeError):
    """A saved output cannot be reused: the charge that paid for it is not in the loaded ledger
    (deleted, replaced, another run's), or the output changed after it was charged. Reusing it
    would release it with an understated ε."""


class ClaimRefutedError(DPSynthError, RuntimeError):
    """A charged privacy audit refuted the release's claim (ε̂ > ε): the release stops."""


class LedgerConflictError(DPSynthError, RuntimeError):
    """A ledger cannot be bound to a file that records a charge it does not hold: writing it there
    would forget that spend."""


class CheckpointError(DPSynthError, RuntimeError):
    """A checkpoint cannot be resumed without replaying or losing privacy-relevant state."""


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """The error for an optional dependency that is not installed, naming the pip extra."""
    return MissingDependencyError(
        f"{package} is needed for this feature but is not installed. "
        f'Install it with: pip install "hf-dpsynth[{extra}]"'
    )
