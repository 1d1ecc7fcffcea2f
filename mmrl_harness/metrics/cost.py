"""Computational cost measurements shared by evaluation and training."""

from __future__ import annotations

import resource


def peak_memory_mib() -> float:
    """Peak accelerator memory allocated by torch (GPU), else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def money(price_per_hour: float, *wall_times_s: float | None) -> float:
    """``price_per_hour x`` the summed wall hours (``None`` entries, e.g. an unknown training
    time, count as zero). Cost per unit of success is then ``money / success_rate``."""
    return price_per_hour * sum(t for t in wall_times_s if t is not None) / 3600.0


def tokens_per_s(tokens: int, wall_time_s: float) -> float:
    """Generated tokens per wall second (0 for a zero-length run)."""
    return tokens / wall_time_s if wall_time_s > 0 else 0.0
