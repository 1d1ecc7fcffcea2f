"""The page's two plots, as inline SVG (drawn with the report's figure helpers, so a board and
a report look alike and render to the same bytes for the same data):

- reward against cost: each entry's aggregate score (with its CI) against its evaluation
  seconds per episode, and the Pareto front (entries no other entry beats on both);
- the aggregate per adapter: the best entry of each adapter, with its CI.
"""

from __future__ import annotations

from mmrl_harness.experiments.plots import interval_plot, new_figure, pareto_front, svg_text
from mmrl_harness.leaderboard.board import Board
from mmrl_harness.leaderboard.ranking import Row


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
    figure, axes = new_figure(5.0, 3.4)
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
    return svg_text(figure)


def adapter_svg(board: Board, rows: list[Row]) -> str:
    """The best entry's aggregate per adapter, with its CI, best at the top."""
    rule = board.spec.ranking
    best: dict[str, Row] = {}
    for row in rows:  # rows are ranked: the first of each adapter is its best
        best.setdefault(row.entry.first.provenance.fusion.name, row)
    figure, axes = interval_plot(list(best), [row.score for row in best.values()], width=5.0)
    axes.set_xlabel(f"{rule.aggregate.upper()} {rule.metric} ({rule.confidence:.0%} CI)")
    return svg_text(figure)
