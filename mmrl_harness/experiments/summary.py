"""Per task, one row per configuration: IQM across seeds with its CI, stability, length, cost.

The across-seed statistics are :mod:`mmrl_harness.metrics.across_seeds` on each configuration's
``(runs, 1)`` score matrix (rliable's definitions and stratified bootstrap); the within-run
ones are the training summary's ``stability`` (schema 1.2), averaged over runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmrl_harness.experiments.collect import Collection, ConfigKey, Run
from mmrl_harness.metrics import across_seeds
from mmrl_harness.results_schema import MetricValue

#: The per-update log of the episodic trainers (``mmrl_harness.train.episodic.metrics``), named
#: here rather than imported so that reading a report never imports the training stack.
METRICS_FILE = "metrics.jsonl"

#: Within-run statistics shown from ``training.stability`` (Chan et al.), in column order.
WITHIN_RUN_KEYS = ("dispersion_across_time", "short_term_risk", "long_term_risk", "collapsed")
#: Cost measures for the recommendation and the Pareto plot, most meaningful first: the first
#: that every configuration of a task has is used (eval wall time always exists).
COST_MEASURES = ("money", "cpu_s", "wall_s")


@dataclass
class Row:
    """One configuration on one task: its runs' scores and everything shown about them."""

    key: ConfigKey
    label: str
    scores: list[float]
    iqm: MetricValue
    mean: float
    iqr: float
    within_run: dict[str, float | None]
    episode_length: float | None
    steps_to_success: float | None
    length_ratio: float | None
    train_wall_s: float | None
    train_cpu_s: float | None
    tokens_per_s: float | None
    peak_memory_mib: float | None
    trainable_params: float | None
    flops_per_step: float | None
    money: float | None
    costs: dict[str, float | None]
    robustness: dict[str, float] = field(default_factory=dict)
    curves: list[list[tuple[float, float]]] = field(default_factory=list)

    @property
    def ci_width(self) -> float:
        """Width of the IQM's 95 % interval (0 for one run)."""
        return float((self.iqm.ci_high or 0.0) - (self.iqm.ci_low or 0.0))


@dataclass
class Recommendation:
    """The best configuration of a task, and the cheapest whose IQM interval overlaps it."""

    best: Row
    cheapest: Row
    measure: str


