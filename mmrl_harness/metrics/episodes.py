"""Per-task metrics from episode records: reward performance, episode length, validity, cost.

Names follow what the field already logs (BALROG's ``episode_return``/``num_steps``, VAGEN's
``success``/``action_is_valid``), with 95 % percentile-bootstrap confidence intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from mmrl_harness.results_schema import EpisodeRecord, MetricValue

#: Defaults; a results file stores the values it used (``EvalResults.bootstrap``), so
#: recomputing its metrics gives the same intervals, bit for bit.
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean.

    A dozen lines of numpy rather than scipy.stats.bootstrap: scipy is not otherwise a
    dependency, and the seeded resampling here is what makes recomputation exact.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (float("nan"), float("nan"))
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _mean_with_ci(
    values: Sequence[float], higher_is_better: bool | None, *, seed: int, resamples: int
) -> MetricValue:
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    value = float(np.mean(values)) if len(values) else float("nan")
    return MetricValue(value=value, ci_low=low, ci_high=high, higher_is_better=higher_is_better)


def length_histogram(records: Sequence[EpisodeRecord]) -> dict[str, int]:
    """Episode length -> number of episodes (keys are strings for JSON)."""
    counts = Counter(r.length for r in records)
    return {str(length): counts[length] for length in sorted(counts)}


#: Metrics added after the first release, with the schema version that introduced them: a
#: file of an older version is not expected to hold them (``mmrl verify``).
METRICS_SINCE = {
    "steps_to_success": "1.2",
    "length_ratio_to_optimal": "1.2",
    "fixed_policy_dispersion": "1.2",
}


def length_metrics(
    records: Sequence[EpisodeRecord],
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, MetricValue]:
    """Episode length next to reward, over the successful episodes only.

    ``steps_to_success``: mean length of the successful episodes (with CI); absent when none
    succeeded. ``length_ratio_to_optimal``: mean of ``length / optimal_length`` over the
    successful episodes whose record knows a positive optimal length (1.0 = every success took
    the shortest path); absent when there are none.
    """
    wins = [r for r in records if r.success]
    out: dict[str, MetricValue] = {}
    if wins:
        steps = [float(r.length) for r in wins]
        out["steps_to_success"] = _mean_with_ci(steps, False, seed=seed, resamples=resamples)
    ratios = [r.length / r.optimal_length for r in wins if r.optimal_length]
    if ratios:
        out["length_ratio_to_optimal"] = _mean_with_ci(
            ratios, False, seed=seed, resamples=resamples
        )
    return out


def compute_task_metrics(
    records: Sequence[EpisodeRecord],
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
    sampled: bool = False,
) -> dict[str, MetricValue]:
    """Every per-task metric, from the records alone (``seed``/``resamples``: the bootstrap's).

    ``sampled``: the policy sampled its actions, so the spread of the returns is also the
    spread across rollouts of one fixed policy: ``fixed_policy_dispersion`` is their IQR
    (Chan et al.'s dispersion across rollouts; lower is more reliable).
    """
    if not records:
        raise ValueError("cannot compute metrics from zero episode records")
    returns = [r.episode_return for r in records]
    lengths = [float(r.length) for r in records]
    steps = sum(r.length for r in records)
    invalid = sum(r.invalid_actions for r in records)
    tokens = sum(r.tokens for r in records)
    wall = sum(r.wall_time_s for r in records)
    ci = {"seed": seed, "resamples": resamples}
    metrics = {
        "episode_return": _mean_with_ci(returns, True, **ci),
        "success_rate": _mean_with_ci([float(r.success) for r in records], True, **ci),
        "episode_length": _mean_with_ci(lengths, None, **ci),
        "episode_length_std": MetricValue(value=float(np.std(lengths))),
        "invalid_action_rate": MetricValue(
            value=invalid / steps if steps else 0.0, higher_is_better=False
        ),
        "truncation_rate": MetricValue(
            value=sum(r.truncated for r in records) / len(records), higher_is_better=False
        ),
        "tokens_per_episode": MetricValue(value=tokens / len(records), higher_is_better=False),
        "tokens_total": MetricValue(value=float(tokens)),
        "wall_time_s": MetricValue(value=wall),
        **length_metrics(records, **ci),
    }
    if sampled:
        q25, q75 = np.percentile(returns, [25, 75])
        metrics["fixed_policy_dispersion"] = MetricValue(
            value=float(q75 - q25), higher_is_better=False
        )
    return metrics
