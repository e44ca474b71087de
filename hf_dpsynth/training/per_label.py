"""One LoRA adapter per label, trained on disjoint data in one DP-SGD run (``DPSynthConfig.adapter_per_label``).

Each label ℓ of a public, declared label list gets its own adapter, trained only on the examples of
that label. One logical step draws every unit with the same public rate q = logical batch / N;
the units of label ℓ run through adapter ℓ, each unit's gradient (non-zero only on its label's
adapter) is clipped to C, every adapter's sum gets N(0, σ²C²) noise — also the adapters of labels
nobody was drawn for — and adapter ℓ's noisy sum is divided by q·ñ_ℓ, with ñ_ℓ the label's **DP
count** (a released histogram), never its real count.

Privacy: adding or removing one example changes one adapter's clipped sum by at most C and no
other's, so the concatenation of all adapters' sums has L2 sensitivity C, exactly as one adapter's:
the whole run is **one** DP-SGD event (q, σ, T), charged once, not one per label. The division by
q·ñ_ℓ is post-processing of a DP release. A user may hold examples of several labels, which would
move several adapters at once: example-level only (docs/DP_CORRECTNESS.md row 35).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hf_dpsynth.data.units import PrivacyUnits
from hf_dpsynth.errors import DatasetError, DPConfigError

__all__ = ["LabelAdapters", "load_adapters", "adapter_name", "check_label_counts", "make_label_adapters", "param_groups", "unit_labels"]


def adapter_name(index: int) -> str:
    """The PEFT adapter name of the ``index``-th declared label (label values need not be valid names)."""
    return f"label_{index}"


def check_label_counts(counts: Any) -> dict[str, float]:
    """The declared labels and their DP counts, checked (a mapping of at least two labels to numbers)."""
    if not isinstance(counts, Mapping) or len(counts) < 2:
        raise DPConfigError(
            "adapter_per_label needs label_counts= mapping each declared label to its DP count (from a DP label "
            f"histogram charged to the same ledger), at least two labels; got {type(counts).__name__}."
        )
    checked = {}
    for label, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DPConfigError(f"label_counts[{label!r}] must be a finite number (a DP count); got {value!r}.")
        checked[str(label)] = float(value)
    if len(checked) != len(counts):
        raise DPConfigError(f"label_counts has labels that are equal as text ({list(counts)}): name each label once.")
    return checked


@dataclass(frozen=True)
class LabelAdapters:
    """Which adapter each privacy unit trains, and each adapter's divisor."""

    labels: tuple[str, ...]
    dp_counts: tuple[float, ...]
    unit_label: np.ndarray  # for each unit, the index of its label in ``labels``

    @property
    def names(self) -> list[str]:
        return [adapter_name(i) for i in range(len(self.labels))]

    def groups(self, share: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """A step's units split by label, in the declared label order (every label, drawn or not)."""
        of = self.unit_label[share] if len(share) else np.zeros(0, dtype=np.int64)
        return [(i, share[of == i]) for i in range(len(self.labels))]

    def expected_batch_size(self, index: int, sampling_probability: float) -> float:
        """q·ñ_ℓ, the DP count at least 1 (post-processing)."""
        return sampling_probability * max(1.0, self.dp_counts[index])

    def card_parameters(self, column: str) -> dict[str, Any]:
        """What the training charge (and so the cards) says about the adapters."""
        return {"adapters": f"one per {column!r} label ({len(self.labels)}: {', '.join(self.labels)}), each trained on "
                            "its label's records only and divided by q × the label's DP count; one DP-SGD event for all"}

    def activate(self, model: torch.nn.Module, index: int) -> None:
        """Route the forward pass through label ``index``'s adapter; every adapter stays trainable."""
        model.set_adapter(adapter_name(index))
        self.keep_trainable(model)

    def keep_trainable(self, model: torch.nn.Module) -> None:
        # peft's set_adapter freezes the other adapters; the optimizer and the checks hold all of them.
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)


def make_label_adapters(
    model: torch.nn.Module, peft_config: Any, counts: Mapping[str, float], *, seed: int
) -> torch.nn.Module:
    """The base model with one adapter per declared label (each initialised from the public ``seed``)."""
    from peft import PeftModel, get_peft_model

    if peft_config is None or isinstance(model, PeftModel):
        raise DPConfigError("adapter_per_label creates one adapter per label itself: pass the base model and "
                            "peft_config= (not a PeftModel).")
    labels = list(counts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, peft_config, adapter_name=adapter_name(0))
        for i in range(1, len(labels)):
            peft_model.add_adapter(adapter_name(i), peft_config)
    peft_model.set_adapter(adapter_name(0))
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
    return peft_model


def unit_labels(dataset: Any, column: str, rows: Sequence[int], units: PrivacyUnits, labels: Sequence[str]) -> np.ndarray:
    """Each unit's label index; a row whose label is not declared is an error (its value is not shown)."""
    if column not in dataset.column_names:
        raise DatasetError(f"adapter_per_label={column!r} is not a column of the training data; its columns are "
                           f"{dataset.column_names}.")
    index = {label: i for i, label in enumerate(labels)}
    values = dataset.select_columns([column])[column]
    of_row = np.empty(len(rows), dtype=np.int64)
    for position, row in enumerate(rows):
        label = str(values[row])
        if label not in index:
            raise DatasetError(f"Row {row} of the training data has a {column!r} value that is not one of the declared "
                               f"labels {list(labels)} (the keys of label_counts). Declare every label, or drop the row.")
        of_row[position] = index[label]
    if not (units.sizes() == 1).all():
        raise DPConfigError("adapter_per_label needs one example per privacy unit (example-level DP).")
    return of_row[units.examples[units.offsets[:-1]]]


def param_groups(trainable: Sequence[Any], labels: LabelAdapters | None) -> dict[int | None, list[torch.nn.Parameter]]:
    """The parameters each group's clipped sum holds: all of them (None), or each label adapter's own."""
    if labels is None:
        return {None: [t.param for t in trainable]}
    groups: dict[int | None, list[torch.nn.Parameter]] = {i: [] for i in range(len(labels.labels))}
    for t in trainable:
        owners = [i for i, name in enumerate(labels.names) if f".{name}." in t.name]
        if len(owners) != 1:
            raise DPConfigError(f"Trainable parameter {t.name!r} belongs to no label adapter: with adapter_per_label "
                                "only the adapters' LoRA weights may be trained.")
        groups[owners[0]].append(t.param)
    return groups


def load_adapters(model: torch.nn.Module, folder: Any, num_labels: int) -> torch.nn.Module:
    """A saved DP adapter on ``model``: the one adapter, or (``num_labels`` > 0) every label's."""
    from pathlib import Path

    from peft import PeftModel

    folder = Path(folder)
    if not num_labels:
        return PeftModel.from_pretrained(model, str(folder))
    peft_model = PeftModel.from_pretrained(model, str(folder / adapter_name(0)), adapter_name=adapter_name(0))
    for i in range(1, num_labels):
        peft_model.load_adapter(str(folder / adapter_name(i)), adapter_name=adapter_name(i))
    return peft_model
