"""The report's figures (matplotlib): IQM with CIs, training curves with seed bands,
reward against cost with the Pareto front, performance profiles and robustness drops.

Figures are bare ``matplotlib.figure.Figure`` objects (no pyplot, so no GUI backend and no
global figure registry); PNGs are drawn by the Agg canvas. Deterministic: a fixed ``svg.hashsalt`` (SVG element ids), no dates in the file metadata and
fixed bootstrap seeds, so rerunning the report on the same results writes identical files.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmrl_harness.errors import MMRLError
from mmrl_harness.experiments.summary import Row, TaskSummary
from mmrl_harness.metrics import across_seeds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mmrl_harness.results_schema import MetricValue

#: File formats the plots are written in.
PLOT_FORMATS = ("png", "svg")
#: rcParams that make SVG output byte-identical across runs (ids come from this salt, not a
#: random one) and PNG output independent of the user's matplotlibrc.
_RC = {"svg.hashsalt": "mmrl-report", "svg.fonttype": "path", "figure.dpi": 100}
#: No creation date (SVG) and no software string (PNG): the same data gives the same bytes.
_METADATA = {"svg": {"Date": None}, "png": {"Software": None}}


class PlotFormatError(MMRLError, ValueError):
    """An unknown plot format was asked for."""


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, validated against :data:`PLOT_FORMATS`."""
    unknown = [f for f in formats if f not in PLOT_FORMATS]
    if unknown:
        raise PlotFormatError(
            f"plot format(s) {unknown} are not supported; use any of {', '.join(PLOT_FORMATS)}."
        )
    return list(formats)


def slug(name: str) -> str:
    """A task name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def new_figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, Axes]:
    """A bare ``Figure`` with one axes (no pyplot: no global figure registry, nothing kept
    alive between plots); reports and leaderboard pages draw on these."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def interval_plot(
    labels: Sequence[str], values: Sequence[MetricValue], width: float = 6.4
) -> tuple[Figure, Axes]:
    """Each label's point estimate with its CI (none drawn where a value has no CI), in the
    given order from the top; the caller sets the axis label and title."""
    fig, ax = new_figure(width, 1.2 + 0.4 * len(labels))
    y = np.arange(len(labels))
    points = np.array([v.value for v in values])
    low = np.array([v.ci_low if v.ci_low is not None else v.value for v in values])
    high = np.array([v.ci_high if v.ci_high is not None else v.value for v in values])
    ax.errorbar(points, y, xerr=[points - low, high - points], fmt="o", capsize=4)
    ax.set_yticks(y, list(labels))
    ax.invert_yaxis()  # the first label at the top
    ax.grid(axis="x", alpha=0.3)
    return fig, ax


def iqm_plot(summary: TaskSummary) -> Figure:
    """Each configuration's IQM as a point with its 95 % CI, best at the top."""
    fig, ax = interval_plot([r.label for r in summary.rows], [r.iqm for r in summary.rows])
    ax.set_xlabel(f"IQM of {summary.score} (95 % CI)")
    ax.set_title(f"{summary.task}: IQM across runs")
    return fig


def _band(curves: Sequence[Sequence[tuple[float, float]]]) -> tuple[np.ndarray, ...]:
    """Mean and min/max across runs, each run interpolated onto the first run's steps."""
    steps = np.array([s for s, _ in curves[0]], dtype=np.float64)
    stacked = np.stack([np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in curves])
    return steps, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0)


