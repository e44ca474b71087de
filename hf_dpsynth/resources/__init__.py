"""Data carried by the package: the SMS Spam Collection (see ``sms_spam/CITATION.md``)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

SMS_SPAM_CITATION = (
    'T. A. Almeida, J. M. Gómez Hidalgo, A. Yamakami. "Contributions to the Study of SMS Spam Filtering: '
    'New Collection and Results." DocEng 2011. SMS Spam Collection v.1, UCI ML Repository id 228.'
)


def load_sms_spam(split: Literal["train", "test", "all"] = "all") -> Dataset:
    """The SMS Spam Collection as a ``datasets.Dataset`` with columns ``label`` and ``text``.

    The fixed split used across hf_dpsynth's benchmarks: a message is in ``test`` when its 0-based
    line index is divisible by 5 (1,115 messages), in ``train`` otherwise (4,459 messages).
    """
    from datasets import Dataset

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}.")
    path = resources.files(__package__) / "sms_spam" / "SMSSpamCollection"
    labels, texts = [], []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if split == "test" and index % 5 != 0 or split == "train" and index % 5 == 0:
            continue
        label, text = line.split("\t", 1)
        labels.append(label)
        texts.append(text)
    return Dataset.from_dict({"label": labels, "text": texts})
