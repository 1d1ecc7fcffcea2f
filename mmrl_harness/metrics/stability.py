"""Policy stability: across training seeds (rliable's aggregates, profiles and stratified-
bootstrap intervals) and within a run (Chan et al.'s dispersion and risk, collapse flags).

One import point for both halves; see :mod:`mmrl_harness.metrics.across_seeds` (including why
rliable is not imported at run time) and :mod:`mmrl_harness.metrics.within_run`, and
docs/experiments.md for the definitions with an example.
"""

from mmrl_harness.metrics.across_seeds import (
    DEFAULT_REPS,
    ScoreMatrixError,
    Seed,
    aggregate_with_ci,
    as_score_matrix,
    bootstrap_interval,
    iqm,
    mean,
    median,
    optimality_gap,
    percentile_interval,
    performance_profile,
    performance_profile_with_ci,
    probability_of_improvement,
    stratified_bootstrap,
)
from mmrl_harness.metrics.within_run import (
    CollapseFlags,
    CurveError,
    collapse_flags,
    differences,
    dispersion_across_time,
    drawdown,
    entropy_collapsed,
    long_term_risk,
    max_drawdown,
    reward_collapse_start,
    run_stability,
    short_term_risk,
)

__all__ = [
    "DEFAULT_REPS",
    "CollapseFlags",
    "CurveError",
    "ScoreMatrixError",
    "Seed",
    "aggregate_with_ci",
    "as_score_matrix",
    "bootstrap_interval",
    "collapse_flags",
    "differences",
    "dispersion_across_time",
    "drawdown",
    "entropy_collapsed",
    "iqm",
    "long_term_risk",
    "max_drawdown",
    "mean",
    "median",
    "optimality_gap",
    "percentile_interval",
    "performance_profile",
    "performance_profile_with_ci",
    "probability_of_improvement",
    "reward_collapse_start",
    "run_stability",
    "short_term_risk",
    "stratified_bootstrap",
]
