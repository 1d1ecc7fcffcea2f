"""Experiments over many runs: comparing fusion adapters across seeds, tasks and costs."""
