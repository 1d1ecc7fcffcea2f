"""Which process this is: read from the environment ``torchrun`` / ``accelerate launch`` set."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's rank (0 outside distributed runs).

    torchrun (and so accelerate launch) sets RANK before the process starts; reading it needs
    no process group, so this works before the trainer initialises one.
    """
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes training together (1 outside distributed runs)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the process that prints and writes results (rank 0 under accelerate/torchrun)."""
    return rank() == 0
