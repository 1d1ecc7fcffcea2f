"""Rank a board's entries: the primary metric aggregated over training seeds, with CIs.

Each entry's runs give a score matrix ``(training seeds, tasks)`` of the primary metric; the
board's aggregate (IQM by default) and its stratified-bootstrap percentile interval come from
``mmrl_harness.metrics.across_seeds`` (rliable's definitions). Entries are ordered by the point
estimate (ties by label, so the order is stable). Secondary columns read optional fields with
``getattr``: a value a file does not hold is ``None`` and shows as "–".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmrl_harness.leaderboard.board import Board, BoardSpec
from mmrl_harness.leaderboard.entries import Entry, Run, group_entries
from mmrl_harness.metrics.across_seeds import aggregate_with_ci, iqm, mean, median
from mmrl_harness.results_schema import EvalResults, MetricValue

AGGREGATES: dict[str, Callable[..., float]] = {"iqm": iqm, "mean": mean, "median": median}
#: Shown where a file does not hold a value (older schema, or not measured).
MISSING = "–"


@dataclass
class Row:
    """One ranked entry: its aggregate with CI, per-task aggregates and secondary values."""

    rank: int
    entry: Entry
    score: MetricValue
    per_task: dict[str, MetricValue]
    secondary: dict[str, float | None] = field(default_factory=dict)
    cost: float | None = None  # the x of the reward-against-cost plot (eval s per episode)


def _metric(results: EvalResults, task: str, name: str) -> float | None:
    value = results.tasks[task].metrics.get(name)
    return None if value is None else float(value.value)


def _mean_metric(runs: list[Run], name: str) -> float | None:
    values = [_metric(r.results, t, name) for r in runs for t in r.results.tasks]
    present = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(present)) if present else None


def _training_value(runs: list[Run], name: str) -> float | None:
    values = [getattr(getattr(r.results, "training", None), name, None) for r in runs]
    present = [float(v) for v in values if isinstance(v, (int, float))]
    return float(np.mean(present)) if present else None


def _cost_value(runs: list[Run], name: str) -> float | None:
    values = [getattr(r.results.cost, name, None) for r in runs]
    present = [float(v) for v in values if isinstance(v, (int, float))]
    return float(np.mean(present)) if present else None


def _stability(runs: list[Run], spec: BoardSpec) -> float | None:
    """Dispersion across runs (Chan et al.): the IQR of the runs' mean primary score."""
    if len(runs) < 2:
        return None
    scores = [
        np.mean([_metric(r.results, t, spec.ranking.metric) or 0.0 for t in spec.tasks])
        for r in runs
    ]
    low, high = np.percentile(scores, [25, 75])
    return float(high - low)


def secondary_values(entry: Entry, spec: BoardSpec) -> dict[str, float | None]:
    """The board's secondary columns for ``entry`` (``None`` = not in the files)."""
    runs = entry.runs
    getters: dict[str, Callable[[], float | None]] = {
        "episode_length": lambda: _mean_metric(runs, "episode_length"),
        "invalid_action_rate": lambda: _mean_metric(runs, "invalid_action_rate"),
        "steps_to_success": lambda: _mean_metric(runs, "steps_to_success"),
        "stability": lambda: _stability(runs, spec),
        "eval_wall_time_s": lambda: _cost_value(runs, "wall_time_s"),
        "train_wall_time_s": lambda: _training_value(runs, "wall_time_s"),
        "tokens_generated": lambda: _cost_value(runs, "tokens_generated"),
        "trainable_params": lambda: (
            _training_value(runs, "trainable_params") or _fusion_params(runs)
        ),
        "money": lambda: _cost_value(runs, "money"),
    }
    return {name: getters[name]() for name in spec.secondary}


def _fusion_params(runs: list[Run]) -> float | None:
    value = runs[0].results.provenance.fusion.trainable_params
    return None if value is None else float(value)


def score_matrix(entry: Entry, spec: BoardSpec) -> np.ndarray:
    """``(runs, tasks)`` primary-metric values, tasks in the board's order."""
    return np.array(
        [[_metric(r.results, t, spec.ranking.metric) for t in spec.tasks] for r in entry.runs],
        dtype=np.float64,
    )


def rank_entries(board: Board) -> list[Row]:
    """Every entry of ``board``, ranked by the board's aggregate of its primary metric."""
    spec, rule = board.spec, board.spec.ranking
    statistic = AGGREGATES[rule.aggregate]
    runs = [Run(p, EvalResults.model_validate_json(p.read_bytes())) for p in board.stored_files()]
    rows = []
    for entry in group_entries(runs):
        matrix = score_matrix(entry, spec)

        def aggregate(m: Any) -> MetricValue:
            return aggregate_with_ci(
                statistic,
                m,
                reps=rule.bootstrap_reps,
                confidence=rule.confidence,
                seed=0,
                higher_is_better=rule.higher_is_better,
            )

        per_task = {t: aggregate(matrix[:, [j]]) for j, t in enumerate(spec.tasks)}
        episodes = sum(len(t.records) for r in entry.runs for t in r.results.tasks.values())
        wall = sum(r.results.cost.wall_time_s for r in entry.runs)
        rows.append(
            Row(
                0,
                entry,
                aggregate(matrix),
                per_task,
                secondary_values(entry, spec),
                cost=wall / episodes if episodes else None,
            )
        )
    sign = -1.0 if rule.higher_is_better else 1.0
    rows.sort(key=lambda row: (sign * row.score.value, row.entry.label, row.entry.key))
    for index, row in enumerate(rows, start=1):
        row.rank = index
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the table, or "–"."""
    if value is None or not np.isfinite(value):
        return MISSING
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


#: Secondary columns that count things (shown as integers).
COUNT_COLUMNS = frozenset({"trainable_params", "tokens_generated"})


def fmt_column(column: str, value: float | None) -> str:
    """A secondary column's value: counts as integers, the rest as ``fmt``."""
    if column in COUNT_COLUMNS and value is not None and np.isfinite(value):
        return f"{round(value):,}"
    return fmt(value)


def fmt_ci(value: MetricValue) -> str:
    """``0.512 [0.401, 0.630]``."""
    if value.ci_low is None or value.ci_high is None:
        return fmt(value.value)
    return f"{fmt(value.value)} [{fmt(value.ci_low)}, {fmt(value.ci_high)}]"
