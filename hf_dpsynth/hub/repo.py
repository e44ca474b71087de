"""Hub repository ids, checked before anything runs."""

from __future__ import annotations

from hf_dpsynth.errors import DPConfigError

__all__ = ["check_repo_id"]


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if huggingface_hub accepts it (``name`` or ``namespace/name``), else a clear error."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DPConfigError(f"{repo_id!r} is not a valid Hub repo id: {exc}") from None
    return repo_id
