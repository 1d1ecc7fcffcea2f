"""Policy robustness: the same seeds run clean and under a perturbation, compared pair by pair.

Both numbers come from the episode records alone, so ``mmrl verify`` recomputes them: the
perturbed success rate (``score``) and the paired drop ``clean - perturbed`` (``drop``), each
with the file's seeded percentile bootstrap (over episodes, resampling the pairs together for
the drop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrl_harness.errors import MMRLError
from mmrl_harness.metrics.episodes import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_ci
from mmrl_harness.results_schema import EpisodeRecord, MetricValue


class PairingError(MMRLError, ValueError):
    """Perturbed episodes that do not pair one to one, in order, with the clean ones."""


def _mean_ci(values: list[float], higher: bool, seed: int, resamples: int) -> MetricValue:
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return MetricValue(
        value=float(np.mean(values)), ci_low=low, ci_high=high, higher_is_better=higher
    )


def robustness_metrics(
    clean: Sequence[EpisodeRecord],
    perturbed: Sequence[EpisodeRecord],
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[MetricValue, MetricValue]:
    """``(score, drop)``: success rate under the perturbation, and the mean over paired seeds of
    ``clean.success - perturbed.success`` (positive: the perturbation hurts), each with CI.

    The drop's interval resamples the per-seed differences, so it accounts for the pairing (a
    difference of two independent intervals would be wider).
    """
    seeds = [r.seed for r in clean]
    if not perturbed or [r.seed for r in perturbed] != seeds:
        raise PairingError(
            f"perturbed episodes ran seeds {[r.seed for r in perturbed]}, the clean ones {seeds}; "
            "run the perturbed evaluation on the same seeds in the same order."
        )
    score = [float(r.success) for r in perturbed]
    drop = [float(c.success) - float(p.success) for c, p in zip(clean, perturbed, strict=True)]
    return (_mean_ci(score, True, seed, resamples), _mean_ci(drop, False, seed, resamples))
