"""Publishing a synthetic dataset or a DP adapter to the Hub, behind the safety gates.

Every gate runs before anything leaves the machine (see :mod:`hf_dpsynth.hub.gates`); repos are
private by default; the card is uploaded with the data. Uploads go through the real clients
(``Dataset.push_to_hub``, ``HfApi``) to whatever endpoint is configured (``HF_ENDPOINT``). Tokens
are passed to the clients only, never printed or logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_dpsynth.hub.gates import GateReport, check_folder, check_release, record_texts
from hf_dpsynth.hub.repo import check_repo_id

__all__ = ["PushResult", "push_adapter", "push_synthetic_dataset"]


@dataclass(frozen=True)
class PushResult:
    """Where the release went and which gates it passed (no token, no private text)."""

    repo_id: str
    repo_type: str
    private: bool
    gates_passed: tuple[str, ...]


def _card_text(card: Any) -> str:
    if card is None:
        return ""
    return card if isinstance(card, str) else str(card)


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
) -> PushResult:
    """Push a synthetic dataset and its DP card, after every gate passed.

    Args:
        path_or_dataset: a ``datasets.Dataset``, or a run's ``synthetic/`` folder.
        repo_id: the dataset repo (checked before anything runs).
        card: the DP dataset card (text or ``DatasetCard``).
        ledger_report: ``PrivacyLedger.report().to_dict()`` of the release.
        private_texts: the private training records (as texts), for the verbatim gate.
        canaries: the audit's canary texts, when an audit used this data.
        codec: encodes each synthetic record as text for the gates (default: its columns joined).
        private: create the repo private (default).
        allow_non_private: publish a release whose ledger says DP was off (the card must say so).

    Raises ``PublishRefusedError`` (nothing uploaded) when a gate fails.
    """
    from datasets import Dataset

    check_repo_id(repo_id)
    if isinstance(path_or_dataset, Dataset):
        dataset = path_or_dataset
    else:
        from hf_dpsynth.pipeline.runner import load_synthetic

        folder = Path(path_or_dataset)
        check_folder(folder)
        dataset = load_synthetic(folder)
    text = _card_text(card)
    report: GateReport = check_release(
        record_texts(dataset, codec), ledger_report=ledger_report, card_text=text, private_texts=private_texts,
        canaries=canaries, allow_non_private=allow_non_private,
    )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    dataset.push_to_hub(repo_id, private=private, token=token)
    api.upload_file(path_or_fileobj=text.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="dataset", commit_message="DP dataset card")
    return PushResult(repo_id, "dataset", private, tuple(report.passed))


def push_adapter(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    card: Any,
    ledger_report: Mapping[str, Any] | None,
    private: bool = True,
    token: str | None = None,
    allow_non_private: bool = False,
) -> PushResult:
    """Push a DP LoRA adapter folder and its DP model card, after the gates passed.

    The folder may hold only the adapter (no checkpoints, optimizer/RNG state, training
    arguments or seeds); the model card is written as its README.md.
    """
    check_repo_id(repo_id)
    root = Path(folder)
    check_folder(root)
    if not (root / "adapter_config.json").is_file():
        from hf_dpsynth.errors import PublishRefusedError

        raise PublishRefusedError(f"{root} is not a PEFT adapter folder (no adapter_config.json).")
    text = _card_text(card)
    report = check_release([], ledger_report=ledger_report, card_text=text, private_texts=(),
                           allow_non_private=allow_non_private)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(root), repo_id=repo_id, repo_type="model", commit_message="DP LoRA adapter",
                      ignore_patterns=["README.md"])
    api.upload_file(path_or_fileobj=text.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="model", commit_message="DP model card")
    return PushResult(repo_id, "model", private, tuple(report.passed))
