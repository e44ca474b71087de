"""A recipe's data: the training records, the held-out test records, the codec, the preparation.

Where the held-out real data comes from (``evaluation`` section):

* the packaged data (``sms_spam``) and UCI Adult folders have their own test split
  (``evaluation.test_split``);
* ``evaluation.test_source``: a file of held-out records the user keeps apart;
* ``evaluation.holdout: 0.1``: a public rule keeps about 10 % of the privacy units out of every
  private stage — a unit is held out when a keyed hash of it (the user id at user level, the
  record's canonical content at example level) falls below the fraction. The rule reads each unit
  alone, so it is 1-stable, and N counts the training units only.

An evaluation that would test on the training records themselves (a file source with neither) is
refused. Metrics on held-out rows are owner-only: those rows are outside the guarantee.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from hf_dpsynth.errors import DatasetError, DPConfigError
from hf_dpsynth.pipeline.build import recipe_codec
from hf_dpsynth.pipeline.recipe import PACKAGED_SOURCES, Recipe, has_own_test_split, test_split_refusal

__all__ = [
    "check_sources",
    "holdout_rows",
    "load_recipe_data",
    "load_test_data",
    "prepare_recipe_data",
    "private_texts",
    "source_records",
]

_HOLDOUT_SALT = b"hf_dpsynth/evaluation-holdout/v1"
_USER_SALT = b"hf_dpsynth/synthetic-user-ids/v1"


def source_records(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The files a recipe reads records from (``data.source``, ``evaluation.test_source``): for each,
    its absolute path and a SHA-256 of its content (of every file, for a folder). A run records them,
    so that resuming, ``card``, ``evaluate`` and ``push`` read exactly the records the run used."""
    found = {}
    for key, value in (("data.source", recipe.data.source), ("evaluation.test_source", recipe.evaluation.test_source)):
        if value is not None and value not in PACKAGED_SOURCES and os.path.exists(value):
            found[key] = {"path": os.path.abspath(value), "sha256": _content_digest(Path(value))}
    return found


def check_sources(recipe: Recipe, recorded: dict[str, dict[str, str]], *, where: str) -> Recipe:
    """``recipe`` reading the files a run recorded (:func:`source_records`), at their absolute paths.

    Refused when a file is gone or its content changed since the run: the gates would compare the
    synthetic data with other records, and a resumed stage would run on other data.
    """
    sections: dict[str, dict[str, str]] = {}
    for key, entry in recorded.items():
        path = Path(entry["path"])
        if not path.exists():
            raise DPConfigError(f"{where} read {key} from {path}, which no longer exists: restore that file (the "
                                "release gates compare the synthetic data with those very records).")
        if _content_digest(path) != entry["sha256"]:
            raise DPConfigError(f"{key} ({path}) changed since {where} read it (its SHA-256 differs): the outputs "
                                "were made from other records, and the gates must compare them with those. Restore "
                                "the file, or run the recipe again into a new folder.")
        section, field = key.split(".")
        sections.setdefault(section, {})[field] = str(path)
    return recipe.with_overrides(**sections) if sections else recipe


def _content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _load_source(recipe: Recipe, source: str, split: str | None) -> Any:
    d = recipe.data
    if source == "sms_spam":
        from hf_dpsynth.resources import load_sms_spam

        return load_sms_spam(split or "train")
    if source == "digits":
        from hf_dpsynth.data.sources import load_digits_images

        return load_digits_images()
    if not os.path.exists(source):
        raise DPConfigError(f"data source {source!r} does not exist: give the path of a CSV, JSONL or Parquet file "
                            "(or a folder of .txt files).")
    if d.modality == "tabular" and d.schema == "adult":
        from hf_dpsynth.data.sources import load_uci_adult

        return load_uci_adult(source, split=split or "train")
    from hf_dpsynth.data.loading import load_records

    return load_records(source, split=split)


def _shape(recipe: Recipe, data: Any, *, max_records: int | None) -> Any:
    d = recipe.data
    if d.drop_columns:
        data = data.remove_columns([c for c in d.drop_columns if c in data.column_names])
    if max_records is not None:
        data = data.select(range(min(max_records, len(data))))  # the first rows: a public choice
    if d.synthetic_user_ids:
        # A demo for data with no user column: each record's made-up user is a keyed hash of the record
        # itself (never its position), so removing one record changes no other record's user.
        users = [f"user{_key_hash(_USER_SALT, key) % d.synthetic_user_ids}" for key in _record_keys(recipe, data)]
        data = data.add_column("user", users)
    return data


