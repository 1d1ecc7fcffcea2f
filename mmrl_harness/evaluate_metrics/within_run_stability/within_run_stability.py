"""Stability of one training curve (Chan et al., ICLR 2020): dispersion and risk across time."""

import datasets
import evaluate

from mmrl_harness.metrics import within_run

_DESCRIPTION = """
How unstable one training run was, from its curve of logged values (e.g. mean reward per
update), after Chan et al., "Measuring the Reliability of Reinforcement Learning Algorithms"
(ICLR 2020): dispersion across time (IQR of the first differences), short-term risk (CVaR of
the step-to-step changes), long-term risk (CVaR of the drawdown) and the maximum drawdown.
Computed by mmrl_harness.metrics.within_run.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the curve's values, one per logged step, in order.
    steps: the step of each value (optional; default 0, 1, 2, ...).
    alpha: CVaR tail fraction (default 0.05).
Returns:
    dispersion_across_time, short_term_risk, long_term_risk, max_drawdown.
Examples:
    >>> metric = evaluate.load("path/to/within_run_stability")
    >>> round(metric.compute(predictions=[0.1, 0.3, 0.2, 0.5])["max_drawdown"], 3)
    0.1
"""

_CITATION = """
@inproceedings{chan2020measuring,
  title={Measuring the Reliability of Reinforcement Learning Algorithms},
  author={Chan, Stephanie C. Y. and Fishman, Samuel and Canny, John and Korattikara, Anoop
          and Guadarrama, Sergio},
  booktitle={International Conference on Learning Representations},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WithinRunStability(evaluate.Metric):
    """Chan et al.'s within-run statistics (``mmrl_harness.metrics.within_run``)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64")}),
            reference_urls=["https://github.com/google-research/rl-reliability-metrics"],
        )

    def _compute(
        self, predictions: list[float], steps: list[float] | None = None, alpha: float = 0.05
    ) -> dict[str, float]:
        return {
            "dispersion_across_time": within_run.dispersion_across_time(predictions, steps),
            "short_term_risk": within_run.short_term_risk(predictions, steps, alpha=alpha),
            "long_term_risk": within_run.long_term_risk(predictions, alpha=alpha),
            "max_drawdown": within_run.max_drawdown(predictions),
        }
