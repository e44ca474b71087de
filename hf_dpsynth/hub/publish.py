"""Publishing a synthetic dataset or a DP adapter to the Hub, behind the safety gates.

Every gate runs before anything leaves the machine (see :mod:`hf_dpsynth.hub.gates`); repos are
private by default, and an existing public repo is refused for a private push (never left public
silently); the data and its card go up in **one** commit, so the Hub never holds the data without
its card (or under a stale one). Uploads go through the real client (``HfApi.create_commit``) to
whatever endpoint is configured (``HF_ENDPOINT``). Tokens are passed to the client only, never
printed or logged.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_dpsynth.errors import PublishRefusedError
from hf_dpsynth.hub.gates import GateReport, check_card, check_folder, check_release, record_texts
from hf_dpsynth.hub.repo import check_repo_id

__all__ = ["DATA_DIR", "PushResult", "push_adapter", "push_synthetic_dataset"]

DATA_DIR = "data"
"""Where a pushed dataset's Parquet shards go (``data/train-00000-of-00001.parquet``, as
``Dataset.push_to_hub`` names them; ``datasets.load_dataset(repo_id)`` finds them there)."""
_MAX_SHARD_BYTES = 500 * 1024 * 1024  # the default max_shard_size of Dataset.push_to_hub


@dataclass(frozen=True)
class PushResult:
    """Where the release went and which gates it passed (no token, no private text).

    ``private`` is the repo's visibility as the Hub reports it after the push; ``commit`` the
    id of the single commit that holds the release."""

    repo_id: str
    repo_type: str
    private: bool
    gates_passed: tuple[str, ...]
    commit: str | None = None


def _card_text(card: Any) -> str:
    if card is None:
        return ""
    return card if isinstance(card, str) else str(card)


def _prepared_repo(api: Any, repo_id: str, repo_type: str, private: bool) -> bool:
    """Create the repo if needed; refuse a private push into an existing public repo. Its visibility."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    is_private = api.repo_info(repo_id, repo_type=repo_type).private is True
    if private and not is_private:
        raise PublishRefusedError(
            f"Publishing refused before anything left the machine:\n- the {repo_type} repo {repo_id} already exists "
            f"and is public, but this push asked for a private repo: nothing was uploaded. Make it private first "
            f"(HfApi().update_repo_settings({repo_id!r}, repo_type={repo_type!r}, private=True)), push to a new "
            "repo id, or publish publicly on purpose (private=False, hf-dpsynth push --public)."
        )
    return is_private


def _dataset_operations(dataset: Any, folder: Path) -> list[Any]:
    """The dataset as Parquet shards under ``data/`` (written into ``folder``), as commit additions."""
    from huggingface_hub import CommitOperationAdd

    num_shards = max(1, math.ceil(dataset.data.nbytes / _MAX_SHARD_BYTES))
    num_shards = min(num_shards, max(1, len(dataset)))
    operations = []
    for index in range(num_shards):
        name = f"{DATA_DIR}/train-{index:05d}-of-{num_shards:05d}.parquet"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(path))
        operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)))
    return operations


def push_synthetic_dataset(
    path_or_dataset: Any,
    repo_id: str,
    *,
    card: Any,
    ledger_report: Mapping[str, Any] | None,
    private_texts: Iterable[str] | None,
    canaries: Iterable[str] = (),
    codec: Any | None = None,
    private: bool = True,
    token: str | None = None,
    allow_non_private: bool = False,
    allow_refuted_audit: bool = False,
) -> PushResult:
    """Push a synthetic dataset and its DP card in one commit, after every gate passed.

    Args:
        path_or_dataset: a ``datasets.Dataset``, or a run's ``synthetic/`` folder.
        repo_id: the dataset repo (checked before anything runs).
        card: the DP dataset card (text or ``DatasetCard``); it must match ``ledger_report`` and list
            ``VERBATIM_OWNER_CHECK`` (and ``CANARY_OWNER_CHECK`` when canaries are given) in its
            ``owner_checks``.
        ledger_report: ``PrivacyLedger.report().to_dict()`` of the release.
        private_texts: the private training records (as texts), for the verbatim gate.
        canaries: the audit's saved canary texts, when an audit used this data.
        codec: encodes each synthetic record as text for the gates (default: its columns joined), and
            strips the public prompt from the canaries.
        private: the repo must be private (default); an existing public repo is then refused.
        allow_non_private: publish a release whose ledger says DP was off (the card must say so).
        allow_refuted_audit: publish a release whose card's audit refuted the claim (ε̂ > ε); the card
            must carry the override statement (render it with ``refuted_audit_override=True``).

    Raises ``PublishRefusedError`` (nothing uploaded) when a gate fails or the repo is public.
    """
    from datasets import Dataset

    check_repo_id(repo_id)
    if isinstance(path_or_dataset, Dataset):
        dataset = path_or_dataset
    else:
        from hf_dpsynth.generation.io import load_synthetic

        folder = Path(path_or_dataset)
        check_folder(folder)
        dataset = load_synthetic(folder)
    text = _card_text(card)
    report: GateReport = check_release(
        record_texts(dataset, codec), ledger_report=ledger_report, card_text=text, private_texts=private_texts,
        canaries=canaries, codec=codec, allow_non_private=allow_non_private, allow_refuted_audit=allow_refuted_audit,
    )
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    is_private = _prepared_repo(api, repo_id, "dataset", private)
    with tempfile.TemporaryDirectory(prefix="hf_dpsynth_push_") as tmp:
        operations = _dataset_operations(dataset, Path(tmp))
        written = {op.path_in_repo for op in operations}
        # Shards of an earlier push that this one does not overwrite would be loaded with it.
        stale = [f for f in api.list_repo_files(repo_id, repo_type="dataset")
                 if f.startswith(DATA_DIR + "/") and f not in written]
        operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=text.encode("utf-8")))
        info = api.create_commit(repo_id, operations, repo_type="dataset",
                                 commit_message="DP synthetic dataset and its card")
    return PushResult(repo_id, "dataset", is_private, tuple(report.passed), getattr(info, "oid", None))


def push_adapter(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    card: Any,
    ledger_report: Mapping[str, Any] | None,
    private: bool = True,
    token: str | None = None,
    allow_non_private: bool = False,
    allow_refuted_audit: bool = False,
) -> PushResult:
    """Push a DP LoRA adapter folder and its DP model card in one commit, after the gates passed.

    The folder may hold only the adapter (no checkpoints, optimizer/RNG state, training
    arguments or seeds); the model card is written as its README.md (a README.md in the folder is
    not uploaded). The card must match ``ledger_report``; ``private``, ``allow_non_private`` and
    ``allow_refuted_audit`` as in :func:`push_synthetic_dataset`.
    """
    check_repo_id(repo_id)
    root = Path(folder)
    check_folder(root)
    if not (root / "adapter_config.json").is_file():
        raise PublishRefusedError(f"{root} is not a PEFT adapter folder (no adapter_config.json).")
    text = _card_text(card)
    report = check_card(text, ledger_report=ledger_report, allow_non_private=allow_non_private,
                        allow_refuted_audit=allow_refuted_audit)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    is_private = _prepared_repo(api, repo_id, "model", private)
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(root).as_posix(), path_or_fileobj=str(path))
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != "README.md"
        and not {".git", ".cache"} & set(path.relative_to(root).parts)
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=text.encode("utf-8")))
    info = api.create_commit(repo_id, operations, repo_type="model", commit_message="DP LoRA adapter and its card")
    return PushResult(repo_id, "model", is_private, tuple(report.passed), getattr(info, "oid", None))
