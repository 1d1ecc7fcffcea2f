"""Aggregate performance across training seeds, as rliable defines it (Agarwal et al., 2021).

A *score matrix* is shaped ``(runs, tasks)``: ``scores[n, m]`` is the (normalised) score of
run (training seed) ``n`` on task ``m``, the layout rliable uses. The aggregates (mean, median,
IQM, optimality gap), the probability of improvement, performance profiles and stratified-
bootstrap percentile intervals below compute the same numbers as ``rliable.metrics`` and
``rliable.library`` (``tests/test_stability.py`` checks them against rliable 1.2.0).

Why this is written here rather than imported: rliable's interval estimates
(``rliable.library``) subclass ``arch.bootstrap``, and rliable 1.2.0 pins ``arch<8``. arch 7.2.0
does not import under pandas 3 (``deprecate_kwarg() missing 1 required positional argument``)
and arch 8.0.0 breaks rliable's bootstrap (its ``random_state`` may not be ``None``), so using
rliable would pull arch 7 and pandas 2 (plus scipy, seaborn, statsmodels) into every user's
environment, where datasets/evaluate bring pandas 3. The definitions are a few lines of numpy
each; the bootstrap is rliable's procedure, including its stream of random draws when given a
``numpy.random.RandomState`` (see :func:`stratified_bootstrap`).

Reference: R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mmrl_harness.errors import MMRLError
from mmrl_harness.results_schema import MetricValue

#: What seeds a bootstrap: an int (a fresh ``numpy.random.default_rng``), a Generator, or a
#: legacy RandomState (draws exactly as rliable does from numpy's global state).
Seed = int | np.random.Generator | np.random.RandomState

#: A statistic of one or more score matrices: a float or a 1-D array (e.g. a profile).
Statistic = Callable[..., float | NDArray[np.float64]]

#: Bootstrap replications. rliable defaults to 50 000 for aggregates and 2 000 for profiles;
#: 2 000 keeps the harness's intervals cheap and matches its episode-level bootstrap.
DEFAULT_REPS = 2000


class ScoreMatrixError(MMRLError, ValueError):
    """A score matrix is not a finite, non-empty ``(runs, tasks)`` array."""


def as_score_matrix(scores: ArrayLike, name: str = "scores") -> NDArray[np.float64]:
    """``scores`` as a float64 ``(runs, tasks)`` array, or a :class:`ScoreMatrixError`."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ScoreMatrixError(
            f"{name} has shape {array.shape}; a score matrix is 2-D (runs, tasks) with at "
            "least one run and one task. Put one row per training seed and one column per task "
            "(a single task is a column: scores.reshape(-1, 1))."
        )
    if not np.all(np.isfinite(array)):
        raise ScoreMatrixError(
            f"{name} holds {int(np.sum(~np.isfinite(array)))} non-finite value(s) (NaN or inf); "
            "drop or re-run the failed runs before aggregating."
        )
    return array


def mean(scores: ArrayLike) -> float:
    """Mean over tasks of the per-task mean score (rliable's ``aggregate_mean``)."""
    matrix = as_score_matrix(scores)
    return float(np.mean(np.mean(matrix, axis=0)))