def holdout_rows(recipe: Recipe, data: Any) -> list[bool]:
    """For each row, whether the public holdout rule keeps its privacy unit out of training.

    Privacy: the choice for a row reads only that row's unit (user id, or the codec's fields of
    the record) and a fixed public key, never its position or other rows.
    """
    from hf_dpsynth.data.loading import column_values

    fraction = recipe.evaluation.holdout
    if not fraction:
        return [False] * len(data)
    d = recipe.data
    if recipe.privacy.unit == "user":
        if d.user_id_column not in data.column_names:
            raise DatasetError(f"data.user_id_column {d.user_id_column!r} is not a column of data.source; its columns "
                               f"are {data.column_names}. Name the column that identifies each user.")
        keys = [repr(u) for u in column_values(data, d.user_id_column)]
    else:
        keys = _record_keys(recipe, data)
    threshold = fraction * 2**64
    return [_key_hash(_HOLDOUT_SALT, k) < threshold for k in keys]


def _record_keys(recipe: Recipe, data: Any) -> list[str]:
    """Each row's canonical content: the codec's fields of the record, as text."""
    from hf_dpsynth.data.loading import column_values

    fields = [f for f in recipe_codec(recipe).fields if f in data.column_names]
    columns = [column_values(data, f) for f in fields]
    return [json.dumps([str(c[row]) for c in columns], ensure_ascii=False) for row in range(len(data))]


def _key_hash(salt: bytes, key: str) -> int:
    return int.from_bytes(hashlib.sha256(salt + key.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def load_recipe_data(recipe: Recipe, *, part: Literal["train", "test"] = "train") -> Any:
    """The recipe's training records (``part="train"``), or its held-out rows under ``evaluation.holdout``."""
    d = recipe.data
    data = _shape(recipe, _load_source(recipe, d.source, d.split), max_records=d.max_records)
    if not recipe.evaluation.holdout:
        if part == "test":
            raise DPConfigError("the recipe sets no evaluation.holdout: there is no held-out part of data.source.")
        return data
    held = holdout_rows(recipe, data)
    keep = [row for row, h in enumerate(held) if h == (part == "test")]
    return data.select(keep)


def load_test_data(recipe: Recipe) -> Any:
    """The held-out real records to evaluate against (owner-only: outside the guarantee).

    Refused when they would be the training records themselves.
    """
    d, e = recipe.data, recipe.evaluation
    if e.test_source is not None:
        if _same_path(e.test_source, d.source):
            raise DPConfigError(f"evaluation.test_source is data.source itself ({d.source!r}): testing on the training "
                                "records measures memorisation, not utility. Give a held-out file.")
        return _shape(recipe, _load_source(recipe, e.test_source, None), max_records=e.max_test_records)
    if e.holdout:
        test = load_recipe_data(recipe, part="test")
        return test.select(range(min(e.max_test_records, len(test)))) if e.max_test_records is not None else test
    if not has_own_test_split(recipe):
        raise DPConfigError(test_split_refusal(recipe))
    return _shape(recipe, _load_source(recipe, d.source, e.test_split), max_records=e.max_test_records)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def prepare_recipe_data(recipe: Recipe) -> tuple[Any, Any, Any]:
    """The recipe's training records, its codec, and the prepared (bounded, scrubbed, encoded) data."""
    from hf_dpsynth.data import prepare_dataset

    d, p = recipe.data, recipe.privacy
    data = load_recipe_data(recipe)
    codec = recipe_codec(recipe)
    extra = {"drop_invalid": True} if d.drop_invalid else {}
    prepared = prepare_dataset(
        data, codec, privacy_unit=p.unit, user_id_column=d.user_id_column if p.unit == "user" else None,
        max_examples_per_user=p.max_examples_per_user if p.unit == "user" else None, scrub_pii=d.scrub_pii, **extra,
    )
    if d.max_records is not None:  # a cap by position: stated in the card (the guarantee is for those rows)
        prepared = dataclasses.replace(prepared, report=dataclasses.replace(prepared.report, first_rows=d.max_records))
    return data, codec, prepared


def private_texts(recipe: Recipe) -> list[str]:
    """The run's private training records as the codec writes their bodies (for the verbatim gate;
    owner-side), compared with the synthetic records' bodies: the public prompt is left out on both
    sides. Records that do not fit the codec (dropped under ``data.drop_invalid``) are skipped."""
    from hf_dpsynth.errors import InvalidRecord
    from hf_dpsynth.hub.gates import record_texts

    data, codec = load_recipe_data(recipe), recipe_codec(recipe)
    try:
        return record_texts(data, codec)
    except InvalidRecord:
        texts = []
        for row in range(len(data)):
            try:
                texts.extend(record_texts(data.select([row]), codec))
            except InvalidRecord:
                continue
        return texts
