"""The evaluation report of a synthetic-data release: privacy block, metrics, plots, what is not covered.

A :class:`Report` collects :class:`~hf_dpsynth.evaluation.metric.Metric` values and plots, and
exports them as JSON, Markdown and PNG files. The export is **shareable by default**: owner-only
metrics and plots (computed on private data without DP) are left out of every file, caption and
link unless the owner asks for them with ``include_owner_only=True``; they then appear only under
the heading ``Owner-only (not covered by the DP guarantee; do not publish)`` (Markdown), under the
``"owner_only"`` key (JSON), and in PNG files named ``owner_only-*.png``.

Privacy: the report releases nothing by itself. The privacy block restates the ledger's report
(ε, δ, unit, N, accountant, stages), which is public; a shareable export contains the shareable
metrics and plots only, so it reveals nothing beyond the DP release provided each metric's and
plot's ``shareable`` flag is right.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_dpsynth._io import atomic_write_bytes, atomic_write_text
from hf_dpsynth._markdown import escape_markdown, format_bound, format_value, ledger_number
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth.evaluation.plots import (
    OWNER_ONLY_PREFIX,
    PLOT_KINDS,
    Plot,
    PlotKind,
    checked_plot_data,
    matplotlib_parts,
    render,
)
from hf_dpsynth.privacy.disclosure import DEFAULT_NOT_COVERED, OWNER_ONLY_HEADING

__all__ = ["Report"]


_FORMAT = "hf_dpsynth.evaluation_report"
_FORMAT_VERSION = 1
_LEDGER_KEYS = ("epsilon_spent", "delta", "privacy_unit")


class Report:
    """Metrics, plots and the privacy guarantee of one release, exported as JSON, Markdown and PNG.

    Args:
        title: the report's title (one line).
        privacy: the ledger's report, ``PrivacyLedger.report().to_dict()``; None when no ledger
            is attached (the report then says that it states no DP guarantee).

    Privacy: shareable exports (the default of every method) contain no owner-only metric or
    plot: no name, value, setting, note, caption, data or file. ``not_covered`` lists what the
    guarantee does not protect; it starts as :data:`DEFAULT_NOT_COVERED` and can be replaced.
    """

    def __init__(self, title: str, *, privacy: Mapping[str, Any] | None = None) -> None:
        self.title = _one_line("title", title)
        self.privacy = _checked_privacy(privacy)
        self._metrics: list[Metric] = []
        self._keys: set[tuple[str, str, str]] = set()
        self._plots: dict[str, Plot] = {}
        self._plot_files: dict[str, Path] = {}
        self._not_covered: tuple[str, ...] = DEFAULT_NOT_COVERED

    def __repr__(self) -> str:
        return (
            f"Report(title={self.title!r}, metrics={len(self._metrics)}, plots={len(self._plots)}, "
            f"privacy={'attached' if self.privacy is not None else None})"
        )

    # ----------------------------------------------------------------------------------------
    # Content
    # ----------------------------------------------------------------------------------------

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Every metric added, shareable and owner-only, in the order added."""
        return tuple(self._metrics)

    @property
    def not_covered(self) -> tuple[str, ...]:
        """What the DP guarantee does not cover (assign a new sequence of strings to change it)."""
        return self._not_covered

    @not_covered.setter
    def not_covered(self, items: Iterable[str]) -> None:
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(
                f"not_covered must be a list of strings, one item each; got {type(items).__name__}."
            )
        self._not_covered = tuple(_one_line("each not_covered item", item) for item in items)

    def add(self, metric: Metric) -> None:
        """Adds one metric; a second metric with the same section, name and setting is refused."""
        if not isinstance(metric, Metric):
            raise TypeError(f"add() takes a Metric; got {type(metric).__name__}. Use extend() for several.")
        if not isinstance(metric.shareable, bool):
            raise TypeError(
                f"Metric {metric.name!r}: shareable must be True or False; got {metric.shareable!r}. "
                "A value computed on private data without DP is owner-only (shareable=False)."
            )
        _one_line("Metric name", metric.name)
        _one_line(f"the section of metric {metric.name!r}", metric.section)
        value = metric.value
        if value is not None and not isinstance(value, (str, numbers.Real)):
            raise TypeError(
                f"Metric {metric.name!r}: value must be a number, a string or None; got "
                f"{type(value).__name__}."
            )
        key = (metric.section, metric.name, metric.setting)
        if key in self._keys:
            raise ValueError(
                f"The report already has metric {metric.name!r} in section {metric.section!r} with "
                f"setting {metric.setting!r}; give the runs different settings (e.g. 'ε = 4')."
            )
        self._keys.add(key)
        self._metrics.append(metric)

    def extend(self, metrics: Iterable[Metric]) -> None:
        """Adds each metric in order (see :meth:`add`); on a refused one, none of them is added."""
        pending = list(metrics)
        keys, count = set(self._keys), len(self._metrics)
        try:
            for metric in pending:
                self.add(metric)
        except Exception:
            self._keys = keys
            del self._metrics[count:]
            raise

    def add_plot(
        self, name: str, kind: PlotKind, data: Mapping[str, Any], *, shareable: bool, caption: str = ""
    ) -> None:
        """Adds a plot, drawn by :meth:`save_plots`; ``data`` is checked and copied now.

        Kinds and their data:

        - ``"privacy_utility"``: ``{"epsilons": [...], "values": [...], "metric": "TSTR accuracy",
          "references": {"real data": 0.97, "ε = ∞": 0.95}}`` (references optional): the metric
          across ε, with a horizontal line per reference.
        - ``"score_histogram"``: ``{"in": [...], "out": [...], "xlabel": "loss"}`` (xlabel
          optional): overlaid histograms of canary scores of IN and OUT canaries.
        - ``"marginal_bars"``: ``{"column": "workclass", "categories": [...], "real": [...],
          "synthetic": [...]}``: real vs synthetic frequency of each category.

        Privacy: set ``shareable=False`` for any plot drawn from private data without DP (e.g.
        real marginals of the private data, TSTR on a private split, an uncharged audit's scores).
        """
        name = _one_line("plot name", name)
        if name in self._plots:
            raise ValueError(f"The report already has a plot named {name!r}; give each plot its own name.")
        if kind not in PLOT_KINDS:
            raise ValueError(f"Unknown plot kind {kind!r} for plot {name!r}; use one of {list(PLOT_KINDS)}.")
        if not isinstance(shareable, bool):
            raise TypeError(f"Plot {name!r}: shareable must be True or False; got {shareable!r}.")
        if not isinstance(caption, str):
            raise TypeError(f"Plot {name!r}: caption must be a string; got {type(caption).__name__}.")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "plot"
        for other in self._plots.values():
            if other.stem == stem:
                raise ValueError(
                    f"Plots {other.name!r} and {name!r} would be saved to the same file {stem}.png; "
                    "rename one of them."
                )
        checked = checked_plot_data(name, kind, data)
        self._plots[name] = Plot(name, kind, checked, shareable, " ".join(caption.split()), stem)

    # ----------------------------------------------------------------------------------------
    # Exports
    # ----------------------------------------------------------------------------------------

    def to_dict(self, *, include_owner_only: bool = False) -> dict[str, Any]:
        """A JSON-able dict: title, privacy, shareable metrics and plots, what is not covered.

        With ``include_owner_only=True`` the owner-only metrics and plots are added under the
        key ``"owner_only"`` (with a warning), never mixed with the shareable ones.
        """
        return self._as_dict(include_owner_only=include_owner_only, base=None)

    def to_json(self, path: str | os.PathLike[str] | None = None, *, include_owner_only: bool = False) -> str:
        """:meth:`to_dict` as indented JSON; written atomically to ``path`` when one is given."""
        text = _dump_json(self.to_dict(include_owner_only=include_owner_only))
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_markdown(self, *, include_owner_only: bool = False) -> str:
        """The report as Markdown: title, privacy block, one table per section, plots.

        Plots appear as image links once :meth:`save_plots` (or :meth:`save`) has written them.
        Owner-only metrics and plots appear only with ``include_owner_only=True``, under their own
        heading at the end.
        """
        return self._markdown(include_owner_only=include_owner_only, base=None)

    def save_plots(self, folder: str | os.PathLike[str], *, include_owner_only: bool = False) -> list[Path]:
        """Draws each plot to ``folder/<name>.png`` (owner-only: ``owner_only-<name>.png``), atomically.

        Owner-only plots are skipped unless ``include_owner_only``. A shareable export refuses a
        folder that already holds owner-only plot files (FileExistsError): they must not be
        published with it. Needs matplotlib (the ``evaluation`` extra).
        """
        figure_cls, canvas_cls = matplotlib_parts()
        folder = Path(folder)
        if not include_owner_only:
            _refuse_owner_only_files(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for plot in self._plots.values():
            if not (plot.shareable or include_owner_only):
                continue
            png = render(plot, figure_cls, canvas_cls)
            path = atomic_write_bytes(folder / plot.file_name, png)
            self._plot_files[plot.name] = path
            written.append(path)
        return written

    def save(self, folder: str | os.PathLike[str], *, include_owner_only: bool = False) -> list[Path]:
        """Writes ``report.md``, ``report.json`` and the plots into ``folder``; returns their paths.

        Every file is written atomically; the Markdown and JSON link the plots by file name.
        """
        folder = Path(folder)
        plots = self.save_plots(folder, include_owner_only=include_owner_only)
        report_json = folder / "report.json"
        atomic_write_text(report_json, _dump_json(self._as_dict(include_owner_only=include_owner_only, base=folder)))
        report_md = folder / "report.md"
        atomic_write_text(report_md, self._markdown(include_owner_only=include_owner_only, base=folder))
        return [report_md, report_json, *plots]

    # ----------------------------------------------------------------------------------------
    # Rendering
    # ----------------------------------------------------------------------------------------

    def _selected(self, shareable: bool) -> tuple[list[Metric], list[Plot]]:
        metrics = [m for m in self._metrics if m.shareable is shareable]
        plots = [p for p in self._plots.values() if p.shareable is shareable]
        return metrics, plots

    def _link(self, plot: Plot, base: Path | None) -> str | None:
        path = self._plot_files.get(plot.name)
        if path is None:
            return None
        if base is not None:
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                pass
        return path.as_posix()

    def _as_dict(self, *, include_owner_only: bool, base: Path | None) -> dict[str, Any]:
        def plot_dict(plot: Plot) -> dict[str, Any]:
            return {"name": plot.name, "kind": plot.kind, "shareable": plot.shareable, "caption": plot.caption,
                    "data": json.loads(json.dumps(plot.data)), "file": self._link(plot, base)}

        metrics, plots = self._selected(shareable=True)
        result: dict[str, Any] = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "title": self.title,
            "includes_owner_only": include_owner_only,
            "privacy": None if self.privacy is None else json.loads(json.dumps(self.privacy)),
            "not_covered": list(self._not_covered),
            "metrics": [_metric_dict(m) for m in metrics],
            "plots": [plot_dict(p) for p in plots],
        }
        if include_owner_only:
            owner_metrics, owner_plots = self._selected(shareable=False)
            result["owner_only"] = {
                "warning": OWNER_ONLY_HEADING,
                "metrics": [_metric_dict(m) for m in owner_metrics],
                "plots": [plot_dict(p) for p in owner_plots],
            }
        return result

    def _markdown(self, *, include_owner_only: bool, base: Path | None) -> str:
        blocks = [f"# {escape_markdown(self.title)}", *_privacy_blocks(self.privacy, self._not_covered)]
        metrics, plots = self._selected(shareable=True)
        blocks += _section_blocks(metrics, level="##")
        links = [self._plot_block(p, base, level="###") for p in plots if p.name in self._plot_files]
        if links:
            blocks += ["## Plots", *links]
        if include_owner_only:
            owner_metrics, owner_plots = self._selected(shareable=False)
            blocks += [
                f"## {OWNER_ONLY_HEADING}",
                ("> **Do not publish this part.** These values were computed on private data without a "
                 "DP mechanism: the privacy guarantee above does not cover them."),
            ]
            blocks += _section_blocks(owner_metrics, level="###")
            blocks += [self._plot_block(p, base, level="###") for p in owner_plots if p.name in self._plot_files]
            if not owner_metrics and not owner_plots:
                blocks.append("No owner-only metrics or plots.")
        return "\n\n".join(blocks) + "\n"

    def _plot_block(self, plot: Plot, base: Path | None, *, level: str) -> str:
        link = self._link(plot, base)
        target = f"<{link}>" if re.search(r"[\s()<>]", link) else link
        lines = [f"{level} Plot: {escape_markdown(plot.name)}", "", f"![{escape_markdown(plot.name)}]({target})"]
        if plot.caption:
            lines += ["", escape_markdown(plot.caption)]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(escape_markdown(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _section_blocks(metrics: Sequence[Metric], *, level: str) -> list[str]:
    sections: dict[str, list[Metric]] = {}
    for metric in metrics:
        sections.setdefault(metric.section, []).append(metric)
    blocks = []
    for section, members in sections.items():
        blocks.append(f"{level} {escape_markdown(section[:1].upper() + section[1:])}")
        rows = [(m.name, m.setting, format_value(m.value), m.note) for m in members]
        blocks.append(_table(("metric", "setting", "value", "note"), rows))
    return blocks


def _privacy_blocks(privacy: Mapping[str, Any] | None, not_covered: Sequence[str]) -> list[str]:
    blocks = ["## Privacy guarantee"]
    if privacy is None:
        blocks.append("No privacy ledger is attached: this report states no differential-privacy guarantee.")
    else:
        spent = ledger_number(privacy["epsilon_spent"])
        budget = ledger_number(privacy.get("epsilon_budget"))
        unit = privacy["privacy_unit"]
        adjacency = privacy.get("adjacency") or "add_or_remove_one"
        adjacency_words = "add/remove one" if adjacency == "add_or_remove_one" else adjacency
        accountant = privacy.get("accountant")
        num_units = privacy.get("num_units")
        # ε and δ are bounds: rounded up at the shown precision, never to nearest (that could understate).
        epsilon_line = f"- **ε** = {format_bound(spent)}"
        if budget is not None:
            epsilon_line += f" (budget {format_bound(budget)})"
        lines = [
            epsilon_line,
            f"- **δ** = {format_bound(privacy['delta'])}",
            (f"- **Privacy unit**: one {escape_markdown(unit)} ({adjacency_words} adjacency: neighbouring datasets "
             f"differ by all records of one {escape_markdown(unit)})"),
            f"- **N** (privacy units) = {format_value(num_units)}",
            f"- **Accountant**: {escape_markdown(accountant.upper()) if accountant else 'none fixed yet'}",
        ]
        if privacy.get("private") is False or spent == math.inf:
            lines.append(
                "- **NOT PRIVATE**: a non-private mechanism was charged or DP is disabled (ε = ∞); "
                "this release carries no DP guarantee."
            )
        blocks.append("\n".join(lines))
        stages = privacy.get("stages") or []
        if stages:
            rows = [
                (
                    str(stage.get("name", "")),
                    str(stage.get("kind", "")),
                    format_value(stage.get("share")) if stage.get("share") is not None else "-",
                    format_bound(stage["epsilon_budget"]) if stage.get("epsilon_budget") is not None else "-",
                    format_bound(stage.get("epsilon_spent")),
                )
                for stage in stages
            ]
            blocks.append(_table(("stage", "mechanism", "share", "ε budget", "ε spent"), rows))
    blocks.append("### Not covered by the guarantee")
    if not_covered:
        blocks.append("\n".join(f"- {escape_markdown(item)}" for item in not_covered))
    else:
        blocks.append("Nothing listed.")
    return blocks


def _metric_dict(metric: Metric) -> dict[str, Any]:
    result = metric.to_dict()
    value = result["value"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return result
    if isinstance(value, numbers.Integral):
        result["value"] = int(value)  # numpy scalars are not JSON
    elif math.isnan(value):
        result["value"] = None
    elif math.isinf(value):
        result["value"] = "inf" if value > 0 else "-inf"
    else:
        result["value"] = float(value)
    return result


def _dump_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _one_line(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string; got {value!r}.")
    return " ".join(value.split())


def _checked_privacy(privacy: Any) -> dict[str, Any] | None:
    if privacy is None:
        return None
    if not isinstance(privacy, Mapping):
        raise TypeError(
            f"privacy must be the ledger's report as a dict, PrivacyLedger.report().to_dict(); got "
            f"{type(privacy).__name__}."
        )
    missing = [key for key in _LEDGER_KEYS if key not in privacy]
    if missing:
        raise ValueError(
            f"privacy lacks {missing}: pass the ledger's report, PrivacyLedger.report().to_dict(), "
            "so that the report states the guarantee it was released under."
        )
    try:
        copied = json.loads(json.dumps(dict(privacy), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"privacy must be JSON-serialisable (as LedgerReport.to_dict() is): {exc}.") from exc
    stages = copied.get("stages")
    if stages is not None and not (isinstance(stages, list) and all(isinstance(s, dict) for s in stages)):
        raise ValueError(f"privacy['stages'] must be a list of stage dicts; got {stages!r}.")
    return copied


# --------------------------------------------------------------------------------------------
# Plot files
# --------------------------------------------------------------------------------------------


def _refuse_owner_only_files(folder: Path) -> None:
    found = sorted(folder.glob(OWNER_ONLY_PREFIX + "*.png")) if folder.is_dir() else []
    if found:
        raise FileExistsError(
            f"{folder} holds owner-only plot files ({', '.join(p.name for p in found)}) from an export "
            "with include_owner_only=True; a shareable export must not be published beside them. "
            "Use a fresh folder, or delete them first."
        )