def curves_plot(summary: TaskSummary) -> Figure | None:
    """Mean training curve per configuration with its min-max band over seeds (None when no
    run logged a curve)."""
    rows = [r for r in summary.rows if r.curves]
    if not rows:
        return None
    fig, ax = new_figure()
    for row in rows:
        steps, mean, low, high = _band(row.curves)
        (line,) = ax.plot(steps, mean, label=f"{row.label} ({len(row.curves)} runs)")
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("update step")
    ax.set_ylabel("mean training reward")
    ax.set_title(f"{summary.task}: training curves (band: min-max over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the ``(cost, score)`` points no other point dominates (cost no higher and score
    no worse, one strictly), in order of increasing cost. Reports and board pages share it."""
    if not higher_is_better:
        points = [(cost, -score) for cost, score in points]
    front = []
    for i, (cost, score) in enumerate(points):
        dominated = any(
            c <= cost and s >= score and (c < cost or s > score)
            for j, (c, s) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def pareto_plot(summary: TaskSummary) -> Figure:
    """IQM against the task's cost measure, the Pareto front joined and circled."""
    from mmrl_harness.experiments.render import MEASURE_UNITS

    fig, ax = new_figure()
    measure = summary.cost_measure
    points = [(r.costs.get(measure) or 0.0, r.iqm.value) for r in summary.rows]
    for row, (cost, score) in zip(summary.rows, points, strict=True):
        ax.scatter([cost], [score], color="tab:blue", zorder=3)
        ax.annotate(row.label, (cost, score), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front(points)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "o--",
        markerfacecolor="none",
        markersize=12,
        color="tab:red",
        label="Pareto front",
    )
    ax.set_xlabel(f"cost ({MEASURE_UNITS[measure]}, mean over runs)")
    ax.set_ylabel(f"IQM of {summary.score}")
    ax.set_title(f"{summary.task}: reward against cost")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _taus(rows: Sequence[Row], score: str) -> np.ndarray:
    if score == "success_rate":
        return np.linspace(0.0, 1.0, 101)
    scores = [s for r in rows for s in r.scores]
    return np.linspace(min(scores), max(scores), 101)


def profile_plot(summary: TaskSummary, seed: int = 0) -> Figure:
    """Performance profile per configuration: the fraction of runs scoring above each
    threshold, with its pointwise 95 % stratified-bootstrap band."""
    fig, ax = new_figure()
    taus = _taus(summary.rows, summary.score)
    for row in summary.rows:
        matrix = np.asarray(row.scores).reshape(-1, 1)
        profile, low, high = across_seeds.performance_profile_with_ci(matrix, taus, seed=seed)
        # A profile is a step function of tau: draw it as one.
        (line,) = ax.step(taus, profile, where="post", label=row.label)
        ax.fill_between(
            taus, low, high, step="post", color=line.get_color(), alpha=0.15, linewidth=0
        )
    ax.set_xlabel(f"{summary.score} threshold τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(f"{summary.task}: performance profiles")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def robustness_plot(summary: TaskSummary) -> Figure | None:
    """Grouped bars: each perturbation's score drop per configuration (None when no run was
    evaluated under perturbations)."""
    names = sorted({n for r in summary.rows for n in r.robustness})
    if not names:
        return None
    fig, ax = new_figure(max(6.4, 1.2 * len(names)), 3.6)
    width = 0.8 / len(summary.rows)
    x = np.arange(len(names))
    for i, row in enumerate(summary.rows):
        drops = [row.robustness.get(n, np.nan) for n in names]
        ax.bar(x + i * width - 0.4 + width / 2, drops, width, label=row.label)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylabel(f"drop in {summary.score} (clean - perturbed)")
    ax.set_title(f"{summary.task}: robustness")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.legend(fontsize=8)
    return fig


#: Every figure of a task, by file-name stem.
FIGURES: dict[str, Callable[[TaskSummary], Figure | None]] = {
    "iqm": iqm_plot,
    "curves": curves_plot,
    "pareto": pareto_plot,
    "profile": profile_plot,
    "robustness": robustness_plot,
}


def _rc_context() -> AbstractContextManager[None]:
    """The report's rcParams, for drawing and saving."""
    import matplotlib

    # Every key is a valid rcParam; matplotlib's stubs type the keys as literals.
    return matplotlib.rc_context(_RC)  # type: ignore[arg-type]


def save(fig: Figure, path: Path, fmt: str) -> None:
    """Write ``fig`` as ``fmt`` to ``path`` without dates or version strings in it."""
    with _rc_context():
        fig.savefig(path, format=fmt, metadata=_METADATA[fmt])


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (for a data URI)."""
    buffer = io.BytesIO()
    with _rc_context():
        fig.savefig(buffer, format="png", metadata=_METADATA["png"])
    return buffer.getvalue()


def svg_text(fig: Figure) -> str:
    """``fig`` as an inline ``<svg>`` element (no XML prolog, doctype or metadata), for HTML."""
    buffer = io.StringIO()
    with _rc_context():
        fig.savefig(buffer, format="svg", metadata=_METADATA["svg"])
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if start != -1 and end != -1:  # matplotlib's RDF block: only its name and a format
        text = text[:start] + text[end + len("</metadata>") :]
    return text


def task_figures(summary: TaskSummary) -> dict[str, Figure]:
    """The figures of one task that have data, by name."""
    figures = {}
    with _rc_context():
        for name, make in FIGURES.items():
            fig = make(summary)
            if fig is not None:
                figures[name] = fig
    return figures
