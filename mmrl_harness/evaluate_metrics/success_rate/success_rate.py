"""Success rate of episodes with its 95 % percentile-bootstrap CI, as in a results file."""

import datasets
import evaluate

from mmrl_harness.metrics.episodes import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_ci

_DESCRIPTION = """
Fraction of episodes that met the task's success condition, with the 95 % percentile-bootstrap
confidence interval of the mean that mmrl-harness stores in its results files (the same
resampling, so the same seed and resamples give the same interval).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one value per episode, 1 (success) or 0.
    seed: seed of the bootstrap (default 0, the results files' default).
    resamples: bootstrap resamples (default 2000).
Returns:
    success_rate: the mean; ci_low, ci_high: its 95 % interval.
Examples:
    >>> metric = evaluate.load("path/to/success_rate")
    >>> metric.compute(predictions=[1, 0, 1, 1])["success_rate"]
    0.75
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SuccessRate(evaluate.Metric):
    """Success rate with its bootstrap CI (``mmrl_harness.metrics.episodes``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64")}),
        )

    def _compute(
        self,
        predictions: list[int],
        seed: int = BOOTSTRAP_SEED,
        resamples: int = BOOTSTRAP_RESAMPLES,
    ) -> dict[str, float]:
        values = [float(bool(p)) for p in predictions]
        low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
        return {"success_rate": sum(values) / len(values), "ci_low": low, "ci_high": high}
