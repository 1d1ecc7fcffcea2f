"""``mmrl report``: compare configurations across results files, in the terminal and on disk.

:func:`build_report` reads every results file under the inputs (files, folders, a sweep's
output folder), groups them into configurations and their runs, and ranks the configurations
of each task; :func:`write_report` writes Markdown, a self-contained HTML page and the figures.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmrl_harness.errors import MMRLError
from mmrl_harness.experiments import plots, render
from mmrl_harness.experiments.collect import Collection, collect
from mmrl_harness.experiments.summary import TaskSummary, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Text formats ``write_report`` writes.
REPORT_FORMATS = ("md", "html")


class ReportFormatError(MMRLError, ValueError):
    """An unknown report format was asked for."""


@dataclass
class Report:
    """The runs read and, per task, the ranked configurations."""

    collection: Collection
    tasks: list[TaskSummary]


def build_report(
    inputs: Sequence[str | os.PathLike[str]], *, verify: bool = True, seed: int = 0
) -> Report:
    """Read every results file under ``inputs`` (verified unless ``verify=False``) and rank
    each task's configurations by IQM (``seed``: the bootstrap's)."""
    collection = collect(inputs, verify=verify)
    return Report(collection=collection, tasks=summarise(collection, seed=seed))


def parse_formats(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """``"md,html"`` -> ``["md", "html"]``; ``""`` or ``"none"`` -> ``[]``."""
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if formats == ["none"]:
        return []
    unknown = [f for f in formats if f not in allowed]
    if unknown:
        raise ReportFormatError(
            f"{option} {text!r} names unknown format(s) {unknown}; use a comma-separated "
            f"subset of {', '.join(allowed)} (or 'none')."
        )
    return formats


def _inline(fig: Figure, plot_formats: Sequence[str]) -> str:
    """A figure as inline HTML: SVG markup when SVG is written, else a base64 PNG."""
    if "svg" in plot_formats:
        return plots.svg_text(fig)
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def write_report(
    report: Report,
    out: str | os.PathLike[str],
    *,
    formats: Sequence[str] = REPORT_FORMATS,
    plot_formats: Sequence[str] = plots.PLOT_FORMATS,
) -> list[Path]:
    """Write ``report.md``/``report.html`` and ``plots/<figure>_<task>.<fmt>`` under ``out``;
    returns the paths written. The Markdown links the figures; the HTML page inlines them."""
    out_dir = Path(out)
    plot_formats = plots.check_formats(plot_formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    links: dict[str, list[str]] = {}
    inline: dict[str, list[str]] = {}
    for summary in report.tasks:
        figures = plots.task_figures(summary) if plot_formats else {}
        for name, fig in figures.items():
            stem = f"{name}_{plots.slug(summary.task)}"
            for fmt in plot_formats:
                path = out_dir / "plots" / f"{stem}.{fmt}"
                path.parent.mkdir(exist_ok=True)
                plots.save(fig, path, fmt)
                written.append(path)
            links.setdefault(summary.task, []).append(f"plots/{stem}.{plot_formats[0]}")
            if "html" in formats:
                inline.setdefault(summary.task, []).append(_inline(fig, plot_formats))
    failed, num_runs = report.collection.failed_cells, len(report.collection.runs)
    if "md" in formats:
        path = out_dir / "report.md"
        path.write_text(render.markdown(report.tasks, links, failed, num_runs), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = out_dir / "report.html"
        path.write_text(render.html_page(report.tasks, inline, failed, num_runs), encoding="utf-8")
        written.append(path)
    return written
