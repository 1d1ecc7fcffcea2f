"""The harness's reward and stability metrics as Hugging Face ``evaluate`` metric modules.

Each module is a folder holding a script of the same name (what ``evaluate.load`` expects of a
local metric) that calls the harness's own functions, so users' pipelines get the very numbers
a results file or ``mmrl report`` shows, without the Hub::

    import evaluate
    from mmrl_harness import evaluate_metrics

    iqm = evaluate.load(evaluate_metrics.path("iqm"))
    iqm.compute(predictions=[[0.8], [0.6], [0.9], [0.7]])  # one row per run, one column per task

The scripts ship inside the wheel as package data.
"""

from __future__ import annotations

from pathlib import Path

from mmrl_harness.errors import MMRLError

#: The metric modules shipped, by name.
NAMES = ("success_rate", "iqm", "within_run_stability")


class UnknownMetricError(MMRLError, KeyError):
    """No metric module of that name ships with the harness."""

    def __str__(self) -> str:
        return str(self.args[0])


def path(name: str) -> str:
    """The local folder of metric module ``name``, to pass to ``evaluate.load``."""
    if name not in NAMES:
        raise UnknownMetricError(
            f"no evaluate metric module named {name!r}; the harness ships {', '.join(NAMES)}."
        )
    return str(Path(__file__).parent / name)
