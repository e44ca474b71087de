"""Saving and loading a synthetic dataset: ``data.parquet`` with ``generation_info.json`` beside it.

Privacy: post-processing; the folder is swapped in atomically, so a crash leaves the old one or none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_json

__all__ = ["load_synthetic", "save_synthetic"]


def save_synthetic(dataset: Any, target: Path) -> None:
    """``target/data.parquet`` + ``target/generation_info.json``, swapped in atomically as a folder."""
    import pyarrow.parquet as pq

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(dataset.flatten_indices().data.table, tmp / "data.parquet")
    atomic_write_json(tmp / "generation_info.json", {"description": dataset.info.description})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def load_synthetic(folder: str | os.PathLike[str]) -> Any:
    """The synthetic dataset a run saved (with its generation summary)."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetInfo

    folder = Path(folder)
    info = json.loads((folder / "generation_info.json").read_text(encoding="utf-8"))
    return Dataset(pq.read_table(folder / "data.parquet"), info=DatasetInfo(description=info["description"]))
