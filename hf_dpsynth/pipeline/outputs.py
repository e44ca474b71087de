"""Charged outputs of a run folder: each saved output names the charges that paid for it.

A run reuses what an earlier run in the same folder saved (the DP label histogram, the adapter,
the synthetic data, the audit). Reuse is free only when the output's charge is in the ledger
being reported: an output whose ledger was deleted, replaced or came from another run would be
released with an understated ε (docs/DP_CORRECTNESS.md row 31). So every output gets a sidecar
``<name>.charge.json`` beside it with the ids of the charges behind it and a digest of its
files; reusing it needs every id in the loaded ledger and a matching digest, otherwise the run
refuses and says why.

A run folder is used by one process at a time (:class:`RunLock`): two runs charging one ledger
file at once would each save a ledger without the other's charge.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json
from hf_dpsynth.errors import DPConfigError, ReusedOutputError

__all__ = ["LOCK_FILE", "RunLock", "check_reused_output", "output_digest", "record_output", "sidecar_path"]

LOCK_FILE = ".hf_dpsynth.lock"
_FORMAT = "hf_dpsynth.charged_output"
#: Files inside an output folder that are rewritten after the output was charged (cards): not digested.
_NOT_DIGESTED = ("README.md",)


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """``label_histogram.json`` → ``label_histogram.charge.json``; ``adapter/`` → ``adapter.charge.json``."""
    path = Path(output)
    return path.with_name(f"{path.stem}.charge.json")


def output_digest(output: str | os.PathLike[str]) -> str:
    """SHA-256 over an output file, or over every file of an output folder (relative path and bytes)."""
    path = Path(output)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name not in _NOT_DIGESTED)
    for file in files:
        rel = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(rel.encode() + b"\x00")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\x00")
    return digest.hexdigest()


def record_output(output: str | os.PathLike[str], ledger: Any, stages: Sequence[str]) -> Path:
    """Write ``output``'s sidecar: the ids of every charge of ``stages`` in ``ledger``, and its digest.

    An output of stages that hold no charge (e.g. a public-only baseline without a DP histogram)
    gets a sidecar with no ids: its reuse then needs only the digest to match.
    """
    ids = [c.id for c in ledger.charges if c.stage in stages]
    missing = [s for s in stages if not any(c.stage == s for c in ledger.charges)]
    if missing:
        raise ReusedOutputError(
            f"{output} is saved as an output of stage(s) {missing}, which hold no charge in the ledger: an output "
            "released by a mechanism must be paid for first."
        )
    return atomic_write_json(sidecar_path(output), {
        "format": _FORMAT, "stages": list(stages), "charge_ids": ids, "digest": output_digest(output),
    })


def check_reused_output(output: str | os.PathLike[str], ledger: Any, *, ledger_path: str | os.PathLike[str]) -> None:
    """Refuse to reuse ``output`` unless every charge behind it is in ``ledger`` and its files are unchanged."""
    path = Path(output)
    side = sidecar_path(path)
    fix = (f"Restore the ledger and the output this run wrote, or delete {path.name} (and {side.name}) so that its "
           "stage runs again and is charged again.")
    if not side.is_file():
        raise ReusedOutputError(f"{path} has no record of the charge that paid for it ({side.name} is missing), so "
                                f"its cost cannot be matched to the ledger {ledger_path}. {fix}")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        ids, digest, stages = list(data["charge_ids"]), str(data["digest"]), list(data["stages"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReusedOutputError(f"{side} is not a charged-output record ({exc}). {fix}") from exc
    held = set(ledger.charge_ids())
    absent = [i for i in ids if i not in held]
    if absent:
        raise ReusedOutputError(
            f"{path.name} was paid for by {len(absent)} charge(s) of stage(s) {stages} that the ledger {ledger_path} "
            "does not hold (it was deleted, replaced or belongs to another run): reusing it would release it with "
            f"an understated ε. {fix}"
        )
    unpaid = [stage for stage in stages if not set(ledger.charge_ids(stage)) & set(ids)]
    if unpaid:
        raise ReusedOutputError(
            f"{side.name} names no charge of stage(s) {unpaid} for {path.name} in the ledger {ledger_path}: "
            f"every stage an output rests on must name a charge that paid for it. {fix}"
        )
    if output_digest(path) != digest:
        raise ReusedOutputError(
            f"{path.name} changed after it was charged (its digest no longer matches {side.name}): it is not the "
            f"output the ledger paid for. {fix}"
        )


class RunLock:
    """An exclusive lock on a run folder for the life of one process (released when it exits).

    Uses ``fcntl.flock`` on ``<folder>/.hf_dpsynth.lock``; where ``fcntl`` does not exist the
    lock file is created exclusively and removed on release.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fh: Any = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's life
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fh.close()
            try:
                fh = open(self.path.with_suffix(".excl"), "x")  # noqa: SIM115
            except FileExistsError:
                raise self._busy() from None
        else:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise self._busy() from None
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            name = self._fh.name
            self._fh.close()
            self._fh = None
            if name.endswith(".excl"):  # pragma: no cover - not POSIX
                os.unlink(name)

    def _busy(self) -> DPConfigError:
        return DPConfigError(
            f"{self.path.parent} is in use by another hf-dpsynth process (its lock {self.path.name} is held). Two "
            "runs on one folder would each save a ledger without the other's charges: wait for it to finish, or use "
            "another output folder."
        )

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
