"""Privacy units and contribution bounding.

Example-level DP protects one record; user-level DP protects everything one user contributed,
which is only meaningful once each user's contribution is bounded: at most
``max_examples_per_user`` records, chosen by a fixed public hash of (user id, the record's position
among that user's own records) — deterministic, and independent of every other user's data.
Exact duplicates within a user are collapsed first (they add no information, only weight).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hf_dpsynth.data.loading import column_values
from hf_dpsynth.data.tokenize import require_columns
from hf_dpsynth.errors import DatasetError

__all__ = ["BoundedRows", "PrivacyUnits", "bound_contributions", "build_privacy_units", "cap_user_rows", "group_rows_by_user"]

PrivacyUnitName = Literal["example", "user"]
_CAP_SALT = b"hf_dpsynth/contribution-cap/v1"


def _cap_key(user: Any, nth: int) -> bytes:
    # Keyed on the user and the position of the row among *that user's own* rows, never on a global
    # row index: which rows a user keeps must not depend on any other user's data.
    return hashlib.sha256(_CAP_SALT + repr(user).encode() + b"\x00" + str(nth).encode()).digest()


def check_user_level(privacy_unit: str, user_id_column: str | None, max_examples_per_user: int | None) -> None:
    """The clear errors for a privacy unit that is unknown or a user-level run that lacks what it needs."""
    if privacy_unit not in ("example", "user"):
        raise DatasetError(f"privacy_unit must be 'example' or 'user'; got {privacy_unit!r}.")
    if privacy_unit == "user":
        if not user_id_column:
            raise DatasetError(
                "privacy_unit='user' needs user_id_column= naming the column that identifies each user."
            )
        if isinstance(max_examples_per_user, bool) or not isinstance(max_examples_per_user, int) or max_examples_per_user < 1:
            raise DatasetError(
                "privacy_unit='user' needs max_examples_per_user= (a positive integer): each user's "
                f"contribution must be bounded; got {max_examples_per_user!r}."
            )


def group_rows_by_user(
    user_ids: Sequence[Any], *, column: str = "user id", rows: Iterable[int] | None = None
) -> dict[Any, list[int]]:
    """Row indices per user, users in order of first appearance; every row needs a hashable id.

    ``rows``: only these row indices (in order), e.g. the rows left after dropping invalid ones;
    the indices returned, and named in errors, are still those of ``user_ids``.
    """
    by_user: dict[Any, list[int]] = {}
    for row in range(len(user_ids)) if rows is None else rows:
        user = user_ids[row]
        if user is None or (isinstance(user, float) and user != user):
            raise DatasetError(
                f"Row {row} has no user id in column {column!r}; every row needs one for user-level DP. "
                "Drop those rows or give them their own ids before preparing."
            )
        if not isinstance(user, Hashable):
            raise DatasetError(f"Row {row}: the user id in column {column!r} must be a string or number; got {type(user).__name__}.")
        by_user.setdefault(user, []).append(row)
    return by_user


def cap_user_rows(user: Any, rows: Sequence[int], max_examples_per_user: int) -> list[int]:
    """The at most ``max_examples_per_user`` of ``rows`` (one user's rows, in order) that are kept.

    Privacy: the choice depends only on this user's id and the number of its rows.
    """
    if len(rows) <= max_examples_per_user:
        return list(rows)
    ranked = sorted(range(len(rows)), key=lambda nth: _cap_key(user, nth))
    return [rows[nth] for nth in sorted(ranked[:max_examples_per_user])]


@dataclass(frozen=True)
class PrivacyUnits:
    """Which examples belong to which privacy unit (CSR layout: unit u owns
    ``examples[offsets[u]:offsets[u + 1]]``). For example-level DP every unit is one example.

    ``num_units`` (N) is public: it sets the sampling rate and is disclosed in reports.
    """

    offsets: np.ndarray
    examples: np.ndarray

    @property
    def num_units(self) -> int:
        return len(self.offsets) - 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def examples_of(self, unit: int) -> np.ndarray:
        return self.examples[self.offsets[unit] : self.offsets[unit + 1]]

    @classmethod
    def one_per_example(cls, num_examples: int) -> PrivacyUnits:
        return cls(offsets=np.arange(num_examples + 1, dtype=np.int64), examples=np.arange(num_examples, dtype=np.int64))


@dataclass(frozen=True)
class BoundedRows:
    """The rows kept after bounding, grouped by unit, and what each rule removed.

    ``rows[offsets[u]:offsets[u + 1]]`` are unit u's rows (one row per unit at example level).
    ``num_units`` (and ``num_users``) are public; ``duplicates_removed`` and ``capped_removed``
    are counts over private data, for the data owner only.
    """

    rows: list[int]
    offsets: list[int]
    privacy_unit: PrivacyUnitName
    num_users: int | None
    duplicates_removed: int
    capped_removed: int

    @property
    def num_units(self) -> int:
        return len(self.offsets) - 1

    @property
    def units(self) -> PrivacyUnits:
        """The units over the kept rows: unit u owns positions ``offsets[u]:offsets[u + 1]`` of ``rows``."""
        return PrivacyUnits(offsets=np.asarray(self.offsets, dtype=np.int64),
                            examples=np.arange(len(self.rows), dtype=np.int64))


def bound_contributions(
    num_rows: int,
    *,
    privacy_unit: PrivacyUnitName,
    user_ids: Sequence[Any] | None = None,
    max_examples_per_user: int | None = None,
    dedupe_key: Callable[[int], Hashable] | None = None,
    user_id_column: str = "user id",
    rows: Sequence[int] | None = None,
) -> BoundedRows:
    """Group rows into privacy units, collapse exact duplicates within a user, cap each user.

    Args:
        num_rows: the number of rows.
        privacy_unit: ``"example"`` (every row its own unit) or ``"user"``.
        user_ids: one id per row (required at user level; at example level, duplicates are
            collapsed within each user when given).
        max_examples_per_user: the cap (user level).
        dedupe_key: maps a row index to the content that defines an exact duplicate; None keeps
            duplicates.
        rows: the row indices to bound (increasing), e.g. those left after dropping invalid
            rows; default all ``num_rows``. The rows returned are indices into the full data.

    Privacy: at user level, one user then moves at most ``max_examples_per_user`` records.
    """
    check_user_level(privacy_unit, "given" if user_ids is not None else None, max_examples_per_user)
    candidates = list(range(num_rows)) if rows is None else list(rows)
    if not candidates:
        raise DatasetError("The dataset is empty: there is nothing to protect or learn from.")
    if not (0 <= candidates[0] and candidates[-1] < num_rows and all(a < b for a, b in zip(candidates, candidates[1:]))):
        raise DatasetError(f"rows must be increasing, distinct row indices below num_rows={num_rows}.")
    if user_ids is None:
        return BoundedRows(candidates, list(range(len(candidates) + 1)), privacy_unit, None, 0, 0)
    if len(user_ids) != num_rows:
        raise DatasetError(f"got {len(user_ids)} user ids for {num_rows} rows.")
    by_user = group_rows_by_user(user_ids, column=user_id_column, rows=candidates)
    duplicates = capped = 0
    kept_rows: list[int] = []
    offsets = [0]
    for user, user_rows in by_user.items():
        if dedupe_key is not None:
            seen: set[Hashable] = set()
            unique = []
            for row in user_rows:
                key = dedupe_key(row)
                if key not in seen:
                    seen.add(key)
                    unique.append(row)
            duplicates += len(user_rows) - len(unique)
            user_rows = unique
        if privacy_unit == "user":
            kept = cap_user_rows(user, user_rows, max_examples_per_user)  # type: ignore[arg-type]
            capped += len(user_rows) - len(kept)
            kept_rows.extend(kept)
            offsets.append(len(kept_rows))
        else:
            for row in user_rows:
                kept_rows.append(row)
                offsets.append(len(kept_rows))
    if privacy_unit == "example":
        # Example level keeps dataset order; units are single rows.
        kept_rows.sort()
    return BoundedRows(kept_rows, offsets, privacy_unit, len(by_user), duplicates, capped)


def build_privacy_units(
    dataset: Any,
    *,
    privacy_unit: PrivacyUnitName,
    user_id_column: str | None = None,
    max_examples_per_user: int | None = None,
) -> tuple[PrivacyUnits, list[int]]:
    """Group a dataset's rows into privacy units and bound each user's contribution (no deduplication).

    Returns the units and the dataset rows kept. Unit u owns positions ``offsets[u]:offsets[u+1]``
    of the kept-rows list, so the examples must be tokenised in exactly that order (grouped by
    user). For user-level DP each user keeps at most ``max_examples_per_user`` rows, chosen as
    :func:`cap_user_rows` chooses them.

    Privacy: the cap bounds how much one user can move the training signal; the user count N is
    public (it sets the sampling rate) and is reported.
    """
    if len(dataset) == 0:
        raise DatasetError("The training dataset is empty: DP training needs at least one example.")
    check_user_level(privacy_unit, user_id_column, max_examples_per_user)
    if privacy_unit == "example":
        return PrivacyUnits.one_per_example(len(dataset)), list(range(len(dataset)))
    require_columns(dataset, [user_id_column], "user_id_column= must name the column that identifies each user.")
    bounded = bound_contributions(len(dataset), privacy_unit=privacy_unit,
                                  user_ids=column_values(dataset, user_id_column),
                                  max_examples_per_user=max_examples_per_user, user_id_column=user_id_column)
    return bounded.units, bounded.rows
