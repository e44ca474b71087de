"""Preparing private data: privacy units, PII scrubbing, codecs, and DP statistics (label and
category histograms, keywords per label).

The 30-second path::

    from hf_dpsynth.data import TextCodec, prepare_dataset, dp_label_histogram

    codec = TextCodec("text", conditions={"label": ["ham", "spam"]})
    prepared = prepare_dataset("messages.csv", codec)          # scrubbed, checked, encoded
    labels = dp_label_histogram("messages.csv", label_column="label", labels=["ham", "spam"],
                                ledger=ledger)                 # charged to the ledger
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "Codec": "hf_dpsynth.data.codecs",
    "ParseResult": "hf_dpsynth.data.codecs",
    "TextCodec": "hf_dpsynth.data.codecs",
    "CategoricalColumn": "hf_dpsynth.data.tabular",
    "FloatColumn": "hf_dpsynth.data.tabular",
    "IntegerColumn": "hf_dpsynth.data.tabular",
    "TabularCodec": "hf_dpsynth.data.tabular",
    "TabularSchema": "hf_dpsynth.data.tabular",
    "ImageCodec": "hf_dpsynth.data.image",
    "downsample": "hf_dpsynth.data.image",
    "PIIScrubber": "hf_dpsynth.data.pii",
    "ScrubResult": "hf_dpsynth.data.pii",
    "PII_TYPES": "hf_dpsynth.data.pii",
    "bound_contributions": "hf_dpsynth.data.units",
    "load_records": "hf_dpsynth.data.loading",
    "PreparationReport": "hf_dpsynth.data.prepare",
    "PreparedDataset": "hf_dpsynth.data.prepare",
    "prepare_dataset": "hf_dpsynth.data.prepare",
    "DPHistogram": "hf_dpsynth.data.statistics",
    "DPHistogramRelease": "hf_dpsynth.data.statistics",
    "dp_category_histograms": "hf_dpsynth.data.statistics",
    "dp_histograms": "hf_dpsynth.data.statistics",
    "dp_label_histogram": "hf_dpsynth.data.statistics",
    "histogram_sensitivity": "hf_dpsynth.data.statistics",
    "DPKeywords": "hf_dpsynth.data.keywords",
    "KeywordVocabulary": "hf_dpsynth.data.keywords",
    "dp_keywords": "hf_dpsynth.data.keywords",
    "adult_schema": "hf_dpsynth.data.sources",
    "load_digits_images": "hf_dpsynth.data.sources",
    "load_sms_spam_collection": "hf_dpsynth.data.sources",
    "load_uci_adult": "hf_dpsynth.data.sources",
}
__all__ = [
    "CategoricalColumn",
    "Codec",
    "DPHistogram",
    "DPHistogramRelease",
    "DPKeywords",
    "FloatColumn",
    "ImageCodec",
    "IntegerColumn",
    "KeywordVocabulary",
    "PIIScrubber",
    "PII_TYPES",
    "ParseResult",
    "PreparationReport",
    "PreparedDataset",
    "ScrubResult",
    "TabularCodec",
    "TabularSchema",
    "TextCodec",
    "adult_schema",
    "bound_contributions",
    "downsample",
    "dp_category_histograms",
    "dp_histograms",
    "dp_keywords",
    "dp_label_histogram",
    "histogram_sensitivity",
    "load_digits_images",
    "load_records",
    "load_sms_spam_collection",
    "load_uci_adult",
    "prepare_dataset",
]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.data.codecs import Codec, ParseResult, TextCodec
    from hf_dpsynth.data.image import ImageCodec, downsample
    from hf_dpsynth.data.keywords import DPKeywords, KeywordVocabulary, dp_keywords
    from hf_dpsynth.data.loading import load_records
    from hf_dpsynth.data.pii import PII_TYPES, PIIScrubber, ScrubResult
    from hf_dpsynth.data.prepare import PreparationReport, PreparedDataset, prepare_dataset
    from hf_dpsynth.data.sources import (
        adult_schema,
        load_digits_images,
        load_sms_spam_collection,
        load_uci_adult,
    )
    from hf_dpsynth.data.statistics import (
        DPHistogram,
        DPHistogramRelease,
        dp_category_histograms,
        dp_histograms,
        dp_label_histogram,
        histogram_sensitivity,
    )
    from hf_dpsynth.data.tabular import (
        CategoricalColumn,
        FloatColumn,
        IntegerColumn,
        TabularCodec,
        TabularSchema,
    )
    from hf_dpsynth.data.units import bound_contributions

__getattr__, __dir__ = lazy_exports("hf_dpsynth.data", _LAZY)
