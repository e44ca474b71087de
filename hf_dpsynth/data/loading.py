"""Reading the private records: a ``datasets.Dataset``, a ``DatasetDict`` split, or a file path.

Supported paths: ``.csv``, ``.jsonl`` / ``.json`` (JSON Lines), ``.parquet``, or a folder of ``.txt``
files (one record per file, in column ``text``, with its relative path in ``file``). Nothing is
downloaded and nothing is cached outside memory. Bad input raises :class:`DatasetError` saying what
was wrong and how to fix it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_dpsynth.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ["column_values", "load_records", "require_columns"]

_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def load_records(
    source: Dataset | DatasetDict | str | os.PathLike[str],
    *,
    split: str | None = None,
    columns: Sequence[str] = (),
) -> Dataset:
    """The records of ``source`` as a ``datasets.Dataset``, checked to have ``columns``.

    Args:
        source: a Dataset, a DatasetDict (with ``split``, default ``"train"``), or a path.
        split: the split of a DatasetDict.
        columns: the columns the caller needs (an error names what is missing and what exists).
    """
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        name = split or "train"
        if name not in source:
            raise DatasetError(
                f"The DatasetDict has no split {name!r}; its splits are {list(source)}. Pass split=."
            )
        dataset = source[name]
    elif isinstance(source, Dataset):
        dataset = source
    elif isinstance(source, (str, os.PathLike)):
        dataset = _read_path(Path(source))
    else:
        raise DatasetError(
            f"Expected a datasets.Dataset, a DatasetDict or a path to CSV / JSONL / Parquet / a folder of "
            f".txt files; got {type(source).__name__}."
        )
    if len(dataset) == 0:
        raise DatasetError(f"The dataset from {_describe(source)} is empty: there is nothing to prepare.")
    require_columns(dataset.column_names, columns, what=f"the dataset from {_describe(source)}")
    return dataset


def require_columns(available: Sequence[str], needed: Sequence[str], *, what: str = "the dataset") -> None:
    """DatasetError naming the missing columns and the ones that exist."""
    missing = [c for c in needed if c not in available]
    if missing:
        raise DatasetError(
            f"{what[:1].upper() + what[1:]} has no column(s) {missing}; its columns are {list(available)}. "
            "Name the right columns (text_column=, label_column=, user_id_column=, the schema's columns)."
        )


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _read_path(path: Path) -> Dataset:
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Give the path of a CSV, JSONL or Parquet file, or a folder of .txt files.")
    if path.is_dir():
        return _read_text_folder(path)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(
            f"{path}: unsupported file type {path.suffix!r}. Use .csv, .jsonl (or .json with one object "
            "per line), .parquet, or a folder of .txt files; or load it yourself into a datasets.Dataset."
        )
    if kind == "parquet":
        import pyarrow.parquet as pq
        from datasets import Dataset

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{path} is not a readable Parquet file: {exc}") from exc
        return Dataset(table)
    text = _read_utf8(path)
    if kind == "csv":
        return _parse_csv(path, text)
    return _parse_jsonl(path, text)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path} is not valid UTF-8: byte {data[exc.start]:#04x} at offset {exc.start} (line {line}). "
            "Re-encode the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8`), nothing was read."
        ) from None
    return text.removeprefix("\ufeff")


def _parse_csv(path: Path, text: str) -> Dataset:
    import io

    import pandas as pd
    from datasets import Dataset

    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{path} is not a well-formed CSV file with a header row: {exc}") from exc
    _check_numeric_frame(path, frame)
    # Missing cells in text columns become None (not the float NaN pandas uses).
    frame = frame.astype(object).where(frame.notna(), None) if frame.isna().any().any() else frame
    return Dataset.from_pandas(frame, preserve_index=False)


def _check_numeric_frame(path: Path, frame: Any) -> None:
    import numpy as np

    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind == "f":
            bad = np.isinf(values.to_numpy())
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DatasetError(
                    f"{path}: column {column!r} has an infinite value at data row {row}. Remove or fix it."
                )


def _parse_jsonl(path: Path, text: str) -> Dataset:
    from datasets import Dataset

    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise DatasetError(
                f"{path}, line {number}: not a JSON object ({exc}). Write one JSON object per line (JSON Lines)."
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
        records.append(record)
    if not records:
        return Dataset.from_dict({})
    keys = list(records[0])
    for number, record in enumerate(records, start=1):
        if list(record) != keys and set(record) != set(keys):
            raise DatasetError(
                f"{path}: record {number} has fields {sorted(record)}, but the first has {sorted(keys)}. "
                "Every record needs the same fields (use null for a missing value)."
            )
    return Dataset.from_list(records)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (NaN and infinity are not data)")


def _read_text_folder(folder: Path) -> Dataset:
    from datasets import Dataset

    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DatasetError(f"The folder {folder} has no .txt files; put one record per .txt file.")
    texts, names = [], []
    for file in files:
        texts.append(_read_utf8(file))
        names.append(file.relative_to(folder).as_posix())
    return Dataset.from_dict({"text": texts, "file": names})


def column_values(dataset: Dataset, name: str) -> list[Any]:
    """One column as a Python list, in one Arrow conversion (iterating a datasets 4+ ``Column``
    formats row by row, about 100x slower)."""
    return dataset[name][:]


def is_missing(value: Any) -> bool:
    """None or a float NaN (pandas' and Arrow's missing value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
