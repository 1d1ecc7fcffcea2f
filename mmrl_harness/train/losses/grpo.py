"""Group-relative advantages (GRPO, Shao et al. 2024) over whole episodes: pure tensor code."""

from __future__ import annotations

import torch


def group_relative_advantages(
    returns: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-4
) -> torch.Tensor:
    """``(return - group mean) / (group std + eps)`` per episode, as in GRPO.

    ``returns`` and ``group_ids`` are ``(E,)``, one entry per episode; episodes sharing a group id
    started from the same environment seed. The std is the population std (TRL's GRPO uses the
    sample std; with G >= 4 the two differ by little and this one is defined for G = 1).
    """
    if returns.shape != group_ids.shape or returns.ndim != 1:
        raise ValueError(
            f"returns {tuple(returns.shape)} and group_ids {tuple(group_ids.shape)} must be "
            "equal-length vectors, one entry per episode"
        )
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    groups = counts.shape[0]
    sums = torch.zeros(groups, dtype=returns.dtype).index_add_(0, inverse, returns)
    means = sums / counts.to(returns.dtype)
    centred = returns - means[inverse]
    variances = torch.zeros(groups, dtype=returns.dtype).index_add_(0, inverse, centred**2)
    stds = (variances / counts.to(returns.dtype)).sqrt()
    return centred / (stds[inverse] + eps)
