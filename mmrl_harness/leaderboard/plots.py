"""The page's two plots, as inline SVG (matplotlib, Agg backend; nothing is shown or saved).

- reward against cost: each entry's aggregate score (with its CI) against its evaluation
  seconds per episode, and the Pareto front (entries no other entry beats on both);
- the aggregate per adapter: the best entry of each adapter, with its CI.
"""

from __future__ import annotations

import io
from typing import Any

from mmrl_harness.experiments.plots import pareto_front
from mmrl_harness.leaderboard.board import Board
from mmrl_harness.leaderboard.ranking import Row


def _figure(width: float = 5.0, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # never a window: the page is rendered headless
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "mmrl-leaderboard"  # stable element ids across renders
    return plt.subplots(figsize=(width, height))


def _close(figure: Any) -> str:
    import matplotlib.pyplot as plt

    try:
        buffer = io.StringIO()
        # No date, fixed id salt (see _figure): the same board renders to the same bytes.
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        text = buffer.getvalue()
        text = text[text.index("<svg") :]  # inline element: no XML prolog or doctype
        start, end = text.find("<metadata>"), text.find("</metadata>")
        if start != -1 and end != -1:  # matplotlib's RDF block: only its name and a format
            text = text[:start] + text[end + len("</metadata>") :]
        return text
    finally:
        plt.close(figure)


def _error(row: Row) -> tuple[float, float]:
    """Distances from the point estimate down and up to the CI ends (0 without a CI)."""
    score = row.score
    low = score.value - score.ci_low if score.ci_low is not None else 0.0
    high = score.ci_high - score.value if score.ci_high is not None else 0.0
    return low, high


def pareto_svg(board: Board, rows: list[Row]) -> str:
    """Score against evaluation seconds per episode, with the Pareto front."""
    rule = board.spec.ranking
    shown = [r for r in rows if r.cost is not None]
    figure, axes = _figure()
    points = [(float(r.cost or 0.0), r.score.value) for r in shown]
    for row, (x, y) in zip(shown, points, strict=True):
        low, high = _error(row)
        axes.errorbar([x], [y], yerr=[[low], [high]], fmt="o", capsize=3)
        axes.annotate(f"#{row.rank}", (x, y), textcoords="offset points", xytext=(5, 4))
    front = pareto_front(points, rule.higher_is_better)
    if front:
        axes.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "k--",
            lw=1,
            label="Pareto front",
        )
        axes.legend(loc="best", fontsize=8)
    axes.set_xlabel("evaluation seconds per episode")
    axes.set_ylabel(f"{rule.aggregate.upper()} {rule.metric}")
    axes.grid(alpha=0.3)
    return _close(figure)


def adapter_svg(board: Board, rows: list[Row]) -> str:
    """The best entry's aggregate per adapter, with its CI, as horizontal bars."""
    rule = board.spec.ranking
    best: dict[str, Row] = {}
    for row in rows:  # rows are ranked: the first of each adapter is its best
        best.setdefault(row.entry.first.provenance.fusion.name, row)
    names = list(best)
    values = [best[n].score.value for n in names]
    lows = [_error(best[n])[0] for n in names]
    highs = [_error(best[n])[1] for n in names]
    figure, axes = _figure(height=0.5 + 0.45 * max(len(names), 2))
    axes.barh(range(len(names)), values, xerr=[lows, highs], capsize=3, color="#6a9fd4")
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlabel(f"{rule.aggregate.upper()} {rule.metric} ({rule.confidence:.0%} CI)")
    axes.grid(axis="x", alpha=0.3)
    return _close(figure)
