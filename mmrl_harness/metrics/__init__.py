"""Metrics computed only from episode records, so any score can be recomputed from a results file."""

from mmrl_harness.metrics.episodes import bootstrap_ci, compute_task_metrics, length_histogram

__all__ = ["bootstrap_ci", "compute_task_metrics", "length_histogram"]
