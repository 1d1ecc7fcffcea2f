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
