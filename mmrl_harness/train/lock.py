"""One training process per ``output_dir``: an exclusive ``flock`` on ``output_dir/.lock``.

Two runs writing the same folder interleave their checkpoints and metrics; the second one fails
at once instead, naming the process that holds the folder. The kernel drops the lock when its
holder exits, however it exits (SIGKILL included), so a crashed run never leaves a stale lock.
Only the main process of a distributed run takes it. Re-entrant within a process (``train``
and the trainer it calls both take it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmrl_harness.train.distributed import is_main_process
from mmrl_harness.train.result import TrainingError

LOCK_FILE = ".lock"

#: Locks this process holds: resolved output_dir -> (file descriptor, nesting depth).
_HELD: dict[Path, list[int]] = {}


class OutputDirLockedError(TrainingError):
    """Another process is training into the same ``output_dir``."""


@contextmanager
def output_dir_lock(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``output_dir/.lock`` for the block (main process only); fail at once if another
    process holds it, with an ``OutputDirLockedError`` naming its PID."""
    if not is_main_process():
        yield
        return
    root = Path(output_dir).resolve()
    held = _HELD.get(root)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    fd = _acquire(root)
    _HELD[root] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[root]
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(root: Path) -> int:
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputDirLockedError(
            f"output_dir {root} is in use by another training process (PID {holder}, lock "
            f"{path}); wait for it to finish or stop it, or train into another output_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
