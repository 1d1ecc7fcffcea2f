"""Stability within one training run (a curve of values over steps), after Chan et al. (2020).

Definitions follow the paper and its reference implementation (``rl-reliability-metrics``,
``metrics_online.py``): dispersion across time (IQR of the detrended curve), short-term risk
(CVaR of step-to-step changes), long-term risk (CVaR of the drawdown) and the maximum drawdown,
plus two collapse flags of our own (reward collapse, entropy collapse). numpy only.

Reference: S. C. Y. Chan, S. Fishman, J. Canny, A. Korattikara, S. Guadarrama, "Measuring the
Reliability of Reinforcement Learning Algorithms", ICLR 2020.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mmrl_harness.errors import MMRLError


class CurveError(MMRLError, ValueError):
    """A training curve is too short, not 1-D, not finite, or its steps do not increase."""


def _curve(values: ArrayLike, minimum: int = 1) -> NDArray[np.float64]:
    curve = np.asarray(values, dtype=np.float64)
    if curve.ndim != 1 or curve.size < minimum:
        raise CurveError(
            f"the curve has shape {curve.shape}; give a 1-D sequence of at least {minimum} "
            "value(s), one per logged step."
        )
    if not np.all(np.isfinite(curve)):
        raise CurveError(
            f"the curve holds {int(np.sum(~np.isfinite(curve)))} non-finite value(s); drop the "
            "NaN/inf rows (e.g. steps where the metric was not logged) first."
        )
    return curve


def differences(values: ArrayLike, steps: ArrayLike | None = None) -> NDArray[np.float64]:
    """First differences ``(y[t] - y[t-1]) / (step[t] - step[t-1])``: Chan et al.'s detrending.

    Dividing by the step gap makes the result independent of how often the curve was logged
    (their ``metric_utils.differences``); without ``steps`` the gap is 1.
    """
    curve = _curve(values, minimum=2)
    diffs = np.diff(curve)
    if steps is None:
        return diffs
    gaps = np.diff(np.asarray(steps, dtype=np.float64))
    if gaps.shape != diffs.shape or not np.all(gaps > 0):
        raise CurveError(
            f"steps ({np.asarray(steps).shape}) must match the values ({curve.shape}) and "
            "strictly increase; pass the step column logged with the values."
        )
    return diffs / gaps


def drawdown(values: ArrayLike) -> NDArray[np.float64]:
    """How far each point lies below the highest value so far: ``max_{s<=t} y[s] - y[t]`` (>= 0)."""
    curve = _curve(values)
    return np.maximum.accumulate(curve) - curve


def _cvar(values: NDArray[np.float64], alpha: float, tail: str) -> float:
    """Mean of the values at or beyond the ``alpha`` quantile (linear interpolation) of the
    ``lower`` or ``upper`` tail, as ``metric_utils.compute_cvar`` of Chan et al."""
    if not 0.0 < alpha < 1.0:
        raise CurveError(f"alpha is {alpha}; give a tail fraction in (0, 1), e.g. 0.05.")
    if tail == "lower":
        return float(np.mean(values[values <= np.percentile(values, 100 * alpha)]))
    return float(np.mean(values[values >= np.percentile(values, 100 * (1 - alpha))]))


def dispersion_across_time(values: ArrayLike, steps: ArrayLike | None = None) -> float:
    """Dispersion across Time (DT): the interquartile range of the detrended curve.

    Chan et al. detrend by first differences (:func:`differences`, so steady improvement is
    not counted as instability) and take the IQR, ``q75 - q25`` with linear interpolation, of
    those differences. Their reference computes it over the whole run by default
    (``IqrWithinRuns(window_size=None)``); for a sliding window pass a slice of the curve.
    Lower is more stable. Needs at least 2 points.
    """
    q25, q75 = np.percentile(differences(values, steps), [25, 75])
    return float(q75 - q25)


def short_term_risk(
    values: ArrayLike, steps: ArrayLike | None = None, *, alpha: float = 0.05
) -> float:
    """Short-term Risk across Time (SRT): CVaR of the step-to-step changes at level ``alpha``.

    The mean of the differences (:func:`differences`) at or below their ``alpha`` quantile:
    the expected size of the worst ``alpha`` fraction of drops between consecutive logged
    points (Chan et al.'s ``LowerCVaROnDiffs``). Negative when the curve drops; higher is
    better (a monotone non-decreasing curve scores >= 0).
    """
    return _cvar(differences(values, steps), alpha, "lower")


def long_term_risk(values: ArrayLike, *, alpha: float = 0.05) -> float:
    """Long-term Risk across Time (LRT): CVaR of the drawdown at level ``alpha``.

    The mean of the drawdowns (:func:`drawdown`) at or above their ``1 - alpha`` quantile:
    the expected depth of the worst ``alpha`` fraction of falls below the running peak
    (Chan et al.'s ``UpperCVaROnDrawdown``). >= 0, lower is better. With fewer than
    ``1/alpha + 1`` points (21 at the default) only the deepest drawdown lies in that tail, so
    it equals :func:`max_drawdown` there.
    """
    return _cvar(drawdown(values), alpha, "upper")


def max_drawdown(values: ArrayLike) -> float:
    """Maximum drawdown: the largest peak-to-trough fall, ``max_t (max_{s<=t} y[s] - y[t])``
    (Chan et al.'s ``MaxDrawdown``; the ``alpha -> 0`` limit of :func:`long_term_risk`)."""
    return float(np.max(drawdown(values)))


def reward_collapse_start(values: ArrayLike, *, drop: float, patience: int = 1) -> int | None:
    """Index where the curve fell more than ``drop`` below its running peak and stayed there.

    ``None`` unless the last ``patience`` (or more) points all lie more than ``drop`` below
    the peak reached before them (the curve never recovered by the end of the run); else the
    index of the first point of that final stretch. ``drop`` is in the curve's units (for a
    success rate in [0, 1], 0.3 means 30 points).
    """
    if drop < 0 or patience < 1:
        raise CurveError(f"drop {drop} and patience {patience}: need drop >= 0, patience >= 1.")
    below = drawdown(values) > drop
    if not below[-1]:
        return None
    # Length of the trailing run of True: position of the last False, counted from the end.
    above = np.flatnonzero(~below)
    start = int(above[-1]) + 1 if above.size else 0
    return start if below.size - start >= patience else None


def entropy_collapsed(entropy: ArrayLike, *, floor: float, window: int) -> bool:
    """True when the policy entropy stayed below ``floor`` for each of the last ``window``
    points (the policy has become near-deterministic and stopped exploring); False when the
    curve is shorter than ``window``."""
    if window < 1:
        raise CurveError(f"window is {window}; give the number of final points to check (>= 1).")
    curve = _curve(entropy)
    return bool(curve.size >= window and np.all(curve[-window:] < floor))


@dataclass(frozen=True)
class CollapseFlags:
    """Whether a run collapsed, and from which point."""

    reward_collapsed: bool
    reward_collapse_index: int | None
    entropy_collapsed: bool | None  # None when no entropy curve was given


def collapse_flags(
    rewards: ArrayLike,
    entropy: ArrayLike | None = None,
    *,
    drop: float,
    patience: int = 1,
    entropy_floor: float = 0.05,
    entropy_window: int = 10,
) -> CollapseFlags:
    """Reward collapse (:func:`reward_collapse_start`) and entropy collapse
    (:func:`entropy_collapsed`) of one run in one record."""
    start = reward_collapse_start(rewards, drop=drop, patience=patience)
    collapsed = (
        None
        if entropy is None
        else entropy_collapsed(entropy, floor=entropy_floor, window=entropy_window)
    )
    return CollapseFlags(start is not None, start, collapsed)


def run_stability(
    metrics_jsonl_path: str | Path, key: str = "reward", *, alpha: float = 0.05
) -> dict[str, float]:
    """Within-run stability of one logged metric of a training run's ``metrics.jsonl``.

    Reads the rows that have ``key`` (the episodic trainers write one row per update with a
    ``step``), and returns ``dispersion_across_time``, ``short_term_risk``, ``long_term_risk``
    and ``max_drawdown`` of that curve, plus ``num_points``.
    """
    path = Path(metrics_jsonl_path)
    steps: list[float] = []
    values: list[float] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise CurveError(f"{path}:{number} is not JSON ({error}); fix or drop it.") from None
        if isinstance(row, dict) and key in row:
            steps.append(float(row.get("step", len(steps))))
            values.append(float(row[key]))
    if len(values) < 2:
        raise CurveError(
            f"{path} has {len(values)} row(s) with {key!r}; within-run stability needs a curve "
            "of at least 2 logged points. Check the key (e.g. 'reward', 'success_rate')."
        )
    return {
        "num_points": float(len(values)),
        "dispersion_across_time": dispersion_across_time(values, steps),
        "short_term_risk": short_term_risk(values, steps, alpha=alpha),
        "long_term_risk": long_term_risk(values, alpha=alpha),
        "max_drawdown": max_drawdown(values),
    }
