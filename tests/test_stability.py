"""Policy-stability statistics: rliable's numbers across seeds, hand-computed ones within a run.

Across seeds: point estimates are compared with ``rliable.metrics`` (a dev dependency; it
imports without arch). Intervals and profiles come from ``rliable.library``, which needs arch 7 +
pandas 2 and so cannot import here (pandas 3): they are compared (a) with rliable 1.2.0's own
outputs recorded by tests/rliable_reference.py on the same generated matrices and seeds, and
(b) with an independent restatement of rliable's StratifiedBootstrap procedure, run live.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics as rly_metrics
from rliable_reference import OUTPUT, REPS, TAUS, score_matrices

from mmrl_harness.metrics import stability as st
from mmrl_harness.results_schema import MetricValue

MATRICES = score_matrices()
REFERENCE = json.loads(Path(OUTPUT).read_text(encoding="utf-8"))
AGGREGATES = {
    "iqm": (st.iqm, rly_metrics.aggregate_iqm),
    "mean": (st.mean, rly_metrics.aggregate_mean),
    "median": (st.median, rly_metrics.aggregate_median),
    "optimality_gap": (st.optimality_gap, rly_metrics.aggregate_optimality_gap),
}
# The recorded values were computed on another numpy build: the same operations in the same
# order, but numpy's SIMD summation may round a 50-element sum differently by a few ulp, so the
# recorded intervals are compared to 1e-12 relative (far below any statistical difference).
RECORDED_RTOL = 1e-12


# --- point estimates: exactly rliable.metrics (same float operations, same order) ----------


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("aggregate", sorted(AGGREGATES))
def test_aggregates_equal_rliable(name: str, aggregate: str) -> None:
    ours, theirs = AGGREGATES[aggregate]
    assert ours(MATRICES[name]) == theirs(MATRICES[name])


def test_optimality_gap_threshold_equals_rliable() -> None:
    scores = MATRICES["x"]
    for gamma in (0.5, 0.8, 1.5):
        assert st.optimality_gap(scores, gamma) == rly_metrics.aggregate_optimality_gap(
            scores, gamma
        )
    # Every score clipped at a gamma below the minimum: the gap is 0 exactly.
    assert st.optimality_gap(scores, float(scores.min())) == 0.0


@pytest.mark.parametrize(
    ("x", "y"), [("x", "y"), ("y", "x"), ("tied", "tied"), ("x", "x"), ("tied", "y")]
)
def test_probability_of_improvement_equals_rliable(x: str, y: str) -> None:
    # Pair counts are integers and the one division is the same as scipy's U / (n_x n_y).
    expected = rly_metrics.probability_of_improvement(MATRICES[x], MATRICES[y])
    assert st.probability_of_improvement(MATRICES[x], MATRICES[y]) == expected


def test_probability_of_improvement_with_ties_by_hand() -> None:
    # Task 0: x=(1, 2) vs y=(2,): 1<2 loses, 2==2 ties -> (0 + 0.5) / 2 = 0.25.
    # Task 1: x=(3, 3) vs y=(0,): both win -> 1.0.   Mean over tasks: 0.625.
    assert st.probability_of_improvement([[1, 3], [2, 3]], [[2, 0]]) == 0.625


def test_iqm_by_hand() -> None:
    # 8 scores: floor(0.25 * 8) = 2 cut from each end of 0..7 -> mean(2, 3, 4, 5) = 3.5.
    assert st.iqm(np.arange(8.0).reshape(4, 2)) == 3.5


# --- intervals and profiles: rliable.library's recorded outputs -----------------------------


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("aggregate", sorted(AGGREGATES))
def test_intervals_equal_rliable_library(name: str, aggregate: str) -> None:
    ours, _ = AGGREGATES[aggregate]
    # rliable ran after np.random.seed(11); a RandomState(11) gives the same index draws.
    low, high = st.bootstrap_interval(
        ours, MATRICES[name], reps=REPS, seed=np.random.RandomState(11)
    )
    recorded = REFERENCE[name][f"{aggregate}_ci"]
    np.testing.assert_allclose([low[0], high[0]], recorded, rtol=RECORDED_RTOL, atol=0)


def test_probability_of_improvement_interval_equals_rliable_library() -> None:
    # Two matrices, resampled independently (rliable's StratifiedIndependentBootstrap).
    low, high = st.bootstrap_interval(
        st.probability_of_improvement,
        MATRICES["x"],
        MATRICES["y"],
        reps=REPS,
        seed=np.random.RandomState(13),
    )
    recorded = REFERENCE["x_vs_y"]["probability_of_improvement_ci"]
    np.testing.assert_allclose([low[0], high[0]], recorded, rtol=RECORDED_RTOL, atol=0)


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("use_score_distribution", [True, False])
def test_performance_profiles_equal_rliable_library(
    name: str, use_score_distribution: bool
) -> None:
    key = "run_profile" if use_score_distribution else "mean_profile"
    profile, low, high = st.performance_profile_with_ci(
        MATRICES[name],
        TAUS,
        use_score_distribution=use_score_distribution,
        reps=REPS,
        seed=np.random.RandomState(12),
    )
    # Fractions are counts / size: exact. The interval ends interpolate between them.
    np.testing.assert_array_equal(profile, REFERENCE[name][key])
    np.testing.assert_allclose(
        [low, high], REFERENCE[name][f"{key}_ci"], rtol=RECORDED_RTOL, atol=1e-15
    )


def test_performance_profile_by_hand() -> None:
    scores = np.array([[0.0, 0.5], [1.0, 0.5]])
    # Run-score distribution: fraction of the 4 scores strictly above tau.
    np.testing.assert_array_equal(
        st.performance_profile(scores, [-1, 0, 0.5, 1]), [1, 0.75, 0.25, 0]
    )
    # Average-score distribution: task means (0.5, 0.5) above tau.
    np.testing.assert_array_equal(
        st.performance_profile(scores, [0.4, 0.5], use_score_distribution=False), [1, 0]
    )


# --- the bootstrap procedure, restated from rliable's code and run live ---------------------


def _rliable_procedure(statistic, scores: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """rliable's StratifiedBootstrap + arch's percentile interval, written out independently:
    global np.random.choice of a (runs, tasks) index array per replicate, rows picked per
    column through an ogrid, then np.percentile of each column at 100 * (alpha, 1 - alpha)."""
    np.random.seed(seed)
    runs, tasks = scores.shape
    task_index = np.ogrid[0:runs, 0:tasks][1]
    values = []
    for _ in range(reps):
        index = np.random.choice(runs, (runs, tasks), replace=True)
        values.append(np.atleast_1d(statistic(scores[index, task_index])))
    alpha = (1.0 - 0.95) / 2
    table = np.array(values)
    return np.array(
        [
            np.percentile(table[:, i], [100 * alpha, 100 * (1 - alpha)])
            for i in range(table.shape[1])
        ]
    ).T


@pytest.mark.parametrize("aggregate", ["iqm", "median"])
def test_bootstrap_equals_rliable_procedure(aggregate: str) -> None:
    ours, theirs = AGGREGATES[aggregate]
    expected = _rliable_procedure(theirs, MATRICES["y"], reps=300, seed=5)
    # Same draws, same statistic operations, same percentile: identical.
    low, high = st.bootstrap_interval(ours, MATRICES["y"], reps=300, seed=np.random.RandomState(5))
    np.testing.assert_array_equal([low, high], expected)


def test_seeded_generator_is_reproducible_and_covers_the_estimate() -> None:
    scores = MATRICES["x"]
    first = st.aggregate_with_ci(st.iqm, scores, seed=3, higher_is_better=True)
    again = st.aggregate_with_ci(
        st.iqm, scores, seed=np.random.default_rng(3), higher_is_better=True
    )
    other = st.aggregate_with_ci(st.iqm, scores, seed=4, higher_is_better=True)
    assert isinstance(first, MetricValue)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.value == st.iqm(scores)
    assert first.ci_low is not None and first.ci_high is not None
    assert first.ci_low < first.value < first.ci_high


def test_resampling_is_stratified_by_task() -> None:
    # Task 0 scores are all 0, task 1 all 10: a stratified resample keeps every column's
    # values, so each replicate's per-task means are exactly (0, 10).
    scores = np.column_stack([np.zeros(5), np.full(5, 10.0)])
    replicates = st.stratified_bootstrap(lambda s: s.mean(axis=0), scores, reps=50, seed=0)
    assert replicates.shape == (50, 2)
    np.testing.assert_array_equal(replicates, np.tile([0.0, 10.0], (50, 1)))


@pytest.mark.parametrize(
    ("scores", "message"),
    [(np.ones(4), "2-D"), (np.ones((0, 3)), "2-D"), (np.array([[1.0, np.nan]]), "non-finite")],
)
def test_bad_score_matrices_are_refused(scores: np.ndarray, message: str) -> None:
    with pytest.raises(st.ScoreMatrixError, match=message):
        st.iqm(scores)


def test_probability_of_improvement_needs_the_same_tasks() -> None:
    with pytest.raises(st.ScoreMatrixError, match="same tasks"):
        st.probability_of_improvement(np.ones((3, 2)), np.ones((3, 4)))


# --- within a run: hand-computed values on constructed curves -------------------------------

# y = 10, 7, 8, 4, 9, 9, 10, 5, 6
# first differences d = -3, 1, -4, 5, 0, 1, -5, 1; sorted: -5, -4, -3, 0, 1, 1, 1, 5 (n = 8).
# Linear-interpolation quantile at q sits at position q * 7 of the sorted list:
#   q25 -> 1.75 -> -4 + 0.75 * 1 = -3.25;  q75 -> 5.25 -> 1;  IQR = 4.25
#   q05 -> 0.35 -> -4.65: d <= -4.65 is {-5}          -> CVaR_0.05 = -5
#   q25 = -3.25:          d <= -3.25 is {-5, -4}      -> CVaR_0.25 = -4.5
# running peak 10 throughout -> drawdown = 0, 3, 2, 6, 1, 1, 0, 5, 4; max 6.
#   sorted drawdown 0, 0, 1, 1, 2, 3, 4, 5, 6 (n = 9), position q * 8:
#   q95 -> 7.6 -> 5.6: dd >= 5.6 is {6}               -> CVaR_0.05 = 6
#   q75 -> 6   -> 4:   dd >= 4 is {4, 5, 6}           -> CVaR_0.25 = 5
CURVE = [10.0, 7.0, 8.0, 4.0, 9.0, 9.0, 10.0, 5.0, 6.0]


def test_within_run_metrics_by_hand() -> None:
    # Every value above is exact in binary floating point, so the asserts are exact.
    assert st.dispersion_across_time(CURVE) == 4.25
    assert st.short_term_risk(CURVE) == -5.0
    assert st.short_term_risk(CURVE, alpha=0.25) == -4.5
    assert st.max_drawdown(CURVE) == 6.0
    assert st.long_term_risk(CURVE) == 6.0
    assert st.long_term_risk(CURVE, alpha=0.25) == 5.0


def test_differences_are_per_step() -> None:
    # Logged every 2 steps: every difference halves (exact), and so do IQR and CVaR.
    steps = np.arange(0, 18, 2)
    assert st.dispersion_across_time(CURVE, steps) == 4.25 / 2
    assert st.short_term_risk(CURVE, steps, alpha=0.25) == -4.5 / 2
    # Uneven steps: (4 - 0) / 2 = 2 and (6 - 4) / 1 = 2.
    np.testing.assert_array_equal(st.differences([0.0, 4.0, 6.0], [0, 2, 3]), [2.0, 2.0])
    with pytest.raises(st.CurveError, match="strictly increase"):
        st.differences([0.0, 1.0, 2.0], [0, 2, 2])


def test_monotone_curve_has_no_risk() -> None:
    rising = [0.0, 0.5, 0.5, 2.0]
    assert st.max_drawdown(rising) == 0.0
    assert st.long_term_risk(rising) == 0.0
    # Smallest step is 0 (0.5 -> 0.5): no drop, so the short-term CVaR is 0.
    assert st.short_term_risk(rising) == 0.0


def test_reward_collapse_by_hand() -> None:
    # Peak 0.9 at index 2; drawdowns after it 0.5, 0.6, 0.55, 0.7 all exceed 0.3 to the end.
    rewards = [0.1, 0.5, 0.9, 0.4, 0.3, 0.35, 0.2]
    assert st.reward_collapse_start(rewards, drop=0.3) == 3
    assert st.reward_collapse_start(rewards, drop=0.3, patience=4) == 3
    assert st.reward_collapse_start(rewards, drop=0.3, patience=5) is None
    assert st.reward_collapse_start(rewards, drop=0.8) is None
    # A dip that recovers (last drawdown 0.05) is not a collapse.
    assert st.reward_collapse_start([0.1, 0.9, 0.2, 0.85], drop=0.3) is None


def test_entropy_collapse_and_flags() -> None:
    entropy = [1.0, 0.5, 0.04, 0.03, 0.01]
    assert st.entropy_collapsed(entropy, floor=0.05, window=3)
    assert not st.entropy_collapsed(entropy, floor=0.05, window=4)  # 0.5 is not below
    assert not st.entropy_collapsed(entropy, floor=0.05, window=6)  # too short to tell
    flags = st.collapse_flags([0.1, 0.9, 0.2, 0.1], entropy, drop=0.5, entropy_window=3)
    assert flags == st.CollapseFlags(True, 2, True)
    assert st.collapse_flags([0.1, 0.9], drop=0.5).entropy_collapsed is None


def test_run_stability_reads_metrics_jsonl(tmp_path: Path) -> None:
    rows = [{"step": 2 * (i + 1), "reward": v, "kl": 0.0} for i, v in enumerate(CURVE)]
    rows.insert(3, {"step": 7, "eval/success_rate": 0.5})  # a row without the key is skipped
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = st.run_stability(path, alpha=0.25)
    assert result == {
        "num_points": 9.0,
        "dispersion_across_time": 4.25 / 2,  # steps 2 apart
        "short_term_risk": -4.5 / 2,
        "long_term_risk": 5.0,
        "max_drawdown": 6.0,
    }
    with pytest.raises(st.CurveError, match="'entropy'"):
        st.run_stability(path, key="entropy")


def test_run_stability_of_a_real_episodic_run(tmp_path: Path) -> None:
    """The curve read back from a tiny PPO run's own metrics.jsonl is the one it logged."""
    import torch

    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    config = train_config_from_dict(
        {
            "model": "tiny-llava",
            "task": "numberline",
            "task_overrides": {"env_kwargs.image_size": 32, "env_kwargs.line_length": 3},
            "algorithm": "ppo",
            "output_dir": str(tmp_path / "run"),
            "per_device_batch_size": 4,
            "num_generations": 2,
            "max_steps": 4,
            "save_steps": 4,
            "seed": 0,
            "eval": {"enabled": False},
            "episodic": {"rollout_steps": 4, "num_minibatches": 1, "eval_every": 0},
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small shared CPUs: torch's thread pool slows under contention
    try:
        result = train_episodic(config, build_policy(config))
    finally:
        torch.set_num_threads(threads)
    logged = result.log_history
    steps = [row["step"] for row in logged]
    for key in ("reward", "entropy"):
        values = [row[key] for row in logged]
        # JSON writes floats in repr form, which reads back to the same float64: exact.
        assert st.run_stability(tmp_path / "run" / "metrics.jsonl", key) == {
            "num_points": 4.0,
            "dispersion_across_time": st.dispersion_across_time(values, steps),
            "short_term_risk": st.short_term_risk(values, steps),
            "long_term_risk": st.long_term_risk(values),
            "max_drawdown": st.max_drawdown(values),
        }