def median(scores: ArrayLike) -> float:
    """Median over tasks of the per-task mean score (rliable's ``aggregate_median``)."""
    matrix = as_score_matrix(scores)
    return float(np.median(np.mean(matrix, axis=0)))


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50 % of all run-task scores pooled.

    The 25 % trimmed mean of the flattened matrix (rliable's ``aggregate_iqm``, i.e.
    ``scipy.stats.trim_mean(scores, 0.25, axis=None)``): ``k = floor(0.25 * N)`` scores are cut
    from each end of the ``N`` sorted values. Robust to outlier runs, yet uses half the data,
    unlike the median. ``np.partition`` with scipy's pivots keeps the summation order, so the
    result is bit-identical to rliable's.
    """
    flat = as_score_matrix(scores).ravel()
    low = int(0.25 * flat.size)
    high = flat.size - low
    kept = np.partition(flat, (low, high - 1))[low:high]
    return float(np.mean(kept))


def optimality_gap(scores: ArrayLike, gamma: float = 1.0) -> float:
    """How far runs fall short of the target score ``gamma``: ``gamma - mean(min(scores, gamma))``.

    Scores above ``gamma`` count as ``gamma`` (beating the target earns nothing), so lower is
    better and 0 means every run reached it (rliable's ``aggregate_optimality_gap``).
    """
    matrix = as_score_matrix(scores)
    return float(gamma - np.mean(np.minimum(matrix, gamma)))


def probability_of_improvement(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    """P(X > Y): the chance a random run of X beats a random run of Y on the same task,
    averaged over tasks.

    Per task this is the Mann-Whitney U statistic over ``runs_x * runs_y`` (ties count 1/2):
    ``mean_{i,j} [x_i > y_j] + 0.5 [x_i == y_j]``; the two matrices may have different run
    counts but must share their tasks (rliable's ``probability_of_improvement``).
    """
    x = as_score_matrix(scores_x, "scores_x")
    y = as_score_matrix(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ScoreMatrixError(
            f"scores_x has {x.shape[1]} task(s) and scores_y {y.shape[1]}; the probability of "
            "improvement compares the same tasks (columns in the same order)."
        )
    # Counts of pairs are integers, so the division is the only rounding: the same as
    # rliable's rank-sum U / (n_x * n_y).
    wins = (x[:, None, :] > y[None, :, :]).sum(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).sum(axis=(0, 1))
    per_task = (wins + 0.5 * ties) / (x.shape[0] * y.shape[0])
    return float(np.mean(per_task))


def performance_profile(
    scores: ArrayLike, taus: ArrayLike, *, use_score_distribution: bool = True
) -> NDArray[np.float64]:
    """Fraction of scores above each threshold ``tau`` (a performance profile).

    The run-score distribution (default) pools every run on every task:
    ``F(tau) = mean_{n,m} [scores[n, m] > tau]``; with ``use_score_distribution=False`` it is
    the average-score distribution over per-task mean scores instead (rliable's
    ``create_performance_profile`` point estimates). Returns one value per ``tau``.
    """
    matrix = as_score_matrix(scores)
    thresholds = np.asarray(taus, dtype=np.float64).ravel()
    pooled = matrix if use_score_distribution else np.mean(matrix, axis=0)
    above = pooled[None, ...] > thresholds.reshape((-1,) + (1,) * pooled.ndim)
    return above.reshape(thresholds.size, -1).mean(axis=1)


def _draw(
    rng: np.random.Generator | np.random.RandomState, runs: int, shape: tuple[int, ...]
) -> NDArray[np.int64]:
    if isinstance(rng, np.random.RandomState):
        # rliable's StratifiedBootstrap calls np.random.choice(runs, shape), which is
        # RandomState.randint(0, runs, shape) on numpy's global state.
        return rng.randint(0, runs, size=shape)
    return rng.integers(0, runs, size=shape)


def stratified_bootstrap(
    statistic: Statistic, *scores: ArrayLike, reps: int = DEFAULT_REPS, seed: Seed = 0
) -> NDArray[np.float64]:
    """``reps`` bootstrap replicates of ``statistic(*scores)``, shaped ``(reps, k)``.

    Stratified over tasks: each replicate draws, for every task (column) independently,
    ``runs`` run indices with replacement, so every task keeps its run count and the
    uncertainty reflects re-running the seeds on the same tasks. Several matrices (e.g. X and Y
    of a probability of improvement) are resampled independently, in argument order (rliable's
    ``StratifiedBootstrap`` and ``StratifiedIndependentBootstrap``). With a RandomState the
    draws equal rliable's after ``np.random.seed`` of the same seed, replicate for replicate.
    """
    matrices = [as_score_matrix(s, f"scores[{i}]") for i, s in enumerate(scores)]
    if not matrices:
        raise ScoreMatrixError("stratified_bootstrap got no score matrix; pass at least one.")
    if reps < 1:
        raise ScoreMatrixError(f"reps is {reps}; the bootstrap needs at least 1 replicate.")
    rng = np.random.default_rng(seed) if isinstance(seed, (int, np.integer)) else seed
    columns = [np.arange(m.shape[1]) for m in matrices]
    rows = []
    for _ in range(reps):
        resampled = [
            m[_draw(rng, m.shape[0], m.shape), cols]
            for m, cols in zip(matrices, columns, strict=True)
        ]
        rows.append(np.atleast_1d(np.asarray(statistic(*resampled), dtype=np.float64)))
    return np.stack(rows)


def percentile_interval(
    replicates: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Percentile bootstrap interval of each column of ``replicates`` ``(reps, k)``.

    The ``(1 - confidence) / 2`` and ``1 - (1 - confidence) / 2`` quantiles (numpy's linear
    interpolation), computed as arch's ``conf_int(method="percentile")`` does for rliable.
    """
    if not 0.0 < confidence < 1.0:
        raise ScoreMatrixError(f"confidence is {confidence}; give a level in (0, 1), e.g. 0.95.")
    array = np.asarray(replicates, dtype=np.float64)
    values = array.reshape(array.shape[0], -1)
    alpha = (1.0 - confidence) / 2
    low, high = np.percentile(values, 100 * np.array([alpha, 1.0 - alpha]), axis=0)
    return low, high


def bootstrap_interval(
    statistic: Statistic,
    *scores: ArrayLike,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Stratified-bootstrap percentile interval ``(low, high)`` of ``statistic(*scores)``,
    each of shape ``(k,)`` (rliable's ``get_interval_estimates(..., method="percentile")``)."""
    replicates = stratified_bootstrap(statistic, *scores, reps=reps, seed=seed)
    return percentile_interval(replicates, confidence)


def aggregate_with_ci(
    statistic: Callable[..., float],
    *scores: ArrayLike,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: Seed = 0,
    higher_is_better: bool | None = None,
) -> MetricValue:
    """A scalar aggregate (e.g. :func:`iqm`) with its stratified-bootstrap percentile interval,
    as the results schema's :class:`~mmrl_harness.results_schema.MetricValue`."""
    low, high = bootstrap_interval(statistic, *scores, reps=reps, confidence=confidence, seed=seed)
    return MetricValue(
        value=float(statistic(*scores)),
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        higher_is_better=higher_is_better,
    )


def performance_profile_with_ci(
    scores: ArrayLike,
    taus: Sequence[float] | NDArray[np.float64],
    *,
    use_score_distribution: bool = True,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Performance profile at ``taus`` with its pointwise stratified-bootstrap interval:
    ``(profile, low, high)``, each one value per ``tau`` (rliable's
    ``create_performance_profile``)."""

    def profile(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        return performance_profile(matrix, taus, use_score_distribution=use_score_distribution)

    low, high = bootstrap_interval(profile, scores, reps=reps, confidence=confidence, seed=seed)
    return profile(as_score_matrix(scores)), low, high
