"""Interquartile mean across training runs with its stratified-bootstrap CI (rliable's)."""

import datasets
import evaluate

from mmrl_harness.metrics import across_seeds

_DESCRIPTION = """
Aggregate scores across training runs as rliable does (Agarwal et al., NeurIPS 2021): the
interquartile mean (IQM) of a score matrix with its 95 % stratified-bootstrap percentile
interval, plus the mean, median and optimality gap. Computed by mmrl_harness.metrics.across_seeds,
which equals rliable's numbers on the same matrices.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per run (training seed), each a list with one score per task.
    reps: bootstrap replicates (default 2000).
    seed: bootstrap seed (default 0).
    confidence: interval level (default 0.95).
    gamma: target score of the optimality gap (default 1.0).
Returns:
    iqm, ci_low, ci_high, mean, median, optimality_gap.
Examples:
    >>> metric = evaluate.load("path/to/iqm")
    >>> round(metric.compute(predictions=[[0.5], [0.6], [0.7], [0.8]])["iqm"], 3)
    0.65
"""

_CITATION = """
@inproceedings{agarwal2021deep,
  title={Deep Reinforcement Learning at the Edge of the Statistical Precipice},
  author={Agarwal, Rishabh and Schwarzer, Max and Castro, Pablo Samuel and Courville, Aaron
          and Bellemare, Marc G.},
  booktitle={Advances in Neural Information Processing Systems},
  year={2021}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IQM(evaluate.Metric):
    """IQM across runs with its CI (``mmrl_harness.metrics.across_seeds``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64"))}
            ),
            reference_urls=["https://github.com/google-research/rliable"],
        )

    def _compute(
        self,
        predictions: list[list[float]],
        reps: int = across_seeds.DEFAULT_REPS,
        seed: int = 0,
        confidence: float = 0.95,
        gamma: float = 1.0,
    ) -> dict[str, float]:
        matrix = across_seeds.as_score_matrix(predictions, "predictions")
        value = across_seeds.aggregate_with_ci(
            across_seeds.iqm, matrix, reps=reps, confidence=confidence, seed=seed
        )
        return {
            "iqm": value.value,
            "ci_low": float(value.ci_low if value.ci_low is not None else value.value),
            "ci_high": float(value.ci_high if value.ci_high is not None else value.value),
            "mean": across_seeds.mean(matrix),
            "median": across_seeds.median(matrix),
            "optimality_gap": across_seeds.optimality_gap(matrix, gamma),
        }
