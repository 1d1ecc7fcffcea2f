"""Metrics pinned to hand-computed values on hand-written episode records.

Every input below is a dyadic rational (0.5, 0.375, ...), exactly representable in float64, so
sums and means of them are exact and the expected values are compared with ==.
"""

from __future__ import annotations

import math

from mmrl_harness.metrics import bootstrap_ci, compute_task_metrics, length_histogram
from mmrl_harness.results import EpisodeRecord


def record(
    rewards: list[float],
    *,
    success: bool,
    invalid: int = 0,
    truncated: bool = False,
    tokens: int = 0,
    wall: float = 0.0,
) -> EpisodeRecord:
    """One episode whose length is the number of rewards."""
    steps = len(rewards)
    return EpisodeRecord(
        task="t",
        seed=0,
        episode_index=0,
        actions=["a"] * steps,
        responses=["a"] * steps,
        rewards=rewards,
        episode_return=float(sum(rewards)),
        length=steps,
        success=success,
        invalid_actions=invalid,
        truncated=truncated,
        tokens=tokens,
        wall_time_s=wall,
    )


#: returns [1, 0, 0.5, 1]; lengths [1, 3, 2, 2]; successes [T, F, F, T]; invalid [0, 2, 1, 0];
#: truncated [F, T, F, F]; tokens [5, 15, 10, 10]; wall time [0.5, 1.5, 1.0, 1.0].
RECORDS = [
    record([1.0], success=True, tokens=5, wall=0.5),
    record([0.0, -0.5, 0.5], success=False, invalid=2, truncated=True, tokens=15, wall=1.5),
    record([0.0, 0.5], success=False, invalid=1, tokens=10, wall=1.0),
    record([0.0, 1.0], success=True, tokens=10, wall=1.0),
]


def test_point_estimates_match_the_hand_arithmetic() -> None:
    m = compute_task_metrics(RECORDS)
    assert m["episode_return"].value == 0.625  # (1 + 0 + 0.5 + 1) / 4 = 2.5 / 4
    assert m["success_rate"].value == 0.5  # 2 successes / 4 episodes
    assert m["episode_length"].value == 2.0  # (1 + 3 + 2 + 2) / 4 = 8 / 4
    # Population std: deviations from 2 are (-1, 1, 0, 0); variance (1 + 1) / 4 = 0.5.
    # numpy's std is sqrt(mean of squared deviations) = sqrt(0.5), one correctly rounded sqrt.
    assert m["episode_length_std"].value == math.sqrt(0.5)
    assert m["invalid_action_rate"].value == 0.375  # (0 + 2 + 1 + 0) invalid / 8 steps
    assert m["truncation_rate"].value == 0.25  # 1 truncated / 4 episodes
    assert m["tokens_per_episode"].value == 10.0  # (5 + 15 + 10 + 10) / 4 = 40 / 4
    assert m["tokens_total"].value == 40.0
    assert m["wall_time_s"].value == 4.0  # 0.5 + 1.5 + 1.0 + 1.0


def test_directions_are_declared_for_ranking() -> None:
    m = compute_task_metrics(RECORDS)
    assert m["episode_return"].higher_is_better is True
    assert m["success_rate"].higher_is_better is True
    assert m["invalid_action_rate"].higher_is_better is False
    assert m["episode_length"].higher_is_better is None  # shorter is not always better


def test_length_histogram_counts_episodes_per_length() -> None:
    # lengths [1, 3, 2, 2]: one of 1, two of 2, one of 3; keys sorted by length.
    assert length_histogram(RECORDS) == {"1": 1, "2": 2, "3": 1}
    assert list(length_histogram(RECORDS)) == ["1", "2", "3"]


def test_success_interval_spans_zero_to_one_on_four_coin_flips() -> None:
    # Successes [1, 0, 0, 1]: a resample of 4 is all failures with probability (1/2)^4 = 1/16,
    # so ~125 of the 2000 resampled means are 0, far more than the 50 below the 2.5th
    # percentile (index 0.025 * 1999 = 49.975); symmetrically ~125 are 1. Hence exactly [0, 1].
    m = compute_task_metrics(RECORDS)["success_rate"]
    assert (m.ci_low, m.ci_high) == (0.0, 1.0)


def test_return_interval_brackets_the_mean() -> None:
    # The interval's ends depend on the seeded resampling; what the arithmetic fixes is that
    # they are means of returns in [0, 1] and bracket the sample mean 0.625.
    m = compute_task_metrics(RECORDS)["episode_return"]
    assert m.ci_low is not None and m.ci_high is not None
    assert 0.0 <= m.ci_low < 0.625 < m.ci_high <= 1.0


def test_bootstrap_of_two_values_spans_them() -> None:
    # Resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: ~500 of 2000
    # are 0 and ~500 are 1, both far more than the 50 in each 2.5 % tail.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_degenerate_samples() -> None:
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)  # no spread: the value itself
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.75]
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    by_seed = {bootstrap_ci(values, seed=s) for s in range(5)}
    assert len(by_seed) > 1  # the seed really drives the resampling


def test_zero_steps_give_a_zero_invalid_rate() -> None:
    # No steps at all: the rate is defined as 0, not 0 / 0.
    empty = record([], success=False)
    assert compute_task_metrics([empty])["invalid_action_rate"].value == 0.0
