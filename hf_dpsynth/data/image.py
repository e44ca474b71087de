"""Small grayscale images as text: one symbol per grey level, one image row per line.

scikit-learn's 8×8 digits have 17 grey levels (0–16): ``ImageCodec((8, 8), levels=17)`` encodes
them exactly. Other inputs (e.g. MNIST's 0–255, downsampled to 14×14 with :func:`downsample`) are
quantised to ``levels`` levels, and the codec declares that rounding (:attr:`ImageCodec.rounding`).
Parsing back checks the shape (rows × columns) and the alphabet strictly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_dpsynth.data.codecs import Codec, _check_name, _field
from hf_dpsynth.errors import InvalidRecord, SchemaError

__all__ = ["DEFAULT_ALPHABET", "ImageCodec", "downsample"]

#: Symbols for up to 36 grey levels: digits, then capital letters (level 10 is "A").
DEFAULT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def downsample(image: Any, factor: int) -> np.ndarray:
    """Mean-pool a 2-D image by ``factor`` along both axes (e.g. 28×28 → 14×14 with 2).

    The result is float; an :class:`ImageCodec` then rounds it to its grey levels.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise InvalidRecord(f"expected a 2-D grayscale image, got shape {array.shape}.", kind="shape")
    if not isinstance(factor, int) or factor < 1 or array.shape[0] % factor or array.shape[1] % factor:
        raise InvalidRecord(
            f"cannot downsample shape {array.shape} by factor {factor!r}: both sides must be multiples of it.",
            kind="shape",
        )
    h, w = array.shape
    return array.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


class ImageCodec(Codec):
    """Grayscale images of a fixed shape as text grids of quantised grey levels.

    Args:
        shape: (rows, columns) of every image.
        levels: number of grey levels (2–36 with the default alphabet); level ``k`` is written
            as ``alphabet[k]``.
        input_max: the largest grey value of the inputs (values are in ``[0, input_max]``);
            defaults to ``levels - 1``, so integer levels encode exactly.
        alphabet: one distinct, non-whitespace symbol per level.
        image_field: the record field holding the image (a 2-D array or nested lists).
        conditions: see :class:`Codec` (e.g. ``{"label": ["0", ..., "9"]}``).
        prompt_template, descriptions: see :class:`Codec`.

    ``decode`` returns the image on the input scale (``level × input_max / (levels − 1)``), as
    integers when that scale is the level itself.
    """

    modality = "image"

    def __init__(
        self,
        shape: Sequence[int],
        levels: int,
        *,
        input_max: float | None = None,
        alphabet: str | None = None,
        image_field: str = "image",
        conditions: Mapping[str, Sequence[str]] | None = None,
        prompt_template: str | None = None,
        descriptions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(conditions=conditions, prompt_template=prompt_template, descriptions=descriptions)
        try:
            rows, cols = (int(x) for x in shape)
        except (TypeError, ValueError):
            raise SchemaError(f"shape must be (rows, columns); got {shape!r}.") from None
        if rows < 1 or cols < 1:
            raise SchemaError(f"shape must be positive; got {shape!r}.")
        alphabet = DEFAULT_ALPHABET[:levels] if alphabet is None else alphabet
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise SchemaError(f"levels must be an integer >= 2; got {levels!r}.")
        if len(alphabet) != levels or len(set(alphabet)) != levels:
            raise SchemaError(
                f"the alphabet must have exactly one distinct symbol per level ({levels}); got {alphabet!r}"
                + (" (the default alphabet has 36 symbols: pass alphabet= for more levels)." if levels > 36 else ".")
            )
        if any(ch.isspace() for ch in alphabet):
            raise SchemaError(f"alphabet symbols may not be whitespace; got {alphabet!r}.")
        top = levels - 1 if input_max is None else input_max
        if isinstance(top, bool) or not isinstance(top, (int, float)) or not np.isfinite(top) or top <= 0:
            raise SchemaError(f"input_max must be a positive number; got {input_max!r}.")
        self.shape = (rows, cols)
        self.levels = levels
        self.input_max = top
        self.alphabet = alphabet
        self.image_field = _check_name("image_field", image_field)
        self._symbol_level = {ch: k for k, ch in enumerate(alphabet)}
        self._exact_scale = float(top) == float(levels - 1)

    @property
    def body_fields(self) -> tuple[str, ...]:
        return (self.image_field,)

    @property
    def max_rounding_error(self) -> float:
        """The largest |decoded − input| for an in-range input grey value."""
        return self.input_max / (self.levels - 1) / 2

    @property
    def rounding(self) -> str | None:
        if self._exact_scale:
            return (
                f"Grey values 0..{self.levels - 1} are encoded exactly; non-integer values are rounded "
                "to the nearest level."
            )
        return (
            f"Grey values in [0, {self.input_max:g}] are rounded to the nearest of {self.levels} levels "
            f"(at most {self.max_rounding_error:.4g} off)."
        )

    def quantise(self, image: Any) -> np.ndarray:
        """The image as integer levels in ``[0, levels)``; InvalidRecord on a wrong shape or dtype."""
        try:
            array = np.asarray(image)
        except ValueError as exc:  # ragged nested lists
            raise InvalidRecord(f"the image is not a rectangular array: {exc}", kind="shape") from None
        if array.dtype == object or array.dtype.kind not in "iuf":
            raise InvalidRecord(
                f"the image must hold integer or float grey values; got dtype {array.dtype}.", kind="dtype"
            )
        if array.shape != self.shape:
            raise InvalidRecord(f"the image has shape {array.shape}; this codec expects {self.shape}.", kind="shape")
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise InvalidRecord("the image has NaN or infinite values.", kind="not_finite")
        low, high = values.min(), values.max()
        if low < 0 or high > self.input_max:
            raise InvalidRecord(
                f"grey values must lie in [0, {self.input_max:g}]; found [{low:g}, {high:g}]. Set input_max= "
                "to the inputs' scale (e.g. 255 for 8-bit images).",
                kind="out_of_bounds",
            )
        return np.floor(values * ((self.levels - 1) / self.input_max) + 0.5).astype(np.int64)

    def encode_body(self, record: Mapping[str, Any], *, order_seed: int | None = None) -> str:
        grid = self.quantise(_field(record, self.image_field))
        return "\n".join("".join(self.alphabet[k] for k in row) for row in grid.tolist())

    def decode_body(self, text: str) -> dict[str, Any]:
        lines = text.strip("\n").split("\n")
        lines = [line.strip() for line in lines]
        rows, cols = self.shape
        if len(lines) != rows:
            raise InvalidRecord(f"expected {rows} rows, got {len(lines)}.", kind="shape")
        levels = np.empty(self.shape, dtype=np.int64)
        for r, line in enumerate(lines):
            if len(line) != cols:
                raise InvalidRecord(f"row {r} has {len(line)} symbols; expected {cols}.", kind="shape")
            for c, ch in enumerate(line):
                level = self._symbol_level.get(ch)
                if level is None:
                    raise InvalidRecord(f"row {r} has symbol {ch!r}, not in the alphabet {self.alphabet!r}.", kind="alphabet")
                levels[r, c] = level
        if self._exact_scale:
            return {self.image_field: levels}
        return {self.image_field: levels * (self.input_max / (self.levels - 1))}

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(), "shape": list(self.shape), "levels": self.levels,
            "input_max": self.input_max, "alphabet": self.alphabet, "image_field": self.image_field,
        }
