"""Checks of privacy parameters shared by events, calibration and the ledger.

Each check returns the value as a plain Python ``float``/``int`` (so numpy scalars never reach a
saved ledger) or raises :class:`~hf_dpsynth.errors.InvalidPrivacyParameterError` saying what was
wrong, what was given and how to fix it.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from hf_dpsynth.errors import InvalidPrivacyParameterError


def real(name: str, value: Any, *, fix: str, allow_inf: bool = False) -> float:
    """``value`` as a float; refuses bools, non-numbers, NaN and (unless allowed) infinities."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidPrivacyParameterError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}. {fix}"
        )
    result = float(value)
    if math.isnan(result) or (math.isinf(result) and not allow_inf):
        raise InvalidPrivacyParameterError(f"{name} must be finite; got {value!r}. {fix}")
    return result


def epsilon(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """An ε budget or target: > 0 (``math.inf`` only where ``allow_inf``)."""
    fix = "Pass a positive ε such as 1.0, 4.0 or 8.0" + (
        " (or math.inf to disable DP)." if allow_inf else "."
    )
    result = real(name, value, fix=fix, allow_inf=allow_inf)
    if not result > 0:
        raise InvalidPrivacyParameterError(f"{name} must be > 0; got {value!r}. {fix}")
    return result


def delta(name: str, value: Any) -> float:
    """A δ: strictly between 0 and 1."""
    fix = "Pass δ in (0, 1), below 1/N for N privacy units; 1/(N·ln N) is a common choice."
    result = real(name, value, fix=fix)
    if not 0.0 < result < 1.0:
        raise InvalidPrivacyParameterError(f"{name} must be in (0, 1); got {value!r}. {fix}")
    return result


def sampling_probability(name: str, value: Any) -> float:
    """A Poisson sampling rate q in (0, 1]."""
    fix = "Pass q = expected batch size / number of privacy units, in (0, 1]."
    result = real(name, value, fix=fix)
    if not 0.0 < result <= 1.0:
        raise InvalidPrivacyParameterError(f"{name} must be in (0, 1]; got {value!r}. {fix}")
    return result


def noise_multiplier(name: str, value: Any) -> float:
    """A noise multiplier σ ≥ 0 (σ = 0 means no noise: a non-private mechanism)."""
    fix = "Pass σ ≥ 0 (noise std = σ × L2 sensitivity); σ = 0 means no privacy."
    result = real(name, value, fix=fix)
    if result < 0:
        raise InvalidPrivacyParameterError(f"{name} must be ≥ 0; got {value!r}. {fix}")
    return result


def count(name: str, value: Any, *, minimum: int) -> int:
    """A whole number ≥ ``minimum`` (steps, rounds, privacy units)."""
    fix = f"Pass an integer ≥ {minimum}."
    if isinstance(value, bool):
        raise InvalidPrivacyParameterError(f"{name} must be an integer; got {value!r}. {fix}")
    try:
        result = operator.index(value)
    except TypeError:
        raise InvalidPrivacyParameterError(
            f"{name} must be an integer; got {value!r} of type {type(value).__name__}. {fix}"
        ) from None
    if result < minimum:
        raise InvalidPrivacyParameterError(f"{name} must be ≥ {minimum}; got {value!r}. {fix}")
    return int(result)
