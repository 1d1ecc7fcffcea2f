"""Choose the checkpoint a run resumes from: complete, verified, and written by the same run.

Both trainers write ``checkpoint-<step>/`` folders whose ``manifest.json`` (``manifest.py``) is
written last: the episodic trainer inside a temporary folder renamed into place, TRL's Trainer
in place with the manifest added by a callback after ``trainer_state.json``. On resume
(``resume_checkpoint``, main process):

1. half-written folders (``.tmp-checkpoint-*``, ``incomplete-checkpoint-*``, a
   ``checkpoint-<step>`` without its manifest) are deleted: nothing in them is usable;
2. the newest complete checkpoint is verified against its manifest (every file present, every
   sha256 equal); a corrupt one is reported in one warning line naming the file, moved aside to
   ``corrupt-checkpoint-<step>`` (kept for inspection, never resumed from), and the previous one
   is tried; none intact is one ``CheckpointError`` naming the files;
3. ``check_resume_config`` compares the run's config with the one stored in the manifest.

Checkpoints written before manifests existed (``trainer_state.json``, no manifest) are still
resumed, with a warning that they cannot be verified.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mmrl_harness.train.manifest import (
    MANIFEST_FILE,
    CheckpointManifest,
    ManifestError,
    config_changes,
    describe_changes,
    file_problems,
    is_safe_change,
    read_manifest,
)
from mmrl_harness.train.result import TrainingError

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig

log = logging.getLogger("mmrl_harness")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
#: Written last by a Trainer (and by the episodic trainer before its manifest).
COMPLETE_MARKER = "trainer_state.json"
INCOMPLETE_PREFIX = "incomplete-"
CORRUPT_PREFIX = "corrupt-"
TMP_PREFIX = ".tmp-"
#: Test hook: ``MMRL_FAULT_AT=<point>:<step>`` SIGKILLs the process at that point (see
#: ``fault_point``), so tests can kill a run at an exact place, e.g. inside a checkpoint write.
FAULT_ENV = "MMRL_FAULT_AT"


class CheckpointError(TrainingError):
    """A checkpoint cannot be written, is corrupt, or does not fit the run resuming from it."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's file is missing, truncated or altered; ``file`` names it."""

    def __init__(self, file: Path, why: str) -> None:
        super().__init__(f"{file}: {why}")
        self.file, self.why = file, why


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
    """Whether the folder was fully written: it has its manifest, or (written before
    manifests) its Trainer state."""
    path = Path(checkpoint)
    return (path / MANIFEST_FILE).is_file() or (path / marker).is_file()


def last_checkpoint(
    output_dir: str | os.PathLike[str], marker: str = COMPLETE_MARKER
) -> Path | None:
    """The complete checkpoint with the highest step, or None (not verified: see
    ``resume_checkpoint``)."""
    complete = [p for p in list_checkpoints(output_dir) if is_complete(p, marker)]
    return complete[-1] if complete else None


def incomplete_folders(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Folders a killed save left behind: temporary and set-aside ones, checkpoints without
    their marker, and checkpoints newer than the newest manifest that lack one (TRL wrote
    them, the run died before the manifest)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    leftovers = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith((TMP_PREFIX + "checkpoint-", INCOMPLETE_PREFIX))
    ]
    checkpoints = list_checkpoints(root)
    with_manifest = [checkpoint_step(p) or 0 for p in checkpoints if (p / MANIFEST_FILE).is_file()]
    newest = max(with_manifest, default=None)
    for path in checkpoints:
        if not is_complete(path) or (
            newest is not None
            and not (path / MANIFEST_FILE).is_file()
            and (checkpoint_step(path) or 0) > newest
        ):
            leftovers.append(path)
    return sorted(leftovers)