@dataclass
class TaskSummary:
    """One task: which score ranks it, its rows best first, and the recommendation."""

    task: str
    score: str
    rows: list[Row]
    recommendation: Recommendation
    cost_measure: str


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are present; None when none is."""
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _metric(run: Run, task: str, name: str) -> float | None:
    value = run.results.tasks[task].metrics.get(name)
    return None if value is None else value.value


def primary_score(runs: Sequence[Run], task: str) -> str:
    """``success_rate`` when every run of ``task`` reports it, else ``episode_return``."""
    has = all("success_rate" in r.results.tasks[task].metrics for r in runs)
    return "success_rate" if has else "episode_return"


def _run_costs(run: Run) -> dict[str, float | None]:
    """Money, CPU-seconds and wall seconds spent producing this run (training + evaluation)."""
    training, cost = run.training, run.results.cost
    eval_cpu = getattr(cost, "cpu_time_s", None)
    train_cpu = getattr(training, "cpu_time_s", None)
    cpu = None if eval_cpu is None and train_cpu is None else (eval_cpu or 0.0) + (train_cpu or 0.0)
    return {
        "money": getattr(cost, "money", None),
        "cpu_s": cpu,
        "wall_s": cost.wall_time_s + (getattr(training, "wall_time_s", None) or 0.0),
    }


def _tokens_per_s(run: Run) -> float:
    cost = run.results.cost
    stored = getattr(cost, "tokens_per_s", None)
    if stored is not None:
        return float(stored)
    return cost.tokens_generated / cost.wall_time_s if cost.wall_time_s > 0 else 0.0


def _peak_memory(run: Run) -> float | None:
    peaks = [run.results.cost.peak_memory_mib, getattr(run.training, "peak_memory_mib", None)]
    present = [p for p in peaks if p is not None]
    return max(present) if present else None


def _robustness(runs: Sequence[Run], task: str) -> dict[str, float]:
    """Perturbation -> mean drop (clean minus perturbed score) over the runs that measured it."""
    drops: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, result in (getattr(run.results.tasks[task], "robustness", None) or {}).items():
            drops[name].append(float(result.drop.value))
    return {name: float(np.mean(values)) for name, values in sorted(drops.items())}


def _curve(run: Run) -> list[tuple[float, float]]:
    """The run's training curve: ``training.curve`` (schema 1.2), else the ``reward`` rows of
    the ``metrics.jsonl`` in the evaluated checkpoint's folder or its parent (the run folder the
    episodic trainers write), else empty."""
    curve = getattr(run.training, "curve", None) or []
    if curve:
        return [(float(step), float(value)) for step, value in curve]
    checkpoint = run.results.provenance.fusion.checkpoint
    if not checkpoint:
        return []
    folder = Path(checkpoint)
    if not folder.is_absolute():
        folder = run.path.parent / folder
    for candidate in (folder / METRICS_FILE, folder.parent / METRICS_FILE):
        if candidate.is_file():
            return _logged_curve(candidate)
    return []


def _logged_curve(path: Path) -> list[tuple[float, float]]:
    """``(step, reward)`` of the rows of a ``metrics.jsonl`` that log a reward."""
    points: list[tuple[float, float]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash; the curve is a picture, not a metric
        if isinstance(row, dict) and isinstance(row.get("reward"), (int, float)):
            points.append((float(row.get("step", len(points))), float(row["reward"])))
    return points


def summarise_config(
    key: ConfigKey, label: str, runs: Sequence[Run], task: str, score: str, seed: int = 0
) -> Row:
    """The row of one configuration on one task (``seed``: the bootstrap's)."""
    scores = [_metric(r, task, score) or 0.0 for r in runs]
    matrix = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    q25, q75 = np.percentile(matrix, [25, 75])
    stabilities = [getattr(r.training, "stability", None) or {} for r in runs]
    costs = [_run_costs(r) for r in runs]
    training = [r.training for r in runs]
    return Row(
        key=key,
        label=label,
        scores=scores,
        iqm=across_seeds.aggregate_with_ci(
            across_seeds.iqm, matrix, seed=seed, higher_is_better=True
        ),
        mean=across_seeds.mean(matrix),
        iqr=float(q75 - q25),
        within_run={k: _mean([s.get(k) for s in stabilities]) for k in WITHIN_RUN_KEYS},
        episode_length=_mean([_metric(r, task, "episode_length") for r in runs]),
        steps_to_success=_mean([_metric(r, task, "steps_to_success") for r in runs]),
        length_ratio=_mean([_metric(r, task, "length_ratio_to_optimal") for r in runs]),
        train_wall_s=_mean([getattr(t, "wall_time_s", None) for t in training]),
        train_cpu_s=_mean([getattr(t, "cpu_time_s", None) for t in training]),
        tokens_per_s=_mean([_tokens_per_s(r) for r in runs]),
        peak_memory_mib=_mean([_peak_memory(r) for r in runs]),
        trainable_params=_mean(
            [
                getattr(t, "trainable_params", None) or r.results.provenance.fusion.trainable_params
                for r, t in zip(runs, training, strict=True)
            ]
        ),
        flops_per_step=_mean([getattr(t, "flops_per_step", None) for t in training]),
        money=_mean([c["money"] for c in costs]),
        costs={m: _mean([c[m] for c in costs]) for m in COST_MEASURES},
        robustness=_robustness(runs, task),
        curves=[c for c in (_curve(r) for r in runs) if c],
    )


def cost_measure(rows: Sequence[Row]) -> str:
    """The first of :data:`COST_MEASURES` that every row has."""
    for measure in COST_MEASURES:
        if all(row.costs.get(measure) is not None for row in rows):
            return measure
    return "wall_s"


def cost_per_success(row: Row, measure: str, score: str) -> float | None:
    """Cost (in ``measure``) per unit of success rate: cost / mean success rate; None unless
    the score is a success rate; inf when no run succeeded."""
    cost = row.costs.get(measure)
    if score != "success_rate" or cost is None:
        return None
    return cost / row.mean if row.mean > 0 else float("inf")


def overlaps(a: MetricValue, b: MetricValue) -> bool:
    """Whether two 95 % intervals share at least one point."""
    a_low, a_high = _bounds(a)
    b_low, b_high = _bounds(b)
    return a_low <= b_high and b_low <= a_high


def _bounds(value: MetricValue) -> tuple[float, float]:
    """The interval, or the point estimate twice when no interval was computed."""
    low = value.ci_low if value.ci_low is not None else value.value
    high = value.ci_high if value.ci_high is not None else value.value
    return low, high


def recommend(rows: Sequence[Row], measure: str) -> Recommendation:
    """The best row (highest IQM; rows come ranked) and the cheapest row, in ``measure``, whose
    IQM interval overlaps the best one's (the best itself when none is cheaper)."""
    best = rows[0]
    candidates = [row for row in rows if overlaps(row.iqm, best.iqm)]

    def cost(row: Row) -> float:
        value = row.costs.get(measure)
        return float("inf") if value is None else value

    cheapest = min(candidates, key=lambda row: (cost(row), -row.iqm.value, row.label))
    return Recommendation(best=best, cheapest=cheapest, measure=measure)


def labels(keys: Sequence[ConfigKey]) -> dict[ConfigKey, str]:
    """Short names: the adapter, plus the model, algorithm or options hash only where the
    report holds several of them."""
    models = {k.model for k in keys}
    algorithms = {k.algorithm for k in keys}
    hashes: dict[str, set[str]] = defaultdict(set)
    for k in keys:
        hashes[k.fusion].add(k.options_hash)
    out = {}
    for k in keys:
        label = k.fusion + (f"#{k.options_hash}" if len(hashes[k.fusion]) > 1 else "")
        if len(algorithms) > 1:
            label += f" ({k.algorithm})"
        if len(models) > 1:
            label += f" [{k.model}]"
        out[k] = label
    return out


def summarise(collection: Collection, *, seed: int = 0) -> list[TaskSummary]:
    """Every task in the collection, in name order, with its configurations ranked by IQM."""
    by_task: dict[str, dict[ConfigKey, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in collection.runs:
        for task in run.results.tasks:
            by_task[task][run.key].append(run)
    names = labels(sorted({run.key for run in collection.runs}))
    summaries = []
    for task in sorted(by_task):
        groups = by_task[task]
        score = primary_score([r for runs in groups.values() for r in runs], task)
        rows = [summarise_config(k, names[k], groups[k], task, score, seed) for k in sorted(groups)]
        measure = cost_measure(rows)
        rows.sort(key=lambda r: (-r.iqm.value, r.costs.get(measure) or 0.0, r.label))
        summaries.append(TaskSummary(task, score, rows, recommend(rows, measure), measure))
    return summaries
