"""Loaders for the real datasets hf_dpsynth is tested and benchmarked on, from a path you give.

* :func:`load_sms_spam_collection` — the SMS Spam Collection v.1 (text; ``label``, ``text``).
  A copy ships inside the package for the demo: :func:`hf_dpsynth.resources.load_sms_spam`.
* :func:`load_uci_adult` — UCI Adult (tabular; 15 columns, ``?`` → missing), and
  :func:`adult_schema`, its public schema: categories from the dataset's documentation
  (``adult.names``) and declared numeric bounds, nothing read from the records.
* :func:`load_digits_images` — scikit-learn's bundled 8×8 handwritten digits (17 grey levels).

The package never hard-codes where these files live: pass the folder or file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hf_dpsynth.data.loading import _read_utf8
from hf_dpsynth.data.tabular import CategoricalColumn, IntegerColumn, TabularSchema
from hf_dpsynth.errors import DatasetError, missing_extra

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

__all__ = ["ADULT_COLUMNS", "adult_schema", "load_digits_images", "load_sms_spam_collection", "load_uci_adult"]

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
    "income",
)
_INTEGER = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}

# Public declarations. Categories are the lists in adult.names (the dataset's documentation).
# Numeric bounds are declared from how the 1994 Census extract was defined, not read from records:
# ages 17-90 (extraction rule AGE > 16; the Census top-codes age at 90), education-num is the
# 16-level code of education, capital amounts are top-coded at 99,999, hours are 1-99 per week,
# fnlwgt (a survey weight) is bounded generously at 2,000,000.
_ADULT_DECLARED: dict[str, tuple] = {
    "age": (17, 90),
    "workclass": ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov", "State-gov",
                  "Without-pay", "Never-worked"),
    "fnlwgt": (1, 2_000_000),
    "education": ("Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm", "Assoc-voc",
                  "9th", "7th-8th", "12th", "Masters", "1st-4th", "10th", "Doctorate", "5th-6th", "Preschool"),
    "education-num": (1, 16),
    "marital-status": ("Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed",
                       "Married-spouse-absent", "Married-AF-spouse"),
    "occupation": ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial", "Prof-specialty",
                   "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical", "Farming-fishing",
                   "Transport-moving", "Priv-house-serv", "Protective-serv", "Armed-Forces"),
    "relationship": ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried"),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "capital-gain": (0, 99_999),
    "capital-loss": (0, 99_999),
    "hours-per-week": (1, 99),
    "native-country": ("United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany",
                       "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece", "South", "China", "Cuba", "Iran",
                       "Honduras", "Philippines", "Italy", "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal",
                       "Ireland", "France", "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia",
                       "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand", "Yugoslavia", "El-Salvador",
                       "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands"),
    "income": ("<=50K", ">50K"),
}
# Columns where adult.data has '?' (documented as unknown values).
_ADULT_NULLABLE = {"workclass", "occupation", "native-country"}


def adult_schema(columns: tuple[str, ...] | None = None) -> TabularSchema:
    """The public schema of UCI Adult (all 15 columns, or ``columns`` in that order).

    Benchmarks usually drop ``fnlwgt`` (a survey weight, not a person's attribute).
    """
    cols = []
    for name in ADULT_COLUMNS:
        spec = _ADULT_DECLARED[name]
        if name in _INTEGER:
            cols.append(IntegerColumn(name, spec[0], spec[1], nullable=name in _ADULT_NULLABLE))
        else:
            cols.append(CategoricalColumn(name, spec, nullable=name in _ADULT_NULLABLE))
    schema = TabularSchema(cols)
    return schema if columns is None else schema.select(columns)


def _resolve(path: str | os.PathLike[str], default_name: str, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.is_file():
        raise DatasetError(f"{p} is not a file. Pass the path of {what} (or the folder that holds {default_name!r}).")
    return p


def load_sms_spam_collection(path: str | os.PathLike[str]) -> Dataset:
    """The SMS Spam Collection from ``path`` (the ``SMSSpamCollection`` file or its folder).

    Columns ``label`` (``ham``/``spam``) and ``text``, in file order (5,574 messages).
    Cite: Almeida, Gómez Hidalgo, Yamakami, DocEng 2011 (see :data:`hf_dpsynth.resources.SMS_SPAM_CITATION`).
    """
    from datasets import Dataset

    file = _resolve(path, "SMSSpamCollection", "the SMS Spam Collection")
    labels, texts = [], []
    for number, line in enumerate(_read_utf8(file).splitlines(), start=1):
        if not line:
            continue
        label, tab, text = line.partition("\t")
        if not tab or label not in ("ham", "spam"):
            raise DatasetError(f"{file}, line {number}: expected 'ham<TAB>text' or 'spam<TAB>text'; got {line[:40]!r}.")
        labels.append(label)
        texts.append(text)
    return Dataset.from_dict({"label": labels, "text": texts})


def load_uci_adult(path: str | os.PathLike[str], split: Literal["train", "test"] = "train") -> Dataset:
    """UCI Adult from ``path`` (the folder with ``adult.data`` / ``adult.test``, or one of them).

    ``train`` is adult.data (32,561 rows), ``test`` adult.test (16,281 rows; the trailing ``.`` of
    its labels is removed). ``?`` becomes a missing value (None). Integer columns are ints.
    """
    from datasets import Dataset

    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test'; got {split!r}.")
    file = _resolve(path, "adult.data" if split == "train" else "adult.test", f"UCI Adult's {split} file")
    columns: dict[str, list] = {name: [] for name in ADULT_COLUMNS}
    for number, line in enumerate(_read_utf8(file).splitlines(), start=1):
        if not line.strip() or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(ADULT_COLUMNS):
            raise DatasetError(f"{file}, line {number}: expected {len(ADULT_COLUMNS)} fields, got {len(fields)}.")
        for name, value in zip(ADULT_COLUMNS, fields):
            if value == "?":
                columns[name].append(None)
            elif name in _INTEGER:
                try:
                    columns[name].append(int(value))
                except ValueError:
                    raise DatasetError(f"{file}, line {number}: {name} = {value!r} is not an integer.") from None
            else:
                columns[name].append(value.removesuffix(".") if name == "income" else value)
    return Dataset.from_dict(columns)


def load_digits_images(*, flat: bool = False) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, grey levels 0–16) with ``image`` and ``label``.

    ``image`` is an 8×8 list of integer levels (``ImageCodec((8, 8), levels=17)`` encodes it
    exactly); ``label`` is the digit as a string ("0"–"9").
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise missing_extra("scikit-learn", "evaluation") from exc
    from datasets import Dataset

    digits = load_digits()
    images = digits.images.astype("int64")
    return Dataset.from_dict(
        {
            "image": [img.reshape(-1).tolist() if flat else img.tolist() for img in images],
            "label": [str(int(t)) for t in digits.target],
        }
    )
