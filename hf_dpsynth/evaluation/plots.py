"""The report's plots: the kinds it draws, the checks on their data, and rendering them to PNG.

Privacy: a plot is shareable or owner-only exactly as the metrics it shows; an owner-only plot's
file name says so (``owner_only-*.png``) and a shareable export never writes one.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hf_dpsynth._markdown import format_value
from hf_dpsynth.errors import missing_extra

__all__ = ["OWNER_ONLY_PREFIX", "PLOT_KINDS", "Plot", "PlotKind", "checked_plot_data", "matplotlib_parts", "render"]

OWNER_ONLY_PREFIX = "owner_only-"


PlotKind = Literal["privacy_utility", "score_histogram", "marginal_bars"]


PLOT_KINDS: tuple[str, ...] = ("privacy_utility", "score_histogram", "marginal_bars")


_PLOT_KEYS = {
    "privacy_utility": ({"epsilons", "values", "metric"}, {"references"}),
    "score_histogram": ({"in", "out"}, {"xlabel"}),
    "marginal_bars": ({"column", "categories", "real", "synthetic"}, set()),
}


_FIGSIZE = (7.0, 4.5)  # inches


_DPI = 110


@dataclass(frozen=True)
class Plot:
    name: str
    kind: str
    data: Mapping[str, Any]
    shareable: bool
    caption: str
    stem: str

    @property
    def file_name(self) -> str:
        return (self.stem if self.shareable else OWNER_ONLY_PREFIX + self.stem) + ".png"


def _numbers(plot: str, key: str, values: Any, *, minimum: float | None = None) -> list[float]:
    """``values`` as a non-empty list of finite floats (at least ``minimum`` when given)."""
    where = f"plot {plot!r}: data[{key!r}]"
    if values is None or isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"{where} must be a list of numbers; got {values!r}.")
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"{where} must hold finite numbers only; got {value!r}.")
        if minimum is not None and float(value) < minimum:
            raise ValueError(f"{where} must hold numbers ≥ {minimum:g}; got {value!r}.")
        result.append(float(value))
    if not result:
        raise ValueError(f"{where} is empty; a plot needs at least one value.")
    return result


def _same_length(plot: str, key: str, values: list[float], other: str, expected: int) -> None:
    if len(values) != expected:
        raise ValueError(
            f"plot {plot!r}: data[{key!r}] has {len(values)} values but data[{other!r}] has "
            f"{expected}; give one value per entry."
        )


def _label(plot: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"plot {plot!r}: data[{key!r}] must be a non-empty string; got {value!r}.")
    return " ".join(value.split())


def checked_plot_data(name: str, kind: str, data: Any) -> dict[str, Any]:
    """A validated, JSON-able copy of a plot's data (see :meth:`Report.add_plot`)."""
    if not isinstance(data, Mapping):  # malformed plot data is a ValueError throughout
        raise ValueError(  # noqa: TRY004
            f"plot {name!r} ({kind}): data must be a dict; got {type(data).__name__}."
        )
    required, optional = _PLOT_KEYS[kind]
    missing, unknown = required - set(data), set(data) - required - optional
    if missing or unknown:
        raise ValueError(
            f"plot {name!r} ({kind}): data lacks {sorted(missing)} / has unknown keys "
            f"{sorted(map(str, unknown))}; expected {sorted(required)}"
            + (f" and optionally {sorted(optional)}." if optional else ".")
        )
    if kind == "privacy_utility":
        epsilons = _numbers(name, "epsilons", data["epsilons"], minimum=0.0)
        values = _numbers(name, "values", data["values"])
        _same_length(name, "values", values, "epsilons", len(epsilons))
        if len(set(epsilons)) != len(epsilons):
            raise ValueError(f"plot {name!r}: data['epsilons'] has repeated ε {epsilons}; give each ε once.")
        references = data.get("references") or {}
        if not isinstance(references, Mapping):
            raise ValueError(f"plot {name!r}: data['references'] must be a dict label -> value; got {references!r}.")
        checked_refs = {}
        for label, value in references.items():
            label = _label(name, "references", label)
            checked_refs[label] = _numbers(name, f"references[{label!r}]", [value])[0]
        return {"epsilons": epsilons, "values": values, "metric": _label(name, "metric", data["metric"]),
                "references": checked_refs}
    if kind == "score_histogram":
        return {"in": _numbers(name, "in", data["in"]), "out": _numbers(name, "out", data["out"]),
                "xlabel": _label(name, "xlabel", data.get("xlabel", "score"))}
    categories = data["categories"]
    if isinstance(categories, (str, bytes, Mapping)) or not isinstance(categories, Iterable):
        raise ValueError(f"plot {name!r}: data['categories'] must be a list of labels; got {categories!r}.")  # noqa: TRY004
    labels = [str(c) for c in categories]
    if not labels:
        raise ValueError(f"plot {name!r}: data['categories'] is empty; a plot needs at least one category.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"plot {name!r}: data['categories'] has repeated labels {labels}.")
    real = _numbers(name, "real", data["real"], minimum=0.0)
    synthetic = _numbers(name, "synthetic", data["synthetic"], minimum=0.0)
    _same_length(name, "real", real, "categories", len(labels))
    _same_length(name, "synthetic", synthetic, "categories", len(labels))
    return {"column": _label(name, "column", data["column"]), "categories": labels, "real": real,
            "synthetic": synthetic}


def matplotlib_parts() -> tuple[Any, Any]:
    """matplotlib's Figure and Agg canvas (no pyplot: the caller's backend and state are untouched)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise missing_extra("matplotlib", "evaluation") from exc
    return Figure, FigureCanvasAgg


def render(plot: Plot, figure_cls: Any, canvas_cls: Any) -> bytes:
    """The plot as PNG bytes."""
    fig = figure_cls(figsize=_FIGSIZE, dpi=_DPI, layout="constrained")
    canvas_cls(fig)
    ax = fig.add_subplot()
    data = plot.data
    if plot.kind == "privacy_utility":
        order = sorted(range(len(data["epsilons"])), key=data["epsilons"].__getitem__)
        xs = [data["epsilons"][i] for i in order]
        ys = [data["values"][i] for i in order]
        ax.plot(xs, ys, marker="o", linewidth=2, label=f"DP synthetic data ({data['metric']})")
        styles = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
        for i, (label, value) in enumerate(data["references"].items()):
            ax.axhline(value, linestyle=styles[i % len(styles)], color=f"C{i + 1}", linewidth=1.5,
                       label=f"{label} ({format_value(value)})")
        if xs[0] > 0 and xs[-1] / xs[0] >= 10:
            ax.set_xscale("log")
            ax.set_xticks(xs, [format_value(x) for x in xs])
            ax.minorticks_off()
        ax.set_xlabel("privacy budget ε")
        ax.set_ylabel(data["metric"])
        ax.grid(True, alpha=0.3)
    elif plot.kind == "score_histogram":
        import numpy as np

        both = np.asarray(data["in"] + data["out"], dtype=float)
        edges = np.histogram_bin_edges(both, bins=min(40, max(10, int(math.sqrt(both.size)))))
        ax.hist(data["in"], bins=edges, alpha=0.55, density=True, label=f"IN canaries (n = {len(data['in']):,})")
        ax.hist(data["out"], bins=edges, alpha=0.55, density=True, label=f"OUT canaries (n = {len(data['out']):,})")
        ax.set_xlabel(data["xlabel"])
        ax.set_ylabel("density")
    else:
        n = len(data["categories"])
        xs = range(n)
        width = 0.4
        ax.bar([x - width / 2 for x in xs], data["real"], width, label="real")
        ax.bar([x + width / 2 for x in xs], data["synthetic"], width, label="synthetic")
        long_labels = n > 6 or max(len(c) for c in data["categories"]) > 10
        ax.set_xticks(list(xs), data["categories"], rotation=45 if long_labels else 0,
                      ha="right" if long_labels else "center")
        ax.set_xlabel(data["column"])
        ax.set_ylabel("frequency")
        ax.grid(True, axis="y", alpha=0.3)
    title = plot.name if plot.shareable else f"{plot.name}\n(owner-only: not covered by the DP guarantee; do not publish)"
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
