"""Formatting numbers and text for Markdown reports and cards (the bottom floor: no package imports).

Privacy bounds are always rounded *up* at the shown precision (:func:`format_bound`), so a text
never understates ε or δ.
"""

from __future__ import annotations

import math
import numbers
from decimal import ROUND_CEILING, Decimal
from typing import Any

__all__ = ["ceil_significant", "escape_markdown", "format_bound", "format_value", "ledger_number"]


def format_value(value: Any) -> str:
    """A number with 3 significant digits (ints and integral floats in full, with separators), ∞ for inf."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    x = float(value)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    rounded = float(f"{x:.3g}")
    exponent = math.floor(math.log10(abs(rounded)))
    if exponent >= 3:
        return f"{round(rounded):,}"
    if exponent < -4:
        mantissa, power = f"{rounded:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(power)}"
    text = f"{rounded:.{max(0, 2 - exponent)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def ceil_significant(value: float, digits: int = 3) -> float:
    """``value`` rounded *up* to ``digits`` significant digits (infinities unchanged).

    Float noise is removed first (12 significant digits: 0.1 × 3 = 0.30000000000000004 stays 0.3);
    that lowers a value by at most 1e-12 relative, far below any accountant's error.
    """
    x = float(value)
    if math.isinf(x) or math.isnan(x) or x == 0:
        return x
    number = Decimal(f"{x:.12g}")
    quantum = Decimal(1).scaleb(number.adjusted() - digits + 1)
    return float(number.quantize(quantum, rounding=ROUND_CEILING))


def format_bound(value: Any) -> str:
    """A privacy bound (ε, δ, e^ε) as :func:`format_value` shows it, but rounded *up* at the shown
    precision (3 significant digits): the text never understates the bound."""
    value = ledger_number(value)
    if value is None or isinstance(value, (str, bool)) or isinstance(value, numbers.Integral):
        return format_value(value)
    return format_value(ceil_significant(value))


def ledger_number(value: Any) -> Any:
    """A number from a ledger dict, where infinities are written ``"inf"``."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    return value


def escape_markdown(text: str) -> str:
    """Text safe inside a Markdown table cell or heading: one line, pipes escaped."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())
