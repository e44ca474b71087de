"""Version shims for transformers / peft APIs that changed names (kept in one place)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["cache_kwargs", "output_cache"]


def _base_forward(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).forward


@functools.lru_cache(maxsize=32)
def _cache_names(forward: Any) -> tuple[str, bool]:
    params = inspect.signature(forward).parameters
    # transformers 5.x renamed past_key_values to cache.
    name = "cache" if "cache" in params else "past_key_values"
    return name, "logits_to_keep" in params


def cache_kwargs(model: Any, cache: Any = None, *, last_logits_only: bool = True) -> dict[str, Any]:
    """Keyword arguments that pass ``cache`` (None: start one) and ask for the last position's
    logits only (when the model supports ``logits_to_keep``)."""
    name, keep = _cache_names(_base_forward(model))
    kwargs: dict[str, Any] = {"use_cache": True}
    if cache is not None:
        kwargs[name] = cache
    if keep and last_logits_only:
        kwargs["logits_to_keep"] = 1
    return kwargs


def output_cache(output: Any) -> Any:
    """The KV cache returned by a forward pass (``cache`` in transformers 5, else ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