def prune_incomplete(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the folders ``incomplete_folders`` finds (main process, before resuming: the
    resumed run writes those steps again); return what was deleted."""
    removed = incomplete_folders(output_dir)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def verify_checkpoint(path: str | os.PathLike[str]) -> CheckpointManifest | None:
    """Check a complete checkpoint's files against its manifest; return the manifest (None for a
    checkpoint written before manifests, whose state file is only parsed).

    Raises ``CorruptCheckpointError`` naming the first missing or altered file.
    """
    folder = Path(path)
    try:
        manifest = read_manifest(folder)
    except ManifestError as err:
        raise CorruptCheckpointError(folder / MANIFEST_FILE, str(err).split(": ", 1)[-1]) from None
    if manifest is None:
        state = folder / COMPLETE_MARKER
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CorruptCheckpointError(state, "unreadable or not JSON") from None
        return None
    problems = file_problems(folder, manifest)
    if problems:
        name, why = problems[0]
        more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
        raise CorruptCheckpointError(folder / name, why + more)
    return manifest


def set_aside(path: Path, prefix: str) -> Path:
    """Rename ``path`` to ``<prefix><name>`` (``.1``, ``.2``... if taken); return the new path."""
    target = path.with_name(prefix + path.name)
    suffix = 1
    while target.exists():
        target = path.with_name(f"{prefix}{path.name}.{suffix}")
        suffix += 1
    path.rename(target)
    return target


def choose_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """Prune half-written folders, then return the newest checkpoint that verifies (main
    process only: it deletes and renames folders). See the module docstring."""
    prune_incomplete(output_dir)
    corrupt: list[CorruptCheckpointError] = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            manifest = verify_checkpoint(path)
        except CorruptCheckpointError as err:
            moved = set_aside(path, CORRUPT_PREFIX)
            log.warning(
                "checkpoint %s is corrupt: %s; moved it to %s and trying the previous one",
                path.name,
                err,
                moved.name,
            )
            corrupt.append(err)
            continue
        if manifest is None:
            log.warning(
                "checkpoint %s has no %s (an older harness wrote it, or the run died just "
                "before writing it): its files cannot be verified nor its config compared",
                path,
                MANIFEST_FILE,
            )
        return path
    if corrupt:
        files = "; ".join(str(err) for err in corrupt)
        raise CheckpointError(
            f"no intact checkpoint to resume from in {output_dir}: {files}. The corrupt "
            f"folders were renamed {CORRUPT_PREFIX}checkpoint-*; resume: false in a fresh "
            "output_dir starts over"
        )
    return None


def resume_checkpoint(
    output_dir: str | os.PathLike[str], *, main_process: bool, barrier: Callable[[], None]
) -> Path | None:
    """The checkpoint every process resumes from: the main process chooses it
    (``choose_checkpoint``), the others read the result after ``barrier``."""
    chosen = choose_checkpoint(output_dir) if main_process else None
    barrier()
    return chosen if main_process else last_checkpoint(output_dir)


def check_resume_config(checkpoint: Path, config: TrainConfig) -> dict[str, tuple[object, object]]:
    """Refuse to resume ``checkpoint`` with a different run; return the accepted changes.

    Fields outside ``manifest.SAFE_CHANGES`` (model, fusion, LoRA, task, algorithm, seed,
    learning rate, ...) never change; safe ones (max_steps, cadences) only with
    ``allow_config_change``. Checkpoints without a manifest are not checked.
    """
    from mmrl_harness.train.config import TrainConfig

    manifest = read_manifest(checkpoint)
    if manifest is None:
        return {}
    try:  # fill fields added since the checkpoint was written with their defaults
        stored = TrainConfig.model_validate(manifest.config).model_dump(mode="json")
    except ValueError:
        stored = manifest.config
    changes = config_changes(stored, config.model_dump(mode="json"))
    unsafe = {k: v for k, v in changes.items() if not is_safe_change(k)}
    if unsafe:
        raise CheckpointError(
            f"cannot resume {checkpoint}: it was trained with another run's config "
            f"({describe_changes(unsafe)}); these fields never change on resume. Use the "
            "checkpoint's values, or a fresh output_dir for the new run"
        )
    if changes and not config.allow_config_change:
        raise CheckpointError(
            f"cannot resume {checkpoint}: the config changed ({describe_changes(changes)}); "
            "pass --allow-config-change (allow_config_change: true) to accept changes to "
            "these fields, or restore the checkpoint's values"
        )
    if changes:
        log.warning("resuming %s with a changed config: %s", checkpoint, describe_changes(changes))
    return changes


def refuse_existing_checkpoints(config: TrainConfig) -> None:
    """With ``resume: false``, an ``output_dir`` that holds checkpoints is a config error: a
    fresh run would mix its checkpoints and metrics with the old ones."""
    from mmrl_harness.tasks.files import Problem
    from mmrl_harness.train.config import TrainConfigError

    existing = list_checkpoints(config.output_dir)
    if existing:
        raise TrainConfigError(
            None,
            [
                Problem(
                    "resume",
                    f"resume is off but {config.output_dir} already holds "
                    f"{', '.join(p.name for p in existing)}; a fresh run would mix with them",
                    "resume: true (or --resume), another output_dir, or delete them",
                )
            ],
        )


def fault_point(point: str, step: int) -> None:
    """SIGKILL this process when ``MMRL_FAULT_AT`` is ``<point>:<step>`` (a test hook; a no-op
    otherwise). Points: ``checkpoint-write`` (files written, manifest not yet),
    ``after-update`` (weights updated and logged, checkpoint of that step not yet written)."""
    if os.environ.get(FAULT_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
