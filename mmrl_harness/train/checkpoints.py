"""Find the checkpoint to resume from, skipping the half-written one a killed run leaves behind.

Hugging Face ``Trainer`` writes ``checkpoint-<step>/`` in place and ``trainer_state.json`` last,
so a folder without it was interrupted mid-save (SIGKILL, out of memory). Resuming from such a
folder fails, and rotating checkpoints could then delete the last good one; so the last
*complete* checkpoint is chosen and incomplete ones are moved aside, never deleted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
#: Written last into a Trainer checkpoint: its presence marks a complete one.
COMPLETE_MARKER = "trainer_state.json"
#: Prefix incomplete checkpoints get when moved aside (outside the ``checkpoint-N`` pattern).
INCOMPLETE_PREFIX = "incomplete-"


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The step of a ``checkpoint-<step>`` folder, or None for any other name."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in ``output_dir``, oldest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def is_complete(checkpoint: str | os.PathLike[str], marker: str = COMPLETE_MARKER) -> bool:
    """Whether the checkpoint folder was fully written (its marker file exists)."""
    return (Path(checkpoint) / marker).is_file()


def last_checkpoint(
    output_dir: str | os.PathLike[str], marker: str = COMPLETE_MARKER
) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    complete = [p for p in list_checkpoints(output_dir) if is_complete(p, marker)]
    return complete[-1] if complete else None


def set_aside_incomplete(
    output_dir: str | os.PathLike[str], marker: str = COMPLETE_MARKER
) -> list[Path]:
    """Rename incomplete checkpoints to ``incomplete-checkpoint-<step>``; return the new paths.

    Call on the main process only, before training resumes: the resumed run would otherwise
    write the same step into a folder holding stale files.
    """
    moved = []
    for path in list_checkpoints(output_dir):
        if is_complete(path, marker):
            continue
        target = path.with_name(INCOMPLETE_PREFIX + path.name)
        suffix = 1
        while target.exists():
            target = path.with_name(f"{INCOMPLETE_PREFIX}{path.name}.{suffix}")
            suffix += 1
        path.rename(target)
        moved.append(target)
    return moved
