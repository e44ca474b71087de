"""Whole runs from recipes: ``load_recipe`` and ``run_recipe`` (the ``hf-dpsynth run`` command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_dpsynth._lazy import lazy_exports

_LAZY = {
    "Recipe": "hf_dpsynth.pipeline.recipe",
    "load_recipe": "hf_dpsynth.pipeline.recipe",
    "RunSummary": "hf_dpsynth.pipeline.context",
    "run_recipe": "hf_dpsynth.pipeline.runner",
}
__all__ = ["Recipe", "RunSummary", "load_recipe", "run_recipe"]

if TYPE_CHECKING:  # pragma: no cover
    from hf_dpsynth.pipeline.recipe import Recipe, load_recipe
    from hf_dpsynth.pipeline.context import RunSummary
    from hf_dpsynth.pipeline.runner import run_recipe

__getattr__, __dir__ = lazy_exports("hf_dpsynth.pipeline", _LAZY)
